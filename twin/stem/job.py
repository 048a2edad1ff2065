"""A STEM job: the checked grid, slices, scan, detectors and method, and the memory it needs."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from potentials.projected import PotentialSpec, grid_shape, phase_factors, projected_potential_slices, \
    slice_edges, slice_plan, spatial_frequencies
from twin.stem import optics
from twin.stem.detectors import DETECTORS, KGrid, PixelatedDetector
from twin.stem.multislice import fresnel_propagator, transmission_functions
from twin.stem.probe import ProbeSpec, probe_fourier
from twin.stem.scan import GridScan
from twin.structures import check_atoms

PRECISIONS = {"float32": (jnp.float32, jnp.complex64), "float64": (jnp.float64, jnp.complex128)}
METHODS = ("auto", "multislice", "prism")
# Flops per second of the PRISM quadratic forms (dense matrix products) over those of FFTs on this CPU:
# on the 256 x 256 graphene job of scripts/bench_generate.py PRISM took 123 s and multislice 216 s, where
# equal weights predicted PRISM 2.4x slower (docs/benchmarks.md).
GEMM_SPEEDUP = 5.0
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


def memory_estimate(shape: tuple[int, int], n_slices: int, batch: int, precision: str, output: int = 0,
                    window: tuple[int, int] | None = None) -> int:
    """Peak bytes of a multislice scan: potential and transmission slices, the wave batch (with probe
    windows of `window` pixels: windows, plus each probe's copy of its window of every slice), and `output`
    values kept in memory."""
    real = np.dtype(PRECISIONS[precision][0]).itemsize
    pixels = shape[0] * shape[1]
    if window is None:
        return pixels * (n_slices * 3 * real + (batch * WAVE_COPIES + 8) * 2 * real) + output * real
    return (pixels * n_slices * 3 * real + window[0] * window[1] * (batch * (WAVE_COPIES + n_slices) + 8) * 2 * real
            + output * real)


def choose_batch(shape, n_slices: int, n_positions: int, precision: str, budget: int, output: int = 0,
                 window: tuple[int, int] | None = None) -> int:
    """Batch size of probes: the largest power of two up to 64 whose estimate fits in `budget` bytes,
    then evened out so that the batches of n_positions differ by at most one probe."""
    batch = min(64, n_positions)
    while batch > 1 and memory_estimate(shape, n_slices, batch, precision, output, window) > budget:
        batch //= 2
    return math.ceil(n_positions / math.ceil(n_positions / batch))


def _largest_angle(extent, sampling: float, energy: float) -> float:
    """The antialiased limit [mrad] of the grid that `sampling` [Angstrom] gives."""
    return optics.cutoff_angle(grid_shape(extent, sampling), extent, energy) * 1e3


def _check_detectors(detectors, extent, sampling: float, energy: float):
    if not detectors:
        raise ValueError("detectors=[] is not allowed; give at least one detector")
    names = [d.name for d in detectors]
    if len(set(names)) != len(names):
        raise ValueError(f"detector names {names} are not unique")
    for d in detectors:
        if not isinstance(d, DETECTORS):
            raise ValueError(f"detector {d!r} is not one of {', '.join(t.__name__ for t in DETECTORS)}")
    if sum(isinstance(d, PixelatedDetector) for d in detectors) > 1:
        raise ValueError("more than one PixelatedDetector; give one (its patterns use the dims ky, kx)")
    limit = _largest_angle(extent, sampling, energy)
    for d in detectors:
        if (d.max_angle or 0.0) > limit + 1e-9:
            needed = sampling * limit / d.max_angle
            while _largest_angle(extent, needed, energy) < d.max_angle:
                needed *= 0.999
            raise ValueError(
                f"detector {d.name} outer angle {d.max_angle:g} mrad exceeds the antialiased limit {limit:.1f} mrad "
                f"of this grid (sampling {sampling:g} Angstrom at {energy:g} eV); a sampling of "
                f"{math.floor(needed * 1e5) / 1e5:g} Angstrom or finer allows it")
    return tuple(dataclasses.replace(d, max_angle=limit) if isinstance(d, PixelatedDetector) and d.max_angle is None
                 else d for d in detectors)


@dataclass(frozen=True)
class Job:
    """Everything a scan needs that does not depend on the values one may differentiate."""

    cell: tuple[float, float, float]
    shape: tuple[int, int]
    n_slices: int
    grid: KGrid
    probe: ProbeSpec
    potential: PotentialSpec
    detectors: tuple
    positions: np.ndarray  # (n_positions, 2) probe positions (x, y) [Angstrom]
    scan_axes: tuple[np.ndarray, np.ndarray]  # (x (nx,), y (ny,)) [Angstrom]
    precision: str
    method: str = "multislice"  # "multislice" or "prism" (resolved from "auto")
    interpolation: int = 1
    window: tuple[int, int] | None = None  # (wy, wx) pixels each probe propagates in; None: the whole cell

    @property
    def detector_grid(self) -> KGrid:
        """The k-grid the detectors see: the cell's, or at PRISM interpolation f > 1 the window's, with
        (ny / f, nx / f) pixels and f times the cell's reciprocal sampling (as abTEM's SMatrix)."""
        if self.method != "prism" or self.interpolation == 1:
            return self.grid
        shape = (self.shape[0] // self.interpolation, self.shape[1] // self.interpolation)
        extent = (self.extent[0] / self.interpolation, self.extent[1] / self.interpolation)
        return KGrid(shape, extent, self.probe.wavelength)

    def window_job(self) -> Job:
        """The job on one probe window's grid: the same pixel size and slices, extent window x pixel size."""
        extent = (self.window[1] * self.extent[0] / self.shape[1], self.window[0] * self.extent[1] / self.shape[0])
        return dataclasses.replace(self, shape=self.window, cell=(*extent, self.cell[2]), window=None,
                                   grid=KGrid(self.window, extent, self.probe.wavelength))

    def window_indices(self, positions):
        """For probes at (b, 2) (x, y) [Angstrom]: rows (b, wy) and columns (b, wx) of their windows in the
        cell, and their positions in the windows [Angstrom] (within a pixel of the centre)."""
        pixel = np.array([self.extent[0] / self.shape[1], self.extent[1] / self.shape[0]])
        size = np.array([self.window[1], self.window[0]])
        corner = np.floor(positions / pixel).astype(int) - size // 2
        cols = (corner[:, :1] + np.arange(size[0])) % self.shape[1]
        rows = (corner[:, 1:] + np.arange(size[1])) % self.shape[0]
        return rows, cols, positions - corner * pixel

    @property
    def extent(self):
        return self.cell[0], self.cell[1]

    @property
    def antialias(self):
        return _antialias(self.shape, self.extent)

    @functools.cached_property
    def _frequencies(self):
        return spatial_frequencies(self.shape, self.extent)

    def transmissions(self, positions, numbers, plan=None):
        """(n_slices, ny, nx) band-limited transmission functions of atoms at `positions` (n_atoms, 3)
        [Angstrom]; `plan` (from slice_plan) fixes which atoms feed which slice, computed here when None."""
        if plan is None:
            plan = slice_plan(np.asarray(positions), numbers, self.cell, self.potential)
        plan_key = tuple(tuple((number, tuple(indices.tolist())) for number, indices in entry) for entry in plan)
        build = _transmission_builder(self.cell, self.shape, self.potential, self.precision, self.probe.energy,
                                      plan_key)
        return build(jnp.asarray(positions, dtype=PRECISIONS[self.precision][0]))

    def propagator(self, slice_thickness):
        ky, kx = self._frequencies
        k2 = jnp.asarray(ky[:, None] ** 2 + kx[None, :] ** 2, dtype=PRECISIONS[self.precision][0])
        return _fresnel_propagator(k2, slice_thickness, self.probe.wavelength,
                                   jnp.asarray(self.antialias, dtype=k2.dtype))

    def probe_k(self, coefficients=None):
        coefficients = self.probe.coefficients if coefficients is None else coefficients
        build = _probe_builder(self.probe.energy, self.probe.semiangle, self.shape, self.extent, self.precision)
        return build(coefficients)

    def phase_factors(self, positions):
        real = PRECISIONS[self.precision][0]
        ex = phase_factors(jnp.asarray(positions[:, 0] / self.extent[0], dtype=real), self.shape[1], real)
        ey = phase_factors(jnp.asarray(positions[:, 1] / self.extent[1], dtype=real), self.shape[0], real)
        return ey, ex


# Compiled builders, one per job shape, kept across calls: tracing and lowering the many small operations
# of a potential or a probe costs more than running them, so each is one compiled program built once.
_fresnel_propagator = jax.jit(fresnel_propagator, static_argnums=2)


@functools.lru_cache(maxsize=16)
def _antialias(shape, extent) -> np.ndarray:
    """The antialiasing aperture (ny, nx) of a grid of `shape` over `extent` (x, y) [Angstrom]."""
    k, _ = optics.polar_frequencies(*spatial_frequencies(shape, extent))
    return optics.antialias_aperture(k, (extent[1] / shape[0], extent[0] / shape[1]))


@functools.lru_cache(maxsize=16)
def _transmission_builder(cell, shape, potential, precision, energy, plan_key):
    real = PRECISIONS[precision][0]
    plan = tuple(tuple((number, np.asarray(indices)) for number, indices in entry) for entry in plan_key)
    antialias = _antialias(shape, (cell[0], cell[1]))
    sigma = optics.interaction_constant(energy)

    @jax.jit
    def build(positions):
        slices = projected_potential_slices(positions, None, cell, potential, dtype=real, plan=plan)
        return transmission_functions(slices, sigma, jnp.asarray(antialias, dtype=real))

    return build


@functools.lru_cache(maxsize=16)
def _probe_builder(energy, semiangle, shape, extent, precision):
    spec = ProbeSpec(energy=energy, semiangle=semiangle)
    k, phi = optics.polar_frequencies(*spatial_frequencies(shape, extent))
    angular = (spec.wavelength / extent[1], spec.wavelength / extent[0])
    return jax.jit(lambda coefficients: probe_fourier(spec, k, phi, angular, PRECISIONS[precision][1], coefficients))


def make_job(atoms, *, probe: ProbeSpec, potential: PotentialSpec, scan: GridScan, detectors: Sequence,
             precision: str = "float32", method: str = "auto", interpolation: int = 1,
             window: float | None = None) -> Job:
    """Check a job and fix its grid, slices, scan, detectors and method (no large allocation)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not allowed; allowed: {', '.join(PRECISIONS)}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed; allowed: {', '.join(METHODS)}")
    cell = check_atoms(atoms)
    extent = (cell[0], cell[1])
    shape = grid_shape(extent, potential.sampling)
    detectors = _check_detectors(tuple(detectors), extent, potential.sampling, probe.energy)
    xs, ys = scan.coordinates(extent)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    job = Job(cell=cell, shape=shape, n_slices=len(slice_edges(cell[2], potential.slice_thickness)) - 1,
              grid=KGrid(shape, extent, probe.wavelength), probe=probe, potential=potential,
              detectors=detectors, positions=np.stack([grid_x.ravel(), grid_y.ravel()], -1),
              scan_axes=(xs, ys), precision=precision)
    job = dataclasses.replace(job, window=_window_pixels(window, shape, extent))
    if job.window:
        if method == "prism" or any(isinstance(d, PixelatedDetector) for d in detectors):
            raise ValueError(f"window={window} Angstrom works with method='multislice' and annular, segmented and "
                             "centre-of-mass detectors; give window=None for PRISM or 4D-STEM output")
        method = "multislice"
    return dataclasses.replace(job, method=_choose_method(job, method, interpolation), interpolation=interpolation)


def fft_friendly(n: int) -> int:
    """The smallest integer >= max(n, 1) whose prime factors are 2, 3, 5 and 7 (fast FFT sizes)."""
    n = max(int(n), 1)  # 0 would divide by 2 forever
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _window_pixels(window, shape, extent) -> tuple[int, int] | None:
    """(wy, wx) [pixels], FFT-friendly, for a window side `window` [Angstrom]; None if it spans the cell."""
    if window is None:
        return None
    if not (isinstance(window, (int, float)) and math.isfinite(window) and window > 0):
        raise ValueError(f"window={window!r} is not allowed; it must be a positive length [Angstrom] or None")
    pixels = tuple(fft_friendly(math.ceil(window / (extent[i] / shape[1 - i]) - 1e-9)) for i in (1, 0))
    return None if pixels[0] >= shape[0] or pixels[1] >= shape[1] else pixels


def _choose_method(job: Job, method: str, interpolation: int) -> str:
    """PRISM when asked, or under "auto" when it is exact (interpolation 1) and needs fewer operations.

    Operations counted: one FFT pair (10 N log2 N flops) per slice per probe position for multislice; one
    per slice per plane wave for the S-matrix, plus the detection products (`prism.detection_sizes`),
    weighted by 1 / GEMM_SPEEDUP."""
    from twin.stem import prism

    if not (isinstance(interpolation, int) and interpolation >= 1):
        raise ValueError(f"interpolation={interpolation!r} is not allowed; it must be an integer >= 1")
    if method == "multislice" or (method == "auto" and interpolation != 1):
        if interpolation != 1:
            raise ValueError(f"interpolation={interpolation} needs method='prism' (multislice does not interpolate)")
        return "multislice"
    prism.check_interpolation(job.shape, interpolation)
    if method == "prism":
        return "prism"
    # Plane waves inside the aperture, counted on the integer frequencies (m_y / y, m_x / x) near it.
    k_max = job.probe.semiangle * 1e-3 / job.probe.wavelength + 0.5 / min(job.extent)
    m_x, m_y = (np.arange(-math.ceil(k_max * e), math.ceil(k_max * e) + 1) / e for e in job.extent)
    n_beams = int(np.count_nonzero(np.hypot(m_y[:, None], m_x[None, :]) <= k_max))
    n_forms, n_pattern_pixels = prism.detection_sizes(job.detectors, job.grid)
    pixels = job.shape[0] * job.shape[1]
    fft_pair = 10 * pixels * math.log2(pixels)
    multislice_cost = len(job.positions) * job.n_slices * fft_pair
    # Complex multiply-adds (8 flops): the quadratic forms (built once, then evaluated per position) and the
    # (positions x beams) x (beams x pattern pixels) products of 4D patterns.
    quadratic_forms = 8 * n_forms * n_beams**2 * (pixels + len(job.positions)) / GEMM_SPEEDUP
    patterns = 8 * n_beams * n_pattern_pixels * len(job.positions) / GEMM_SPEEDUP
    prism_cost = n_beams * job.n_slices * fft_pair + quadratic_forms + patterns
    # The S-matrix in Fourier and real space must fit in half the memory available.
    smatrix_bytes = 4 * np.dtype(PRECISIONS[job.precision][0]).itemsize * n_beams * pixels
    fits = smatrix_bytes < available_memory() / 2
    return "prism" if prism_cost < multislice_cost and fits else "multislice"


def values_per_position(detector, grid: KGrid) -> int:
    """How many values `detector` records at one probe position (its masks, for integrating detectors)."""
    return int(np.prod([len(v) for v in detector.dims(grid).values()] or [1]))


def output_size(job: Job) -> int:
    """Values one scan records: positions times the values per position of every detector."""
    return sum(values_per_position(d, job.detector_grid) for d in job.detectors) * len(job.positions)


def plan_memory(job: Job, memory_limit: int | None, output: int) -> int:
    """The batch size, or a MemoryError naming the estimate; `output` values are kept in memory."""
    budget = available_memory() if memory_limit is None else memory_limit
    batch = choose_batch(job.shape, job.n_slices, len(job.positions), job.precision, budget, output, job.window)
    estimate = memory_estimate(job.shape, job.n_slices, batch, job.precision, output, job.window)
    if estimate > budget:
        raise MemoryError(f"the job needs an estimated {estimate / 2**30:.2f} GiB ({job.n_slices} slices of "
                          f"{job.shape[0]}x{job.shape[1]} pixels, {output} output values in memory) but "
                          f"{budget / 2**30:.2f} GiB is available; use a coarser sampling, thicker slices, "
                          "a coarser scan, a smaller diffraction max_angle, or write to a file (twin.stem."
                          "simulate_to_file, the CLI), which streams the output to disk")
    return batch
