"""Electron scattering factors of neutral atoms as sums of Lorentzian and Gaussian terms.

Both tabulated parametrizations are written in one form, with g the scattering vector [1/Angstrom]:

    f_e(g) = sum_i w1_i / (c2_i + g^2) + w2_i / (c2_i + g^2)^2 + sum_j wg_j exp(-d_j g^2)     [Angstrom]

- Lobato & Van Dyck, Acta Cryst. A70, 636 (2014):  a (2 + b g^2) / (1 + b g^2)^2
  = (a / b) / (1/b + g^2) + (a / b^2) / (1/b + g^2)^2.
- Kirkland, Advanced Computing in Electron Microscopy (2010), App. C: a / (g^2 + b) + c exp(-d g^2).

The projected potential of one atom has the 2-D Fourier transform `PROJECTED_POTENTIAL_CONSTANT * f_e(g)`
[V Angstrom^3]: V(r) = h^2 / (2 pi m0 e) * integral f_e(q) exp(2 pi i q.r) d^3q (Kirkland 2010, Eq. 5.9).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

import jax.numpy as jnp
import numpy as np
from ase.data import chemical_symbols
from jax.scipy.special import erf

from potentials import units

PARAMETRIZATIONS = ("lobato", "kirkland")

# h^2 / (2 pi m0 e) [V Angstrom^2]: scattering factor [Angstrom] -> potential [V Angstrom^3].
PROJECTED_POTENTIAL_CONSTANT = units.HPLANCK**2 / (2 * np.pi * units.ME * units.E) * 1e20


@dataclass(frozen=True)
class Terms:
    """Scattering-factor terms of one element (the form in the module docstring).

    Fields are float64 arrays: `c2`, `w1`, `w2` of shape (n_lorentz,), `wg`, `d` of shape (n_gauss,).
    """

    c2: np.ndarray
    w1: np.ndarray
    w2: np.ndarray
    wg: np.ndarray
    d: np.ndarray


@functools.cache
def _table(name: str) -> dict:
    if name not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization={name!r} is not known; allowed: {', '.join(PARAMETRIZATIONS)}")
    text = resources.files("potentials.parametrizations").joinpath(f"data/{name}.json").read_text()
    return json.loads(text)["elements"]


@functools.cache
def terms(name: str, number: int) -> Terms:
    """The terms of element `number` (atomic number) in parametrization `name`."""
    table = _table(name)
    symbol = chemical_symbols[number] if 0 < number < len(chemical_symbols) else str(number)
    if symbol not in table:
        raise ValueError(f"element {symbol!r} (Z={number}) is not tabulated in the {name} parametrization")
    p = np.asarray(table[symbol], dtype=np.float64)
    if name == "lobato":
        a, b = p
        return Terms(c2=1 / b, w1=a / b, w2=a / b**2, wg=np.zeros(1), d=np.ones(1))
    a, b, c, d = p
    return Terms(c2=b, w1=a, w2=np.zeros_like(a), wg=c, d=d)


def _arrays(t: Terms, dtype):
    """The terms as fresh arrays of `dtype` (fresh copies: JAX may cache a constant by identity across a
    change of jax_enable_x64, and the tables are shared)."""
    return Terms(*(np.array(getattr(t, f), dtype=dtype) for f in ("c2", "w1", "w2", "wg", "d")))


def scattering_factor(t: Terms, g2):
    """f_e(g) [Angstrom] at squared scattering vector `g2` [1/Angstrom^2], any shape."""
    g2 = jnp.asarray(g2)[..., None]
    t = _arrays(t, g2.dtype)
    c2 = t.c2 + g2
    return (jnp.sum(t.w1 / c2 + t.w2 / c2**2, -1)
            + jnp.sum(t.wg * jnp.exp(-t.d * g2), -1))


def slab_scattering_factor(t: Terms, g2, dz0, dz1):
    """Scattering factor of the part of an atom between heights dz0 < dz1 relative to it [Angstrom].

    The 2-D Fourier transform of the potential integrated over z in [z_atom + dz0, z_atom + dz1],
    in the units of `scattering_factor` (which it equals for dz0 -> -inf, dz1 -> +inf). Closed form of
    integral dk_z f_e(sqrt(g^2 + k_z^2)) [sin(2 pi k_z dz1) - sin(2 pi k_z dz0)] / (2 pi k_z), using
    int sin(w x) / (x (C^2 + x^2)) dx = pi (1 - exp(-C w)) / C^2 and its derivative in C^2 (w > 0), and
    int exp(-d x^2) sin(w x) / x dx = pi erf(w / (2 sqrt(d))).

    g2: (...,) [1/Angstrom^2]; dz0, dz1: broadcastable with g2 [Angstrom].
    """
    g2, dz0, dz1 = (jnp.asarray(x)[..., None] for x in (g2, dz0, dz1))
    t = _arrays(t, g2.dtype)
    c2 = t.c2 + g2
    c = jnp.sqrt(c2)

    def lorentz_fractions(dz):
        w = 2 * np.pi * jnp.abs(dz)
        decay = jnp.exp(-c * w)
        return jnp.sign(dz) * (1 - decay), jnp.sign(dz) * (1 - decay - 0.5 * w * c * decay)

    s1_hi, s2_hi = lorentz_fractions(dz1)
    s1_lo, s2_lo = lorentz_fractions(dz0)
    gauss_hi = erf(np.pi * dz1 / jnp.sqrt(t.d))
    gauss_lo = erf(np.pi * dz0 / jnp.sqrt(t.d))
    lorentz = t.w1 / c2 * (s1_hi - s1_lo) + t.w2 / c2**2 * (s2_hi - s2_lo)
    gauss = t.wg * jnp.exp(-t.d * g2) * (gauss_hi - gauss_lo)
    return 0.5 * (jnp.sum(lorentz, -1) + jnp.sum(gauss, -1))


def projected_potential(t: Terms, r):
    """Real-space projected potential of one atom [V Angstrom] at radius `r` [Angstrom] (numpy, r > 0).

    The 2-D inverse Fourier transforms of the terms: 1/(c^2+g^2) -> 2 pi K0(2 pi c r),
    1/(c^2+g^2)^2 -> 2 pi^2 r K1(2 pi c r) / c, exp(-d g^2) -> (pi / d) exp(-pi^2 r^2 / d).
    """
    from scipy.special import k0, k1

    r = np.asarray(r, dtype=np.float64)[..., None]
    c = np.sqrt(t.c2)
    x = 2 * np.pi * c * r
    v = (t.w1 * 2 * np.pi * k0(x) + t.w2 * 2 * np.pi**2 * r * k1(x) / c).sum(-1)
    v = v + (t.wg * np.pi / t.d * np.exp(-np.pi**2 * r**2 / t.d)).sum(-1)
    return PROJECTED_POTENTIAL_CONSTANT * v
