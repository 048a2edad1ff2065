"""Constant-current feedback: a PI controller on ln(I) behind the preamplifier's low-pass.

Each loop step (dt = 1 / loop_rate_hz):

    z      = clip(z_I + P e / g, z_min, z_max)          piezo height [A]; g = 2 kappa, the nominal
                                                         d(-ln I)/dz [1/A], makes P dimensionless
    I      = current(z + dz)                             true current [pA]; dz: drift + gap noise
    I_f   += (1 - exp(-2 pi f_c dt)) (I - I_f)          preamplifier, first-order low-pass at f_c
    I_m    = I_f + n                                     measured current; n: preamplifier noise
    e      = ln(max(I_m, I_floor)) - ln(I_set)           error signal
    z_I   += e dt / (g T_i)                              integral action (clipped to the z range)

With an instantaneous plant (ln I = -g (z - z*)) and P = 0 the loop is first order: the error decays as
exp(-t / T_i), 5 % after 3 T_i (shared/reference/physics.md section 4: settling ~3 integral times).
The preamplifier lag adds a second pole at -2 pi f_c; keep T_i > ~3 / (2 pi f_c) to stay overdamped.
Defaults: f_c = 1 kHz (preamp at 1e9 V/A), T_i = 1 ms (physics.md: 0.1-1 ms), P = 0.1, 50 kHz loop rate (a
DSP controller). In constant-height mode the same chain runs with z held fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from twin.stm._checks import check_number, check_vector, require


@dataclass(frozen=True, kw_only=True)
class FeedbackSpec:
    """The z feedback and the current measurement.

    proportional: P, dimensionless (z moves by P e / (2 kappa)), 0-10.
    integral_time_s: T_i [s], 1e-6-1.
    bandwidth_hz: -3 dB bandwidth f_c of the preamplifier low-pass [Hz], 10-1e6.
    loop_rate_hz: controller update rate [Hz], 1e3-1e7, at least 2 x bandwidth_hz.
    z_limits_ang: (z_min, z_max) range of the apex height above the Si plane [Angstrom] (z_min > 0 keeps
        the tip out of the surface).
    current_floor_pa: smallest measured current the logarithm sees [pA], > 0.
    """

    proportional: float = 0.1
    integral_time_s: float = 1e-3
    bandwidth_hz: float = 1000.0
    loop_rate_hz: float = 50_000.0
    z_limits_ang: tuple[float, float] = (2.0, 40.0)
    current_floor_pa: float = 1e-3

    def __post_init__(self):
        check_number("proportional", self.proportional, 0.0, 10.0)
        check_number("integral_time_s", self.integral_time_s, 1e-6, 1.0, unit="s")
        check_number("bandwidth_hz", self.bandwidth_hz, 10.0, 1e6, unit="Hz")
        check_number("loop_rate_hz", self.loop_rate_hz, max(1e3, 2 * self.bandwidth_hz), 1e7, unit="Hz")
        limits = check_vector("z_limits_ang", self.z_limits_ang, 2, unit="Angstrom")
        require(0 < limits[0] < limits[1], "z_limits_ang", self.z_limits_ang, "give 0 < z_min < z_max [Angstrom]")
        object.__setattr__(self, "z_limits_ang", limits)
        check_number("current_floor_pa", self.current_floor_pa, 0.0, 1e3, open_low=True, unit="pA")

    def substeps(self, dwell_s: float) -> int:
        """Loop steps per pixel of dwell dwell_s [s]: round(dwell_s loop_rate_hz), at least 1."""
        return max(1, int(round(dwell_s * self.loop_rate_hz)))


class FeedbackState(NamedTuple):
    """z_integral_ang: integrator [A]; current_filtered_pa: low-passed current [pA]; error: last e."""

    z_integral_ang: jax.Array
    current_filtered_pa: jax.Array
    error: jax.Array


def feedback_init(z_ang, current_pa) -> FeedbackState:
    """A settled loop: the tip at z_ang [A] reads current_pa [pA] (the setpoint), error 0."""
    z = jnp.asarray(z_ang, jnp.result_type(float))
    return FeedbackState(z, jnp.asarray(current_pa, z.dtype), jnp.zeros_like(z))


def run_loop(current_fn, state: FeedbackState, setpoint_pa, spec: FeedbackSpec, *, gain_per_ang, dt_s: float,
             current_noise_pa, gap_offset_ang, closed: bool = True, height_ang=None):
    """Run the loop (module docstring) over n steps with jax.lax.scan.

    current_fn(k, z) -> true current [pA] at step k with the apex at height z [A];
    setpoint_pa: scalar or (n,) [pA]; gain_per_ang: g = 2 kappa [1/A]; current_noise_pa (n,) [pA] and
    gap_offset_ang (n,) [A] (drift + gap noise); closed: feedback on (False: z held at height_ang).
    Returns (final state, traces) with traces {"z_ang", "current_pa", "error"}, each (n,): the piezo height,
    the measured current and the error signal at each step.
    """
    n = current_noise_pa.shape[0]
    setpoint = jnp.broadcast_to(jnp.asarray(setpoint_pa, state.z_integral_ang.dtype), (n,))
    z_min, z_max = spec.z_limits_ang
    alpha = 1.0 - math.exp(-2 * math.pi * spec.bandwidth_hz * dt_s)
    rate = dt_s / (gain_per_ang * spec.integral_time_s)

    def step(s: FeedbackState, inputs):
        k, noise, offset, target = inputs
        if closed:
            z = jnp.clip(s.z_integral_ang + spec.proportional * s.error / gain_per_ang, z_min, z_max)
        else:
            z = jnp.asarray(height_ang, s.z_integral_ang.dtype)
        filtered = s.current_filtered_pa + alpha * (current_fn(k, z + offset) - s.current_filtered_pa)
        measured = filtered + noise
        error = jnp.log(jnp.maximum(measured, spec.current_floor_pa)) - jnp.log(target)
        z_int = jnp.clip(s.z_integral_ang + rate * error, z_min, z_max) if closed else s.z_integral_ang
        return FeedbackState(z_int, filtered, error), (z, measured, error)

    inputs = (jnp.arange(n), current_noise_pa, gap_offset_ang, setpoint)
    final, (z, current, error) = jax.lax.scan(step, state, inputs)
    return final, {"z_ang": z, "current_pa": current, "error": error}
