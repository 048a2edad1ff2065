import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from potentials.projected import spatial_frequencies
from twin.stem import optics
from twin.stem.multislice import fresnel_propagator, multislice
from twin.stem.probe import ProbeSpec, probe_fourier

# Kirkland, Advanced Computing in Electron Microscopy (2010), Table 2.2: kV, lambda [A], sigma [rad/(V A)].
KIRKLAND_TABLE = [(100, 0.03701, 0.0009244), (200, 0.02508, 0.0007288), (300, 0.01969, 0.0006526),
                  (400, 0.01644, 0.0006121)]


@pytest.mark.parametrize("kv, lam, sigma", KIRKLAND_TABLE)
def test_wavelength_and_interaction_constant_match_kirkland_table(kv, lam, sigma):
    assert optics.wavelength(kv * 1e3) == pytest.approx(lam, abs=0.6e-5)
    assert optics.interaction_constant(kv * 1e3) == pytest.approx(sigma, abs=0.6e-7)


def test_wavelength_nonrelativistic_limit():
    # lambda = h / sqrt(2 m0 e E) for E << m0 c^2: 12.2643 / sqrt(E [eV]) Angstrom.
    assert optics.wavelength(10.0) == pytest.approx(12.2643 / np.sqrt(10.0), rel=1e-5)


def _grid(n=96, extent=12.0):
    ky, kx = spatial_frequencies((n, n), (extent, extent))
    k, phi = optics.polar_frequencies(ky, kx)
    return k, phi, extent / n


energies = st.floats(30e3, 300e3)
semiangles = st.floats(5.0, 30.0)


@given(energy=energies, semiangle=semiangles, c10=st.floats(-200, 200), c12=st.floats(0, 50),
       phi12=st.floats(-np.pi, np.pi), c30=st.floats(-5e4, 5e4))
def test_probe_is_normalized_in_both_spaces(energy, semiangle, c10, c12, phi12, c30):
    k, phi, d = _grid()
    spec = ProbeSpec(energy=energy, semiangle=semiangle,
                     aberrations={"C10": c10, "C12": c12, "phi12": phi12, "C30": c30})
    lam = spec.wavelength
    psi_k = probe_fourier(spec, k, phi, (lam / 12.0, lam / 12.0))
    assert float(jnp.sum(jnp.abs(psi_k) ** 2)) == pytest.approx(1.0, rel=1e-5)
    psi = jnp.fft.ifft2(psi_k) * psi_k.shape[0]  # unitary inverse FFT
    assert float(jnp.sum(jnp.abs(psi) ** 2)) == pytest.approx(1.0, rel=1e-5)


def test_soft_aperture_area_equals_hard_aperture_area():
    k, phi, d = _grid(256, 20.0)
    energy, semiangle = 100e3, 21.3
    lam = optics.wavelength(energy)
    aperture = np.asarray(optics.soft_aperture(k * lam, phi, semiangle * 1e-3, (lam / 20.0, lam / 20.0)))
    pixel = (1 / 20.0) ** 2
    area = np.pi * (semiangle * 1e-3 / lam) ** 2
    assert aperture.sum() * pixel == pytest.approx(area, rel=2e-3)


def test_defocus_phase_is_the_textbook_quadratic():
    k, phi, _ = _grid()
    lam = optics.wavelength(200e3)
    chi = optics.aberration_phase(jnp.asarray(k * lam), jnp.asarray(phi), {"C10": 50.0}, lam)
    np.testing.assert_allclose(chi, np.pi * lam * k**2 * 50.0, rtol=1e-5, atol=1e-6)


@given(n=st.integers(1, 5), m_index=st.integers(0, 3), angle=st.floats(-3, 3))
def test_each_aberration_has_its_rotational_symmetry(n, m_index, angle):
    orders = [(nn, m) for (nn, m) in optics.ABERRATION_ORDERS if nn == n]
    (n, m) = orders[m_index % len(orders)]
    magnitude, angle_name = optics.ABERRATION_ORDERS[(n, m)]
    coefficients = {magnitude: 1e3, **({angle_name: angle} if angle_name else {})}
    alpha, phi = jnp.full(8, 0.02), jnp.linspace(0, 2 * np.pi, 8, endpoint=False)
    chi = optics.aberration_phase(alpha, phi, coefficients, 0.02)
    expected = 2 * np.pi / 0.02 * 1e3 * 0.02 ** (n + 1) / (n + 1) * np.cos(m * (phi - (angle if m else 0)))
    np.testing.assert_allclose(chi, expected, rtol=1e-4, atol=1e-3)


def test_aliases_set_krivanek_coefficients():
    spec = ProbeSpec(energy=1e5, semiangle=20, aberrations={"defocus": 30.0, "Cs": 1e4, "C5": 2e6})
    assert spec.coefficients == {"C10": -30.0, "C30": 1e4, "C50": 2e6}


@pytest.mark.parametrize("kwargs, word", [
    ({"energy": 0.0, "semiangle": 20}, "energy"),
    ({"energy": -5.0, "semiangle": 20}, "energy"),
    ({"energy": 1e5, "semiangle": -1}, "semiangle"),
    ({"energy": 1e5, "semiangle": 20, "aberrations": {"C99": 1.0}}, "C99"),
])
def test_bad_probe_specs_are_refused_by_name(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ProbeSpec(**kwargs)


@given(thickness=st.floats(0.1, 50.0), energy=energies, n_steps=st.integers(1, 6))
def test_vacuum_propagation_is_unitary_and_composes(thickness, energy, n_steps):
    with jax.enable_x64(True):
        _check_vacuum_propagation(thickness, energy, n_steps)


def _check_vacuum_propagation(thickness, energy, n_steps):
    k, phi, d = _grid(64, 10.0)
    lam = optics.wavelength(energy)
    antialias = optics.antialias_aperture(k, (d, d))
    spec = ProbeSpec(energy=energy, semiangle=20)
    psi_k = probe_fourier(spec, k, phi, (lam / 10.0, lam / 10.0), jnp.complex128)
    inside = np.asarray(jnp.where(antialias == 1.0, psi_k, 0.0))
    psi_k = jnp.asarray(inside / np.sqrt(np.sum(np.abs(inside) ** 2)))
    vacuum = jnp.ones((n_steps, 64, 64), dtype=jnp.complex128)
    step = fresnel_propagator(k**2, thickness / n_steps, lam, antialias)
    whole = fresnel_propagator(k**2, thickness, lam, antialias)
    out = multislice(psi_k, vacuum, step)
    assert float(jnp.sum(jnp.abs(out) ** 2)) == pytest.approx(1.0, rel=1e-10)
    np.testing.assert_allclose(out, psi_k * whole, atol=1e-10)
