"""Frozen-phonon displacements: thermal diffuse scattering as an average over displaced configurations.

An image with thermal vibrations is the average of the images of `n_configurations` copies of the
specimen, each atom displaced from its site by an independent Gaussian with rms `sigma` per Cartesian
direction [Angstrom] (the Einstein model of the frozen-phonon method; Loane, Xu & Silcox, Acta Cryst.
A47, 267 (1991); Kirkland, Advanced Computing in Electron Microscopy, 2nd ed. (2010)).

Default sigmas come from the Debye model at a temperature T for an atom of mass M and Debye temperature
theta (Willis & Pryor, Thermal Vibrations in Crystallography (Cambridge, 1975); Peng, Ren, Dudarev &
Whelan, Acta Cryst. A52, 456 (1996)):

    <u_x^2> = 3 hbar^2 T / (M k_B theta^2) * [Phi(theta / T) + theta / (4 T)]            [Angstrom^2]
    Phi(x)  = (1 / x) * integral_0^x t / (e^t - 1) dt

The Debye-Waller factor is B = 8 pi^2 <u_x^2>.

Example:
    >>> spec = FrozenPhonons(n_configurations=16, seed=1, sigmas={"Si": 0.08})
    >>> u = spec.displacements(atoms.numbers)   # (16, n_atoms, 3) [Angstrom]
    >>> positions = atoms.positions + u          # one displaced specimen per configuration
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_masses, atomic_numbers, chemical_symbols

from potentials import units

HBAR = units.HPLANCK / (2 * math.pi)  # [J s]
_REAL = (int, float, np.integer, np.floating)

# Debye temperatures [K] of the elements, low-temperature limit from specific heats: Kittel,
# Introduction to Solid State Physics, 8th ed. (Wiley, 2005), Ch. 5, Table 1 (after N. Pearlman);
# the 7th edition prints the same values. C is diamond; Sn is grey tin. Elements the table leaves blank
# (H, He, B, N, O, F, P, S, Cl, Br, I, Tc, most lanthanides, Po and beyond except Th, U) are absent.
KITTEL_DEBYE_TEMPERATURES_K = MappingProxyType({
    "Li": 344.0, "Be": 1440.0, "C": 2230.0, "Ne": 75.0, "Na": 158.0, "Mg": 400.0, "Al": 428.0,
    "Si": 645.0, "Ar": 92.0, "K": 91.0, "Ca": 230.0, "Sc": 360.0, "Ti": 420.0, "V": 380.0, "Cr": 630.0,
    "Mn": 410.0, "Fe": 470.0, "Co": 445.0, "Ni": 450.0, "Cu": 343.0, "Zn": 327.0, "Ga": 320.0,
    "Ge": 374.0, "As": 282.0, "Se": 90.0, "Kr": 72.0, "Rb": 56.0, "Sr": 147.0, "Y": 280.0, "Zr": 291.0,
    "Nb": 275.0, "Mo": 450.0, "Ru": 600.0, "Rh": 480.0, "Pd": 274.0, "Ag": 225.0, "Cd": 209.0,
    "In": 108.0, "Sn": 200.0, "Sb": 211.0, "Te": 153.0, "Xe": 64.0, "Cs": 38.0, "Ba": 110.0,
    "La": 142.0, "Gd": 200.0, "Dy": 210.0, "Yb": 120.0, "Lu": 210.0, "Hf": 252.0, "Ta": 240.0,
    "W": 400.0, "Re": 430.0, "Os": 500.0, "Ir": 420.0, "Pt": 240.0, "Au": 165.0, "Hg": 71.9,
    "Tl": 78.5, "Pb": 105.0, "Bi": 119.0, "Th": 163.0, "U": 207.0,
})

# Carbon in this twin is mostly graphene, not diamond. theta = 1287 K matches the ~110 meV out-of-plane
# (ZO) phonon, the Debye choice of Meyer et al., PRL 108, 196102 (2012); it gives <u_x^2> = 0.0032
# Angstrom^2 at 300 K. theta ~ 1000 K is the common alternative (0.0047 Angstrom^2, B = 0.37 Angstrom^2).
# For diamond pass sigmas={"C": debye_sigma("C", T, theta_k=2230.0)}.
GRAPHENE_CARBON_DEBYE_TEMPERATURE_K = 1287.0

DEBYE_TEMPERATURES_K = MappingProxyType(
    {**KITTEL_DEBYE_TEMPERATURES_K, "C": GRAPHENE_CARBON_DEBYE_TEMPERATURE_K})

# Beyond this theta / T the rest of the Debye integral, < 61 exp(-60), is below double precision.
_DEBYE_INTEGRAL_CUTOFF = 60.0


def _positive(name: str, value, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, _REAL) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} is not allowed; it must be a finite number > 0 [{unit}]")
    return float(value)


def debye_function(x: float) -> float:
    """Phi(x) = (1 / x) * integral_0^x t / (e^t - 1) dt, with Phi(0) = 1 (Willis & Pryor 1975).

    Adaptive quadrature in float64; accurate to ~1e-12 relative for every x >= 0."""
    from scipy.integrate import quad

    if x == 0:
        return 1.0

    def integrand(t):
        return t / math.expm1(t) if t > 0 else 1.0

    upper = min(x, _DEBYE_INTEGRAL_CUTOFF)
    integral, _ = quad(integrand, 0.0, upper, epsabs=0.0, epsrel=1e-12, limit=200)
    return integral / x


def debye_mean_square_displacement(mass_amu: float, theta_k: float, temperature_k: float) -> float:
    """Debye-model <u_x^2> [Angstrom^2] per Cartesian direction (equation in the module docstring).

    mass_amu: atomic mass [u]; theta_k: Debye temperature [K]; temperature_k: temperature [K].
    Limits: 3 hbar^2 T / (M k_B theta^2) for T >> theta; the zero-point value 3 hbar^2 / (4 M k_B theta)
    as T -> 0.
    """
    mass = _positive("mass_amu", mass_amu, "u") * units.AMU
    theta = _positive("theta_k", theta_k, "K")
    temperature = _positive("temperature_k", temperature_k, "K")
    x = theta / temperature
    prefactor = 3 * HBAR**2 * temperature / (mass * units.KB * theta**2)  # [m^2]
    return prefactor * (debye_function(x) + x / 4) * 1e20


def debye_sigma(element: str | int, temperature_k: float = 300.0, theta_k: float | None = None) -> float:
    """Debye-model rms displacement per direction, sqrt(<u_x^2>) [Angstrom], of a chemical element.

    element: chemical symbol or atomic number; the mass is ase's standard atomic weight.
    theta_k: Debye temperature [K]; `DEBYE_TEMPERATURES_K[element]` when None.
    """
    number = _atomic_number(element, "element")
    symbol = chemical_symbols[number]
    if theta_k is None:
        if symbol not in DEBYE_TEMPERATURES_K:
            raise ValueError(f"element {symbol!r} (Z={number}) has no tabulated Debye temperature; pass "
                             f"sigmas={{{symbol!r}: rms displacement [Angstrom]}} to FrozenPhonons, or "
                             f"theta_k to debye_sigma")
        theta_k = DEBYE_TEMPERATURES_K[symbol]
    return math.sqrt(debye_mean_square_displacement(float(atomic_masses[number]), theta_k, temperature_k))


def gaussian_displacements(key: jax.Array, sigma_table: jax.Array) -> jax.Array:
    """One frozen-phonon configuration: u = sigma * N(0, 1), independent per atom and direction.

    key: a jax.random key; sigma_table: (n_atoms, 3) rms displacements [Angstrom].
    Returns (n_atoms, 3) displacements [Angstrom] in the dtype of `sigma_table`.
    """
    sigma_table = jnp.asarray(sigma_table)
    return sigma_table * jax.random.normal(key, sigma_table.shape, sigma_table.dtype)


@jax.jit
def _configuration(root_key: jax.Array, i: jax.Array, sigma_table: jax.Array) -> jax.Array:
    """Configuration i, from key fold_in(root_key, i): (n_atoms, 3) [Angstrom].

    Every configuration goes through this one compiled function (i is traced, not static), so a
    configuration is bitwise the same whether drawn alone or among any number of others; a vmap over i
    would let XLA vectorize, and round, differently for different batch sizes."""
    return gaussian_displacements(jax.random.fold_in(root_key, i), sigma_table)


@functools.partial(jax.jit, donate_argnums=0)
def _put(buffer: jax.Array, i: jax.Array, value: jax.Array) -> jax.Array:
    """buffer with buffer[i] = value, in place (the buffer is donated); stacking thousands of arrays
    instead would compile one concatenation with that many operands."""
    return jax.lax.dynamic_update_index_in_dim(buffer, value, i, 0)


def _atomic_number(element, field: str) -> int:
    if isinstance(element, str):
        if element not in atomic_numbers or element == "X":
            raise ValueError(f"{field}={element!r} is not a chemical symbol")
        return atomic_numbers[element]
    is_integer = isinstance(element, (int, np.integer)) and not isinstance(element, bool)
    if is_integer and 1 <= element < len(chemical_symbols):
        return int(element)
    raise ValueError(f"{field}={element!r} is not allowed; it must be a chemical symbol or an atomic number "
                     f"in 1..{len(chemical_symbols) - 1}")


def _sigma_triple(field: str, value) -> tuple[float, float, float]:
    """(sx, sy, sz) [Angstrom] from a number or a 3-sequence, each finite and >= 0."""
    if isinstance(value, _REAL) and not isinstance(value, bool):
        values = (value,) * 3
    elif (isinstance(value, np.ndarray) and value.shape == (3,)
          or isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3):
        values = tuple(value)
    else:
        raise ValueError(f"{field}={value!r} is not allowed; it must be a number or (sx, sy, sz) [Angstrom]")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, _REAL) or not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{field}={value!r} is not allowed; each rms displacement must be a finite "
                             f"number >= 0 [Angstrom], got {v!r}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True, kw_only=True)
class FrozenPhonons:
    """Frozen-phonon configurations: Gaussian displacements of every atom, drawn reproducibly.

    n_configurations: number of displaced configurations to average over (>= 1).
    seed: root of the random keys (0 <= seed < 2**32); configuration i uses
        `jax.random.fold_in(jax.random.key(seed), i)`, so any configuration can be rebuilt alone.
    sigmas: rms displacement per Cartesian direction [Angstrom]: one number for every element, or a
        mapping from chemical symbol to a number (isotropic) or (sx, sy, sz). Elements missing from the
        mapping, or every element when None, get the Debye-model default at `temperature`
        (`debye_sigma`, theta from `DEBYE_TEMPERATURES_K`).
    temperature: temperature for the Debye-model defaults [K] (> 0).

    One configuration with all sigmas 0 gives zero displacements: a static specimen.
    """

    n_configurations: int
    seed: int = 0
    sigmas: float | Mapping[str, float | tuple[float, float, float]] | None = None
    temperature: float = 300.0

    def __post_init__(self):
        n = self.n_configurations
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_configurations={n!r} is not allowed; it must be an integer >= 1")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise ValueError(f"seed={self.seed!r} is not allowed; it must be an integer in [0, 2**32)")
        _positive("temperature", self.temperature, "K")
        if self.sigmas is None:
            return
        if not isinstance(self.sigmas, Mapping):
            _sigma_triple("sigmas", self.sigmas)
            return
        for symbol, value in self.sigmas.items():
            if not isinstance(symbol, str):
                raise ValueError(f"sigmas key {symbol!r} is not allowed; keys are chemical symbols "
                                 f"such as 'Si'")
            _atomic_number(symbol, "sigmas key")
            _sigma_triple(f"sigmas[{symbol!r}]", value)

    def element_sigma(self, number: int) -> tuple[float, float, float]:
        """(sx, sy, sz) [Angstrom] of element `number` (atomic number)."""
        symbol = chemical_symbols[_atomic_number(number, "number")]
        if isinstance(self.sigmas, Mapping):
            if symbol in self.sigmas:
                return _sigma_triple(f"sigmas[{symbol!r}]", self.sigmas[symbol])
        elif self.sigmas is not None:
            return _sigma_triple("sigmas", self.sigmas)
        return (debye_sigma(symbol, self.temperature),) * 3

    def sigma_table(self, numbers) -> np.ndarray:
        """rms displacements (n_atoms, 3) [Angstrom], float64, for atomic numbers `numbers` (n_atoms,)."""
        numbers = np.asarray(numbers)
        if numbers.ndim != 1:
            raise ValueError(f"numbers must be 1-D (n_atoms,), got shape {numbers.shape}")
        unique = {int(z): self.element_sigma(int(z)) for z in np.unique(numbers)}
        return np.array([unique[int(z)] for z in numbers], dtype=np.float64).reshape(len(numbers), 3)

    def _sigma_array(self, numbers, dtype) -> jax.Array:
        dtype = jnp.result_type(float) if dtype is None else dtype
        return jnp.asarray(self.sigma_table(numbers), dtype=dtype)

    def __hash__(self):
        """Hashable although `sigmas` may be a dict: hash its validated (symbol, (sx, sy, sz)) items."""
        if isinstance(self.sigmas, Mapping):
            sigmas = tuple(sorted((k, _sigma_triple(k, v)) for k, v in self.sigmas.items()))
        else:
            sigmas = None if self.sigmas is None else _sigma_triple("sigmas", self.sigmas)
        return hash((self.n_configurations, self.seed, sigmas, self.temperature))

    def configuration(self, numbers, i: int, dtype=None) -> jax.Array:
        """Displacements (n_atoms, 3) [Angstrom] of configuration `i` (0 <= i < n_configurations).

        dtype: JAX float dtype; the default float (float32 unless x64 is enabled) when None."""
        n = self.n_configurations
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
            raise ValueError(f"i={i!r} is not allowed; it must be an integer in [0, {n})")
        sigma = self._sigma_array(numbers, dtype)
        return _configuration(jax.random.key(self.seed), np.uint32(i), sigma)

    def displacements(self, numbers, dtype=None) -> jax.Array:
        """Displacements (n_configurations, n_atoms, 3) [Angstrom] of every configuration.

        Row i equals `configuration(numbers, i)`. dtype as in `configuration`."""
        sigma = self._sigma_array(numbers, dtype)
        root = jax.random.key(self.seed)
        out = jnp.zeros((self.n_configurations, *sigma.shape), sigma.dtype)
        for i in range(self.n_configurations):  # np scalars: no per-step indexing of device arrays
            out = _put(out, np.int32(i), _configuration(root, np.uint32(i), sigma))
        return out
