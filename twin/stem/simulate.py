"""Scanned-probe STEM by multislice: the public entry point `simulate` and its differentiable twin
`make_stem_function`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from potentials.projected import PotentialSpec, grid_shape, phase_factors, projected_potential_slices, \
    slice_edges, slice_plan
from twin.stem import optics
from twin.stem.detectors import DETECTORS, CenterOfMassDetector, KGrid, PixelatedDetector
from twin.stem.multislice import fresnel_propagator, multislice, shifted_probes, transmission_functions
from twin.stem.probe import ProbeSpec, probe_fourier
from twin.stem.scan import GridScan
from twin.structures import check_atoms

PRECISIONS = {"float32": (jnp.float32, jnp.complex64), "float64": (jnp.float64, jnp.complex128)}
METHODS = ("auto", "multislice", "prism")
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


def memory_estimate(shape: tuple[int, int], n_slices: int, batch: int, precision: str, output: int = 0) -> int:
    """Peak bytes of a multislice scan: potential and transmission slices, the wave batch, and `output`
    values per scan kept in memory."""
    real = np.dtype(PRECISIONS[precision][0]).itemsize
    pixels = shape[0] * shape[1]
    return pixels * (n_slices * 3 * real + (batch * WAVE_COPIES + 8) * 2 * real) + output * real


def choose_batch(shape, n_slices: int, n_positions: int, precision: str, budget: int, output: int = 0) -> int:
    """Batch size of probes: the largest power of two up to 64 whose estimate fits in `budget` bytes,
    then evened out so that the batches of n_positions differ by at most one probe."""
    batch = min(64, n_positions)
    while batch > 1 and memory_estimate(shape, n_slices, batch, precision, output) > budget:
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

    @property
    def extent(self):
        return self.cell[0], self.cell[1]

    @functools.cached_property
    def antialias(self):
        k, _ = optics.polar_frequencies(*self._frequencies)
        sampling = (self.extent[1] / self.shape[0], self.extent[0] / self.shape[1])
        return optics.antialias_aperture(k, sampling)

    @functools.cached_property
    def _frequencies(self):
        from potentials.projected import spatial_frequencies

        return spatial_frequencies(self.shape, self.extent)

    def transmissions(self, positions, numbers, plan=None):
        """(n_slices, ny, nx) band-limited transmission functions; one compiled program (compiling the
        many small operations one by one costs more than running them)."""
        real = PRECISIONS[self.precision][0]
        if plan is None:
            plan = slice_plan(np.asarray(positions), numbers, self.cell, self.potential)

        @jax.jit
        def build(positions):
            slices = projected_potential_slices(positions, numbers, self.cell, self.potential, dtype=real,
                                                plan=plan)
            antialias = jnp.asarray(self.antialias, dtype=real)
            return transmission_functions(slices, optics.interaction_constant(self.probe.energy), antialias)

        return build(jnp.asarray(positions, dtype=real))

    def propagator(self, slice_thickness):
        ky, kx = self._frequencies
        k2 = jnp.asarray(ky[:, None] ** 2 + kx[None, :] ** 2, dtype=PRECISIONS[self.precision][0])
        return jax.jit(fresnel_propagator, static_argnums=2)(k2, slice_thickness, self.probe.wavelength,
                                                             jnp.asarray(self.antialias, dtype=k2.dtype))

    def probe_k(self, coefficients=None):
        k, phi = optics.polar_frequencies(*self._frequencies)
        angular = (self.probe.wavelength / self.extent[1], self.probe.wavelength / self.extent[0])
        coefficients = self.probe.coefficients if coefficients is None else coefficients
        build = jax.jit(lambda c: probe_fourier(self.probe, k, phi, angular, PRECISIONS[self.precision][1], c))
        return build(coefficients)

    def phase_factors(self, positions):
        real = PRECISIONS[self.precision][0]
        ex = phase_factors(jnp.asarray(positions[:, 0] / self.extent[0], dtype=real), self.shape[1], real)
        ey = phase_factors(jnp.asarray(positions[:, 1] / self.extent[1], dtype=real), self.shape[0], real)
        return ey, ex


def make_job(atoms, *, probe: ProbeSpec, potential: PotentialSpec, scan: GridScan, detectors: Sequence,
             precision: str = "float32", method: str = "auto", interpolation: int = 1) -> Job:
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
    return dataclasses.replace(job, method=_choose_method(job, method, interpolation), interpolation=interpolation)


def _choose_method(job: Job, method: str, interpolation: int) -> str:
    """PRISM when asked, or under "auto" when it is exact (interpolation 1) and needs fewer operations."""
    from twin.stem import prism

    if not (isinstance(interpolation, int) and interpolation >= 1):
        raise ValueError(f"interpolation={interpolation!r} is not allowed; it must be an integer >= 1")
    integrating = all(hasattr(d, "masks") for d in job.detectors)
    if method == "multislice" or (method == "auto" and (interpolation != 1 or not integrating)):
        if interpolation != 1:
            raise ValueError(f"interpolation={interpolation} needs method='prism' (multislice does not interpolate)")
        return "multislice"
    if not integrating:
        names = [d.name for d in job.detectors if not hasattr(d, "masks")]
        raise ValueError(f"method='prism' records annular and segmented detectors only, not {', '.join(names)}; "
                         "use method='multislice' (or 'auto') for centre-of-mass and 4D-STEM output")
    prism.check_interpolation(job.shape, interpolation)
    if method == "prism":
        return "prism"
    # Plane waves inside the aperture, counted on the integer frequencies (m_y / y, m_x / x) near it.
    k_max = job.probe.semiangle * 1e-3 / job.probe.wavelength + 0.5 / min(job.extent)
    m_x, m_y = (np.arange(-math.ceil(k_max * e), math.ceil(k_max * e) + 1) / e for e in job.extent)
    n_beams = int(np.count_nonzero(np.hypot(m_y[:, None], m_x[None, :]) <= k_max))
    n_masks = sum(int(np.prod([len(v) for v in d.dims(job.grid).values()] or [1])) for d in job.detectors)
    pixels = job.shape[0] * job.shape[1]
    fft_pair = 10 * pixels * math.log2(pixels)
    multislice_cost = len(job.positions) * job.n_slices * fft_pair
    prism_cost = n_beams * job.n_slices * fft_pair + 8 * n_masks * n_beams**2 * (pixels + len(job.positions))
    # The S-matrix in Fourier and real space must fit in half the memory available.
    smatrix_bytes = 4 * np.dtype(PRECISIONS[job.precision][0]).itemsize * n_beams * pixels
    fits = smatrix_bytes < available_memory() / 2
    return "prism" if prism_cost < multislice_cost and fits else "multislice"


def _detect(psi_k, detectors, grid):
    intensity = jnp.abs(psi_k) ** 2
    return tuple(d.detect(intensity, grid) for d in detectors)


@functools.partial(jax.jit, static_argnames=("detectors", "grid"))
def scan_batch(probe_k, ey, ex, transmissions, propagator, detectors, grid):
    """Detector outputs for a batch of probes: a tuple with one (b, ...) array per detector.

    probe_k (ny, nx); ey (b, ny), ex (b, nx): exp(-2 pi i k.r0) factors; transmissions (n_slices, ny, nx);
    propagator (ny, nx). Intensities are fractions of the incident intensity (sum |probe_k|^2 = 1).
    """
    return _detect(multislice(shifted_probes(probe_k, ey, ex), transmissions, propagator), detectors, grid)


def _output_size(job: Job) -> int:
    """Values one scan records: positions times the values per position of every detector."""
    per_position = sum(int(np.prod([len(v) for v in d.dims(job.grid).values()] or [1])) for d in job.detectors)
    return per_position * len(job.positions)


def _plan_memory(job: Job, memory_limit: int | None, output: int) -> int:
    """The batch size, or a MemoryError naming the estimate; `output` values are kept in memory."""
    budget = available_memory() if memory_limit is None else memory_limit
    batch = choose_batch(job.shape, job.n_slices, len(job.positions), job.precision, budget, output)
    estimate = memory_estimate(job.shape, job.n_slices, batch, job.precision, output)
    if estimate > budget:
        raise MemoryError(f"the job needs an estimated {estimate / 2**30:.2f} GiB ({job.n_slices} slices of "
                          f"{job.shape[0]}x{job.shape[1]} pixels, {output} output values in memory) but "
                          f"{budget / 2**30:.2f} GiB is available; use a coarser sampling, thicker slices, "
                          "a coarser scan, a smaller diffraction max_angle, or write to a file (twin.stem."
                          "simulate_to_file, the CLI), which streams the output to disk")
    return batch


def _scan(job: Job, atoms, phonons, batch: int, progress: bool, add):
    """Run the scan; `add(detector index, start, stop, values)` receives each batch's share of the
    configuration average, values (stop - start, ...)."""
    configurations = _configurations(atoms, phonons)
    n = len(job.positions)
    with jax.enable_x64(job.precision == "float64"), _progress_bar(progress, n * len(configurations)) as advance:
        propagator = job.propagator(job.cell[2] / job.n_slices)
        probe_k = job.probe_k()
        for positions in configurations:
            transmissions = job.transmissions(positions, atoms.numbers)
            if job.method == "prism":
                _prism(job, transmissions, propagator, add, len(configurations))
                advance(n)
                continue
            for start in range(0, n, batch):
                chunk = job.positions[start:start + batch]
                padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
                outs = scan_batch(probe_k, *job.phase_factors(padded), transmissions, propagator,
                                  job.detectors, job.grid)
                for i, o in enumerate(outs):
                    add(i, start, start + len(chunk), np.asarray(o)[: len(chunk)] / len(configurations))
                advance(len(chunk))


def _prism(job: Job, transmissions, propagator, add, n_configurations: int):
    from twin.stem.prism import prism_scan

    values = prism_scan(job.probe, transmissions, propagator, job.shape, job.extent, job.positions, job.detectors,
                        interpolation=job.interpolation, dtype=PRECISIONS[job.precision][0])
    first = 0
    for i, d in enumerate(job.detectors):
        count = len(d.masks(job.grid))
        add(i, 0, len(job.positions), np.asarray(d.from_masks(values[:, first:first + count])) / n_configurations)
        first += count


def simulate(atoms, *, probe: ProbeSpec, potential: PotentialSpec, scan: GridScan, detectors: Sequence,
             precision: str = "float32", phonons=None, method: str = "auto", interpolation: int = 1,
             progress: bool = False, memory_limit: int | None = None):
    """Simulate scanned-probe STEM signals of `atoms` by multislice.

    atoms: ase.Atoms with an orthorhombic cell periodic in x and y; the beam runs along +z through the whole
    cell height. detectors: AnnularDetector, SegmentedDetector, CenterOfMassDetector, PixelatedDetector.
    phonons: a potentials.phonons.FrozenPhonons to average over displaced configurations, or None.
    method: "multislice", "prism" (S-matrix; annular and segmented detectors; `interpolation` f = 1, 2, 4,
    ... dividing the grid, exact at f = 1) or "auto" (PRISM at f = 1 when it needs fewer operations, which
    does not change the answer beyond float rounding). Returns an xarray.Dataset with one variable per detector, dims ("y", "x", ...), intensities in fractions
    of the incident intensity, coordinates the probe positions [Angstrom] (angles [mrad]), attrs with every
    parameter and its unit. memory_limit: bytes the job may use (default: the memory available now); a job
    whose estimate exceeds it is refused with the estimate in the message.

    Example:
        simulate(atoms, probe=ProbeSpec(energy=80e3, semiangle=25), potential=PotentialSpec(sampling=0.05,
                 slice_thickness=1), scan=GridScan(step=0.2), detectors=[AnnularDetector(name="HAADF",
                 inner=70, outer=200)])
    """
    job = make_job(atoms, probe=probe, potential=potential, scan=scan, detectors=detectors, precision=precision,
                   method=method, interpolation=interpolation)
    batch = _plan_memory(job, memory_limit, _output_size(job))
    coords, attrs, variables = _layout(job, phonons)
    arrays = [np.zeros((len(job.positions), *shape[2:])) for _, shape, _ in variables.values()]

    def add(i, start, stop, values):
        arrays[i][start:stop] += values

    _scan(job, atoms, phonons, batch, progress, add)
    data = {name: (dims, a.reshape(shape), var_attrs)
            for (name, (dims, shape, var_attrs)), a in zip(variables.items(), arrays)}
    import xarray as xr

    return xr.Dataset(data, coords=coords, attrs=attrs)


def simulate_to_file(atoms, path, *, probe: ProbeSpec, potential: PotentialSpec, scan: GridScan,
                     detectors: Sequence, precision: str = "float32", phonons=None, method: str = "auto",
                     interpolation: int = 1, progress: bool = False, memory_limit: int | None = None):
    """`simulate`, streamed batch by batch into the netCDF4 file `path` (opens with xarray.load_dataset(path,
    engine="h5netcdf")), so that 4D-STEM scans larger than memory work. Refuses, before writing anything, a
    job whose output would not fit on the disk; writes atomically (temporary file, then rename). Returns path.
    """
    import shutil

    import h5netcdf
    import h5py

    from twin.io import atomic_path

    job = make_job(atoms, probe=probe, potential=potential, scan=scan, detectors=detectors, precision=precision,
                   method=method, interpolation=interpolation)
    path = Path(path)
    needed = _output_size(job) * np.dtype(PRECISIONS[precision][0]).itemsize + 2**20
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise OSError(f"the output needs an estimated {needed / 2**30:.2f} GiB but {path.parent} has "
                      f"{free / 2**30:.2f} GiB free; use a coarser scan or a smaller diffraction max_angle")
    batch = _plan_memory(job, memory_limit, 0)
    coords, attrs, variables = _layout(job, phonons)
    nx = len(job.scan_axes[0])
    with atomic_path(path) as tmp:
        with h5netcdf.File(tmp, "w") as f:  # written directly: importing xarray would cost a second
            f.attrs.update(attrs)
            for dim, (_, values, dim_attrs) in coords.items():
                f.dimensions[dim] = len(values)
                text = np.asarray(values).dtype.kind == "U"
                v = f.create_variable(dim, (dim,), dtype=h5py.string_dtype() if text else np.asarray(values).dtype)
                v[:] = np.asarray(values, dtype=object) if text else values
                v.attrs.update(dim_attrs)
            handles = []
            for name, (dims, shape, var_attrs) in variables.items():
                chunks = (1, shape[1], *shape[2:]) if len(shape) > 2 else None
                v = f.create_variable(name, dims, dtype=PRECISIONS[precision][0], chunks=chunks)
                v.attrs.update(var_attrs)
                handles.append(v)

            def add(i, start, stop, values):
                for row in range(start // nx, (stop - 1) // nx + 1):  # the batch's pieces of scan rows
                    lo, hi = max(start, row * nx), min(stop, (row + 1) * nx)
                    block = handles[i][row, lo - row * nx: hi - row * nx]
                    handles[i][row, lo - row * nx: hi - row * nx] = block + values[lo - start: hi - start]

            _scan(job, atoms, phonons, batch, progress, add)
    return path


def _configurations(atoms, phonons) -> list[np.ndarray]:
    if phonons is None:
        return [atoms.positions]
    shifts = np.asarray(phonons.displacements(atoms.numbers), dtype=np.float64)
    return [atoms.positions + s for s in shifts]


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


def make_stem_function(atoms, *, probe: ProbeSpec, potential: PotentialSpec, scan: GridScan,
                       detectors: Sequence, precision: str = "float64", batch: int = 16):
    """A differentiable scan: returns (f, params) with f(params) -> {detector name: (ny, nx, ...) array}.

    params: {"positions": (n_atoms, 3) [Angstrom], "aberrations": {Krivanek name: value} (every C_nm and
    phi_nm, lengths [Angstrom], angles [rad]), "slice_thickness": propagation distance per slice [Angstrom]}.
    The assignment of atoms to slices is fixed from the given atoms; f is pure and jit-able, and jax.grad of
    a scalar loss of f is exact (checked against finite differences). Use float64 for gradient checks.
    Evaluate f inside `jax.enable_x64(precision == "float64")`.

    Example:
        f, params = make_stem_function(atoms, probe=..., potential=..., scan=..., detectors=[...])
        loss = lambda p: jnp.sum((f(p)["HAADF"] - observed) ** 2)
        grads = jax.grad(loss)(params)
    """
    job = make_job(atoms, probe=probe, potential=potential, scan=scan, detectors=detectors, precision=precision,
                   method="multislice")
    numbers = np.asarray(atoms.numbers)
    plan = slice_plan(atoms.positions, numbers, job.cell, potential)
    real = PRECISIONS[precision][0]
    coefficients = {name: probe.coefficients.get(name, 0.0) for name in optics.ABERRATION_NAMES}
    with jax.enable_x64(precision == "float64"):
        params = {"positions": jnp.asarray(atoms.positions, dtype=real),
                  "aberrations": {name: jnp.asarray(v, dtype=real) for name, v in coefficients.items()},
                  "slice_thickness": jnp.asarray(job.cell[2] / job.n_slices, dtype=real)}
        ey, ex = job.phase_factors(job.positions)
    ny, nx = len(job.scan_axes[1]), len(job.scan_axes[0])

    def f(params):
        transmissions = job.transmissions(params["positions"], numbers, plan)
        propagator = job.propagator(params["slice_thickness"])
        probe_k = job.probe_k(params["aberrations"])

        def one(factors):
            psi_k = multislice(shifted_probes(probe_k, factors[0][None], factors[1][None]), transmissions,
                               propagator)
            return tuple(o[0] for o in _detect(psi_k, job.detectors, job.grid))

        outs = jax.lax.map(one, (ey, ex), batch_size=batch)
        return {d.name: o.reshape(ny, nx, *o.shape[1:]) for d, o in zip(job.detectors, outs)}

    return f, params


def _layout(job: Job, phonons):
    """(coords, attrs, {name: (dims, shape, attrs)}) of the output dataset: everything but the values."""
    xs, ys = job.scan_axes
    probe, potential, extent, shape = job.probe, job.potential, job.extent, job.shape
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
        "slice_thickness_ang": job.cell[2] / job.n_slices,
        "n_slices": job.n_slices,
        "cell_ang": np.asarray(job.cell, dtype=np.float64),
        "parametrization": potential.parametrization,
        "projection": potential.projection,
        "precision": job.precision,
        "scan_step_x_ang": float(xs[1] - xs[0]) if len(xs) > 1 else float(extent[0]),
        "scan_step_y_ang": float(ys[1] - ys[0]) if len(ys) > 1 else float(extent[1]),
        "antialias_cutoff_angle_mrad": optics.cutoff_angle(shape, extent, probe.energy) * 1e3,
        "phonon_configurations": 0 if phonons is None else int(phonons.n_configurations),
        "phonon_seed": -1 if phonons is None else int(phonons.seed),
        "method": job.method,
        "interpolation": job.interpolation,
        "simulator": f"twin.stem {job.method}",
    }
    coords = {"x": ("x", xs, {"units": "Angstrom"}), "y": ("y", ys, {"units": "Angstrom"})}
    variables = {}
    for d in job.detectors:
        extra = d.dims(job.grid)
        for dim, values in extra.items():
            coords[dim] = (dim, values, {"units": "mrad"} if dim in ("ky", "kx") else {})
        units = "mrad" if isinstance(d, CenterOfMassDetector) else "fraction of incident intensity"
        numbers = {k: float(v) for k, v in dataclasses.asdict(d).items() if isinstance(v, (int, float))}
        variables[d.name] = (("y", "x", *extra), (len(ys), len(xs), *(len(v) for v in extra.values())),
                             {"detector": type(d).__name__, "units": units,
                              **{f"{k}_mrad" if k in ("inner", "outer", "max_angle") else k: v
                                 for k, v in numbers.items()}})
    return coords, attrs, variables
