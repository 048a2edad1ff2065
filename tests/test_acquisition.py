"""twin.acquisition: dose, detector chains, serial-scan distortions, artifacts (physics.md section 5)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from potentials.units import E
from twin.acquisition import (ArtifactSpec, CountingDetector, PMTDetector, ScanNoiseSpec, acquire,
                              add_artifacts, detect, distort, dose_per_area, electrons_per_pixel,
                              magnification_error, pixel_times, probe_offsets, probe_positions, source_blur)

KEY = jax.random.key(20261129)

# ---------------------------------------------------------------- dose


# physics.md section 5: current [pA], dwell [s], field of view [A], pixels, e/px, dose [e/A^2], each as
# (value, significant digits printed there).
DOSE_TABLE = [(30.0, 4e-6, 40.0, 512, (749, 3), (1.2e5, 2)), (20.0, 16e-6, 20.0, 256, (2.0e3, 2), (3.3e5, 2)),
              (30.0, 32e-6, 16.0, 512, (6e3, 1), (6e6, 1))]


def _rounded(value, digits):
    return float(f"{value:.{digits - 1}e}")


@pytest.mark.parametrize("current, dwell, fov, n, per_pixel, dose", DOSE_TABLE)
def test_dose_matches_reference_table(current, dwell, fov, n, per_pixel, dose):
    assert _rounded(electrons_per_pixel(current, dwell), per_pixel[1]) == pytest.approx(per_pixel[0], rel=1e-9)
    assert _rounded(dose_per_area(current, dwell, fov / n), dose[1]) == pytest.approx(dose[0], rel=1e-9)


@given(current=st.floats(0.1, 1e3), dwell=st.floats(1e-7, 1e-3), pixel=st.floats(0.01, 10.0))
def test_dose_formulas(current, dwell, pixel):
    n = electrons_per_pixel(current, dwell)
    assert n == pytest.approx(current * 1e-12 * dwell / E, rel=1e-12)
    assert dose_per_area(current, dwell, pixel) == pytest.approx(n / pixel**2, rel=1e-12)
    assert electrons_per_pixel(2 * current, dwell) == pytest.approx(2 * n, rel=1e-12)
    assert float(electrons_per_pixel(jnp.float32(current), dwell)) == pytest.approx(n, rel=1e-6)


# ---------------------------------------------------------------- detectors

SIGNALS = np.array([0.02, 0.1, 0.5, 1.0], np.float32)
N_SAMPLES = 2**16


def _levels():
    """(4, N_SAMPLES) ideal signal, one level per row."""
    return jnp.broadcast_to(jnp.asarray(SIGNALS)[:, None], (len(SIGNALS), N_SAMPLES))


def test_counting_detector_is_poisson():
    electrons, detector = 60.0, CountingDetector(efficiency=0.8)
    raw = detect(KEY, _levels(), electrons, detector)
    assert raw.dtype == jnp.float32
    counts = np.asarray(raw, np.float64)
    assert np.all(counts == np.round(counts))
    expected = 0.8 * electrons * SIGNALS
    mean, var = counts.mean(axis=1), counts.var(axis=1, ddof=1)
    assert np.all(np.abs(mean - expected) < 3 * np.sqrt(expected / N_SAMPLES))
    np.testing.assert_allclose(var / mean, 1.0, atol=0.03)


@pytest.mark.parametrize("enf", [1.0, 1.2, 1.5])
def test_pmt_variance_over_gain_times_mean_is_enf_squared(enf):
    electrons, gain = 60.0, 25.0
    detector = PMTDetector(efficiency=0.7, gain=gain, enf=enf)
    out = np.asarray(detect(KEY, _levels(), electrons, detector), np.float64)
    expected = gain * 0.7 * electrons * SIGNALS
    mean, var = out.mean(axis=1), out.var(axis=1, ddof=1)
    assert np.all(np.abs(mean - expected) < 3 * np.sqrt(var / N_SAMPLES))
    np.testing.assert_allclose(var / (gain * mean), enf**2, rtol=0.03)
    np.testing.assert_allclose(var, np.asarray(detector.variance(SIGNALS, electrons)), rtol=0.03)


def test_pmt_readout_noise_adds_variance_and_dark_offset_shifts_mean():
    electrons, sigma, dark = 40.0, 30.0, 500.0
    plain = PMTDetector(gain=10.0, enf=1.3)
    noisy = PMTDetector(gain=10.0, enf=1.3, readout_sigma=sigma, dark_offset=dark)
    out_plain = np.asarray(detect(KEY, _levels(), electrons, plain), np.float64)
    out_noisy = np.asarray(detect(KEY, _levels(), electrons, noisy), np.float64)
    added = out_noisy - out_plain  # same key: same shot and gain draws, so this is readout + dark alone
    assert abs(added.mean() - dark) < 3 * sigma / math.sqrt(added.size)
    assert added.std() == pytest.approx(sigma, rel=0.01)
    np.testing.assert_allclose(out_noisy.var(axis=1), np.asarray(noisy.variance(SIGNALS, electrons)), rtol=0.03)
    np.testing.assert_allclose(out_noisy.mean(axis=1) - out_plain.mean(axis=1), dark, atol=0.5)


def test_detectors_record_nothing_without_signal():
    signal = jnp.zeros((len(SIGNALS), N_SAMPLES)).at[0, 0].set(-1e-7)
    assert np.all(np.asarray(detect(KEY, signal, 1e4, CountingDetector())) == 0)
    out = detect(KEY, signal, 1e4, PMTDetector(gain=5.0, enf=1.4, dark_offset=3.0))
    assert np.all(np.asarray(out) == 3.0)


@settings(max_examples=6)
@given(efficiency=st.floats(0.05, 1.0), gain=st.floats(0.1, 1e3), enf=st.floats(1.0, 2.0),
       counting=st.booleans(), electrons=st.floats(0.0, 1e4))
def test_detect_shapes_and_determinism(efficiency, gain, enf, counting, electrons):
    detector = (CountingDetector(efficiency=efficiency) if counting
                else PMTDetector(efficiency=efficiency, gain=gain, enf=enf, dark_offset=1.0))
    per_row = jnp.asarray(electrons) * jnp.array([[1.0], [0.5], [0.25], [0.0]])  # (4, 1) broadcasts
    out = detect(KEY, _levels(), per_row, detector)
    assert out.shape == (len(SIGNALS), N_SAMPLES) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, detect(KEY, _levels(), per_row, detector))
    out = np.asarray(out)
    assert np.all(out[3] == (0.0 if counting else 1.0)) and np.all(np.isfinite(out))
    assert np.all(out >= 0) and (not counting or np.all(out == np.round(out)))


@pytest.mark.parametrize("make, match", [
    (lambda: PMTDetector(enf=0.5), "enf=0.5 is not allowed; the excess noise factor must be >= 1"),
    (lambda: PMTDetector(gain=0.0), "gain=0.0 is not allowed"),
    (lambda: PMTDetector(readout_sigma=-1.0), "readout_sigma=-1.0 is not allowed"),
    (lambda: CountingDetector(efficiency=1.5), "efficiency=1.5 is not allowed"),
    (lambda: ScanNoiseSpec(distortion_rms=2.0), "distortion_rms=2.0 is not allowed"),
    (lambda: ScanNoiseSpec(settle_ang=0.3), "settle_s=0.0 is not allowed"),
    (lambda: ScanNoiseSpec(drift_ang_per_s=(1.0,)), "drift_ang_per_s=\\(1.0,\\) is not allowed"),
    (lambda: ScanNoiseSpec(n_frequencies=0), "n_frequencies=0 is not allowed"),
    (lambda: ArtifactSpec(spike_probability=-0.1), "spike_probability=-0.1 is not allowed"),
])
def test_specs_reject_bad_values(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------- scan


def test_pixel_times_are_exact():
    shape, dwell, flyback = (7, 13), 3e-6, 5e-5
    line, pixel = np.meshgrid(np.arange(7), np.arange(13), indexing="ij")
    expected = line * (13 * dwell + flyback) + pixel * dwell
    np.testing.assert_allclose(pixel_times(shape, dwell, flyback), expected, rtol=1e-6, atol=1e-12)


def test_line_jitter_is_constant_in_a_line_and_independent_between_lines():
    ny, sigma = 4096, 0.15
    dx, dy = probe_offsets(KEY, (ny, 4), 0.1, 1e-6, ScanNoiseSpec(line_jitter_ang=sigma))
    dx, dy = np.asarray(dx, np.float64), np.asarray(dy)
    assert np.all(dy == 0) and np.all(dx == dx[:, :1])
    lines = dx[:, 0]
    assert np.sqrt(np.mean(lines**2)) == pytest.approx(sigma, rel=4 / math.sqrt(2 * ny))
    lag1 = np.corrcoef(lines[:-1], lines[1:])[0, 1]
    assert abs(lag1) < 4 / math.sqrt(ny)


@pytest.mark.parametrize("shape, pixel, dwell, flyback, rms", [
    ((128, 128), 0.1, 4e-6, 0.0, 0.01), ((64, 200), 0.3, 16e-6, 2e-4, 0.05)])
def test_vibration_reproduces_its_rms_magnification_error(shape, pixel, dwell, flyback, rms):
    spec = ScanNoiseSpec(distortion_rms=rms, flyback_s=flyback)
    for i in range(3):
        dx, dy = probe_offsets(jax.random.fold_in(KEY, i), shape, pixel, dwell, spec)
        m = np.asarray(magnification_error(dx, dy, pixel), np.float64)
        assert np.sqrt(np.mean(m**2)) == pytest.approx(rms, rel=1e-3)


def test_settling_and_rotation_offsets_are_exact():
    shape, pixel, dwell = (6, 40), 0.2, 2e-6
    spec = ScanNoiseSpec(settle_ang=0.5, settle_s=1e-5)
    dx, dy = probe_offsets(KEY, shape, pixel, dwell, spec)
    np.testing.assert_allclose(dx, np.broadcast_to(0.5 * np.exp(-np.arange(40) * dwell / 1e-5), shape), rtol=1e-6)
    assert np.all(np.asarray(dy) == 0)
    phi = 0.03
    dx, dy = probe_offsets(KEY, shape, pixel, dwell, ScanNoiseSpec(rotation_rad=phi))
    y, x = np.meshgrid((np.arange(6) - 2.5) * pixel, (np.arange(40) - 19.5) * pixel, indexing="ij")
    np.testing.assert_allclose(dx, (np.cos(phi) - 1) * x - np.sin(phi) * y, atol=1e-6)
    np.testing.assert_allclose(dy, np.sin(phi) * x + (np.cos(phi) - 1) * y, atol=1e-6)


def test_drift_uses_instrument_time():
    shape, pixel, dwell, v = (16, 24), 0.1, 1e-5, (0.02, -0.01)
    spec, hour = ScanNoiseSpec(drift_ang_per_s=v), 3600.0
    first, later = probe_offsets(KEY, shape, pixel, dwell, spec), probe_offsets(KEY, shape, pixel, dwell, spec, hour)
    for a, b, vi in zip(first, later, v):
        np.testing.assert_allclose(np.asarray(b) - np.asarray(a), -vi * hour, atol=1e-4)
    np.testing.assert_allclose(first[0], -v[0] * np.asarray(pixel_times(shape, dwell)), rtol=1e-6)


def test_offsets_are_deterministic_jittable_and_effects_draw_independently():
    shape, args = (128, 128), (0.1, 4e-6)
    full = ScanNoiseSpec(line_jitter_ang=0.1, distortion_rms=0.01, flyback_s=1e-4, settle_ang=0.2,
                         settle_s=1e-5, drift_ang_per_s=(0.3, -0.2), rotation_rad=0.01)
    dx, dy = probe_offsets(KEY, shape, *args, full, 1.5)
    np.testing.assert_array_equal(dx, probe_offsets(KEY, shape, *args, full, 1.5)[0])
    jitted = jax.jit(probe_offsets, static_argnums=(1, 4))
    jx, jy = jitted(KEY, shape, *args, full, 1.5)
    np.testing.assert_allclose(jx, dx, atol=1e-5)
    np.testing.assert_allclose(jy, dy, atol=1e-5)
    vibration = ScanNoiseSpec(distortion_rms=0.01, flyback_s=1e-4)
    np.testing.assert_array_equal(probe_offsets(KEY, shape, *args, vibration)[1],
                                  probe_offsets(KEY, shape, *args, ScanNoiseSpec(
                                      distortion_rms=0.01, flyback_s=1e-4, line_jitter_ang=0.1))[1])


A_LATTICE, SIGMA_BLOB = 4.0, 0.6  # square lattice of Gaussian blobs [Angstrom]


def _lattice(x, y):
    """Periodic lattice of Gaussian blobs at ((i + 1/2) a, (j + 1/2) a)."""
    def axis(u):
        u = jnp.mod(u, A_LATTICE) - A_LATTICE / 2
        return sum(jnp.exp(-((u + m * A_LATTICE) ** 2) / (2 * SIGMA_BLOB**2)) for m in (-1, 0, 1))
    return axis(x) * axis(y)


def _gpa_phase_difference(image0, image1, g_index):
    """angle(B0 conj(B1)) of the Bragg-filtered images at reflection g_index = (iy, ix) = -2 pi g . du."""
    n = image0.shape[0]
    k = np.fft.fftfreq(n, 1 / n)
    mask = np.exp(-((k[:, None] - g_index[0]) ** 2 + (k[None, :] - g_index[1]) ** 2) / (2 * 2.0**2))
    b0, b1 = (np.fft.ifft2(np.fft.fft2(np.asarray(im, np.float64)) * mask) for im in (image0, image1))
    return np.angle(b0 * np.conj(b1))


def test_drift_is_recovered_from_a_0_and_90_degree_scan_pair():
    n, pixel, dwell, drift = 128, 0.25, 32e-6, (0.8, -0.5)
    spec = ScanNoiseSpec(drift_ang_per_s=drift)
    frame_s = n * n * dwell
    centre = ((n - 1) / 2 * pixel,) * 2
    x0, y0 = probe_positions(KEY, (n, n), pixel, dwell, spec, 0.0, center_ang=centre)
    x90, y90 = probe_positions(KEY, (n, n), pixel, dwell, spec, frame_s, center_ang=centre,
                               scan_rotation_rad=np.pi / 2)
    image0 = np.asarray(_lattice(x0, y0))
    image90 = np.asarray(_lattice(x90, y90))[::-1].T  # scan frame -> sample frame
    times0 = np.asarray(pixel_times((n, n), dwell))
    times90 = (frame_s + times0)[::-1].T
    still = ScanNoiseSpec()  # without drift, the two scans give the same sample-frame image
    ref0 = _lattice(*probe_positions(KEY, (n, n), pixel, dwell, still, center_ang=centre))
    ref90 = _lattice(*probe_positions(KEY, (n, n), pixel, dwell, still, center_ang=centre,
                                      scan_rotation_rad=np.pi / 2))
    np.testing.assert_allclose(np.asarray(ref90)[::-1].T, ref0, atol=1e-5)
    order = n * pixel / A_LATTICE
    inner = (slice(24, n - 24), slice(24, n - 24))
    dt = (times0 - times90)[inner]
    measured = []
    for g_index in ((0, order), (order, 0)):
        du = -A_LATTICE / (2 * np.pi) * _gpa_phase_difference(image0, image90, g_index)[inner]
        measured.append(np.sum(du * dt) / np.sum(dt**2))
    np.testing.assert_allclose(measured, drift, rtol=0.1)
    np.testing.assert_allclose(measured, drift, rtol=0.01)  # measured 0.07 %, docs/validation.md


def test_distort_resamples_an_image_like_scanning_the_sample():
    n, pixel, dwell = 128, 0.125, 8e-6
    spec = ScanNoiseSpec(line_jitter_ang=0.2, drift_ang_per_s=(3.0, 2.0), settle_ang=0.3, settle_s=5e-5,
                         rotation_rad=0.02)
    grid = np.arange(n) * pixel
    ideal = _lattice(grid[None, :], grid[:, None])
    centre = ((n - 1) / 2 * pixel,) * 2
    scanned = _lattice(*probe_positions(KEY, (n, n), pixel, dwell, spec, center_ang=centre))
    resampled = distort(KEY, jnp.stack([ideal, 2 * ideal]), pixel, dwell, spec)
    assert np.max(np.abs(resampled[0] - scanned)) < 0.02
    np.testing.assert_allclose(resampled[1], 2 * resampled[0], rtol=1e-6)
    np.testing.assert_array_equal(distort(KEY, ideal, pixel, dwell, ScanNoiseSpec()), ideal)


# ---------------------------------------------------------------- artifacts and composition


def test_source_blur_keeps_the_sum_and_spreads_a_delta_into_a_gaussian():
    n, pixel, sigma = 128, 0.2, 0.7
    delta = jnp.zeros((n, n)).at[40, 90].set(1.0)
    blurred = np.asarray(source_blur(delta, pixel, sigma), np.float64)
    np.testing.assert_allclose(jax.jit(source_blur)(delta, pixel, sigma), blurred, atol=1e-7)
    assert blurred.sum() == pytest.approx(1.0, rel=1e-5)
    offsets = (np.arange(n) - 40 + n // 2) % n - n // 2, (np.arange(n) - 90 + n // 2) % n - n // 2
    for axis, d in enumerate(offsets):
        profile = blurred.sum(axis=1 - axis)
        assert np.sum(profile * d) == pytest.approx(0.0, abs=1e-5)
        assert np.sum(profile * (d * pixel) ** 2) == pytest.approx(sigma**2, rel=1e-3)
    assert blurred[40, 90] == pytest.approx(pixel**2 / (2 * np.pi * sigma**2), rel=1e-3)


def test_spike_and_dead_pixel_frequencies():
    shape, p_spike, p_dead = (512, 512), 2e-3, 1e-2
    image = jnp.full(shape, 7.0)
    spec = ArtifactSpec(spike_probability=p_spike, spike_amplitude=1e4, dead_pixel_fraction=p_dead)
    out = np.asarray(add_artifacts(KEY, image, spec))
    n = out.size
    spikes, dead = np.sum(out == 7.0 + 1e4), np.sum(out == 0)
    assert np.all((out == 7.0) | (out == 7.0 + 1e4) | (out == 0))
    assert abs(spikes - n * p_spike * (1 - p_dead)) < 4 * math.sqrt(n * p_spike)
    assert abs(dead - n * p_dead) < 4 * math.sqrt(n * p_dead)


def test_acquire_is_detect_then_artifacts_and_jits():
    signal = _levels()
    detector, artifacts = PMTDetector(gain=4.0, enf=1.3, readout_sigma=2.0), ArtifactSpec(spike_probability=0.01)
    out = acquire(KEY, signal, current_pa=20.0, dwell_s=2e-6, detector=detector, artifacts=artifacts)
    k_detect, k_artifacts = jax.random.split(KEY)
    electrons = electrons_per_pixel(jnp.float32(20.0), jnp.float32(2e-6))
    manual = add_artifacts(k_artifacts, detect(k_detect, signal, electrons, detector), artifacts)
    np.testing.assert_array_equal(out, manual)
    jitted = jax.jit(acquire, static_argnames=("detector", "artifacts"))
    np.testing.assert_allclose(jitted(KEY, signal, current_pa=20.0, dwell_s=2e-6, detector=detector,
                                      artifacts=artifacts), out, rtol=1e-6, atol=1e-4)
    assert acquire(KEY, signal, current_pa=20.0, dwell_s=2e-6, detector=CountingDetector()).dtype == jnp.float32
