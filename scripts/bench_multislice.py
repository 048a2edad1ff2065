"""Benchmark: twin's multislice STEM against abTEM on the same job, measured in the same run.

Job: SrTiO3 [001], a 3 x 3 supercell 5 unit cells thick, 200 kV, 20 mrad probe, a HAADF (60-180 mrad)
image of one unit cell scanned at 0.4 Angstrom. Both sides run in float32 on the CPU. Each side runs
twice: the first (cold) run includes JIT compilation and FFT planning, the second (warm) run is the
figure to compare. Prints wall times, the ratio abtem / twin, the FFT roofline figure and the largest
difference between the two images.

Run with: .venv/bin/python scripts/bench_multislice.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ase import Atoms  # noqa: E402

from potentials.projected import PotentialSpec, grid_shape, slice_edges  # noqa: E402
from twin.stem import optics  # noqa: E402
from twin.stem.detectors import AnnularDetector  # noqa: E402
from twin.stem.probe import ProbeSpec  # noqa: E402
from twin.stem.scan import GridScan  # noqa: E402
from twin.stem.simulate import simulate  # noqa: E402

LATTICE_ANG = 3.905
ENERGY_EV = 200e3
SEMIANGLE_MRAD = 20.0
INNER_MRAD, OUTER_MRAD = 60.0, 180.0
# Half a unit cell, so each slice holds one atomic plane (atoms are placed mid-slice below).
SLICE_THICKNESS_ANG = LATTICE_ANG / 2
JOBS = {
    "full": {"repeat": 3, "cells_thick": 5, "step": 0.4, "sampling": 0.08},
    "quick": {"repeat": 2, "cells_thick": 2, "step": 0.8, "sampling": 0.08},
}


def srtio3_supercell(repeat: int, cells_thick: int) -> Atoms:
    """SrTiO3 viewed along [001]: a repeat x repeat x cells_thick supercell of the cubic perovskite.

    Atoms are shifted up by a quarter cell so that each atomic plane sits in the middle of a
    half-cell slice, not on a slice boundary where the two codes could assign it differently.
    """
    a = LATTICE_ANG
    scaled = [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    cell = Atoms("SrTiO3", scaled_positions=scaled, cell=[a, a, a], pbc=True)
    atoms = cell.repeat((repeat, repeat, cells_thick))
    atoms.positions[:, 2] += a / 4
    return atoms


def is_fast_size(n: int) -> bool:
    """True when n has no prime factor above 7 (sizes the FFT libraries handle fastest)."""
    for p in (2, 3, 5, 7):
        while n % p == 0:
            n //= p
    return n == 1


def choose_gpts(extent: float, sampling: float, outer_mrad: float, energy: float, multiple: int) -> int:
    """Smallest fast FFT size, a multiple of `multiple`, with pixels no larger than `sampling` [Angstrom]
    whose antialiased limit on a square cell of side `extent` [Angstrom] reaches `outer_mrad` at
    `energy` [eV].

    With `multiple` = 2 x the number of unit cells across, every atomic column sits on a pixel: abTEM
    spreads off-pixel atoms over neighbouring pixels, twin does not, and the images would differ by that.
    """
    n = multiple * math.ceil(extent / sampling / multiple - 1e-9)
    while not (is_fast_size(n) and optics.cutoff_angle((n, n), (extent, extent), energy) * 1e3 >= outer_mrad):
        n += multiple
    return n


def fft_pair_gflops(shape: tuple[int, int], batch: int, repeats: int = 10) -> float:
    """Measured GFLOP/s of a batched complex64 FFT pair (ifft2 then fft2) in JAX, 5 N log2 N per FFT.

    The median of `repeats` timings of one batch of `batch` waves on the (ny, nx) grid `shape`.
    """
    import jax
    import jax.numpy as jnp

    pair = jax.jit(lambda psi: jnp.fft.fft2(jnp.fft.ifft2(psi)))
    psi = (jax.random.normal(jax.random.key(0), (batch, *shape)) + 0j).astype(jnp.complex64)
    psi = pair(psi).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        psi = pair(psi).block_until_ready()
        times.append(time.perf_counter() - start)
    return batch * pair_flops(shape) / float(np.median(times)) / 1e9


@contextlib.contextmanager
def one_core():
    """Pin every thread of this process to one CPU for the duration (Linux); elsewhere, do nothing."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = os.sched_getaffinity(0)
    for task in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(task), {min(allowed)})
    try:
        yield
    finally:
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task), allowed)


def pair_flops(shape: tuple[int, int]) -> float:
    """Flops of one forward + inverse complex FFT of N = ny * nx points: 2 * 5 N log2 N."""
    n = shape[0] * shape[1]
    return 2 * 5 * n * math.log2(n)


def run_twin(atoms, gpts: int, region, step: float) -> np.ndarray:
    """HAADF image (ny, nx) from twin; abtem_filter=True so that the potentials agree with abTEM's."""
    extent = atoms.cell.lengths()[0]
    dataset = simulate(
        atoms,
        probe=ProbeSpec(energy=ENERGY_EV, semiangle=SEMIANGLE_MRAD),
        potential=PotentialSpec(sampling=extent / gpts, slice_thickness=SLICE_THICKNESS_ANG, abtem_filter=True),
        scan=GridScan(step=step, region=region),
        detectors=[AnnularDetector(name="HAADF", inner=INNER_MRAD, outer=OUTER_MRAD)],
        precision="float32",
    )
    return dataset["HAADF"].values


def run_abtem(abtem, atoms, gpts: int, region, step: float) -> tuple[np.ndarray, np.ndarray]:
    """HAADF image (ny, nx) and scan positions (nx, ny, 2) [Angstrom] from abTEM."""
    potential = abtem.Potential(atoms, gpts=gpts, slice_thickness=SLICE_THICKNESS_ANG,
                                parametrization="lobato", projection="infinite")
    probe = abtem.Probe(energy=ENERGY_EV, semiangle_cutoff=SEMIANGLE_MRAD)
    scan = abtem.GridScan(start=region[:2], end=region[2:], sampling=step, endpoint=False)
    detector = abtem.AnnularDetector(inner=INNER_MRAD, outer=OUTER_MRAD)
    measurement = probe.scan(potential, scan=scan, detectors=detector).compute()
    return np.asarray(measurement.array).T, np.asarray(scan.get_positions())


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat), or nan elsewhere."""
    with contextlib.suppress(OSError):
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return math.nan


def timed(fn, *args):
    """fn(*args), its wall time [s] and the cores it kept busy on average (process CPU time / wall)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    wall = time.perf_counter() - start
    return result, wall, (time.process_time() - cpu) / wall


def timed_job(abtem, setup: Setup):
    """Each side twice, cold then warm: images, {name: (cold [s], warm [s], cores)}, abTEM's positions,
    and the cores other processes on the machine kept busy meanwhile."""
    job_args = (setup.atoms, setup.gpts, setup.region, setup.step)
    start, machine, own = time.perf_counter(), busy_cpu_seconds(), time.process_time()
    _, twin_cold, _ = timed(run_twin, *job_args)
    twin_image, twin_warm, twin_cores = timed(run_twin, *job_args)
    _, abtem_cold, _ = timed(run_abtem, abtem, *job_args)
    (abtem_image, positions), abtem_warm, abtem_cores = timed(run_abtem, abtem, *job_args)
    others = (busy_cpu_seconds() - machine - (time.process_time() - own)) / (time.perf_counter() - start)
    times = {"abtem": (abtem_cold, abtem_warm, abtem_cores), "twin": (twin_cold, twin_warm, twin_cores)}
    return twin_image, abtem_image, times, positions, max(others, 0.0)


class Setup(NamedTuple):
    """The benchmark job as both codes see it."""

    atoms: Atoms
    gpts: int
    region: tuple[float, float, float, float]
    step: float
    shape: tuple[int, int]
    n_slices: int
    xs: np.ndarray
    ys: np.ndarray


def make_setup(job: dict) -> Setup:
    """The structure, grid, scan region (the second unit cell along x and y) and slicing of `job`."""
    atoms = srtio3_supercell(job["repeat"], job["cells_thick"])
    extent = float(atoms.cell.lengths()[0])
    gpts = choose_gpts(extent, job["sampling"], OUTER_MRAD, ENERGY_EV, multiple=2 * job["repeat"])
    region = (LATTICE_ANG, LATTICE_ANG, 2 * LATTICE_ANG, 2 * LATTICE_ANG)
    shape = grid_shape((extent, extent), extent / gpts)
    n_slices = len(slice_edges(float(atoms.cell.lengths()[2]), SLICE_THICKNESS_ANG)) - 1
    xs, ys = GridScan(step=job["step"], region=region).coordinates((extent, extent))
    return Setup(atoms, gpts, region, job["step"], shape, n_slices, xs, ys)


def describe(setup: Setup, job: dict, abtem) -> None:
    """Print the job, the grid chosen for it and the conditions of the run."""
    extent = float(setup.atoms.cell.lengths()[0])
    limit = optics.cutoff_angle(setup.shape, (extent, extent), ENERGY_EV) * 1e3
    print(f"job: SrTiO3 [001] {job['repeat']}x{job['repeat']} cells, {job['cells_thick']} cells thick "
          f"({len(setup.atoms)} atoms), {ENERGY_EV / 1e3:g} kV, {SEMIANGLE_MRAD:g} mrad, "
          f"HAADF {INNER_MRAD:g}-{OUTER_MRAD:g} mrad")
    print(f"grid {setup.shape[0]}x{setup.shape[1]} (sampling {extent / setup.gpts:.4f} Angstrom; {job['sampling']} "
          f"requested, refined so the antialiased limit {limit:.1f} mrad covers {OUTER_MRAD:g} mrad), "
          f"{setup.n_slices} slices of {SLICE_THICKNESS_ANG:.4f} Angstrom, scan {len(setup.xs)}x{len(setup.ys)} "
          f"= {len(setup.xs) * len(setup.ys)} positions at {setup.xs[1] - setup.xs[0]:.4f} Angstrom")
    print(f"abtem {abtem.__version__}, fft={abtem.config.get('fft')}, precision={abtem.config.get('precision')}, "
          f"device={abtem.config.get('device')}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} before the runs")


def report(setup: Setup, times: dict, twin_image, abtem_image) -> None:
    """Print the timing table, the ratio, the FFT roofline figure and the image difference."""
    n_positions = len(setup.xs) * len(setup.ys)
    n_pairs = n_positions * setup.n_slices
    flops = n_pairs * pair_flops(setup.shape)
    roofline = fft_pair_gflops(setup.shape, batch=min(64, n_positions))
    with one_core():
        roofline_one = fft_pair_gflops(setup.shape, batch=min(64, n_positions))
    difference = float(np.max(np.abs(twin_image - abtem_image)))
    print()
    print(f"{'':8}{'cold [s]':>10}{'warm [s]':>10}{'cores':>7}{'GFLOP/s':>10}{'of roofline':>13}"
          f"{'of 1-core roofline':>20}")
    for name, (cold, warm, cores) in times.items():
        rate = flops / warm / 1e9
        print(f"{name:8}{cold:10.2f}{warm:10.2f}{cores:7.2f}{rate:10.2f}{rate / roofline:13.0%}"
              f"{rate / roofline_one:20.0%}")
    abtem_t, twin_t = times["abtem"], times["twin"]
    print(f"ratio abtem / twin: warm {abtem_t[1] / twin_t[1]:.2f}, cold {abtem_t[0] / twin_t[0]:.2f}")
    print(f"FFT pairs: {n_positions} positions x {setup.n_slices} slices = {n_pairs} pairs of "
          f"{setup.shape[0]}x{setup.shape[1]} points, {flops / 1e9:.2f} GFLOP at 2 x 5 N log2 N per pair")
    print(f"FFT roofline (batched complex64 ifft2 + fft2 in JAX, median of 10, measured now): "
          f"{roofline:.2f} GFLOP/s on all cores, so {flops / roofline / 1e9:.2f} s at best; "
          f"{roofline_one:.2f} GFLOP/s on one core")
    print(f"images: max |twin - abtem| = {difference:.3g} (HAADF max {float(abtem_image.max()):.4g}, "
          f"relative {difference / float(abtem_image.max()):.2g})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller job (a smoke test, seconds)")
    args = parser.parse_args(argv)
    job = JOBS["quick" if args.quick else "full"]

    import abtem

    abtem.config.set({"precision": "float32", "device": "cpu", "diagnostics.progress_bar": False})
    setup = make_setup(job)
    describe(setup, job, abtem)
    twin_image, abtem_image, times, abtem_positions, others = timed_job(abtem, setup)

    twin_positions = np.stack(np.meshgrid(setup.xs, setup.ys, indexing="ij"), -1)
    if abtem_positions.shape != twin_positions.shape or not np.allclose(abtem_positions, twin_positions):
        raise SystemExit(f"the scans differ: abTEM {abtem_positions.shape}, twin {twin_positions.shape}")
    report(setup, times, twin_image, abtem_image)
    print(f"other processes kept {others:.2f} of {os.cpu_count()} cores busy during the runs"
          + ("; the figures are noisy" if others > 0.2 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
