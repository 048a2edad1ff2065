"""Knock-on displacement by the beam: electron-nucleus energy transfer and McKinley-Feshbach cross sections.

A beam electron of kinetic energy E [eV] that backscatters head-on from a nucleus of mass M gives it the
largest possible recoil energy E_max. An atom is displaced when the transferred energy exceeds its
displacement threshold E_d; the McKinley-Feshbach (MF) cross section for that is (Banhart, Rep. Prog.
Phys. 62, 1181 (1999), Eq. 5; R. F. Egerton, `sigdis.m`)

    sigma = 4 pi a0^2 Z^2 E_R^2 / (m c^2)^2 * (1 - beta^2) / beta^4
            * [(x - 1) - beta^2 ln x + pi alpha Z beta (2 sqrt(x) - ln x - 2)],   x = E_max / E_d > 1,

and 0 for x <= 1, with a0 the Bohr radius, E_R the Rydberg energy, alpha the fine-structure constant
(physics.md writes alpha Z as Z/137) and beta = v_e / c of the beam. MF is an expansion in alpha Z and
holds for Z <~ 28; heavier nuclei need the Mott (Rutherford-Mott) series.

Thermal vibrations. A nucleus moving along the beam with velocity v receives E_max(v) = E_max + 2 (v/c) pc
(first order in v; pc = sqrt(E (E + 2 m c^2)) is the beam momentum in eV), so the cross section measured on
a vibrating lattice is sigma(E_max(v)) averaged over the Gaussian distribution of v along the beam (Meyer
et al., PRL 108, 196102 (2012)). Below the static onset that average is a Gaussian tail and is
exponentially sensitive to the rms velocity `v_rms`, which `debye_velocity_rms` gives from the Debye model.

Example:
    >>> sigma_b = displacement_cross_section(100e3, 6, 12.0, 21.14, v_rms=606.0)   # ~0.39 [barn]
    >>> max_energy_transfer(60e3, 12.0)                                            # ~11.61 [eV]
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_masses

from potentials import units

MCKINLEY_FESHBACH_MAX_Z = 28  # MF is accurate to ~ a few % up to Z ~ 28 (Banhart 1999)
MASS_12C_AMU = 12.0  # [amu], exact by definition of the atomic mass unit
MASS_13C_AMU = 13.00335484  # [amu] (AME 2016)

# Thermal average: Gauss-Legendre on the part of the velocity axis where sigma > 0, i.e. from the
# standardized onset velocity z0 = (E_d - E_max) / (2 pc v_rms / c) up to where the Gaussian weight has
# fallen by exp(-_TAIL_EXPONENT) relative to its value at max(z0, 0). The integrand is analytic there, so
# the rule converges exponentially: 24 nodes agree with a dense adaptive quadrature to 1e-9 over the tables
# of physics.md, 32 and more to 1e-14 (tests/test_knockon.py). Gauss-Hermite on the whole axis converges
# slowly because of the kink at z0: 128 nodes still err by up to 12% a few sigma below the static onset.
N_VELOCITY_NODES = 64
_TAIL_EXPONENT = 40.0  # exp(-40) = 4e-18
_Z_MAX = 50.0  # exp(-50^2 / 2) is zero in any precision: a standardized onset beyond this gives sigma = 0

# Debye integral int_0^y x^3 / (e^x - 1) dx: Gauss-Legendre on [0, min(y, 60)]; the rest is < 1e-20.
_DEBYE_CUTOFF = 60.0
_DEBYE_NODES, _DEBYE_WEIGHTS = np.polynomial.legendre.leggauss(64)


def _check(name: str, value, unit: str, lower: float, *, strict: bool) -> None:
    """Raise ValueError when a concrete `value` is not finite or not above `lower`; tracers pass unchecked."""
    if isinstance(value, jax.core.Tracer):
        return
    a = np.asarray(value, dtype=float)
    bad = ~np.isfinite(a) | ((a <= lower) if strict else (a < lower))
    if np.any(bad):
        shown = value if a.ndim == 0 else float(a[bad].flat[0])
        relation = ">" if strict else ">="
        raise ValueError(f"{name}={shown!r} is not allowed; it must be a finite number {relation} {lower:g} [{unit}]")


def _warn_heavy(atomic_number) -> None:
    if isinstance(atomic_number, jax.core.Tracer):
        return
    z_max = float(np.max(np.asarray(atomic_number)))
    if z_max > MCKINLEY_FESHBACH_MAX_Z:
        warnings.warn(
            f"atomic_number={z_max:g}: McKinley-Feshbach is valid for Z <= {MCKINLEY_FESHBACH_MAX_Z}; the cross "
            "section is a rough estimate (the Rutherford/Mott correction for heavy nuclei is not applied)",
            UserWarning, stacklevel=3)


def _beam_momentum_ev(beam_energy_ev):
    """pc = sqrt(E (E + 2 m c^2)) [eV]; zero-gradient at E = 0 instead of an infinite one."""
    e = jnp.asarray(beam_energy_ev)
    positive = e > 0
    e_safe = jnp.where(positive, e, 1.0)
    return jnp.where(positive, jnp.sqrt(e_safe * (e_safe + 2 * units.MC2_EV)), 0.0)


def _static_max_energy_transfer(beam_energy_ev, mass_amu):
    """Exact relativistic head-on transfer [eV] to a nucleus at rest (see `max_energy_transfer`)."""
    e, mc2 = beam_energy_ev, units.MC2_EV
    big_mc2 = mass_amu * units.AMU_EV
    return 2 * big_mc2 * e * (e + 2 * mc2) / ((big_mc2 + mc2) ** 2 + 2 * big_mc2 * e)


def _mckinley_feshbach(beam_energy_ev, atomic_number, max_transfer_ev, threshold_ev):
    """MF cross section [barn] (Banhart 1999, Eq. 5) for a given E_max [eV]; 0 where E_max <= E_d.

    Invalid branches (x <= 1, beta = 0) are replaced by harmless values before the logs and square roots,
    so that neither the value nor the gradient is ever NaN (the double-where trick)."""
    e, mc2 = beam_energy_ev, units.MC2_EV
    beta2 = e * (e + 2 * mc2) / (e + mc2) ** 2
    x = max_transfer_ev / threshold_ev
    above = (x > 1) & (beta2 > 0)
    x = jnp.where(above, x, 2.0)
    beta2 = jnp.where(above, beta2, 0.5)
    ln_x = jnp.log(x)
    alpha_z = atomic_number * units.FINE_STRUCTURE
    bracket = (x - 1) - beta2 * ln_x + math.pi * alpha_z * jnp.sqrt(beta2) * (2 * jnp.sqrt(x) - ln_x - 2)
    scale = 4 * math.pi * units.BOHR**2 * (units.RYDBERG / mc2) ** 2 / units.BARN
    sigma = scale * atomic_number**2 * (1 - beta2) / beta2**2 * bracket
    return jnp.where(above, sigma, 0.0)


@functools.partial(jax.jit, static_argnames="n_nodes")
def _thermal_cross_section(beam_energy_ev, atomic_number, mass_amu, threshold_ev, v_rms, *,
                           n_nodes=N_VELOCITY_NODES):
    """<sigma(E_max + s z)>_z over z ~ N(0, 1), s = 2 pc v_rms / c [eV]: Gauss-Legendre on the support."""
    nodes, node_weights = np.polynomial.legendre.leggauss(n_nodes)
    e, z_number, mass, threshold, v_rms = jnp.broadcast_arrays(
        *(jnp.asarray(a) for a in (beam_energy_ev, atomic_number, mass_amu, threshold_ev, v_rms)))
    e_max = _static_max_energy_transfer(e, mass)
    spread = 2 * _beam_momentum_ev(e) * v_rms / units.C  # std of E_max(v) [eV]
    moving = spread > 0
    spread = jnp.where(moving, spread, 1.0)
    z_limit = math.sqrt(2 * _TAIL_EXPONENT)
    lower = jnp.clip((threshold - e_max) / spread, -z_limit, _Z_MAX)
    start = jnp.maximum(lower, 0.0)
    upper = start + 2 * _TAIL_EXPONENT / (jnp.sqrt(start**2 + 2 * _TAIL_EXPONENT) + start)
    half, mid = (upper - lower) / 2, (upper + lower) / 2
    nodes, node_weights = (jnp.asarray(a, dtype=mid.dtype) for a in (nodes, node_weights))
    z = mid[..., None] + half[..., None] * nodes
    weights = half[..., None] * node_weights * jnp.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    sigma_z = _mckinley_feshbach(e[..., None], z_number[..., None], e_max[..., None] + spread[..., None] * z,
                                 threshold[..., None])
    thermal = jnp.sum(weights * sigma_z, axis=-1)
    return jnp.where(moving, thermal, _mckinley_feshbach(e, z_number, e_max, threshold))


def max_energy_transfer(beam_energy_ev, mass_amu, velocity_m_s=0.0):
    """Largest energy [eV] a beam electron of kinetic energy E [eV] gives a nucleus of mass M [amu].

    Nucleus at rest: the exact relativistic head-on (backscattering) result
        E_max = 2 M c^2 E (E + 2 m c^2) / ((M c^2 + m c^2)^2 + 2 M c^2 E),
    which for M >> m, E << M c^2 reduces to 2 E (E + 2 m c^2) / (M c^2) (relative difference
    ~ 2 m / M + 2 E / (M c^2), i.e. 1.1e-4 for 12C at 100 keV).
    Nucleus moving along the beam with velocity v [m/s] (v > 0 in the beam direction, |v| << c): the
    momentum transfer q = 2p (first order in m/M) gives T = (M v + q)^2 / (2M) - (M v)^2 / (2M) =
    q^2 / (2M) + q v, i.e. E_max(v) = E_max + 2 (v/c) pc with pc = sqrt(E (E + 2 m c^2)) [eV], clipped at 0.
    Broadcasts over all arguments; jit-, vmap- and grad-compatible.
    """
    _check("beam_energy_ev", beam_energy_ev, "eV", 0.0, strict=False)
    _check("mass_amu", mass_amu, "amu", 0.0, strict=True)
    _check("velocity_m_s", velocity_m_s, "m/s", -math.inf, strict=False)
    return _moving_max_energy_transfer(beam_energy_ev, mass_amu, velocity_m_s)


@jax.jit
def _moving_max_energy_transfer(beam_energy_ev, mass_amu, velocity_m_s):
    shift = 2 * velocity_m_s / units.C * _beam_momentum_ev(beam_energy_ev)
    return jnp.maximum(_static_max_energy_transfer(beam_energy_ev, mass_amu) + shift, 0.0)


def displacement_cross_section(beam_energy_ev, atomic_number, mass_amu, threshold_ev, v_rms=0.0):
    """McKinley-Feshbach displacement cross section [barn], static or averaged over thermal velocities.

    beam_energy_ev: electron kinetic energy E [eV]; atomic_number: Z of the struck nucleus; mass_amu: its
    mass M [amu] (isotope-specific: 12.0 for 12C, 13.00335 for 13C); threshold_ev: displacement threshold E_d
    [eV]; v_rms: rms velocity of the nucleus along the beam [m/s] (0: static lattice; see
    `debye_velocity_rms`). All arguments broadcast against each other; the result has their shape.

    sigma = 0 where E_max <= E_d (Banhart 1999, Eq. 5; module docstring). For v_rms > 0 the result is
    int sigma(E_max(v)) N(v; 0, v_rms^2) dv, integrated by Gauss-Legendre over the velocities above the
    onset. Warns (UserWarning) for Z > 28, where MF is only a rough estimate. jit-, vmap- and
    grad-compatible; gradients are finite everywhere (the value has a kink at the static onset).

    Example:
        >>> displacement_cross_section(200e3, 6, 12.0, 21.14)   # ~14.5 [barn]
    """
    _check("beam_energy_ev", beam_energy_ev, "eV", 0.0, strict=False)
    _check("atomic_number", atomic_number, "", 0.0, strict=True)
    _check("mass_amu", mass_amu, "amu", 0.0, strict=True)
    _check("threshold_ev", threshold_ev, "eV", 0.0, strict=True)
    _check("v_rms", v_rms, "m/s", 0.0, strict=False)
    _warn_heavy(atomic_number)
    return _thermal_cross_section(beam_energy_ev, atomic_number, mass_amu, threshold_ev, v_rms)


def onset_beam_energy(threshold_ev, mass_amu):
    """Beam energy [eV] at which the static E_max equals the threshold E_d [eV] for a nucleus of M [amu].

    The positive root of 2 M c^2 E^2 + 2 M c^2 (2 m c^2 - E_d) E - E_d (M c^2 + m c^2)^2 = 0, i.e.
    `max_energy_transfer(onset_beam_energy(E_d, M), M) == E_d`."""
    _check("threshold_ev", threshold_ev, "eV", 0.0, strict=True)
    _check("mass_amu", mass_amu, "amu", 0.0, strict=True)
    t, mc2 = jnp.asarray(threshold_ev), units.MC2_EV
    big_mc2 = jnp.asarray(mass_amu) * units.AMU_EV
    b = 2 * mc2 - t
    c = t * (big_mc2 + mc2) ** 2 / (2 * big_mc2)
    return 2 * c / (b + jnp.sqrt(b**2 + 4 * c))  # = (-b + sqrt(b^2 + 4c)) / 2 without cancellation


def _debye_integral(y):
    """int_0^y x^3 / (e^x - 1) dx for y >= 0 (-> pi^4 / 15 as y -> oo)."""
    top = jnp.minimum(y, _DEBYE_CUTOFF)
    # fresh arrays of the trace's dtype: numpy constants reused across x64 modes break the lowering
    nodes, weights = (jnp.asarray(a, dtype=top.dtype) for a in (_DEBYE_NODES, _DEBYE_WEIGHTS))
    x = top[..., None] * (nodes + 1) / 2
    return top / 2 * jnp.sum(weights * x**3 / jnp.expm1(x), axis=-1)


def debye_velocity_rms(debye_temperature_k, mass_amu, temperature_k=300.0):
    """rms velocity [m/s] of an atom along one axis in the Debye model, zero-point motion included.

        M <v_x^2> = 3 k_B T (T/theta)^3 int_0^{theta/T} x^3 / (e^x - 1) dx + 3 k_B theta / 8,

    one third of the mean Debye energy per atom (kinetic = potential), so it tends to k_B T for T >> theta
    and to the zero-point 3 k_B theta / 8 for T -> 0. theta = 1287 K (graphene, Meyer 2012) gives 606 m/s
    for 12C at 300 K. For another isotope scale theta with the phonon frequencies, theta ~ M^(-1/2): 13C in
    graphene has theta = 1236.5 K and 574 m/s. debye_temperature_k, temperature_k [K] (T >= 0), mass_amu
    [amu]; broadcasts.
    """
    _check("debye_temperature_k", debye_temperature_k, "K", 0.0, strict=True)
    _check("mass_amu", mass_amu, "amu", 0.0, strict=True)
    _check("temperature_k", temperature_k, "K", 0.0, strict=False)
    return _debye_velocity_rms(debye_temperature_k, mass_amu, temperature_k)


@jax.jit
def _debye_velocity_rms(theta, mass_amu, t):
    ratio = t / theta
    warm = ratio > 0
    ratio_safe = jnp.where(warm, ratio, 1.0)
    thermal = jnp.where(warm, ratio_safe**4 * _debye_integral(1 / ratio_safe), 0.0)
    m_v2 = 3 * units.KB * theta * (thermal + 1 / 8)  # [J]
    return jnp.sqrt(m_v2 / (mass_amu * units.AMU))


def velocity_rms_classical(mass_amu, temperature_k):
    """Classical (equipartition) rms velocity along one axis, sqrt(k_B T / M) [m/s]; 456 m/s for 12C at 300 K."""
    _check("mass_amu", mass_amu, "amu", 0.0, strict=True)
    _check("temperature_k", temperature_k, "K", 0.0, strict=False)
    return jnp.sqrt(units.KB * jnp.asarray(temperature_k) / (jnp.asarray(mass_amu) * units.AMU))


def element_mass(atomic_number):
    """Standard atomic weight [amu] of element Z from `ase.data.atomic_masses` (12.011 for C).

    This is the natural-abundance average, not an isotope mass: pass isotope masses explicitly where they
    matter (knock-on is isotope-sensitive), e.g. MASS_12C_AMU = 12.0 and MASS_13C_AMU = 13.00335.
    Accepts an int or an integer array (concrete values only); returns a float or a NumPy array."""
    z = np.asarray(atomic_number)
    if z.dtype.kind not in "iu" or np.any(z < 1) or np.any(z >= len(atomic_masses)):
        raise ValueError(f"atomic_number={atomic_number!r} is not allowed; it must be an integer in "
                         f"[1, {len(atomic_masses) - 1}]")
    masses = atomic_masses[z]
    return float(masses) if masses.ndim == 0 else masses
