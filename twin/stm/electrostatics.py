"""Screened Coulomb potential of charged dangling bonds (SiQAD model) and their charge states.

SiQAD (simanneal-sidb `.physeng`; fiction `sidb_simulation_parameters.hpp`; shared/reference/physics.md
section 3): two charges q_i, q_j [e] a distance r apart interact with

    V_ij = q_i q_j e^2 / (4 pi eps0 eps_r r) exp(-r / lambda_TF),   eps_r = 5.6, lambda_TF = 5 nm,

and a DB is negative (DB-) when its (0/-) level mu_- = -0.25 eV, raised by the potential of the other
charges, lies below the Fermi level: mu_- + sum_j (-q_j) K(r_ij) < 0.

For the STM image the potential energy of an electron at the surface point below the tip is
U(r) = sum_j (-q_j) K(|r - r_j|) [eV]: positive (bands bent up) near a DB-. To evaluate it anywhere, also at
a DB's own site, the distance is regularised, r -> sqrt(r^2 + r_core^2) (SiQAD evaluates V only between
distinct sites; r_core is a phenomenological parameter of this twin).

Periodic cells: distances are minimum-image and K is tapered smoothly to zero at half the smaller cell side
(cos^2 over the last `TAPER_ANG`), so the potential is periodic and continuous; cells smaller than
~3 lambda_TF (150 A) truncate the screened tail there.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

COULOMB_EV_ANG = 14.399645  # e^2 / (4 pi eps0) [eV Angstrom] (CODATA 2018)
SIQAD_EPS_R = 5.6
SIQAD_SCREENING_ANG = 50.0  # lambda_TF = 5 nm
SIQAD_MU_MINUS_EV = -0.25
TAPER_ANG = 5.0


def minimum_image(d, extent_ang):
    """Minimum-image displacements (..., 2) in a periodic orthorhombic cell [Angstrom]; unchanged when
    extent_ang is None."""
    if extent_ang is None:
        return d
    length = jnp.asarray(extent_ang, d.dtype)
    return d - length * jnp.round(d / length)


def taper(r, extent_ang):
    """Smooth cut-off factor (1 -> 0 over the last TAPER_ANG before half the smaller cell side); 1 when
    extent_ang is None."""
    if extent_ang is None:
        return jnp.ones_like(r)
    cut = 0.5 * min(extent_ang)
    width = min(TAPER_ANG, 0.5 * cut)
    u = jnp.clip((r - (cut - width)) / width, 0.0, 1.0)
    return jnp.cos(0.5 * jnp.pi * u) ** 2


def screened_coulomb_ev(r_ang, eps_r=SIQAD_EPS_R, screening_ang=SIQAD_SCREENING_ANG, core_ang=0.0):
    """K(r) = e^2 / (4 pi eps0 eps_r r') exp(-r' / lambda_TF) with r' = sqrt(r^2 + r_core^2) [eV]."""
    r = jnp.sqrt(r_ang**2 + core_ang**2)
    return COULOMB_EV_ANG / (eps_r * r) * jnp.exp(-r / screening_ang)


def band_bending_ev(xy, charge_sites, charge, *, eps_r, screening_ang, core_ang, extent_ang=None):
    """U(xy) = sum_j (-q_j) K(|xy - r_j|) at lateral points xy (..., 2) [eV], from charges q (m,) [e] at
    charge_sites (m, 3) (their x, y are used) [Angstrom]."""
    d = minimum_image(xy[..., None, :] - charge_sites[:, :2], extent_ang)
    r = jnp.sqrt(jnp.sum(d**2, axis=-1) + 1e-30)
    k = screened_coulomb_ev(r, eps_r, screening_ang, core_ang) * taper(r, extent_ang)
    return jnp.sum(-charge * k, axis=-1)


def db_charges(sites, occupied, present, *, extent_ang=None, mu_minus_ev=SIQAD_MU_MINUS_EV,
               eps_r=SIQAD_EPS_R, screening_ang=SIQAD_SCREENING_ANG) -> np.ndarray:
    """Charge of every site (n,) [e]: -1 or 0, by greedy filling of the SiQAD levels.

    Candidates are the isolated DBs: present, without H, and whose dimer partner (sites 2d, 2d + 1) carries
    an H or is missing. A bare dimer's two DBs form a pi bond and stay neutral (Boland, PRL 65, 3325
    (1990)). Electrons are added one at a time to the candidate with the lowest level
    mu_- + sum_j (-q_j) V(r_ij) while that level is below 0 (the Fermi level); an approximation to SiQAD's
    ground-state search that is exact for isolated DBs and for pairs.
    """
    sites = np.asarray(sites, float)
    occupied, present = np.asarray(occupied, bool), np.asarray(present, bool)
    partner = np.arange(len(sites)) ^ 1
    db = present & ~occupied
    candidates = np.flatnonzero(db & ~(db[partner] if len(sites) % 2 == 0 else False))
    charge = np.zeros(len(sites))
    if candidates.size == 0:
        return charge
    xy = sites[candidates, :2]
    d = np.asarray(minimum_image(jnp.asarray(xy[:, None] - xy[None]), extent_ang))
    r = np.sqrt(np.sum(d**2, axis=-1))
    v = np.array(screened_coulomb_ev(jnp.asarray(r), eps_r, screening_ang) * taper(jnp.asarray(r), extent_ang))
    np.fill_diagonal(v, 0.0)
    filled = np.zeros(len(candidates), bool)
    while True:
        level = np.where(filled, np.inf, mu_minus_ev + v @ filled)
        best = int(np.argmin(level))
        if not level[best] < 0.0:
            break
        filled[best] = True
    charge[candidates[filled]] = -1.0
    return charge
