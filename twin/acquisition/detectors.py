"""Detector chains: from the ideal STEM signal and the incident electrons to recorded output.

`signal` is the ideal signal of any shape: the fraction (0..1) of the incident beam that reaches the
detector (an annular-detector image from twin.stem, for instance). `electrons` is the number of electrons
incident per pixel, I t / e (`twin.acquisition.dose.electrons_per_pixel`), a scalar or an array that
broadcasts against `signal`. Model after Lobato, Friedrich & Van Aert, npj Comput. Mater. (2024),
arXiv:2303.17025 (shot noise at the scintillator, PMT gain noise, readout noise) and shared/reference/
physics.md section 5: counts ~ Poisson(eta N s), then a gamma-distributed PMT gain, then Gaussian readout.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from twin.acquisition._checks import is_number, require


def _incident(signal, electrons, efficiency):
    """lambda = eta N s [electrons detected, expected], float32, negative signal clipped to 0."""
    signal = jnp.clip(jnp.asarray(signal, jnp.float32), 0.0, None)
    return (efficiency * jnp.asarray(electrons, jnp.float32)) * signal


class AbstractDetector(abc.ABC):
    """A detector chain. `detect` draws the output; `mean` and `variance` give its first two moments."""

    @abc.abstractmethod
    def detect(self, key, signal, electrons) -> jax.Array:
        """Output (broadcast shape of signal and electrons) [counts], float32."""

    @abc.abstractmethod
    def mean(self, signal, electrons) -> jax.Array:
        """Expected output [counts]."""

    @abc.abstractmethod
    def variance(self, signal, electrons) -> jax.Array:
        """Variance of the output [counts^2]."""


@dataclass(frozen=True, kw_only=True)
class CountingDetector(AbstractDetector):
    """An electron-counting detector: counts ~ Poisson(eta N s), so variance = mean.

    efficiency: detective efficiency eta, the fraction of arriving electrons counted, 0 < eta <= 1.
    """

    efficiency: float = 1.0

    def __post_init__(self):
        require(is_number(self.efficiency) and 0 < self.efficiency <= 1, "efficiency", self.efficiency,
                "the detector efficiency must be in (0, 1]")

    def detect(self, key, signal, electrons) -> jax.Array:
        """counts ~ Poisson(eta N s) [electrons], float32 of the broadcast shape of signal and electrons."""
        lam = _incident(signal, electrons, self.efficiency)
        return jax.random.poisson(key, lam, lam.shape).astype(jnp.float32)

    def mean(self, signal, electrons) -> jax.Array:
        """E[counts] = eta N s."""
        return _incident(signal, electrons, self.efficiency)

    def variance(self, signal, electrons) -> jax.Array:
        """Var[counts] = eta N s (Poisson)."""
        return _incident(signal, electrons, self.efficiency)


@dataclass(frozen=True, kw_only=True)
class PMTDetector(AbstractDetector):
    """Scintillator + photomultiplier: out = sum_{i<n} g_i + readout + dark, n ~ Poisson(eta N s).

    efficiency: fraction eta of arriving electrons that excite the scintillator, 0 < eta <= 1.
    gain: mean output per detected electron [output units / electron], > 0.
    enf: excess noise factor of the gain, ENF^2 = 1 + var(g)/mean(g)^2 >= 1 (1: noiseless gain; typical
        1.2-1.5, physics.md section 5). Each g_i ~ Gamma(k, theta) with k = 1/(enf^2 - 1) and
        theta = gain (enf^2 - 1); the sum of n gains is drawn at once as Gamma(n k, theta).
    readout_sigma: standard deviation of the Gaussian readout noise [output units], >= 0.
    dark_offset: constant dark level added to every pixel [output units].

    Mean out = gain eta N s + dark; Var out = enf^2 gain^2 eta N s + readout_sigma^2.
    """

    efficiency: float = 1.0
    gain: float = 1.0
    enf: float = 1.0
    readout_sigma: float = 0.0
    dark_offset: float = 0.0

    def __post_init__(self):
        require(is_number(self.efficiency) and 0 < self.efficiency <= 1, "efficiency", self.efficiency,
                "the detector efficiency must be in (0, 1]")
        require(is_number(self.gain) and self.gain > 0, "gain", self.gain,
                "the PMT gain must be > 0 [output units per electron]")
        require(is_number(self.enf) and self.enf >= 1, "enf", self.enf,
                "the excess noise factor must be >= 1")
        require(is_number(self.readout_sigma) and self.readout_sigma >= 0, "readout_sigma",
                self.readout_sigma, "the readout noise must be >= 0 [output units]")
        require(is_number(self.dark_offset), "dark_offset", self.dark_offset,
                "the dark offset must be a finite number [output units]")

    def _amplify(self, key, n) -> jax.Array:
        """sum of n gains ~ Gamma(n k, theta) (0 for n = 0); exactly gain n when enf = 1."""
        if self.enf == 1:
            return self.gain * n
        excess = self.enf**2 - 1.0
        shape = n / excess
        draw = jax.random.gamma(key, jnp.where(n > 0, shape, 1.0), dtype=jnp.float32)
        return jnp.where(n > 0, draw * (self.gain * excess), 0.0)

    def detect(self, key, signal, electrons) -> jax.Array:
        """out = Gamma(n k, theta) + N(0, readout_sigma^2) + dark_offset, n ~ Poisson(eta N s); float32."""
        k_shot, k_gain, k_read = jax.random.split(key, 3)
        lam = _incident(signal, electrons, self.efficiency)
        n = jax.random.poisson(k_shot, lam, lam.shape).astype(jnp.float32)
        out = self._amplify(k_gain, n)
        if self.readout_sigma > 0:
            out = out + self.readout_sigma * jax.random.normal(k_read, out.shape, jnp.float32)
        return (out + self.dark_offset).astype(jnp.float32)

    def mean(self, signal, electrons) -> jax.Array:
        """E[out] = gain eta N s + dark_offset."""
        return self.gain * _incident(signal, electrons, self.efficiency) + self.dark_offset

    def variance(self, signal, electrons) -> jax.Array:
        """Var[out] = enf^2 gain^2 eta N s + readout_sigma^2 (law of total variance)."""
        lam = _incident(signal, electrons, self.efficiency)
        return (self.enf * self.gain) ** 2 * lam + self.readout_sigma**2


def detect(key, signal, electrons, detector: AbstractDetector) -> jax.Array:
    """Record `signal` with `detector`: output [detector units], float32, broadcast shape.

    key: jax.random key; signal: ideal fraction of the beam reaching the detector (any shape, 0..1);
    electrons: incident electrons per pixel (I t / e), broadcastable; detector: a CountingDetector or a
    PMTDetector (static under jit). Example:
        detect(jax.random.key(0), haadf, electrons_per_pixel(30.0, 4e-6), PMTDetector(gain=10.0, enf=1.3))
    Source: Lobato et al., npj Comput. Mater. (2024), arXiv:2303.17025.
    """
    if not isinstance(detector, AbstractDetector):
        raise TypeError(f"detector={detector!r} is not allowed; give a CountingDetector or a PMTDetector")
    return detector.detect(key, signal, electrons)
