"""Scanned-probe STEM by multislice or PRISM: the public entry points `simulate`, `simulate_to_file` and
the differentiable `make_stem_function`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from potentials.projected import PotentialSpec, slice_plan
from twin.stem import optics
from twin.stem.detectors import CenterOfMassDetector
from twin.stem.job import PRECISIONS, Job, make_job, output_size, plan_memory
from twin.stem.multislice import multislice, shifted_probes
from twin.stem.probe import ProbeSpec
from twin.stem.scan import GridScan


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


@functools.partial(jax.jit, static_argnames=("detectors", "grid"))
def scan_batch_windowed(probe_k, ey, ex, transmissions, rows, cols, propagator, detectors, grid):
    """`scan_batch` with each probe propagated in its own periodic window of the cell: rows (b, wy) and cols
    (b, wx) index the window's pixels in transmissions (n_slices, ny, nx); probe_k, propagator, the phase
    factors ey (b, wy), ex (b, wx) and the detection live on the window's grid, which `grid` describes."""
    windows = jax.vmap(lambda r, c: transmissions[:, r[:, None], c[None, :]], out_axes=1)(rows, cols)
    return _detect(multislice(shifted_probes(probe_k, ey, ex), windows, propagator), detectors, grid)


def _scan(job: Job, atoms, phonons, batch: int, progress: bool, add):
    """Run the scan; `add(detector index, start, stop, values)` receives each batch's share of the
    configuration average, values (stop - start, ...)."""
    configurations = _configurations(atoms, phonons)
    n = len(job.positions)
    optics_job = job.window_job() if job.window else job
    with jax.enable_x64(job.precision == "float64"), _progress_bar(progress, n * len(configurations)) as advance:
        propagator = optics_job.propagator(job.cell[2] / job.n_slices)
        probe_k = optics_job.probe_k()
        for positions in configurations:
            transmissions = job.transmissions(positions, atoms.numbers)
            if job.method == "prism":
                _prism(job, transmissions, propagator, add, len(configurations))
                advance(n)
                continue
            for start in range(0, n, batch):
                chunk = job.positions[start:start + batch]
                padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
                if job.window:
                    rows, cols, inside = job.window_indices(padded)
                    outs = scan_batch_windowed(probe_k, *optics_job.phase_factors(inside), transmissions, rows,
                                               cols, propagator, job.detectors, optics_job.grid)
                else:
                    outs = scan_batch(probe_k, *job.phase_factors(padded), transmissions, propagator,
                                      job.detectors, job.grid)
                for i, o in enumerate(outs):
                    add(i, start, start + len(chunk), np.asarray(o)[: len(chunk)] / len(configurations))
                advance(len(chunk))


def _prism(job: Job, transmissions, propagator, add, n_configurations: int):
    """Run PRISM, handing each batch to `add` in runs of consecutive probe positions."""
    from twin.stem.prism import prism_detect

    batches = prism_detect(job.probe, transmissions, propagator, job.shape, job.extent, job.positions,
                           job.detectors, interpolation=job.interpolation, dtype=PRECISIONS[job.precision][0])
    for chosen, outputs in batches:
        breaks = np.flatnonzero(np.diff(chosen) != 1) + 1
        for run in np.split(np.arange(len(chosen)), breaks):
            start = int(chosen[run[0]])
            for i, o in enumerate(outputs):
                add(i, start, start + len(run), o[run] / n_configurations)


def simulate(atoms, *, probe: ProbeSpec, potential: PotentialSpec, scan: GridScan, detectors: Sequence,
             precision: str = "float32", phonons=None, method: str = "auto", interpolation: int = 1,
             window: float | None = None, progress: bool = False, memory_limit: int | None = None):
    """Simulate scanned-probe STEM signals of `atoms` by multislice.

    atoms: ase.Atoms with an orthorhombic cell periodic in x and y; the beam runs along +z through the whole
    cell height. detectors: AnnularDetector, SegmentedDetector, CenterOfMassDetector, PixelatedDetector.
    phonons: a potentials.phonons.FrozenPhonons to average over displaced configurations, or None.
    method: "multislice", "prism" (S-matrix, every detector; `interpolation` f = 1, 2, 4, ... dividing the
    grid, exact at f = 1; at f > 1 the patterns and the CoM are on the window's k-grid, f times coarser, as
    in abTEM) or "auto" (PRISM at f = 1 when it needs fewer operations, which does not change the answer
    beyond float rounding). window: propagate each probe in a periodic window of about this side [Angstrom]
    (FFT-friendly, same pixel size) cut from the cell instead of the whole cell; an approximation for fields
    of view far larger than the probe, whose error is about the probe's intensity outside half the window
    (`probe_tail_fraction`; 1.5% at 8 A for a 25 mrad probe). Returns an xarray.Dataset with one variable
    per detector, dims ("y", "x", ...), intensities in fractions of the incident intensity, coordinates the
    probe positions [Angstrom] (angles [mrad]), attrs with every parameter and its unit. memory_limit: bytes
    the job may use (default: the memory available now); a job whose estimate exceeds it is refused with the
    estimate in the message.

    Example:
        simulate(atoms, probe=ProbeSpec(energy=80e3, semiangle=25), potential=PotentialSpec(sampling=0.05,
                 slice_thickness=1), scan=GridScan(step=0.2), detectors=[AnnularDetector(name="HAADF",
                 inner=70, outer=200)])
    """
    job = make_job(atoms, probe=probe, potential=potential, scan=scan, detectors=detectors, precision=precision,
                   method=method, interpolation=interpolation, window=window)
    batch = plan_memory(job, memory_limit, output_size(job))
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
                     interpolation: int = 1, window: float | None = None, progress: bool = False,
                     memory_limit: int | None = None):
    """`simulate`, streamed batch by batch into the netCDF4 file `path` (opens with xarray.load_dataset(path,
    engine="h5netcdf")), so that 4D-STEM scans larger than memory work. Refuses, before writing anything, a
    job whose output would not fit on the disk; writes atomically (temporary file, then rename). Returns path.
    """
    import shutil

    import h5netcdf
    import h5py

    from twin.io import atomic_path

    job = make_job(atoms, probe=probe, potential=potential, scan=scan, detectors=detectors, precision=precision,
                   method=method, interpolation=interpolation, window=window)
    path = Path(path)
    needed = output_size(job) * np.dtype(PRECISIONS[precision][0]).itemsize + 2**20
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise OSError(f"the output needs an estimated {needed / 2**30:.2f} GiB but {path.parent} has "
                      f"{free / 2**30:.2f} GiB free; use a coarser scan or a smaller diffraction max_angle")
    batch = plan_memory(job, memory_limit, 0)
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
        "window_x_ang": job.window_job().extent[0] if job.window else float(extent[0]),
        "window_y_ang": job.window_job().extent[1] if job.window else float(extent[1]),
        "interpolation": job.interpolation,
        "simulator": f"twin.stem {job.method}",
    }
    coords = {"x": ("x", xs, {"units": "Angstrom"}), "y": ("y", ys, {"units": "Angstrom"})}
    variables = {}
    for d in job.detectors:
        extra = d.dims(job.detector_grid)
        for dim, values in extra.items():
            coords[dim] = (dim, values, {"units": "mrad"} if dim in ("ky", "kx") else {})
        units = "mrad" if isinstance(d, CenterOfMassDetector) else "fraction of incident intensity"
        numbers = {k: float(v) for k, v in dataclasses.asdict(d).items() if isinstance(v, (int, float))}
        variables[d.name] = (("y", "x", *extra), (len(ys), len(xs), *(len(v) for v in extra.values())),
                             {"detector": type(d).__name__, "units": units,
                              **{f"{k}_mrad" if k in ("inner", "outer", "max_angle") else k: v
                                 for k, v in numbers.items()}})
    return coords, attrs, variables
