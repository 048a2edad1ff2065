"""Hydrogen depassivation lithography (HDL) on Si(100)-2x1:H: STM-pulse desorption of single H and
repassivation of dangling bonds (DB) by an H-terminated tip.

The sample is an H occupancy `occupied` (n,) bool over surface sites at `sites_xy` (n, 2) [Angstrom], of which
`present` (n,) bool exist; distances are lateral, minimum-image over a periodic cell `extent` (Lx, Ly)
[Angstrom] when it is given. The tunnelling current I [pA] of a pulse is an input (the image-formation model
computes it). Two desorption channels act on each occupied site i (Shen et al., Science 268, 1590 (1995)):

- electronic (sigma -> sigma* by field-emitted electrons), linear in the site current:
  r_e = Y_e Phi((V - V_th) / w) I_i / e, Phi the standard normal CDF (a threshold broadened by a Gaussian of
  width w; its tail falls fast enough that the power law alone acts at 2-4.5 V);
- vibrational (multiple vibrational excitation by inelastic tunnelling electrons, truncated-oscillator
  ladder climbing; Shen 1995, Stokbro et al., PRL 80, 2618 (1998)), a power law in the site current:
  r_v = Y_v (I_ref / e) (I_i / I_ref)^n(V), n(V) linear from n_low at V_low to n_high at V_high and held
  constant outside; Y_v is the yield per electron [H/e] at I_i = I_ref.

Only positive sample bias is modelled: at negative bias desorption goes through the Si-H 5 sigma hole
resonance (a power law in I with the maximum rate at -7 V; Stokbro 1998) and no parameters are known to us,
so `bias_v <= 0` raises ValueError.

The current through site i is I_i = I w_i, w_i = exp(-2 kappa d_i) / sum_j exp(-2 kappa d_j) over the present
sites within `spread_radius_ang` of the tip (d lateral, kappa = sqrt(2 m phi) / hbar). The weights are set by
the tip-sample geometry and are held fixed during a pulse (a desorbed site keeps its share of the current; no
renormalisation), so the rates do not change when an H leaves and the kinetic Monte Carlo of competing
exponential clocks reduces exactly to one Exp(r_i) clock per occupied site: site i desorbs at t_i = E_i / r_i
if t_i < duration, by the channel c with probability r_c / (r_e + r_v).

Defaults, sources and the measured figures are in docs/validation.md ("Hydrogen depassivation lithography").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np
from scipy.special import ndtr

from potentials import units

HBAR = units.HPLANCK / (2 * math.pi)  # [J s]


def _number(value) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) \
        and math.isfinite(value)


@dataclass(frozen=True, kw_only=True)
class HDLSpec:
    """Desorption and repassivation parameters; see the module docstring for the rate laws.

    electronic_threshold_v [V], electronic_width_v [V]: midpoint and Gaussian width of the sigma -> sigma* step
        (10-90 % rise over 2.56 width: 5.99-7.01 V at the defaults).
    electronic_yield [H/e]: yield per electron above the step.
    vibrational_yield_ref [H/e]: vibrational yield per electron at a site current of vibrational_current_ref_pa.
    vibrational_current_ref_pa [pA]: reference site current I_ref of the power law.
    vibrational_order_low, vibrational_order_high: current exponent n at vibrational_bias_low_v and
        vibrational_bias_high_v [V] (linear between, constant outside).
    work_function_ev [eV]: sets the decay constant kappa of the site weights.
    spread_radius_ang [Angstrom]: sites farther from the tip carry no current.
    capture_radius_ang [Angstrom]: a pulse needs an H, a repassivation a DB, this close to the tip.
    repassivation_probability: chance that an H-terminated tip gives its H to the DB (a tunable parameter,
        not a fitted fact; physics.md section 3).

    Example: rates = desorption_rates(2.5, np.array([1500.0]), HDLSpec())   # [1/s]
    """

    electronic_threshold_v: float = 6.5
    electronic_width_v: float = 0.4
    electronic_yield: float = 3e-6
    vibrational_yield_ref: float = 1e-9
    vibrational_current_ref_pa: float = 1000.0
    vibrational_order_low: float = 12.0
    vibrational_order_high: float = 6.0
    vibrational_bias_low_v: float = 2.0
    vibrational_bias_high_v: float = 4.5
    work_function_ev: float = 4.5
    spread_radius_ang: float = 5.0
    capture_radius_ang: float = 1.5
    repassivation_probability: float = 0.9

    def __post_init__(self):
        for name in ("electronic_threshold_v", "electronic_width_v", "electronic_yield", "vibrational_yield_ref",
                     "vibrational_current_ref_pa", "vibrational_bias_low_v", "vibrational_bias_high_v",
                     "work_function_ev", "spread_radius_ang", "capture_radius_ang"):
            value = getattr(self, name)
            if not (_number(value) and value > 0):
                raise ValueError(f"{name}={value!r} is not allowed; it must be a positive finite number")
        for name in ("vibrational_order_low", "vibrational_order_high"):
            value = getattr(self, name)
            if not (_number(value) and value >= 1):
                raise ValueError(f"{name}={value!r} is not allowed; the current exponent must be >= 1")
        for name in ("electronic_yield", "vibrational_yield_ref"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; a yield must be in (0, 1] H/e")
        if self.vibrational_bias_high_v <= self.vibrational_bias_low_v:
            raise ValueError(f"vibrational_bias_high_v={self.vibrational_bias_high_v!r} is not allowed; it must "
                             f"exceed vibrational_bias_low_v={self.vibrational_bias_low_v!r}")
        if self.capture_radius_ang > self.spread_radius_ang:
            raise ValueError(f"capture_radius_ang={self.capture_radius_ang!r} is not allowed; it must be <= "
                             f"spread_radius_ang={self.spread_radius_ang!r}")
        p = self.repassivation_probability
        if not (_number(p) and 0 <= p <= 1):
            raise ValueError(f"repassivation_probability={p!r} is not allowed; it must be in [0, 1]")

    @property
    def kappa_per_ang(self) -> float:
        """Tunnelling decay constant kappa = sqrt(2 m phi) / hbar [1/Angstrom] (1.087 at 4.5 eV)."""
        return math.sqrt(2 * units.ME * self.work_function_ev * units.E) / HBAR * 1e-10


def _check_bias(bias_v) -> np.ndarray:
    bias = np.asarray(bias_v, dtype=float)
    if not np.all(np.isfinite(bias)) or np.any(bias <= 0):
        raise ValueError(f"bias_v={bias_v!r} is not allowed; it must be finite and > 0 V (positive sample bias; "
                         "negative-bias desorption via the 5 sigma hole resonance is not modelled)")
    return bias


def _check_current(site_current_pa) -> np.ndarray:
    current = np.asarray(site_current_pa, dtype=float)
    if not np.all(np.isfinite(current)) or np.any(current < 0):
        raise ValueError(f"current_pa={site_current_pa!r} is not allowed; it must be finite and >= 0 pA")
    return current


def vibrational_order(bias_v, spec: HDLSpec) -> np.ndarray:
    """Current exponent n(V) of the vibrational channel: linear in V from vibrational_order_low at
    vibrational_bias_low_v to vibrational_order_high at vibrational_bias_high_v, constant outside."""
    bias = _check_bias(bias_v)
    f = np.clip((bias - spec.vibrational_bias_low_v) / (spec.vibrational_bias_high_v - spec.vibrational_bias_low_v),
                0.0, 1.0)
    return spec.vibrational_order_low + f * (spec.vibrational_order_high - spec.vibrational_order_low)


def channel_rates(bias_v, site_current_pa, spec: HDLSpec) -> tuple[np.ndarray, np.ndarray]:
    """(electronic, vibrational) desorption rates [1/s] of an H carrying `site_current_pa` [pA] at sample bias
    `bias_v` [V] (broadcast together):
    r_e = Y_e Phi((V - V_th) / w) I / e and r_v = Y_v (I_ref / e) (I / I_ref)^n(V) (Shen 1995)."""
    bias, current = _check_bias(bias_v), _check_current(site_current_pa)
    electrons = current * 1e-12 / units.E  # [1/s]
    step = ndtr((bias - spec.electronic_threshold_v) / spec.electronic_width_v)
    electronic = spec.electronic_yield * step * electrons
    ref = spec.vibrational_current_ref_pa
    power = (current / ref) ** vibrational_order(bias, spec)
    vibrational = spec.vibrational_yield_ref * (ref * 1e-12 / units.E) * power
    return electronic, vibrational


def desorption_rates(bias_v, site_current_pa, spec: HDLSpec) -> np.ndarray:
    """Total desorption rate [1/s] per site, electronic + vibrational (`channel_rates`); shape of
    `site_current_pa` broadcast with `bias_v`.

    Example: desorption_rates(7.5, np.array([1000.0]), HDLSpec())   # ~[1.8e4] 1/s
    """
    electronic, vibrational = channel_rates(bias_v, site_current_pa, spec)
    return electronic + vibrational


def _check_positions(sites_xy, present, tip_xy, extent):
    sites = np.asarray(sites_xy, dtype=float)
    if sites.ndim != 2 or sites.shape[1] != 2 or not np.all(np.isfinite(sites)):
        raise ValueError(f"sites_xy of shape {sites.shape} is not allowed; it must be finite, shape (n, 2) [A]")
    present = np.asarray(present)
    if present.shape != (len(sites),) or present.dtype != bool:
        raise ValueError(f"present of shape {present.shape}, dtype {present.dtype} is not allowed; it must be "
                         f"bool of shape ({len(sites)},)")
    tip = np.asarray(tip_xy, dtype=float)
    if tip.shape != (2,) or not np.all(np.isfinite(tip)):
        raise ValueError(f"tip_xy={tip_xy!r} is not allowed; it must be a finite (x, y) pair [A]")
    if extent is not None:
        ext = np.asarray(extent, dtype=float)
        if ext.shape != (2,) or not np.all(np.isfinite(ext)) or np.any(ext <= 0):
            raise ValueError(f"extent={extent!r} is not allowed; it must be None or a positive (Lx, Ly) [A]")
        extent = ext
    return sites, present, tip, extent


def _check_occupied(occupied, present) -> np.ndarray:
    occupied = np.asarray(occupied)
    if occupied.shape != present.shape or occupied.dtype != bool:
        raise ValueError(f"occupied of shape {occupied.shape}, dtype {occupied.dtype} is not allowed; it must "
                         f"be bool of shape {present.shape}")
    if np.any(occupied & ~present):
        raise ValueError(f"occupied is True at sites {np.flatnonzero(occupied & ~present).tolist()} that are "
                         "not present; an H needs a surface site")
    return occupied


def _lateral_distance(tip, sites, extent) -> np.ndarray:
    d = sites - tip
    if extent is not None:
        d = d - extent * np.round(d / extent)
    return np.hypot(d[:, 0], d[:, 1])


def site_weights(tip_xy, sites_xy, present, spec: HDLSpec, extent=None) -> np.ndarray:
    """Fraction w (n,) of the tunnelling current that flows through each site: w_i = exp(-2 kappa d_i) /
    sum_j exp(-2 kappa d_j) over the present sites with lateral distance d <= spread_radius_ang from `tip_xy`
    (2,) [A] (minimum image in `extent` (Lx, Ly) [A] if given); 0 elsewhere, all 0 if no site is in reach.

    Example: site_weights((0, 0), [[0, 0], [0, 2.25]], np.array([True, True]), HDLSpec())   # [0.9926, 0.0074]
    """
    sites, present, tip, extent = _check_positions(sites_xy, present, tip_xy, extent)
    d = _lateral_distance(tip, sites, extent)
    near = present & (d <= spec.spread_radius_ang)
    if not np.any(near):
        return np.zeros(len(sites))
    w = np.where(near, np.exp(-2 * spec.kappa_per_ang * (d - d[near].min())), 0.0)
    return w / w.sum()


def _check_scalar(name, value, allowed, ok) -> float:
    if not (_number(value) and ok(value)):
        raise ValueError(f"{name}={value!r} is not allowed; it must be {allowed}")
    return float(value)


def pulse(key, occupied, sites_xy, present, tip_xy, *, bias_v: float, current_pa: float, duration_s: float,
          spec: HDLSpec, extent=None, t0_s: float = 0.0):
    """Hold the tip at `tip_xy` (2,) [A] with sample bias `bias_v` [V] > 0 and total current `current_pa` [pA]
    for `duration_s` [s] (feedback off, so the current is fixed), starting at `t0_s` [s].

    Each occupied site desorbs at an independent Exp(r_i) time, r_i = desorption_rates(bias_v, current_pa w_i)
    with w = site_weights (held fixed during the pulse). Returns (occupied_new (n,) bool, events): events in
    time order, dicts {"time_s", "kind": "desorption", "site", "x_ang", "y_ang", "channel": "electronic" |
    "vibrational", "bias_v", "current_pa"}. Inputs are not changed. ValueError (nothing changes) for a bad
    parameter or when no H lies within capture_radius_ang of the tip.

    Example: occ, events = pulse(jax.random.key(0), occ, xy, present, xy[0], bias_v=2.5, current_pa=1600.0,
                                 duration_s=1e-3, spec=HDLSpec())
    """
    bias_v = _check_scalar("bias_v", bias_v, "finite and > 0 V (positive sample bias; negative bias is not "
                           "modelled)", lambda v: v > 0)
    current_pa = _check_scalar("current_pa", current_pa, "finite and >= 0 pA", lambda v: v >= 0)
    duration_s = _check_scalar("duration_s", duration_s, "finite and > 0 s", lambda v: v > 0)
    t0_s = _check_scalar("t0_s", t0_s, "a finite time [s]", lambda v: True)
    sites, present, tip, extent = _check_positions(sites_xy, present, tip_xy, extent)
    occupied = _check_occupied(occupied, present)
    d = _lateral_distance(tip, sites, extent)
    if not np.any(occupied & (d <= spec.capture_radius_ang)):
        raise ValueError(f"no H within capture_radius_ang={spec.capture_radius_ang} A of the tip at "
                         f"({tip[0]:.3f}, {tip[1]:.3f}) A; nothing to desorb, the sample is unchanged")
    electronic, vibrational = channel_rates(bias_v, current_pa * site_weights(tip, sites, present, spec, extent),
                                            spec)
    rate = np.where(occupied, electronic + vibrational, 0.0)
    u = np.asarray(jax.random.uniform(key, (2, len(sites))), dtype=float)  # row 0: clocks, row 1: channels
    times = np.where(rate > 0, -np.log1p(-u[0]) / np.where(rate > 0, rate, 1.0), np.inf)  # Exp(r_i) [s]
    fired = np.flatnonzero(times < duration_s)
    fired = fired[np.argsort(times[fired], kind="stable")]
    new = occupied.copy()
    new[fired] = False
    events = [{"time_s": t0_s + float(times[i]), "kind": "desorption", "site": int(i),
               "x_ang": float(sites[i, 0]), "y_ang": float(sites[i, 1]),
               "channel": "electronic" if u[1, i] * rate[i] < electronic[i] else "vibrational",
               "bias_v": bias_v, "current_pa": current_pa} for i in fired]
    return new, events


def repassivate(key, occupied, sites_xy, present, tip_xy, *, tip_has_h: bool, spec: HDLSpec, extent=None,
                t0_s: float = 0.0):
    """Offer the apex H of an H-terminated tip at `tip_xy` (2,) [A] to the dangling bond (present, not occupied)
    nearest the tip within capture_radius_ang (mechanical transfer near 0 V; Pavlicek 2017, Huff 2017, Achal
    2018). With probability repassivation_probability the H moves: the DB is occupied and the tip loses its H
    (it must be re-terminated before the next transfer); otherwise nothing moves and the tip keeps its H.

    Returns (occupied_new (n,) bool, tip_has_h_new, events): one event {"time_s": t0_s, "kind":
    "repassivation" | "repassivation_failed", "site", "x_ang", "y_ang"}. ValueError (nothing changes) if
    `tip_has_h` is False or no DB lies within capture_radius_ang of the tip.
    """
    t0_s = _check_scalar("t0_s", t0_s, "a finite time [s]", lambda v: True)
    sites, present, tip, extent = _check_positions(sites_xy, present, tip_xy, extent)
    occupied = _check_occupied(occupied, present)
    if not isinstance(tip_has_h, (bool, np.bool_)):
        raise ValueError(f"tip_has_h={tip_has_h!r} is not allowed; it must be a bool")
    if not tip_has_h:
        raise ValueError("tip_has_h=False: repassivation needs an H-terminated tip; re-terminate the tip first "
                         "(the sample is unchanged)")
    d = _lateral_distance(tip, sites, extent)
    candidates = np.flatnonzero(present & ~occupied & (d <= spec.capture_radius_ang))
    if len(candidates) == 0:
        raise ValueError(f"no dangling bond within capture_radius_ang={spec.capture_radius_ang} A of the tip at "
                         f"({tip[0]:.3f}, {tip[1]:.3f}) A; nothing to repassivate, the sample is unchanged")
    site = int(candidates[np.argsort(d[candidates], kind="stable")[0]])
    success = float(jax.random.uniform(key)) < spec.repassivation_probability
    new = occupied.copy()
    new[site] = new[site] or success
    event = {"time_s": t0_s, "kind": "repassivation" if success else "repassivation_failed", "site": site,
             "x_ang": float(sites[site, 0]), "y_ang": float(sites[site, 1])}
    return new, not success, [event]
