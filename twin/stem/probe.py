"""The focused probe: a soft-edged condenser aperture and the aberration phase of the probe-forming lens."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax.numpy as jnp

from twin.stem import optics

# Common names accepted for aberration coefficients, and the Krivanek coefficient each sets.
ABERRATION_ALIASES = {"defocus": ("C10", -1.0), "Cs": ("C30", 1.0), "C5": ("C50", 1.0)}


def _check_positive(name: str, value, unit: str):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} is not allowed; it must be positive [{unit}]")


@dataclass(frozen=True, kw_only=True)
class ProbeSpec:
    """A convergent STEM probe.

    energy: beam energy [eV]; semiangle: convergence semi-angle [mrad];
    aberrations: Krivanek coefficients {"C10": ..., "C12": ..., "phi12": ..., ..., "C56", "phi56"}, lengths
        [Angstrom], angles [rad]; also "defocus" (= -C10), "Cs" (= C30), "C5" (= C50) [Angstrom].

    Example: ProbeSpec(energy=200e3, semiangle=25.0, aberrations={"defocus": 50.0, "C30": -1e4})
    """

    energy: float
    semiangle: float
    aberrations: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        _check_positive("energy", self.energy, "eV")
        _check_positive("semiangle", self.semiangle, "mrad")
        allowed = optics.ABERRATION_NAMES + tuple(ABERRATION_ALIASES)
        for name, value in self.aberrations.items():
            if name not in allowed:
                raise ValueError(f"aberration {name!r} does not exist; allowed: {', '.join(allowed)}")
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"aberration {name}={value!r} is not allowed; it must be a finite number")
        object.__setattr__(self, "aberrations", dict(self.aberrations))

    @property
    def coefficients(self) -> dict[str, float]:
        """The aberrations in Krivanek names only, aliases resolved."""
        out = {}
        for name, value in self.aberrations.items():
            target, sign = ABERRATION_ALIASES.get(name, (name, 1.0))
            out[target] = out.get(target, 0.0) + sign * value
        return out

    @property
    def wavelength(self) -> float:
        """[Angstrom]"""
        return optics.wavelength(self.energy)


def probe_fourier(spec: ProbeSpec, k, phi, angular_sampling, dtype=jnp.complex64, coefficients=None):
    """Probe at the origin in Fourier space, A(k) exp(-i chi(k)), with sum |.|^2 = 1.

    k, phi: polar frequencies on the (ny, nx) grid [1/Angstrom, rad]; angular_sampling (dy, dx) [rad];
    coefficients: Krivanek aberrations overriding spec.coefficients (may be traced, for gradients).
    """
    alpha = jnp.asarray(k * spec.wavelength)
    phi = jnp.asarray(phi)
    aperture = optics.soft_aperture(alpha, phi, spec.semiangle * 1e-3, angular_sampling)
    coefficients = spec.coefficients if coefficients is None else coefficients
    chi = optics.aberration_phase(alpha, phi, coefficients, spec.wavelength)
    array = (aperture * jnp.exp(-1j * chi)).astype(dtype)
    return array / jnp.sqrt(jnp.sum(jnp.abs(array) ** 2))


def probe_tail_fraction(spec: ProbeSpec, radius: float, extent: float | None = None) -> float:
    """Fraction of the probe's intensity (in vacuum, at its entrance plane) farther than `radius` [Angstrom]
    from its centre: the error scale of propagating the probe in a window of side 2 * radius.

    The aperture's encircled energy converges slowly (about lambda / (pi^2 alpha r) beyond r for a hard edge),
    so windows that keep this below 1e-3 are of order 10 nm for common probes.
    """
    import numpy as np

    from potentials.projected import spatial_frequencies

    extent = max(8 * radius, 40.0) if extent is None else extent
    n = 2 * math.ceil(extent * 3 * spec.semiangle * 1e-3 / spec.wavelength)  # 3x the aperture's Nyquist need
    ky, kx = spatial_frequencies((n, n), (extent, extent))
    k, phi = optics.polar_frequencies(ky, kx)
    psi_k = probe_fourier(spec, k, phi, (spec.wavelength / extent,) * 2)
    intensity = np.abs(np.fft.ifft2(np.asarray(psi_k))) ** 2
    x = np.fft.fftfreq(n, 1 / extent)
    r = np.hypot(x[:, None], x[None, :])
    return float(intensity[r > radius].sum() / intensity.sum())
