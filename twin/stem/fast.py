"""The fast tier: incoherent imaging, each atom a point scatterer seen through the probe's intensity.

For a thin specimen and a dark-field annular detector well outside the bright field, the signal with the
probe at r0 is I(r0) = sum_i sigma_i P(r0 - r_i) (incoherent imaging: Pennycook & Jesson, Ultramicroscopy
37, 14 (1991); Kirkland 2010, Sec. 5.5), with P the probe intensity [1/Angstrom^2, integral 1] and sigma_i
the cross section [Angstrom^2] for elastic scattering of atom i into the annulus, first Born approximation:

    sigma = gamma^2 * integral_inner^outer |f_e(theta / lambda)|^2 2 pi theta dtheta,

gamma = 1 + E / m0c^2 (the relativistic correction to f_e). The result is a Fourier series on the cell's
grid, exact up to its band limit 2 alpha / lambda (the probe intensity carries no higher frequency).
"""

from __future__ import annotations

import numpy as np

from potentials import units
from potentials.parametrizations import scattering_factor, terms
from potentials.projected import spatial_frequencies
from twin.stem import optics
from twin.stem.probe import ProbeSpec, probe_fourier


def annular_cross_section(number: int, inner: float, outer: float, energy: float,
                          parametrization: str = "lobato") -> float:
    """Elastic cross section [Angstrom^2] of atom `number` into the annulus inner..outer [mrad] at `energy` [eV]."""
    theta, weights = np.polynomial.legendre.leggauss(400)
    a, b = inner * 1e-3, outer * 1e-3
    theta = (b - a) / 2 * theta + (a + b) / 2
    f = np.asarray(scattering_factor(terms(parametrization, number), (theta / optics.wavelength(energy)) ** 2))
    gamma = 1 + energy / units.MC2_EV
    return float(gamma**2 * np.sum(weights * f**2 * 2 * np.pi * theta) * (b - a) / 2)


def probe_transfer(probe: ProbeSpec, shape: tuple[int, int], extent: tuple[float, float]) -> np.ndarray:
    """Fourier transform of the probe intensity, integral P(r) exp(-2 pi i k.r) d^2r, (ny, nx) FFT order.

    The grid must carry 2 alpha / lambda (pixel <= lambda / (4 alpha)) so |psi|^2 is not aliased."""
    ky, kx = spatial_frequencies(shape, extent)
    k, phi = optics.polar_frequencies(ky, kx)
    sampling = (probe.wavelength / extent[1], probe.wavelength / extent[0])
    psi = np.fft.ifft2(np.asarray(probe_fourier(probe, k, phi, sampling), dtype=np.complex128))
    intensity = np.abs(psi) ** 2
    return np.fft.fft2(intensity / intensity.sum())


def nyquist_shape(probe: ProbeSpec, extent: tuple[float, float]) -> tuple[int, int]:
    """The smallest even grid (ny, nx) over `extent` whose pixel is <= lambda / (4 alpha) [Angstrom]."""
    step = probe.wavelength / (4 * probe.semiangle * 1e-3)
    return tuple(2 * int(np.ceil(side / step / 2)) for side in (extent[1], extent[0]))


def incoherent_fourier(atoms, probe: ProbeSpec, inner: float, outer: float, shape: tuple[int, int],
                       parametrization: str = "lobato") -> np.ndarray:
    """Fourier coefficients c_k (ny, nx) of I(r) = sum_k c_k exp(2 pi i k.r) over the cell of `atoms`."""
    extent = tuple(atoms.cell.lengths()[:2])
    numbers = atoms.numbers
    sigma = {z: annular_cross_section(int(z), inner, outer, probe.energy, parametrization) for z in set(numbers)}
    weights = np.array([sigma[z] for z in numbers])
    ky, kx = spatial_frequencies(shape, extent)
    x, y = atoms.positions[:, 0], atoms.positions[:, 1]
    structure = np.einsum("i,iy,ix->yx", weights, np.exp(-2j * np.pi * np.outer(y, ky)),
                          np.exp(-2j * np.pi * np.outer(x, kx)))
    return probe_transfer(probe, shape, extent) * structure / (extent[0] * extent[1])
