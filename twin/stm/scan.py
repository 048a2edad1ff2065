"""STM images of an HSurface: ideal currents and heights, and a scan in instrument time with feedback,
noise, drift and creep.

Frames and units: x, y in the sample frame [Angstrom]; z is the apex height above the surface Si plane
(the H plane is LdosSpec.h_height_ang = 1.48 A higher); currents [pA]; bias [V, sample]; time [s].
A scan visits the pixels in raster order (rows of increasing y, x fast), pixel p from t0_s + p dwell_s
(no fly-back time), each held for its dwell while the loop (twin.stm.feedback) runs
FeedbackSpec.substeps(dwell_s) steps; the lateral position of the tip is fixed within a pixel (at its
mid-time). Per pixel the scan records the dwell averages of the piezo height, the measured current and
the error.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from twin.stm._checks import check_number, check_vector, require
from twin.stm.electrostatics import db_charges
from twin.stm.feedback import FeedbackSpec, feedback_init, run_loop
from twin.stm.noise import StmNoiseSpec, creep_ang, drift_ang, preamp_noise_pa, z_noise_ang
from twin.stm.tunnelling import (LdosSpec, TipSpec, TunnellingSpec, background_weight, current_from_lateral,
                                 current_scale_pa, kappa, lateral_terms)

MODES = ("constant-current", "constant-height")


def _terms(surface) -> dict:
    """The arrays of the lateral terms, cut to their non-zero parts (present sites, DB sites, charged sites);
    the DB and charge sets are padded with one inert entry so that no array is empty."""
    charge = db_charges(surface.sites, surface.occupied, surface.present, extent_ang=surface.extent)
    present = np.flatnonzero(surface.present)
    db = surface.dangling_bonds()
    charged = np.flatnonzero(charge != 0)
    pad = np.zeros((1, 3))
    return {"density_sites": jnp.asarray(surface.sites[present]), "present": jnp.ones(len(present), bool),
            "db_sites": jnp.asarray(np.concatenate([surface.sites[db], pad])),
            "db_mask": jnp.asarray(np.arange(len(db) + 1) < len(db)),
            "charge_sites": jnp.asarray(np.concatenate([surface.sites[charged], pad])),
            "charge": jnp.asarray(np.append(charge[charged], 0.0))}


@functools.partial(jax.jit, static_argnames=("spec", "extent"))
def _lateral(xy, bias_v, spec: TunnellingSpec, terms: dict, extent):
    """Lateral terms at points xy (p, 2), mapped in batches of 256."""
    def one(p):
        return lateral_terms(p, bias_v, spec, extent_ang=extent, **terms)
    return jax.lax.map(one, xy, batch_size=256)


def _spec(tip, work_function_ev, ldos) -> TunnellingSpec:
    return TunnellingSpec(work_function_ev=work_function_ev, tip=tip, ldos=ldos)


def scan_grid(fov_ang, center_ang, shape_yx) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres x (nx,), y (ny,) [Angstrom] of a field of view fov_ang (scalar or (fx, fy)) centred at
    center_ang (cx, cy), shape_yx (ny, nx) pixels of fov / n each."""
    fov = check_vector("fov_ang", np.broadcast_to(fov_ang, (2,)), 2, unit="Angstrom")
    for i, f in enumerate(fov):
        check_number(f"fov_ang[{i}]", f, 0.0, 1e5, open_low=True, unit="Angstrom")
    centre = check_vector("center_ang", center_ang, 2, unit="Angstrom")
    shape = tuple(shape_yx) if isinstance(shape_yx, (tuple, list)) else ()
    require(len(shape) == 2 and all(isinstance(n, (int, np.integer)) and 1 <= n <= 4096 for n in shape),
            "shape_yx", shape_yx, "give two integers (ny, nx) from 1 to 4096")
    x, y = (((np.arange(n) + 0.5) / n - 0.5) * f + c for n, f, c in zip(shape[::-1], fov, centre))
    return x, y


def current_at(surface, tip_xyz, bias_v: float, *, tip: TipSpec = TipSpec(), work_function_ev: float = 4.5,
               ldos: LdosSpec = LdosSpec()) -> np.ndarray:
    """Ideal current [pA] (...,) at apex positions tip_xyz (..., 3) [Angstrom] above `surface` (HSurface).

    Example: current_at(si100_h(), [[10.0, 10.0, 7.5]], -1.8)"""
    spec = _spec(tip, work_function_ev, ldos)
    tip_xyz = np.asarray(tip_xyz, float)
    flat = jnp.asarray(tip_xyz.reshape(-1, 3))
    lateral = _lateral(flat[:, :2], bias_v, spec, _terms(surface), surface.extent)
    current = jax.vmap(lambda z, lat: current_from_lateral(z, lat, bias_v, spec))(flat[:, 2], lateral)
    return np.asarray(current).reshape(tip_xyz.shape[:-1])


@functools.partial(jax.jit, static_argnames=("spec", "iterations"))
def _solve_height(lateral, bias_v, log_target, z0, spec, iterations):
    def one(lat, z):
        def residual(zz):
            return jnp.log(current_from_lateral(zz, lat, bias_v, spec)) - log_target

        def newton(_, zz):
            r, slope = jax.jvp(residual, (zz,), (jnp.ones_like(zz),))
            return jnp.clip(zz - r / jnp.minimum(slope, -1e-3), 0.5, 60.0)
        return jax.lax.fori_loop(0, iterations, newton, z)
    return jax.vmap(one)(lateral, z0)


def height_for_current(surface, xy, bias_v: float, current_pa: float, *, tip: TipSpec = TipSpec(),
                       work_function_ev: float = 4.5, ldos: LdosSpec = LdosSpec(),
                       iterations: int = 12) -> np.ndarray:
    """Apex heights (...,) [Angstrom above the Si plane] where the ideal current at lateral points xy (..., 2)
    [Angstrom] equals current_pa [pA]: Newton on ln I (d ln I / dz ~ -2 kappa), starting from the flat
    passivated surface. The ideal (infinitely slow) constant-current topograph along xy; the settled height
    for an approach. Example: height_for_current(si100_h(), [[10.0, 10.0]], -1.8, 50.0)"""
    check_number("current_pa", current_pa, 0.0, 1e6, open_low=True, unit="pA")
    spec = _spec(tip, work_function_ev, ldos)
    xy = np.asarray(xy, float)
    flat = jnp.asarray(xy.reshape(-1, 2))
    lateral = _lateral(flat, bias_v, spec, _terms(surface), surface.extent)
    z0 = _flat_height(bias_v, current_pa, spec) * jnp.ones(len(flat))
    z = _solve_height(lateral, bias_v, math.log(current_pa), z0, spec, iterations)
    return np.asarray(z).reshape(xy.shape[:-1])


def _flat_height(bias_v, current_pa, spec: TunnellingSpec) -> float:
    """Height [A] where a perfect passivated surface would give current_pa (no band bending)."""
    ref = float(current_scale_pa(spec.ldos) * abs(bias_v) * background_weight(bias_v, spec.ldos))
    two_kappa = 2 * float(kappa(spec.work_function_ev))
    return spec.ldos.h_height_ang + math.log(max(ref, 1e-30) / current_pa) / two_kappa


def constant_height_image(surface, *, fov_ang, center_ang, shape_yx, bias_v: float, height_ang: float,
                          tip: TipSpec = TipSpec(), work_function_ev: float = 4.5,
                          ldos: LdosSpec = LdosSpec()) -> np.ndarray:
    """Ideal constant-height current image (ny, nx) [pA] with the apex height_ang above the Si plane (no
    noise, no time). Example: constant_height_image(si100_h(), fov_ang=30, center_ang=(15, 15),
    shape_yx=(64, 64), bias_v=-1.8, height_ang=7.5)"""
    x, y = scan_grid(fov_ang, center_ang, shape_yx)
    xx, yy = np.meshgrid(x, y)
    points = np.stack([xx, yy, np.full_like(xx, height_ang)], axis=-1)
    return current_at(surface, points, bias_v, tip=tip, work_function_ev=work_function_ev, ldos=ldos)


@functools.partial(jax.jit, static_argnames=("spec", "feedback", "n_sub", "dt_s", "closed"))
def _run(lateral, current_noise, gap_offset, z0, setpoint_pa, bias_v, spec, feedback, n_sub, dt_s, closed):
    def current_fn(k, z):
        lat = jax.tree_util.tree_map(lambda a: a[k // n_sub], lateral)
        return current_from_lateral(z, lat, bias_v, spec)

    first = jax.tree_util.tree_map(lambda a: a[0], lateral)
    state = feedback_init(z0, current_from_lateral(z0 + gap_offset[0], first, bias_v, spec))
    _, traces = run_loop(current_fn, state, setpoint_pa, feedback, gain_per_ang=2 * kappa(spec.work_function_ev),
                         dt_s=dt_s, current_noise_pa=current_noise, gap_offset_ang=gap_offset, closed=closed,
                         height_ang=z0)
    return traces


def _check_scan(mode, bias_v, setpoint_pa, dwell_s, t0_s, last_move_ang, last_move_time_s, height_ang):
    """Validate the scalar arguments of scan; return last_move_ang as a tuple."""
    require(mode in MODES, "mode", mode, f"give one of {', '.join(MODES)}")
    check_number("bias_v", bias_v, -10.0, 10.0, unit="V")
    require(abs(bias_v) >= 1e-3, "bias_v", bias_v, "give a bias of at least 1 mV in magnitude")
    check_number("setpoint_pa", setpoint_pa, 0.0, 1e6, open_low=True, unit="pA")
    check_number("dwell_s", dwell_s, 1e-6, 10.0, unit="s")
    check_number("t0_s", t0_s, 0.0, 1e9, unit="s")
    check_number("last_move_time_s", last_move_time_s, -1e9, 1e9, unit="s")
    if mode == "constant-height":
        check_number("height_ang", height_ang, 0.5, 100.0, unit="Angstrom")
    return check_vector("last_move_ang", last_move_ang, 2, unit="Angstrom")


def _timeline(key, x, y, dwell_s, n_sub, t0_s, move, move_time_s, feedback: FeedbackSpec, noise: StmNoiseSpec):
    """Raster timing and what moves the tip: pixel start times (p,) [s], actual lateral positions (p, 2)
    (commanded + drift + creep at mid-pixel) [A], current noise (p n_sub,) [pA] and gap offsets (p n_sub,)
    (z drift + gap noise) [A]."""
    xx, yy = np.meshgrid(x, y)
    n_pix, dt = xx.size, dwell_s / n_sub
    t_start = t0_s + dwell_s * np.arange(n_pix)
    t_mid = jnp.asarray(t_start + dwell_s / 2)
    commanded = jnp.stack([xx.ravel(), yy.ravel()], -1)
    actual = commanded + drift_ang(t_mid, noise)[:, :2] + creep_ang(t_mid, move, move_time_s, noise)
    t_steps = jnp.asarray((t_start[:, None] + (np.arange(n_sub) + 0.5) * dt).ravel())
    key_current, key_gap = jax.random.split(key)
    current_noise = preamp_noise_pa(key_current, n_pix * n_sub, dt, feedback.bandwidth_hz, noise)
    gap = z_noise_ang(key_gap, n_pix * n_sub, dt, noise) + drift_ang(t_steps, noise)[:, 2]
    return t_start, actual, current_noise, gap


def scan(key, surface, *, fov_ang, center_ang, shape_yx, bias_v: float, setpoint_pa: float,
         mode: str = "constant-current", height_ang: float | None = None, dwell_s: float,
         tip: TipSpec = TipSpec(), feedback: FeedbackSpec = FeedbackSpec(), noise: StmNoiseSpec = StmNoiseSpec(),
         work_function_ev: float = 4.5, t0_s: float = 0.0, ldos: LdosSpec = LdosSpec(),
         last_move_ang=(0.0, 0.0), last_move_time_s: float = 0.0) -> dict:
    """Acquire one STM frame of `surface` (HSurface) in instrument time (module docstring).

    fov_ang: scalar or (fx, fy); center_ang: (cx, cy); shape_yx: (ny, nx) [Angstrom, pixels];
    bias_v: sample bias [V]; setpoint_pa: current setpoint [pA]; mode: "constant-current" (PI feedback on
    ln I, starting settled at the first pixel; height_ang is then ignored) or "constant-height" (z held at
    height_ang [Angstrom above the Si plane], required); dwell_s: time per pixel [s]; t0_s: instrument time
    at the first pixel [s] (drift is v t); last_move_ang, last_move_time_s: the last large lateral move of
    the piezo and when it ended [Angstrom, s], the source of creep; key: jax.random key of the noises;
    tip, feedback, noise, ldos: the specs; work_function_ev: phi [eV]. Each call compiles once per
    combination of specs and array shapes.

    Returns numpy arrays: "height_ang" (ny, nx) recorded piezo height [Angstrom]; "current_pa" (ny, nx)
    measured current; "error" (ny, nx) ln I_m - ln I_set; "tip_x_ang", "tip_y_ang" (ny, nx) the tip's actual
    lateral position in the sample frame (commanded + drift + creep); "tip_z_ang" (ny, nx) its actual
    height (piezo + z drift + gap noise); "x_ang" (nx,), "y_ang" (ny,) commanded pixel centres;
    "time_s" (ny, nx) start of each pixel; "t_end_s" () end of the frame [s].

    Example: scan(jax.random.key(0), si100_h(16, 8, db_sites=[100]), fov_ang=40, center_ang=(30, 30),
    shape_yx=(64, 64), bias_v=-1.8, setpoint_pa=50, dwell_s=1e-3)
    """
    move = _check_scan(mode, bias_v, setpoint_pa, dwell_s, t0_s, last_move_ang, last_move_time_s, height_ang)
    closed = mode == "constant-current"
    spec = _spec(tip, work_function_ev, ldos)
    x, y = scan_grid(fov_ang, center_ang, shape_yx)
    n_sub = feedback.substeps(dwell_s)
    t_start, actual, current_noise, gap = _timeline(key, x, y, dwell_s, n_sub, t0_s, move, last_move_time_s,
                                                    feedback, noise)
    lateral = _lateral(actual, bias_v, spec, _terms(surface), surface.extent)
    if closed:
        first = jax.tree_util.tree_map(lambda a: a[:1], lateral)
        z_flat = _flat_height(bias_v, setpoint_pa, spec) * jnp.ones(1)
        z0 = _solve_height(first, bias_v, math.log(setpoint_pa), z_flat, spec, 12)[0] - gap[0]
    else:
        z0 = jnp.asarray(height_ang, float)
    traces = _run(lateral, current_noise, gap, z0, setpoint_pa, bias_v, spec, feedback, n_sub, dwell_s / n_sub,
                  closed)
    shape = (len(y), len(x), n_sub)
    out = {name: np.asarray(traces[k].reshape(shape).mean(-1))
           for name, k in (("height_ang", "z_ang"), ("current_pa", "current_pa"), ("error", "error"))}
    out["tip_z_ang"] = np.asarray((traces["z_ang"] + gap).reshape(shape).mean(-1))
    out["tip_x_ang"], out["tip_y_ang"] = (np.asarray(actual[:, i]).reshape(shape[:2]) for i in range(2))
    out.update(x_ang=x, y_ang=y, time_s=t_start.reshape(shape[:2]),
               t_end_s=np.asarray(t0_s + x.size * y.size * dwell_s))
    return out
