"""Tunnelling current at the Tersoff-Hamann level for Si(100)-2x1:H.

Tersoff & Hamann, PRB 31, 805 (1985); C. J. Chen, Introduction to Scanning Tunneling Microscopy (OUP): for
an s-wave tip, I ~ V rho_t sum_nu |psi_nu(r0)|^2 delta(E_nu - E_F), the sample LDOS at the centre r0 of the
tip's apex sphere (radius R), and every state decays into vacuum with kappa = sqrt(2 m phi) / hbar
= 0.5123 sqrt(phi [eV]) 1/A. The twin writes the LDOS at r0 as (a phenomenological model)

    rho(r0) = sum_o c_o [ B(V - U(p_o)) n(p_o) exp(-2 kappa (z - z_H))
                          + sum_{i in DB} w_DB(V) exp(-2 kappa (|r0 + d_o - r_i| - R)) ]

    I = I0 |V| rho(r0)   [pA, the magnitude of the current]

z: apex height above the surface Si plane (z = 0); r0 = (x, y, z + R). o: apex orbitals of the tip
(TipSpec), offset laterally by d_o with weight c_o (one for a sharp tip; two for a double tip; a
Gauss-Hermite product rule for the Gaussian lateral spread of a blunt tip); p_o = (x, y) + d_o.
Passivated surface: B(x) = s softplus((-x - V_v) / s) + s softplus((x - V_c) / s) (Si-H has no states in
the gap: the current sets in beyond the band edges V_v, V_c), times n(p), the density of present surface
sites smoothed by a Gaussian (width `density_width_ang`) and normalised to 1 on the perfect lattice (a
dimer vacancy is a depression), decaying from the H plane z_H. Band bending: U(p) [eV], the screened
Coulomb potential of the charged DBs (SiQAD: eps_r = 5.6, lambda_TF = 5 nm; twin.stm.electrostatics)
shifts the effective bias V - U: around a DB- the empty-state (V > 0) current of the passivated surface
drops (dark halo) and the filled-state current rises. DBs: an s orbital on the Si site with weight
w_DB(V) = w_f s softplus((-V - V_df) / s) + w_e s softplus((V - V_de) / s), large in filled states.
I0 is fixed so that the passivated surface gives 50 pA at -1.8 V with the apex 6 A above the H plane
(phi = 4.5 eV): CALIBRATION.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from twin.stm._checks import check_number, check_vector, is_traced, require
from twin.stm.electrostatics import SIQAD_EPS_R, SIQAD_SCREENING_ANG, band_bending_ev, minimum_image

KAPPA_PER_SQRT_EV = 0.5123  # sqrt(2 m_e * 1 eV) / hbar [1/Angstrom]
CALIBRATION = {"current_pa": 50.0, "bias_v": -1.8, "work_function_ev": 4.5}
TIP_KINDS = ("sharp", "blunt", "double")


def kappa(work_function_ev):
    """Vacuum decay constant kappa = sqrt(2 m phi) / hbar = 0.5123 sqrt(phi [eV]) [1/Angstrom]."""
    return KAPPA_PER_SQRT_EV * jnp.sqrt(work_function_ev)


@dataclass(frozen=True, kw_only=True)
class TipSpec:
    """The tip apex.

    kind: "sharp" (one s orbital), "blunt" (larger radius and a Gaussian lateral spread of the apex
        orbital) or "double" (a second apex orbital offset laterally: every feature also appears shifted by
        -double_offset_ang, a ghost).
    radius_ang: apex-sphere radius R [Angstrom], 0.5-50; None: 2 (sharp, double) or 8 (blunt).
    spread_ang: standard deviation of the apex orbital's lateral Gaussian spread [Angstrom], 0-10;
        None: 0 (sharp, double) or 1.5 (blunt).
    double_offset_ang: (dx, dy) of the second apex orbital [Angstrom] (kind "double" only).
    double_ratio: weight of the second apex orbital relative to the first, 0-1 (kind "double" only).
    quadrature_order: Gauss-Hermite points per axis for the spread, 1-9.
    """

    kind: str = "sharp"
    radius_ang: float | None = None
    spread_ang: float | None = None
    double_offset_ang: tuple[float, float] = (8.0, 4.0)
    double_ratio: float = 0.5
    quadrature_order: int = 5

    def __post_init__(self):
        require(self.kind in TIP_KINDS, "kind", self.kind, f"give one of {', '.join(TIP_KINDS)}")
        blunt = self.kind == "blunt"
        if self.radius_ang is None:
            object.__setattr__(self, "radius_ang", 8.0 if blunt else 2.0)
        if self.spread_ang is None:
            object.__setattr__(self, "spread_ang", 1.5 if blunt else 0.0)
        check_number("radius_ang", self.radius_ang, 0.5, 50.0, unit="Angstrom")
        check_number("spread_ang", self.spread_ang, 0.0, 10.0, unit="Angstrom")
        offset = check_vector("double_offset_ang", self.double_offset_ang, 2, unit="Angstrom")
        object.__setattr__(self, "double_offset_ang", offset)
        check_number("double_ratio", self.double_ratio, 0.0, 1.0)
        q = self.quadrature_order
        require(isinstance(q, int) and not isinstance(q, bool) and 1 <= q <= 9, "quadrature_order", q,
                "give an integer from 1 to 9")

    def apex_orbitals(self) -> tuple[np.ndarray, np.ndarray]:
        """Lateral offsets (o, 2) [Angstrom] and weights (o,) of the apex orbitals."""
        centres = [(0.0, 0.0)] + ([self.double_offset_ang] if self.kind == "double" else [])
        weights = [1.0] + ([self.double_ratio] if self.kind == "double" else [])
        if is_traced(self.spread_ang) or self.spread_ang > 0:
            nodes, w = np.polynomial.hermite_e.hermegauss(self.quadrature_order)
            w = w / w.sum()
            grid = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2)
            gw = np.outer(w, w).ravel()
            offsets = jnp.concatenate([jnp.asarray(c) + self.spread_ang * grid for c in centres])
            return offsets, np.concatenate([c * gw for c in weights])
        return jnp.asarray(centres), np.asarray(weights)


@dataclass(frozen=True, kw_only=True)
class LdosSpec:
    """Parameters of the phenomenological surface LDOS (module docstring). Voltages [V], lengths [A].

    db_filled_weight, db_empty_weight: w_f, w_e of the DB orbital (relative to the passivated surface),
        >= 0; the defaults give a 1.5 A filled-state protrusion at -1.8 V (docs/validation.md).
    db_filled_onset_v, db_empty_onset_v: V_df, V_de, where DB tunnelling sets in, 0-3.
    valence_onset_v, conduction_onset_v: V_v, V_c, onsets of the passivated surface, 0-3.
    softness_v: s, width of the onsets, 0.01-1.
    eps_r, screening_length_ang: SiQAD's eps_r = 5.6 (1-20) and lambda_TF = 50 A (1-1000).
    core_radius_ang: regularisation of the potential at a DB's own site, 0.1-10.
    density_width_ang: Gaussian smoothing of the site density, 0.5-10; site_area_ang2: surface area per site
        (a b / 2 = 14.75 A^2 on Si(100)-2x1), 1-100.
    h_height_ang: height of the H plane above the Si plane (1.48), 0-5.
    calibration_height_ang: apex height above the H plane where the passivated surface gives
        CALIBRATION (50 pA at -1.8 V, phi = 4.5 eV), 1-20.
    """

    db_filled_weight: float = 450.0
    db_empty_weight: float = 60.0
    db_filled_onset_v: float = 0.4
    db_empty_onset_v: float = 0.6
    valence_onset_v: float = 1.0
    conduction_onset_v: float = 0.8
    softness_v: float = 0.15
    eps_r: float = SIQAD_EPS_R
    screening_length_ang: float = SIQAD_SCREENING_ANG
    core_radius_ang: float = 2.0
    density_width_ang: float = 2.0
    site_area_ang2: float = 3.84 * 7.68 / 2
    h_height_ang: float = 1.48
    calibration_height_ang: float = 6.0

    def __post_init__(self):
        for name, low, high in [("db_filled_weight", 0, 1e6), ("db_empty_weight", 0, 1e6),
                                ("db_filled_onset_v", 0, 3), ("db_empty_onset_v", 0, 3), ("valence_onset_v", 0, 3),
                                ("conduction_onset_v", 0, 3), ("softness_v", 0.01, 1), ("eps_r", 1, 20),
                                ("screening_length_ang", 1, 1000), ("core_radius_ang", 0.1, 10),
                                ("density_width_ang", 0.5, 10), ("site_area_ang2", 1, 100), ("h_height_ang", 0, 5),
                                ("calibration_height_ang", 1, 20)]:
            check_number(name, getattr(self, name), low, high)


@dataclass(frozen=True, kw_only=True)
class TunnellingSpec:
    """Everything the current depends on besides geometry and bias: work_function_ev (phi, 1-10 eV), the
    tip (TipSpec) and the surface LDOS model (LdosSpec)."""

    work_function_ev: float = 4.5
    tip: TipSpec = TipSpec()
    ldos: LdosSpec = LdosSpec()

    def __post_init__(self):
        check_number("work_function_ev", self.work_function_ev, 1.0, 10.0, unit="eV")
        require(isinstance(self.tip, TipSpec), "tip", self.tip, "give a TipSpec")
        require(isinstance(self.ldos, LdosSpec), "ldos", self.ldos, "give an LdosSpec")


def _onsets(x, filled_v, empty_v, s):
    """s softplus((-x - filled) / s) + s softplus((x - empty) / s): states beyond two onsets [V]."""
    return s * jax.nn.softplus((-x - filled_v) / s), s * jax.nn.softplus((x - empty_v) / s)


def background_weight(effective_bias_v, ldos: LdosSpec):
    """B(x) of the passivated surface at effective bias x = V - U [V] (module docstring)."""
    f, e = _onsets(effective_bias_v, ldos.valence_onset_v, ldos.conduction_onset_v, ldos.softness_v)
    return f + e


def db_weight(bias_v, ldos: LdosSpec):
    """w_DB(V) of a DB orbital (module docstring)."""
    f, e = _onsets(bias_v, ldos.db_filled_onset_v, ldos.db_empty_onset_v, ldos.softness_v)
    return ldos.db_filled_weight * f + ldos.db_empty_weight * e


def current_scale_pa(ldos: LdosSpec):
    """I0 [pA / V]: the passivated surface gives CALIBRATION["current_pa"] at CALIBRATION["bias_v"] with
    the apex calibration_height_ang above the H plane and phi = CALIBRATION["work_function_ev"]."""
    bias = CALIBRATION["bias_v"]
    k = kappa(CALIBRATION["work_function_ev"])
    ldos_ref = background_weight(bias, ldos) * jnp.exp(-2 * k * ldos.calibration_height_ang)
    return CALIBRATION["current_pa"] / (abs(bias) * ldos_ref)


class Lateral(NamedTuple):
    """What the current at one lateral tip position needs besides the height.

    background: (o,) c_o B(V - U) n at each apex orbital; orbital_weight: (o, m) c_o w_DB for each DB
    orbital; rho2: (o, m) squared lateral distances apex orbital - DB site [A^2]; site_z: (m,) [A]."""

    background: jax.Array
    orbital_weight: jax.Array
    rho2: jax.Array
    site_z: jax.Array


def site_density(xy, sites, present, ldos: LdosSpec, extent_ang=None):
    """n(xy): present sites smoothed by a normalised Gaussian, times the area per site (1 on the perfect
    lattice); xy (..., 2) [Angstrom]."""
    d = minimum_image(xy[..., None, :] - sites[:, :2], extent_ang)
    sigma2 = ldos.density_width_ang**2
    g = jnp.exp(-jnp.sum(d**2, axis=-1) / (2 * sigma2)) * ldos.site_area_ang2 / (2 * jnp.pi * sigma2)
    return jnp.sum(jnp.where(present, g, 0.0), axis=-1)


def lateral_terms(xy, bias_v, spec: TunnellingSpec, *, density_sites, present, db_sites, db_mask,
                  charge_sites, charge, extent_ang=None) -> Lateral:
    """Lateral part of the current at one tip position xy (2,) [Angstrom].

    density_sites (n, 3) with present (n,) bool: the sites of the smoothed density; db_sites (m, 3) with
    db_mask (m,) bool: the DB orbitals; charge_sites (k, 3) with charge (k,) [e]: the band bending. The three
    may be the same arrays, or subsets holding every non-zero term."""
    offsets, weights = spec.tip.apex_orbitals()
    p = xy + offsets
    ldos = spec.ldos
    u = band_bending_ev(p, charge_sites, charge, eps_r=ldos.eps_r, screening_ang=ldos.screening_length_ang,
                        core_ang=ldos.core_radius_ang, extent_ang=extent_ang)
    density = site_density(p, density_sites, present, ldos, extent_ang)
    background = weights * background_weight(bias_v - u, ldos) * density
    d = minimum_image(p[:, None, :] - db_sites[:, :2], extent_ang)
    orbital_weight = weights[:, None] * jnp.where(db_mask, db_weight(bias_v, ldos), 0.0)
    return Lateral(background, orbital_weight, jnp.sum(d**2, axis=-1), db_sites[:, 2])


def current_from_lateral(z_ang, lateral: Lateral, bias_v, spec: TunnellingSpec):
    """I = I0 |V| rho(r0) [pA] with the apex at height z_ang above the Si plane (module docstring)."""
    k = kappa(spec.work_function_ev)
    radius = spec.tip.radius_ang
    background = jnp.sum(lateral.background) * jnp.exp(-2 * k * (z_ang - spec.ldos.h_height_ang))
    vertical = z_ang + radius - lateral.site_z
    distance = jnp.sqrt(lateral.rho2 + vertical**2) - radius
    orbitals = jnp.sum(lateral.orbital_weight * jnp.exp(-2 * k * distance))
    return current_scale_pa(spec.ldos) * jnp.abs(bias_v) * (background + orbitals)


def tunnelling_current(tip_xyz, sites, occupied, present, bias_v, spec: TunnellingSpec = TunnellingSpec(), *,
                       charge=None, extent_ang=None):
    """Tunnelling current [pA] at apex positions tip_xyz (..., 3) [Angstrom] (z above the Si plane).

    sites (n, 3) [Angstrom], occupied (n,) bool (H present), present (n,) bool; bias_v: sample bias [V];
    charge (n,) [e]: charge of each site (default -1 on every DB; see electrostatics.db_charges);
    extent_ang: (Lx, Ly) of a periodic cell, or None. Pure JAX: jit-able, differentiable with respect to
    tip_xyz, sites, bias_v and the numbers of spec (rebuilt with dataclasses.replace inside the traced
    function). Example: tunnelling_current(jnp.array([10.0, 5.0, 7.5]), s.sites, s.occupied, s.present, -1.8)
    """
    sites = jnp.asarray(sites)
    db = jnp.asarray(present) & ~jnp.asarray(occupied)
    charge = -db.astype(sites.dtype) if charge is None else jnp.asarray(charge, sites.dtype)

    def one(r):
        lateral = lateral_terms(r[:2], bias_v, spec, density_sites=sites, present=jnp.asarray(present),
                                db_sites=sites, db_mask=db, charge_sites=sites, charge=charge,
                                extent_ang=extent_ang)
        return current_from_lateral(r[2], lateral, bias_v, spec)

    tip_xyz = jnp.asarray(tip_xyz)
    flat = tip_xyz.reshape(-1, 3)
    return jax.vmap(one)(flat).reshape(tip_xyz.shape[:-1])
