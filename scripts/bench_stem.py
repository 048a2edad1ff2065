"""Benchmark: abTEM and twin as whole processes on the same STEM jobs, measured in the same run.

Each side runs as a separate process, timed by wall clock from launch to exit (imports, structure input,
JIT compilation, the scan and writing the image): twin as `twin simulate stem ...`, abTEM as a generated
Python script (float32, cpu) that saves its image as .npy. Each side runs twice per job. twin's first run
gets a fresh, empty JAX compilation cache (XDG_CACHE_HOME in a temporary folder) and its second run reuses
that folder, as a second `twin simulate stem` reuses ~/.cache/twin/jax; abTEM keeps no compiled code
between processes on these jobs. Prints per job the wall times, the ratio abTEM / twin, the agreement of
the two HAADF images, the load on the machine before and during each run, and twin's achieved GFLOP/s
(multislice FFT pairs over whole-process time) against a batched JAX FFT pair measured in this run.

Jobs: (a) 3x2 graphene cells with one Si, 60 kV; (b) SrTiO3 [001], 13 cells (50.8 Angstrom) thick,
200 kV; (c) a 51 x 51 Angstrom graphene field of view, 60 kV, a 10 x 10 Angstrom scan in its middle.

Run with: .venv/bin/python scripts/bench_stem.py [--quick] [--jobs a,b,c]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import ase.io  # noqa: E402
from ase import Atoms  # noqa: E402
from bench_multislice import busy_cpu_seconds, fft_pair_gflops, pair_flops  # noqa: E402

from potentials.projected import grid_shape, slice_edges  # noqa: E402
from twin.stem import optics  # noqa: E402
from twin.stem.scan import GridScan  # noqa: E402
from twin.structures import graphene  # noqa: E402

TWIN = Path(sys.executable).with_name("twin")
SRTIO3_ANG = 3.905
# Cores other processes may keep busy before a timing counts as taken on a quiet machine.
QUIET_CORES = 0.3
ATTEMPTS = 3
# Loaded runs are repeated only while the benchmark has run less than this [s], so it ends in ~10 minutes.
RETRY_BUDGET_S = 360.0
START = time.monotonic()

ABTEM_SCRIPT = """\
import ase.io
import abtem
import numpy as np

abtem.config.set({{"precision": "float32", "device": "cpu", "diagnostics.progress_bar": False}})
atoms = ase.io.read({structure!r})
potential = abtem.Potential(atoms, gpts={gpts!r}, slice_thickness={slice_thickness!r},
                            parametrization="lobato", projection="infinite")
probe = abtem.Probe(energy={energy!r}, semiangle_cutoff={semiangle!r})
scan = abtem.GridScan(start={start!r}, end={end!r}, sampling={step!r}, endpoint=False)
detector = abtem.AnnularDetector(inner={inner!r}, outer={outer!r})
measurement = probe.scan(potential, scan=scan, detectors=detector).compute()
np.save({image!r}, np.asarray(measurement.array))
np.save({positions!r}, np.asarray(scan.get_positions()))
"""


class Job(NamedTuple):
    """One benchmark job; lengths [Angstrom], energy [eV], angles [mrad]; region (x0, y0, x1, y1)."""

    title: str
    atoms: Atoms
    energy: float
    semiangle: float
    sampling: float
    slice_thickness: float
    step: float
    region: tuple[float, float, float, float]
    inner: float
    outer: float


class Run(NamedTuple):
    """One timed process: wall time [s], cores it kept busy, load average and busy cores of other
    processes in the second before it started, busy cores of other processes while it ran."""

    wall: float
    cores: float
    load: float
    others_before: float
    others: float


def mid_slice(atoms: Atoms, shift: float) -> Atoms:
    """`atoms` moved up by `shift` [Angstrom], so atomic planes on slice edges sit mid-slice instead."""
    atoms = atoms.copy()
    atoms.positions[:, 2] += shift
    return atoms


def graphene_job(repeat, energy, sampling, slice_thickness, step, inner, outer, window=None, si=False) -> Job:
    """Graphene `repeat` orthorhombic cells, optionally one Si near the centre, scanned over the whole cell
    or a `window` [Angstrom] square in its middle."""
    atoms = mid_slice(graphene(repeat), slice_thickness / 2)
    lx, ly = (float(v) for v in atoms.cell.lengths()[:2])
    if si:
        atoms.numbers[int(np.argmin(np.linalg.norm(atoms.positions[:, :2] - [lx / 2, ly / 2], axis=1)))] = 14
    region = (0.0, 0.0, lx, ly) if window is None else \
        (lx / 2 - window / 2, ly / 2 - window / 2, lx / 2 + window / 2, ly / 2 + window / 2)
    title = (f"graphene {repeat[0]}x{repeat[1]} cells ({lx:.1f} x {ly:.1f} A){', one Si' if si else ''}, "
             f"{energy / 1e3:g} kV")
    return Job(title, atoms, energy, 30.0, sampling, slice_thickness, step, region, inner, outer)


def srtio3_job(cells_thick: int, step: float) -> Job:
    """SrTiO3 [001], 2 x 2 cells, `cells_thick` thick; 0.0434 A gives a 180 x 180 grid (atoms on pixels)
    whose antialiased limit at 200 kV is 192.7 mrad; 1.953 A slices cut the height into half cells."""
    a = SRTIO3_ANG
    scaled = [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    cell = Atoms("SrTiO3", scaled_positions=scaled, cell=[a, a, a], pbc=True)
    atoms = mid_slice(cell.repeat((2, 2, cells_thick)), a / 4)
    title = f"SrTiO3 [001] 2x2 cells, {cells_thick} cells ({cells_thick * a:.1f} A) thick, 200 kV"
    return Job(title, atoms, 200e3, 20.0, 0.0434, 1.953, step, (0.0, 0.0, a, a), 70.0, 180.0)


def make_jobs(quick: bool) -> dict[str, Job]:
    """The jobs of the issue, or smaller ones of the same kind for a smoke test."""
    if quick:
        return {"a": graphene_job((2, 1), 60e3, 0.05, 1.0, 0.4, 80.0, 200.0, si=True),
                "b": srtio3_job(3, 0.6),
                "c": graphene_job((8, 5), 60e3, 0.1, 2.0, 1.0, 60.0, 140.0, window=4.0)}
    return {"a": graphene_job((3, 2), 60e3, 0.05, 1.0, 0.2, 80.0, 200.0, si=True),
            "b": srtio3_job(13, 0.3),
            "c": graphene_job((21, 12), 60e3, 0.1, 2.0, 0.5, 60.0, 140.0, window=10.0)}


def checked_sampling(job: Job) -> tuple[float, str]:
    """The job's sampling [Angstrom], or the coarsest finer one whose antialiased limit reaches the outer
    detector angle (as twin suggests when it refuses), and a note saying which."""
    extent = tuple(float(v) for v in job.atoms.cell.lengths()[:2])
    limit = optics.cutoff_angle(grid_shape(extent, job.sampling), extent, job.energy) * 1e3
    if limit >= job.outer:
        return job.sampling, f"antialiased limit {limit:.1f} mrad covers {job.outer:g} mrad"
    sampling = job.sampling * limit / job.outer
    while optics.cutoff_angle(grid_shape(extent, sampling), extent, job.energy) * 1e3 < job.outer:
        sampling *= 0.999
    sampling = math.floor(sampling * 1e5) / 1e5
    return sampling, (f"{job.sampling:g} A reaches only {limit:.1f} mrad; both tools use {sampling:g} A, "
                      f"the sampling twin suggests")


def children_cpu() -> float:
    """CPU seconds [s] used so far by this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def others_now(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes over the next `seconds`, from /proc/stat."""
    busy, own = busy_cpu_seconds(), time.process_time()
    time.sleep(seconds)
    return max((busy_cpu_seconds() - busy - (time.process_time() - own)) / seconds, 0.0)


def wait_for_quiet(limit_s: float = 20.0) -> float:
    """Busy cores of other processes, waiting up to `limit_s` [s] for them to drop below QUIET_CORES."""
    deadline = time.monotonic() + limit_s
    others = others_now()
    while others > QUIET_CORES and time.monotonic() < deadline:
        time.sleep(2.0)
        others = others_now()
    return others


def timed(command: list[str], env: dict) -> Run:
    """Run `command` to its exit and time it; a failure stops the benchmark with the process's output."""
    before = wait_for_quiet()
    load = os.getloadavg()[0]
    busy, child, own, start = busy_cpu_seconds(), children_cpu(), time.process_time(), time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    child = children_cpu() - child
    others = max((busy_cpu_seconds() - busy - child - (time.process_time() - own)) / wall, 0.0)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return Run(wall, child / wall, load, before, others)


def quiet_run(command: list[str], env_for_attempt) -> Run:
    """`command` timed, repeated (up to ATTEMPTS times, within RETRY_BUDGET_S) while other processes load
    the machine; the least loaded attempt is kept. `env_for_attempt()` gives each attempt's environment."""
    best = None
    for _ in range(ATTEMPTS):
        run = timed(command, env_for_attempt())
        best = run if best is None or run.others < best.others else best
        if best.others <= QUIET_CORES or time.monotonic() - START > RETRY_BUDGET_S:
            return best
        print(f"    (other processes kept {run.others:.2f} cores busy; running again)", flush=True)
    return best


def run_abtem(job: Job, structure: Path, gpts: tuple[int, int], folder: Path):
    """abTEM twice as a whole process: the runs, its image (x, y) and its scan positions (nx, ny, 2)."""
    image, positions, script = folder / "abtem.npy", folder / "abtem_positions.npy", folder / "abtem_job.py"
    script.write_text(ABTEM_SCRIPT.format(
        structure=str(structure), gpts=gpts, slice_thickness=job.slice_thickness, energy=job.energy,
        semiangle=job.semiangle, start=job.region[:2], end=job.region[2:], step=job.step, inner=job.inner,
        outer=job.outer, image=str(image), positions=str(positions)))
    runs = [quiet_run([sys.executable, str(script)], lambda: dict(os.environ)) for _ in range(2)]
    return runs, np.load(image), np.load(positions)


def twin_command(job: Job, structure: Path, sampling: float, method: list[str], out: Path) -> list[str]:
    """The `twin simulate stem` command line of `job`, writing to `out`."""
    region = ",".join(repr(float(v)) for v in job.region)
    return [str(TWIN), "simulate", "stem", str(structure), "--energy", repr(job.energy),
            "--semiangle", repr(job.semiangle), "--sampling", repr(sampling),
            "--slice-thickness", repr(job.slice_thickness), "--scan-step", repr(job.step),
            f"--scan-region={region}", "--detector", f"HAADF={job.inner:g}:{job.outer:g}",
            "--precision", "float32", *method, "--out", str(out)]


def run_twin(job: Job, structure: Path, sampling: float, folder: Path, method: list[str]):
    """twin's CLI twice, the first with an empty compilation cache (a fresh one for each attempt) that the
    second reuses: the runs and the dataset of the second run."""
    import xarray as xr

    out, command = folder / "twin.h5", twin_command(job, structure, sampling, method, folder / "twin.h5")
    with contextlib.ExitStack() as stack:
        caches = []

        def fresh_cache() -> dict:
            caches.append(stack.enter_context(tempfile.TemporaryDirectory(dir=folder)))
            return {**os.environ, "XDG_CACHE_HOME": caches[-1]}

        cold = quiet_run(command, fresh_cache)
        warm = quiet_run(command, lambda: {**os.environ, "XDG_CACHE_HOME": caches[-1]})
    return [cold, warm], xr.load_dataset(out, engine="h5netcdf")


def twin_methods() -> list[tuple[str, list[str]]]:
    """twin's variants to time: its default, and `--method multislice` too once the CLI has --method."""
    done = subprocess.run([str(TWIN), "simulate", "stem", "--help"], capture_output=True, text=True)
    if "--method" in done.stdout:
        return [("twin default", []), ("twin --method multislice", ["--method", "multislice"])]
    return [("twin", [])]


class Plan(NamedTuple):
    """What a job costs: grid (ny, nx), slices, scan positions (x (nx,), y (ny,)) [Angstrom], FFT pairs."""

    shape: tuple[int, int]
    n_slices: int
    xs: np.ndarray
    ys: np.ndarray
    pairs: int


def make_plan(job: Job, sampling: float) -> Plan:
    """The grid, slicing and scan that both tools compute for `job` at `sampling` [Angstrom]."""
    lx, ly, lz = (float(v) for v in job.atoms.cell.lengths())
    shape = grid_shape((lx, ly), sampling)
    n_slices = len(slice_edges(lz, job.slice_thickness)) - 1
    xs, ys = GridScan(step=job.step, region=job.region).coordinates((lx, ly))
    return Plan(shape, n_slices, xs, ys, len(xs) * len(ys) * n_slices)


def agreement(dataset, abtem_image: np.ndarray, abtem_positions: np.ndarray, plan: Plan) -> tuple[float, float]:
    """max |twin - abTEM| and the relative L2 difference ||twin - abTEM|| / ||abTEM|| of the HAADF images,
    after checking that both scanned the same positions."""
    twin_positions = np.stack(np.meshgrid(dataset["x"].values, dataset["y"].values, indexing="ij"), -1)
    if twin_positions.shape != abtem_positions.shape or not np.allclose(twin_positions, abtem_positions, atol=1e-5):
        raise SystemExit(f"the scans differ: abTEM {abtem_positions.shape}, twin {twin_positions.shape}")
    difference = dataset["HAADF"].values - abtem_image.T
    return float(np.abs(difference).max()), float(np.linalg.norm(difference) / np.linalg.norm(abtem_image))


def describe(name: str, job: Job, sampling: float, note: str, plan: Plan) -> None:
    """Print what job `name` computes."""
    flops = plan.pairs * pair_flops(plan.shape)
    print(f"\n({name}) {job.title}, {len(job.atoms)} atoms, {job.semiangle:g} mrad, "
          f"HAADF {job.inner:g}-{job.outer:g} mrad")
    print(f"    sampling {sampling:g} A ({note}): gpts (nx, ny) = ({plan.shape[1]}, {plan.shape[0]}); "
          f"{plan.n_slices} slices of {float(job.atoms.cell.lengths()[2]) / plan.n_slices:.4f} A; scan "
          f"{len(plan.xs)} x {len(plan.ys)} = {len(plan.xs) * len(plan.ys)} positions at {job.step:g} A over "
          f"x {job.region[0]:.2f}-{job.region[2]:.2f}, y {job.region[1]:.2f}-{job.region[3]:.2f} A")
    print(f"    multislice work: {plan.pairs} FFT pairs (positions x slices), {flops / 1e9:.1f} GFLOP "
          f"at 2 x 5 N log2 N per pair", flush=True)


def report(sides: dict[str, list[Run]], plan: Plan, roofline: float, error: tuple[float, float],
           haadf_max: float) -> list[str]:
    """Print the job's table and return its summary rows (markdown)."""
    flops = plan.pairs * pair_flops(plan.shape)
    abtem = sides["abTEM"]
    print(f"    {'':26}{'run':>4}{'wall [s]':>10}{'abTEM/this':>12}{'cores':>7}{'GFLOP/s':>9}{'of FFT':>8}"
          f"{'load avg':>10}{'others before':>15}{'others during':>15}")
    rows = []
    for name, runs in sides.items():
        for i, run in enumerate(runs):
            rate = flops / run.wall / 1e9
            print(f"    {name:26}{i + 1:4}{run.wall:10.2f}{abtem[i].wall / run.wall:12.2f}{run.cores:7.2f}"
                  f"{rate:9.2f}{rate / roofline:8.0%}{run.load:10.2f}{run.others_before:15.2f}{run.others:15.2f}")
        if name != "abTEM":
            rows.append((name, [r.wall for r in runs], [a.wall / r.wall for a, r in zip(abtem, runs)],
                         [flops / r.wall / 1e9 for r in runs]))
    print(f"    FFT roofline (batched complex64 ifft2 + fft2 in JAX on this grid, this machine): {roofline:.2f} "
          f"GFLOP/s; GFLOP/s above = multislice FFT work / whole-process wall time (a rough figure; for PRISM "
          f"runs an equivalent rate, as PRISM does not do that work)")
    print(f"    HAADF images, {list(sides)[1]} against abTEM: max |dI| = {error[0]:.3g} (HAADF max {haadf_max:.3g}), "
          f"relative L2 = {error[1]:.3g}", flush=True)
    return rows


def measure_roofline(plan: Plan) -> float:
    """GFLOP/s of a batched JAX FFT pair on the job's grid (batch 64 or the scan, if smaller), the best of
    three measurements taken once other processes leave the machine quiet (or after waiting 20 s)."""
    others = wait_for_quiet()
    roofline = max(fft_pair_gflops(plan.shape, batch=min(64, len(plan.xs) * len(plan.ys))) for _ in range(3))
    print(f"    (FFT roofline measured with other processes keeping {others:.2f} cores busy just before)")
    return roofline


def run_job(name: str, job: Job, methods, folder: Path) -> list[str]:
    """Time both tools on `job`, print the results, and return the summary lines (markdown rows)."""
    sampling, note = checked_sampling(job)
    plan = make_plan(job, sampling)
    describe(name, job, sampling, note, plan)
    structure = folder / f"job_{name}.xyz"
    ase.io.write(structure, job.atoms, format="extxyz")
    abtem_runs, abtem_image, abtem_positions = run_abtem(job, structure, (plan.shape[1], plan.shape[0]), folder)
    sides, errors = {"abTEM": abtem_runs}, []
    for label, method in methods:
        runs, dataset = run_twin(job, structure, sampling, folder, method)
        if "method" in dataset.attrs and not method:
            label = f"{label} ({dataset.attrs['method']})"
        sides[label] = runs
        errors.append(agreement(dataset, abtem_image, abtem_positions, plan))
    roofline = measure_roofline(plan)
    rows = report(sides, plan, roofline, errors[0], float(abtem_image.max()))
    for label, error in zip(list(sides)[2:], errors[1:]):
        print(f"    HAADF images, {label} against abTEM: max |dI| = {error[0]:.3g}, relative L2 = {error[1]:.3g}")
    a = sides["abTEM"]
    return [f"| ({name}) | {label} | {a[0].wall:.1f} / {a[1].wall:.1f} | {w[0]:.1f} / {w[1]:.1f} | "
            f"{r[0]:.2f} / {r[1]:.2f} | {g[0]:.2f} / {g[1]:.2f} ({g[1] / roofline:.0%} of {roofline:.1f}) | "
            f"{error[0]:.2g} / {error[1]:.2g} | {max(x.others for x in a + sides[label]):.2f} |"
            for (label, w, r, g), error in zip(rows, errors)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller jobs of the same kind (a smoke test)")
    parser.add_argument("--jobs", default="a,b,c", help="comma-separated jobs to run, from a,b,c [default: a,b,c]")
    args = parser.parse_args(argv)
    jobs = make_jobs(args.quick)
    chosen = [name.strip() for name in args.jobs.split(",") if name.strip()]
    if not chosen or not set(chosen) <= set(jobs):
        parser.error(f"--jobs {args.jobs!r}: choose from {','.join(jobs)}")

    import abtem
    import jax

    methods = twin_methods()
    print(f"abTEM {abtem.__version__} (float32, cpu, fft={abtem.config.get('fft')}), jax {jax.__version__}; "
          f"{os.cpu_count()} CPUs; twin variants: {', '.join(label for label, _ in methods)}")
    print("wall time = launch to exit of the whole process (imports, JIT compilation, scan, output); "
          "twin's run 1 starts with an empty JAX compilation cache, run 2 reuses it (as ~/.cache/twin/jax)")
    summary = []
    with tempfile.TemporaryDirectory(prefix="bench_stem_") as folder:
        for name in chosen:
            job_folder = Path(folder) / name
            job_folder.mkdir()
            summary += run_job(name, jobs[name], methods, job_folder)
    print("\n| job | twin | abTEM [s] run 1 / 2 | twin [s] run 1 / 2 | abTEM / twin 1 / 2 | twin GFLOP/s 1 / 2 "
          "(run 2 of FFT roofline) | max dI / rel L2 | others [cores] |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
