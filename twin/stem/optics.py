"""Electron optics kernels: wavelength, interaction constant, aberration phase, apertures.

Angles are scattering angles alpha = lambda k [rad inside kernels]; grids are (ny, nx) in FFT order.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from potentials import units

# Krivanek polar notation up to fifth order: (n, m) -> magnitude name, angle name (None for m = 0).
ABERRATION_ORDERS = {
    (1, 0): ("C10", None), (1, 2): ("C12", "phi12"),
    (2, 1): ("C21", "phi21"), (2, 3): ("C23", "phi23"),
    (3, 0): ("C30", None), (3, 2): ("C32", "phi32"), (3, 4): ("C34", "phi34"),
    (4, 1): ("C41", "phi41"), (4, 3): ("C43", "phi43"), (4, 5): ("C45", "phi45"),
    (5, 0): ("C50", None), (5, 2): ("C52", "phi52"), (5, 4): ("C54", "phi54"), (5, 6): ("C56", "phi56"),
}
ABERRATION_NAMES = tuple(n for pair in ABERRATION_ORDERS.values() for n in pair if n is not None)

# Fraction of the Nyquist frequency kept by the antialiasing aperture, and its cosine taper width
# [fraction of 1 / sampling]; the values abTEM uses by default.
ANTIALIAS_CUTOFF = 2.0 / 3.0
ANTIALIAS_TAPER = 0.01


def wavelength(energy: float) -> float:
    """Relativistic electron wavelength [Angstrom] at kinetic energy `energy` [eV].

    lambda = h c / sqrt(E (2 m0 c^2 + E)) (Kirkland 2010, Eq. 2.5).
    """
    return units.HPLANCK * units.C / math.sqrt(energy * units.E * (2 * units.ME * units.C**2 + energy * units.E)) * 1e10


def interaction_constant(energy: float) -> float:
    """Interaction constant sigma [rad / (V Angstrom)] at `energy` [eV].

    sigma = 2 pi m e lambda / h^2 with the relativistic mass m = m0 (1 + E / m0 c^2) (Kirkland 2010, Eq. 5.6).
    """
    mass = units.ME * (1 + energy / units.MC2_EV)
    return 2 * np.pi * mass * units.E * wavelength(energy) * 1e-10 / units.HPLANCK**2 * 1e-10


def polar_frequencies(ky: np.ndarray, kx: np.ndarray):
    """|k| [1/Angstrom] and azimuth phi = atan2(ky, kx) [rad] on the (ny, nx) grid."""
    return np.hypot(ky[:, None], kx[None, :]), np.arctan2(ky[:, None], kx[None, :])


def aberration_phase(alpha, phi, coefficients: dict, wavelength_ang: float):
    """chi(alpha, phi) [rad] = 2 pi / lambda sum_nm C_nm alpha^(n+1) / (n+1) cos(m (phi - phi_nm)).

    Krivanek et al., Ultramicroscopy 78, 1 (1999); lengths C_nm [Angstrom], angles phi_nm [rad], alpha [rad].
    """
    chi = jnp.zeros_like(alpha)
    for (n, m), (magnitude, angle) in ABERRATION_ORDERS.items():
        c = coefficients.get(magnitude, 0.0)
        if isinstance(c, (int, float)) and c == 0.0:  # a traced coefficient is always kept
            continue
        azimuth = 1.0 if m == 0 else jnp.cos(m * (phi - coefficients.get(angle, 0.0)))
        chi = chi + c * alpha ** (n + 1) / (n + 1) * azimuth
    return 2 * np.pi / wavelength_ang * chi


def soft_aperture(alpha, phi, semiangle: float, angular_sampling: tuple[float, float]):
    """Aperture of radius `semiangle` [rad] with an edge one pixel wide, linear in alpha.

    angular_sampling = (d_alpha_y, d_alpha_x) [rad]; the edge width along direction phi is the pixel
    size in that direction, so the transmitted area equals that of a hard aperture.
    """
    width = jnp.sqrt((jnp.cos(phi) * angular_sampling[1]) ** 2 + (jnp.sin(phi) * angular_sampling[0]) ** 2)
    array = jnp.clip((semiangle - alpha) / width + 0.5, 0.0, 1.0)
    return array.at[0, 0].set(1.0)


def antialias_aperture(k, sampling: tuple[float, float]):
    """Band limit at ANTIALIAS_CUTOFF of Nyquist of the coarser axis, with a cosine taper.

    k: |k| on the grid [1/Angstrom]; sampling: (dy, dx) pixel sizes [Angstrom].
    """
    cutoff = ANTIALIAS_CUTOFF / max(sampling) / 2
    taper = ANTIALIAS_TAPER / max(sampling)
    edge = 0.5 * (1 + np.cos(np.pi * (k - cutoff + taper) / taper))
    return np.where(k > cutoff, 0.0, np.where(k > cutoff - taper, edge, 1.0))


def cutoff_angle(shape: tuple[int, int], extent: tuple[float, float], energy: float) -> float:
    """Largest scattering angle [rad] that survives the antialiasing aperture along both axes.

    shape (ny, nx); extent (x, y) [Angstrom]. Angles beyond it carry no intensity, so detectors
    must stay within it.
    """
    sampling = (extent[1] / shape[0], extent[0] / shape[1])
    cutoff = ANTIALIAS_CUTOFF / max(sampling) / 2
    steps = [math.floor(cutoff * extent[i] + 1e-9) / extent[i] for i in (0, 1)]
    return min(steps) * wavelength(energy)
