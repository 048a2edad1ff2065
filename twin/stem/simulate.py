"""Scanned-probe STEM images by multislice: the public entry point."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from potentials.projected import PotentialSpec, grid_shape, phase_factors, projected_potential_slices, \
    slice_edges, spatial_frequencies
from twin.stem import optics
from twin.stem.detectors import AnnularDetector
from twin.stem.multislice import fresnel_propagator, scan_intensities, transmission_functions
from twin.stem.probe import ProbeSpec, probe_fourier
from twin.stem.scan import GridScan
from twin.structures import check_atoms

PRECISIONS = {"float32": (jnp.float32, jnp.complex64), "float64": (jnp.float64, jnp.complex128)}
# Working copies of one wave batch held at once by the FFT-based step (input, output, FFT scratch).
WAVE_COPIES = 4


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable on Linux)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_estimate(shape: tuple[int, int], n_slices: int, batch: int, precision: str) -> int:
    """Peak bytes of a multislice scan: potential and transmission slices plus the wave batch."""
    real = np.dtype(PRECISIONS[precision][0]).itemsize
    pixels = shape[0] * shape[1]
    return pixels * (n_slices * 3 * real + (batch * WAVE_COPIES + 8) * 2 * real)


def choose_batch(shape, n_slices: int, n_positions: int, precision: str, budget: int) -> int:
    """Batch size of probes: the largest power of two up to 64 whose estimate fits in `budget` bytes,
    then evened out so that the batches of n_positions differ by at most one probe."""
    batch = min(64, n_positions)
    while batch > 1 and memory_estimate(shape, n_slices, batch, precision) > budget:
        batch //= 2
    return math.ceil(n_positions / math.ceil(n_positions / batch))


def _largest_angle(extent, sampling: float, energy: float) -> float:
    """The antialiased limit [mrad] of the grid that `sampling` [Angstrom] gives."""
    return optics.cutoff_angle(grid_shape(extent, sampling), extent, energy) * 1e3


def _check_detectors(detectors, extent, sampling: float, energy: float):
    limit = _largest_angle(extent, sampling, energy)
    for d in detectors:
        if d.outer > limit + 1e-9:
            needed = sampling * limit / d.outer
            while _largest_angle(extent, needed, energy) < d.outer:
                needed *= 0.999
            raise ValueError(
                f"detector {d.name} outer angle {d.outer:g} mrad exceeds the antialiased limit {limit:.1f} mrad "
                f"of this grid (sampling {sampling:g} Angstrom at {energy:g} eV); a sampling of "
                f"{math.floor(needed * 1e5) / 1e5:g} Angstrom or finer allows it")


def simulate(atoms, *, probe: ProbeSpec, potential: PotentialSpec, scan: GridScan,
             detectors: Sequence[AnnularDetector], precision: str = "float32",
             progress: bool = False, memory_limit: int | None = None) -> xr.Dataset:
    """Simulate annular-detector STEM images of `atoms` by multislice.

    atoms: ase.Atoms with an orthorhombic periodic cell; the beam runs along +z through the whole cell
    height. Returns an xarray.Dataset with one (y, x) image per detector, in fractions of the incident
    intensity, coordinates the probe positions [Angstrom], attrs with every parameter and its unit.
    memory_limit: bytes the job may use (default: the memory available now); a job whose estimate
    exceeds it is refused with the estimate in the message.

    Example:
        simulate(atoms, probe=ProbeSpec(energy=80e3, semiangle=25), potential=PotentialSpec(sampling=0.05,
                 slice_thickness=1), scan=GridScan(step=0.2), detectors=[AnnularDetector(name="HAADF",
                 inner=70, outer=200)])
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not allowed; allowed: {', '.join(PRECISIONS)}")
    if not detectors:
        raise ValueError("detectors=[] is not allowed; give at least one detector")
    names = [d.name for d in detectors]
    if len(set(names)) != len(names):
        raise ValueError(f"detector names {names} are not unique")
    cell = check_atoms(atoms)
    extent = (cell[0], cell[1])
    shape = grid_shape(extent, potential.sampling)
    n_slices = len(slice_edges(cell[2], potential.slice_thickness)) - 1
    _check_detectors(detectors, extent, potential.sampling, probe.energy)
    xs, ys = scan.coordinates(extent)
    budget = available_memory() if memory_limit is None else memory_limit
    batch = choose_batch(shape, n_slices, len(xs) * len(ys), precision, budget)
    estimate = memory_estimate(shape, n_slices, batch, precision)
    if estimate > budget:
        raise MemoryError(f"the job needs an estimated {estimate / 2**30:.2f} GiB ({n_slices} slices of "
                          f"{shape[0]}x{shape[1]} pixels) but {budget / 2**30:.2f} GiB is available; "
                          "use a coarser sampling or thicker slices")
    with jax.enable_x64(precision == "float64"):
        images = _run(atoms, cell, shape, probe, potential, xs, ys, detectors, precision, batch, progress)
    return _dataset(images, xs, ys, detectors, probe, potential, shape, extent, n_slices, cell, precision)


def _run(atoms, cell, shape, probe, potential, xs, ys, detectors, precision, batch, progress):
    real, complex_ = PRECISIONS[precision]
    extent = (cell[0], cell[1])
    sampling = (extent[1] / shape[0], extent[0] / shape[1])
    ky, kx = spatial_frequencies(shape, extent)
    k, phi = optics.polar_frequencies(ky, kx)
    antialias = jnp.asarray(optics.antialias_aperture(k, sampling), dtype=real)
    slices = projected_potential_slices(atoms.positions, atoms.numbers, cell, potential, dtype=real)
    transmissions = transmission_functions(slices, optics.interaction_constant(probe.energy), antialias)
    del slices
    dz = cell[2] / transmissions.shape[0]
    propagator = fresnel_propagator(jnp.asarray(k**2, dtype=real), dz, probe.wavelength, antialias)
    angular_sampling = (probe.wavelength / extent[1], probe.wavelength / extent[0])
    probe_k = probe_fourier(probe, k, phi, angular_sampling, complex_)
    alpha = k * probe.wavelength
    masks = jnp.asarray(np.stack([d.mask(alpha) for d in detectors]), dtype=real)

    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    positions = np.stack([grid_x.ravel(), grid_y.ravel()], -1)
    n = len(positions)
    out = np.zeros((n, len(detectors)))
    with _progress_bar(progress, n) as advance:
        for start in range(0, n, batch):
            chunk = positions[start:start + batch]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
            ex = phase_factors(jnp.asarray(padded[:, 0] / extent[0], dtype=real), shape[1], real)
            ey = phase_factors(jnp.asarray(padded[:, 1] / extent[1], dtype=real), shape[0], real)
            result = scan_intensities(probe_k, ey, ex, transmissions, propagator, masks)
            out[start:start + len(chunk)] = np.asarray(result)[: len(chunk)]
            advance(len(chunk))
    return out.reshape(len(ys), len(xs), len(detectors))


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int):
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("multislice (probe positions)", total=total)
        yield lambda n: bar.advance(task, n)


def _dataset(images, xs, ys, detectors, probe, potential, shape, extent, n_slices, cell, precision):
    attrs = {
        "energy_eV": float(probe.energy),
        "wavelength_ang": probe.wavelength,
        "semiangle_mrad": float(probe.semiangle),
        **{f"{name}_{'rad' if name.startswith('phi') else 'ang'}": float(value)
           for name, value in sorted(probe.coefficients.items())},
        "sampling_requested_ang": float(potential.sampling),
        "sampling_x_ang": extent[0] / shape[1],
        "sampling_y_ang": extent[1] / shape[0],
        "gpts_x": shape[1],
        "gpts_y": shape[0],
        "slice_thickness_requested_ang": float(potential.slice_thickness),
        "slice_thickness_ang": cell[2] / n_slices,
        "n_slices": n_slices,
        "cell_ang": np.asarray(cell, dtype=np.float64),
        "parametrization": potential.parametrization,
        "projection": potential.projection,
        "precision": precision,
        "scan_step_x_ang": float(xs[1] - xs[0]) if len(xs) > 1 else float(extent[0]),
        "scan_step_y_ang": float(ys[1] - ys[0]) if len(ys) > 1 else float(extent[1]),
        "antialias_cutoff_angle_mrad": optics.cutoff_angle(shape, extent, probe.energy) * 1e3,
        "simulator": "twin.stem multislice",
    }
    data = {
        d.name: (("y", "x"), images[..., i], {"inner_mrad": float(d.inner), "outer_mrad": float(d.outer),
                                              "units": "fraction of incident intensity"})
        for i, d in enumerate(detectors)
    }
    coords = {"x": ("x", xs, {"units": "Angstrom"}), "y": ("y", ys, {"units": "Angstrom"})}
    return xr.Dataset(data, coords=coords, attrs=attrs)
