import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from hypothesis import given, strategies as st
from scipy.integrate import simpson

from potentials import parametrizations as par
from potentials.projected import PotentialSpec, projected_potential_slices, spatial_frequencies
from twin.structures import graphene

ELEMENTS = [1, 6, 14, 38, 79, 92]


def single_atom(number, side=16.0, z=5.0, height=10.0):
    return Atoms(numbers=[number], positions=[(side / 2, side / 2, z)], cell=[side, side, height], pbc=True)


def build(atoms, dtype=jnp.float64, **spec):
    spec = PotentialSpec(**{"sampling": 0.05, "slice_thickness": 20.0, **spec})
    return np.asarray(projected_potential_slices(atoms.positions, atoms.numbers, atoms.cell.lengths(), spec, dtype))


@pytest.mark.parametrize("name", par.PARAMETRIZATIONS)
@pytest.mark.parametrize("number", ELEMENTS)
def test_grid_potential_matches_analytic_real_space_projection(x64, name, number):
    """The FFT-built potential against the closed-form Bessel/Gaussian projection, away from the core."""
    side = 12.0
    v = build(single_atom(number, side), sampling=0.02, parametrization=name)[0]
    n = v.shape[0]
    d = side / n
    centre = n // 2
    pixels = np.arange(25, 175)  # 0.5 to 3.5 Angstrom along x
    radii, grid = pixels * d, v[centre, centre + pixels]
    t = par.terms(name, number)
    # The grid potential is periodic: add the tails of the four nearest images.
    analytic = sum(par.projected_potential(t, np.hypot(radii + dx, dy))
                   for dx, dy in [(0, 0), (side, 0), (-side, 0), (0, side), (0, -side)])
    # The grid holds the band-limited potential, which rings at the Nyquist frequency next to the
    # log-singular core; a [1, 2, 1] / 4 smoothing of both sides removes that ringing.
    smooth = lambda y: np.convolve(y, [0.25, 0.5, 0.25], mode="valid")
    np.testing.assert_allclose(smooth(grid), smooth(analytic), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", par.PARAMETRIZATIONS)
@pytest.mark.parametrize("number", ELEMENTS)
def test_integrated_potential_equals_forward_scattering_factor(x64, name, number):
    v = build(single_atom(number, 10.0), sampling=0.1, parametrization=name)
    pixel = (10.0 / v.shape[-1]) ** 2
    expected = par.PROJECTED_POTENTIAL_CONSTANT * float(par.scattering_factor(par.terms(name, number), 0.0))
    assert v.sum() * pixel == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", par.PARAMETRIZATIONS)
@given(g=st.floats(0.0, 4.0), z0=st.floats(-3.0, 2.0), width=st.floats(0.05, 3.0))
def test_slab_scattering_factor_matches_numerical_kz_integral(name, g, z0, width):
    """Closed form against quadrature of f_e(sqrt(g^2 + kz^2)) [sin(2 pi kz z1) - sin(2 pi kz z0)] / (2 pi kz)."""
    with jax.enable_x64(True):
        t = par.terms(name, 14)
        z1 = z0 + width

        kz = np.linspace(0.0, 200.0, 400_001)
        f = np.asarray(par.scattering_factor(t, g**2 + kz**2))
        kernel = np.where(kz == 0, 2 * (z1 - z0), (np.sin(2 * np.pi * kz * z1) - np.sin(2 * np.pi * kz * z0))
                          / (np.pi * np.where(kz == 0, 1.0, kz)))
        numeric = simpson(f * kernel, x=kz)
        closed = float(par.slab_scattering_factor(t, g**2, z0, z1))
    assert closed == pytest.approx(numeric, rel=2e-4, abs=2e-5)


@pytest.mark.parametrize("name", par.PARAMETRIZATIONS)
def test_finite_slices_sum_to_the_infinite_projection(x64, name):
    atoms = single_atom(79, side=8.0, z=7.3, height=14.6)
    finite = build(atoms, sampling=0.1, slice_thickness=1.0, projection="finite", parametrization=name)
    infinite = build(atoms, sampling=0.1, slice_thickness=1.0, parametrization=name)
    assert finite.shape[0] == infinite.shape[0] == 15
    assert np.count_nonzero(np.abs(infinite).max((1, 2))) == 1
    # The tail beyond the 7.3 Angstrom to either face is cut; it is below 1e-4 of the peak.
    np.testing.assert_allclose(finite.sum(0), infinite.sum(0), atol=1e-4 * infinite.max())
    # and the potential is spread over neighbouring slices, most in the atom's own
    assert np.argmax(finite.max((1, 2))) == 7 and np.count_nonzero(finite.max((1, 2)) > 1e-6 * finite.max()) > 3


def _fourier_shift(v, shift, extent):
    ky, kx = spatial_frequencies(v.shape[-2:], extent)
    phase = np.exp(-2j * np.pi * (kx[None, :] * shift[0] + ky[:, None] * shift[1]))
    return np.fft.ifft2(np.fft.fft2(v) * phase).real


@given(dx=st.floats(-0.5, 0.5), dy=st.floats(-0.5, 0.5))
def test_potential_does_not_depend_on_subpixel_position(dx, dy):
    """Shift graphene by a sub-pixel amount: the slices are the Fourier-shifted (exactly interpolated)
    slices of the unshifted cell, so no interpolation error at all, and peak/mean unchanged."""
    with jax.enable_x64(True):
        atoms = graphene((2, 1))
        extent = tuple(atoms.cell.lengths()[:2])
        sampling = 0.1
        base = build(atoms, sampling=sampling, slice_thickness=2.0)
        moved = atoms.copy()
        shift = (dx * sampling, dy * sampling)
        moved.positions[:, :2] += shift
        shifted = build(moved, sampling=sampling, slice_thickness=2.0)
    np.testing.assert_allclose(shifted, _fourier_shift(base, shift, extent), atol=1e-9 * base.max())


def test_float32_potential_agrees_with_float64():
    atoms = graphene((3, 2))
    atoms.positions += 0.0123
    with jax.enable_x64(True):
        v64 = build(atoms, sampling=0.08, slice_thickness=2.0)
        v32 = build(atoms, jnp.float32, sampling=0.08, slice_thickness=2.0)
    assert v32.dtype == np.float32
    assert np.abs(v32 - v64).max() < 1e-4 * v64.max()


def test_atoms_outside_the_cell_are_wrapped(x64):
    atoms = graphene((2, 2))
    moved = atoms.copy()
    moved.positions += atoms.cell.lengths() * [2, -3, 1]
    np.testing.assert_allclose(build(moved, slice_thickness=2.0), build(atoms, slice_thickness=2.0), atol=1e-9)


@pytest.mark.parametrize("kwargs, word", [
    ({"sampling": -0.1, "slice_thickness": 1}, "sampling"),
    ({"sampling": 0.1, "slice_thickness": 0}, "slice_thickness"),
    ({"sampling": 0.1, "slice_thickness": 1, "parametrization": "peng"}, "peng"),
    ({"sampling": 0.1, "slice_thickness": 1, "projection": "half"}, "half"),
])
def test_bad_potential_specs_are_refused_by_name(kwargs, word):
    with pytest.raises(ValueError, match=word):
        PotentialSpec(**kwargs)
