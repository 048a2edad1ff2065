"""STM noise and drift: preamplifier current noise, gap (z) noise, thermal drift, piezo creep.

Values from shared/reference/physics.md section 4 (Voigtlaender, Scanning Probe Microscopy, Springer 2015;
C. J. Chen, Introduction to STM). Defaults describe a low-temperature (4 K) STM, where H-depassivation
lithography on Si(100)-2x1:H is done: a DLPCA-200-class preamplifier at 1e9 V/A (a few fA/sqrt(Hz), ~1 kHz),
z noise < 1 pm, drift < 0.1 nm/h. Room temperature: z noise 5-10 pm, drift 1-10 nm/min (0.17-1.7 A/s).

The two noises are Gaussian Ornstein-Uhlenbeck processes (white noise through a first-order low-pass),
drawn exactly on a time grid of step dt: n_{k+1} = a n_k + sigma sqrt(1 - a^2) xi_k, a = exp(-dt / tau),
n_0 ~ N(0, sigma^2). Stochastic functions take `key` first and are pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from twin.stm._checks import check_number, check_vector


@dataclass(frozen=True, kw_only=True)
class StmNoiseSpec:
    """Noise and drift of the STM.

    preamp_noise_fa_per_rthz: input current-noise density of the preamplifier [fA/sqrt(Hz)], 0-1e4; the
        RMS current noise is density x sqrt(bandwidth) (bandwidth from FeedbackSpec.bandwidth_hz),
        correlated over 1 / (2 pi bandwidth).
    z_noise_pm: RMS tip-sample gap noise (vibration) [pm], 0-1000; z_noise_corr_s: its correlation time
        [s], 1e-6-10.
    drift_ang_per_s: (vx, vy, vz) thermal drift, linear in instrument time: the tip sits at commanded
        + v t relative to the sample [Angstrom/s], each |v| <= 100.
    creep_gamma: piezo creep per decade, gamma in dx(t) = dx0 [1 + gamma log10(t / t0)], 0-0.2
        (typical 0.01-0.02); creep_t0_s: t0, when the move dx0 is reached [s], 1e-4-1e3.
    """

    preamp_noise_fa_per_rthz: float = 5.0
    z_noise_pm: float = 0.5
    z_noise_corr_s: float = 1e-3
    drift_ang_per_s: tuple[float, float, float] = (2e-4, 1e-4, 0.0)
    creep_gamma: float = 0.015
    creep_t0_s: float = 1.0

    def __post_init__(self):
        check_number("preamp_noise_fa_per_rthz", self.preamp_noise_fa_per_rthz, 0.0, 1e4, unit="fA/sqrt(Hz)")
        check_number("z_noise_pm", self.z_noise_pm, 0.0, 1000.0, unit="pm")
        check_number("z_noise_corr_s", self.z_noise_corr_s, 1e-6, 10.0, unit="s")
        drift = check_vector("drift_ang_per_s", self.drift_ang_per_s, 3, unit="Angstrom/s")
        for i, v in enumerate(drift):
            check_number(f"drift_ang_per_s[{i}]", v, -100.0, 100.0, unit="Angstrom/s")
        object.__setattr__(self, "drift_ang_per_s", drift)
        check_number("creep_gamma", self.creep_gamma, 0.0, 0.2)
        check_number("creep_t0_s", self.creep_t0_s, 1e-4, 1e3, unit="s")

    @classmethod
    def noiseless(cls) -> StmNoiseSpec:
        """No noise, no drift, no creep."""
        return cls(preamp_noise_fa_per_rthz=0.0, z_noise_pm=0.0, drift_ang_per_s=(0.0, 0.0, 0.0), creep_gamma=0.0)


def ou_noise(key, n_steps: int, dt_s: float, rms, corr_time_s: float):
    """A stationary Ornstein-Uhlenbeck process (n_steps,) of standard deviation `rms` and correlation time
    corr_time_s [s], sampled every dt_s [s] (exact update, module docstring)."""
    a = math.exp(-dt_s / corr_time_s)
    xi = jax.random.normal(key, (n_steps,))
    kick = rms * math.sqrt(1.0 - a * a) * xi

    def step(n, k):
        n = a * n + k
        return n, n

    _, out = jax.lax.scan(step, rms * xi[0], kick.at[0].set(0.0))
    return out


def preamp_rms_pa(bandwidth_hz: float, spec: StmNoiseSpec) -> float:
    """RMS current noise of the preamplifier output, density x sqrt(bandwidth) [pA]."""
    return spec.preamp_noise_fa_per_rthz * 1e-3 * math.sqrt(bandwidth_hz)


def preamp_noise_pa(key, n_steps: int, dt_s: float, bandwidth_hz: float, spec: StmNoiseSpec):
    """Current noise (n_steps,) [pA] added to the measured current: RMS preamp_rms_pa, correlated over the
    preamplifier's time constant 1 / (2 pi bandwidth_hz)."""
    return ou_noise(key, n_steps, dt_s, preamp_rms_pa(bandwidth_hz, spec), 1.0 / (2 * math.pi * bandwidth_hz))


def z_noise_ang(key, n_steps: int, dt_s: float, spec: StmNoiseSpec):
    """Gap noise (n_steps,) [Angstrom]: RMS z_noise_pm / 100, correlation time z_noise_corr_s."""
    return ou_noise(key, n_steps, dt_s, spec.z_noise_pm / 100.0, spec.z_noise_corr_s)


def drift_ang(time_s, spec: StmNoiseSpec):
    """Thermal drift (..., 3) [Angstrom] at instrument time time_s (...,) [s]: v t."""
    return jnp.asarray(time_s)[..., None] * jnp.asarray(spec.drift_ang_per_s)


def creep_ang(time_s, move_ang, move_time_s: float, spec: StmNoiseSpec):
    """Piezo creep (..., 2) [Angstrom] after a lateral move move_ang (dx0, dy0) completed at move_time_s:
    dx0 gamma log10(t' / t0) for t' = time_s - move_time_s >= t0, 0 before (the part of
    dx0 [1 + gamma log10(t' / t0)] beyond the commanded move)."""
    elapsed = jnp.maximum(jnp.asarray(time_s) - move_time_s, spec.creep_t0_s)
    decades = jnp.log10(elapsed / spec.creep_t0_s)
    return spec.creep_gamma * decades[..., None] * jnp.asarray(move_ang, dtype=decades.dtype)
