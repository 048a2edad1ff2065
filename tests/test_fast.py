"""The fast (incoherent) tier and signal fields, against multislice and analytic properties."""

import numpy as np
import pytest

from potentials.projected import spatial_frequencies
from twin.stem.fields import SignalField, compute_field
from twin.stem import AnnularDetector, GridScan, PotentialSpec, ProbeSpec, simulate
from twin.stem.fast import annular_cross_section, incoherent_fourier, nyquist_shape, probe_transfer
from twin.structures import graphene


def test_probe_transfer_is_normalised_and_band_limited():
    probe = ProbeSpec(energy=80e3, semiangle=25.0, aberrations={"defocus": 30.0})
    extent = (20.0, 18.0)
    shape = nyquist_shape(probe, extent)
    transfer = probe_transfer(probe, shape, extent)
    ky, kx = spatial_frequencies(shape, extent)
    k = np.hypot(ky[:, None], kx[None, :])
    assert transfer[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert np.abs(transfer).max() <= 1 + 1e-12
    cutoff = 2 * probe.semiangle * 1e-3 / probe.wavelength
    assert np.abs(transfer[k > 1.05 * cutoff]).max() < 1e-6


def test_cross_section_grows_with_atomic_number_and_shrinks_with_inner_angle():
    sigma = [annular_cross_section(z, 80, 200, 60e3) for z in (6, 14, 42, 79)]
    assert np.all(np.diff(sigma) > 0)
    ratio = sigma[1] / sigma[0]  # Si / C: the Z^1.5-1.9 of HAADF contrast
    assert (14 / 6) ** 1.3 < ratio < (14 / 6) ** 2.0
    assert annular_cross_section(6, 100, 200, 60e3) < annular_cross_section(6, 80, 200, 60e3)


@pytest.mark.parametrize("energy, semiangle, inner", [(60e3, 30.0, 80.0), (200e3, 20.0, 70.0)])
def test_fast_tier_matches_multislice_on_graphene_with_si(energy, semiangle, inner):
    atoms = graphene((3, 2))
    atoms.numbers[5] = 14
    probe = ProbeSpec(energy=energy, semiangle=semiangle)
    extent = tuple(atoms.cell.lengths()[:2])
    shape = nyquist_shape(probe, extent)
    step = 0.999 * min(extent[0] / shape[1], extent[1] / shape[0])
    sampling = min(0.05, probe.wavelength / (3 * 0.205))
    ds = simulate(atoms, probe=probe, potential=PotentialSpec(sampling=sampling, slice_thickness=1.0),
                  scan=GridScan(step=step), detectors=[AnnularDetector(name="d", inner=inner, outer=200.0)],
                  method="multislice")
    reference = ds["d"].values.astype(float)
    c = incoherent_fourier(atoms, probe, inner, 200.0, reference.shape)
    fast = np.real(np.fft.ifft2(c)) * c.size
    assert np.corrcoef(fast.ravel(), reference.ravel())[0, 1] > 0.998
    assert np.linalg.norm(fast - reference) / np.linalg.norm(reference) < 0.12


def test_field_evaluates_its_fourier_series_anywhere():
    atoms = graphene((2, 2))
    atoms.numbers[3] = 14
    field = compute_field(atoms, ProbeSpec(energy=60e3, semiangle=30.0), "haadf", "fast")
    c, (lx, ly) = field.coefficients, field.extent
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-20, 30, 300), rng.uniform(-20, 30, 300)
    ky, kx = spatial_frequencies(c.shape, field.extent)
    exact = np.real(np.einsum("yx,py,px->p", c, np.exp(2j * np.pi * np.outer(y, ky)),
                              np.exp(2j * np.pi * np.outer(x, kx))))
    assert np.abs(field(x, y) - exact).max() < 1e-4 * exact.max()
    assert np.allclose(field(x + lx, y - 2 * ly), field(x, y))


def test_source_blur_keeps_the_mean_and_lowers_the_peak():
    atoms = graphene((2, 2))
    field = compute_field(atoms, ProbeSpec(energy=60e3, semiangle=30.0), "haadf", "fast")
    blurred = field.blurred(0.4)
    x, y = np.meshgrid(np.linspace(0, field.extent[0], 60), np.linspace(0, field.extent[1], 60))
    assert blurred.coefficients[0, 0] == field.coefficients[0, 0]
    assert blurred(x, y).max() < 0.9 * field(x, y).max()
    assert isinstance(blurred, SignalField)
