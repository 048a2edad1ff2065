"""PRISM (twin.stem.prism): exact at interpolation 1, quadratic form, beams, windows and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from potentials.projected import PotentialSpec, spatial_frequencies
from tests.golden.cases import differences, srtio3
from twin.stem import prism
from twin.stem.detectors import AnnularDetector
from twin.stem.probe import ProbeSpec
from twin.stem.scan import GridScan
from twin.stem.job import make_job
from twin.stem.simulate import simulate
from twin.structures import graphene

JOBS = {
    "graphene": (graphene((2, 1)), ProbeSpec(energy=80e3, semiangle=25.0, aberrations={"defocus": 10.0, "C30": 5e3}),
                 PotentialSpec(sampling=0.089, slice_thickness=2.0), GridScan(step=0.4),
                 {"BF": (0, 25), "HAADF": (60, 120)}),
    "SrTiO3": (srtio3(1, 4), ProbeSpec(energy=200e3, semiangle=20.0, aberrations={"C10": -20.0, "C12": 15.0,
                                                                                    "phi12": 0.4}),
               PotentialSpec(sampling=0.08, slice_thickness=3.905 / 2), GridScan(step=0.3),
               {"ABF": (10, 20), "HAADF": (50, 100)}),
}


def _job(atoms, probe: ProbeSpec, potential: PotentialSpec, dtype=jnp.float32, scan=GridScan(step=1.0)):
    precision = "float64" if dtype == jnp.float64 else "float32"
    return make_job(atoms, probe=probe, potential=potential, scan=scan, precision=precision, method="multislice",
                    detectors=[AnnularDetector(name="BF", inner=0, outer=probe.semiangle)])


def prepare(atoms, probe: ProbeSpec, potential: PotentialSpec, dtype=jnp.float32):
    """Transmissions, propagator, shape (ny, nx) and extent (x, y), as twin.stem.simulate builds them."""
    job = _job(atoms, probe, potential, dtype)
    return (job.transmissions(atoms.positions, atoms.numbers), job.propagator(job.cell[2] / job.n_slices),
            job.shape, job.extent)


def scan_positions(scan: GridScan, atoms, probe, potential) -> tuple[np.ndarray, tuple[int, int]]:
    """Probe positions (n, 2) (x, y) [Angstrom] in simulate's order (y slow), and the image shape (ny, nx)."""
    job = _job(atoms, probe, potential, scan=scan)
    return job.positions, (len(job.scan_axes[1]), len(job.scan_axes[0]))


def detectors_of(spec: dict) -> list[AnnularDetector]:
    return [AnnularDetector(name=name, inner=inner, outer=outer) for name, (inner, outer) in spec.items()]


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("job", JOBS)
def test_prism_at_interpolation_1_equals_multislice(job, precision):
    atoms, probe, potential, scan, detectors = JOBS[job]
    detectors = detectors_of(detectors)
    reference = simulate(atoms, probe=probe, potential=potential, scan=scan, detectors=detectors, precision=precision)
    real = jnp.float64 if precision == "float64" else jnp.float32
    with jax.enable_x64(precision == "float64"):
        transmissions, propagator, shape, extent = prepare(atoms, probe, potential, real)
        positions, image = scan_positions(scan, atoms, probe, potential)
        ours = prism.prism_scan(probe, transmissions, propagator, shape, extent, positions, detectors, dtype=real)
    tolerance = (1e-5, 1e-4) if precision == "float32" else (1e-12, 1e-11)
    for i, d in enumerate(detectors):
        max_diff, rel_l2 = differences(ours[:, i].reshape(image), reference[d.name].values)
        assert max_diff <= tolerance[0] and rel_l2 <= tolerance[1], (d.name, max_diff, rel_l2)


def test_quadratic_form_equals_the_explicit_sum(x64):
    """Re(c^H M_d c) = sum_q mask_d |sum_k c_k S~_k(q)|^2, both from the same S-matrix, to float64 precision."""
    atoms, probe, potential, scan, spec = JOBS["SrTiO3"]
    transmissions, propagator, shape, extent = prepare(atoms, probe, potential, jnp.float64)
    indices = prism.plane_wave_indices(probe, shape, extent, 1)
    smatrix_k = prism.build_smatrix(jnp.asarray(indices), transmissions, propagator, batch_size=8)
    positions = np.random.default_rng(0).uniform(0, 1, (30, 2)) * extent
    c = prism.prism_coefficients(prism.beam_amplitudes(probe, shape, extent, 1, jnp.complex128), indices, positions,
                                 extent, jnp.float64)
    ky, kx = spatial_frequencies(shape, extent)
    alpha = np.hypot(ky[:, None], kx[None, :]) * probe.wavelength
    masks = jnp.asarray(np.stack([d.mask(alpha) for d in detectors_of(spec)]))
    quadratic = prism.annular_prism_intensities(smatrix_k, masks, c)
    waves, (wky, wkx) = prism.prism_exit_waves(jnp.fft.ifft2(smatrix_k), c, positions, extent, 1)
    assert np.array_equal(wky, ky) and np.array_equal(wkx, kx)
    explicit = jnp.einsum("byx,dyx->bd", jnp.abs(waves) ** 2, masks)
    np.testing.assert_allclose(quadratic, explicit, rtol=1e-12, atol=1e-15)


def test_quadratic_form_and_explicit_sum_agree_in_prism_scan():
    atoms, probe, potential, scan, spec = JOBS["graphene"]
    transmissions, propagator, shape, extent = prepare(atoms, probe, potential)
    positions, _ = scan_positions(scan, atoms, probe, potential)
    args = (probe, transmissions, propagator, shape, extent, positions, detectors_of(spec))
    np.testing.assert_allclose(prism.prism_scan(*args, quadratic_form=True),
                               prism.prism_scan(*args, quadratic_form=False), atol=1e-6)


def test_beams_are_the_sublattice_points_inside_the_aperture():
    probe = ProbeSpec(energy=100e3, semiangle=30.0)
    shape, extent = (96, 80), (10.0, 12.0)
    k_max = probe.semiangle * 1e-3 / probe.wavelength
    counts = []
    for f in (1, 2, 4):
        beams = prism.plane_wave_indices(probe, shape, extent, f)
        assert np.all(beams % f == 0) and len(np.unique(beams, axis=0)) == len(beams)
        k = np.hypot(beams[:, 0] / extent[1], beams[:, 1] / extent[0])
        edge = 0.5 * f / min(extent)  # the soft edge is one window pixel wide
        assert k.max() < k_max + edge
        my, mx = np.meshgrid(np.arange(-40, 41) * f, np.arange(-40, 41) * f, indexing="ij")
        inside = np.hypot(my / extent[1], mx / extent[0]) < k_max - edge
        assert {(int(y), int(x)) for y, x in zip(my[inside], mx[inside])} <= {tuple(v) for v in beams.tolist()}
        counts.append(len(beams))
    assert counts[0] > 3.5 * counts[1] > 3.5**2 * counts[2]


def test_probe_in_vacuum_keeps_unit_intensity_in_its_window():
    probe = ProbeSpec(energy=100e3, semiangle=25.0, aberrations={"C10": 30.0, "C30": 1e4})
    shape, extent = (64, 48), (8.0, 9.0)
    vacuum = jnp.ones((1, *shape), jnp.complex64)
    propagator = jnp.ones(shape, jnp.complex64)
    positions = np.array([[0.0, 0.0], [3.3, 1.7], [7.9, 8.9]])
    everything = AnnularDetector(name="all", inner=0, outer=1e4)
    for f in (2, 4):
        out = prism.prism_scan(probe, vacuum, propagator, shape, extent, positions, [everything], interpolation=f)
        np.testing.assert_allclose(out, 1.0, atol=1e-6)


def direct_window_waves(smatrix_r, coefficients, positions, extent, interpolation):
    """Each probe's window cut from the periodic cell with numpy, one position at a time."""
    shape = smatrix_r.shape[1:]
    window, _, _ = prism.window_grid(shape, extent, interpolation)
    out = []
    for c, (cy, cx) in zip(coefficients, prism.window_corners(positions, shape, extent, interpolation)):
        rows, cols = (cy + np.arange(window[0])) % shape[0], (cx + np.arange(window[1])) % shape[1]
        psi = np.einsum("k,kyx->yx", c, smatrix_r[:, rows][:, :, cols])
        out.append(np.fft.fft2(psi) * interpolation**2)
    return np.stack(out)


def random_object(shape, n_slices, key):
    """Phase-object slices and a band-limited propagator on `shape`, for tests that need no atoms."""
    phases = jax.random.uniform(key, (n_slices, *shape), jnp.float64, 0, 1.0)
    k2 = np.add.outer(np.fft.fftfreq(shape[0], 0.1) ** 2, np.fft.fftfreq(shape[1], 0.1) ** 2)
    return jnp.exp(1j * phases), jnp.asarray(np.exp(-1j * np.pi * 0.02 * 1.0 * k2) * (k2 < 12.0))


def test_windows_cut_from_the_cell_match_a_direct_crop(x64):
    rng = np.random.default_rng(1)
    shape, extent, f = (24, 20), (2.0, 2.4), 2
    smatrix_r = rng.normal(size=(5, *shape)) + 1j * rng.normal(size=(5, *shape))
    coefficients = rng.normal(size=(12, 5)) + 1j * rng.normal(size=(12, 5))
    spread = rng.uniform(-1, 2, (12, 2)) * extent  # outside the cell and across its edges
    close = np.array([2.0, 2.4]) - 0.05 + rng.uniform(0, 0.3, (12, 2))  # straddles the corner, small region
    for positions in (spread, close):
        waves, (ky, kx) = prism.prism_exit_waves(jnp.asarray(smatrix_r), jnp.asarray(coefficients), positions,
                                                 extent, f)
        np.testing.assert_allclose(waves, direct_window_waves(smatrix_r, coefficients, positions, extent, f),
                                   atol=1e-12)
    np.testing.assert_allclose(ky, np.fft.fftfreq(12, 2.4 / 24))
    np.testing.assert_allclose(kx, np.fft.fftfreq(10, 2.0 / 20))


def test_prism_scan_in_tiles_equals_probes_one_by_one(x64):
    probe = ProbeSpec(energy=100e3, semiangle=30.0, aberrations={"C10": 20.0})
    shape, extent, f = (48, 40), (4.0, 4.8), 2
    transmissions, propagator = random_object(shape, 3, jax.random.key(2))
    positions = np.random.default_rng(3).uniform(0, 1, (40, 2)) * extent
    detectors = [AnnularDetector(name="BF", inner=0, outer=30), AnnularDetector(name="DF", inner=30, outer=90)]
    ours = prism.prism_scan(probe, transmissions, propagator, shape, extent, positions, detectors,
                            interpolation=f, dtype=jnp.float64)
    indices, amplitudes = prism.plane_wave_beams(probe, shape, extent, f, jnp.complex128)
    smatrix_r = np.asarray(jnp.fft.ifft2(prism.build_smatrix(jnp.asarray(indices), transmissions, propagator)))
    c = np.asarray(prism.prism_coefficients(amplitudes, indices, positions, extent, jnp.float64))
    _, _, (ky, kx) = prism.window_grid(shape, extent, f)
    alpha = np.hypot(ky[:, None], kx[None, :]) * probe.wavelength
    masks = np.stack([d.mask(alpha) for d in detectors])
    direct = np.einsum("byx,dyx->bd", np.abs(direct_window_waves(smatrix_r, c, positions, extent, f)) ** 2, masks)
    np.testing.assert_allclose(ours, direct, atol=1e-12)


def test_a_small_memory_budget_gives_the_same_signal_and_a_tiny_one_is_refused():
    atoms, probe, potential, scan, spec = JOBS["graphene"]
    transmissions, propagator, shape, extent = prepare(atoms, probe, potential)
    positions, _ = scan_positions(scan, atoms, probe, potential)
    args = (probe, transmissions, propagator, shape, extent, positions, detectors_of(spec))
    n_beams = len(prism.plane_wave_indices(probe, shape, extent, 2))
    budget = prism.prism_memory_estimate(shape, len(transmissions), n_beams, 2, beam_batch=2, position_batch=8,
                                         n_detectors=2)
    np.testing.assert_allclose(prism.prism_scan(*args, interpolation=2, memory_limit=budget),
                               prism.prism_scan(*args, interpolation=2), atol=1e-6)
    with pytest.raises(MemoryError, match="MiB"):
        prism.prism_scan(*args, memory_limit=100_000)


def test_interpolation_that_does_not_divide_the_grid_is_refused():
    probe = ProbeSpec(energy=80e3, semiangle=25.0)
    with pytest.raises(ValueError, match=r"interpolation=2 .*43x50"):
        prism.plane_wave_indices(probe, (43, 50), (5.0, 4.3), 2)
    with pytest.raises(ValueError, match=r"interpolation=0"):
        prism.window_grid((40, 40), (4.0, 4.0), 0)
    with pytest.raises(ValueError, match="quadratic_form"):
        prism.prism_scan(probe, jnp.ones((1, 40, 40), jnp.complex64), jnp.ones((40, 40), jnp.complex64), (40, 40),
                         (4.0, 4.0), np.zeros((1, 2)), [AnnularDetector(name="BF", inner=0, outer=25)],
                         interpolation=2, quadratic_form=True)
