"""Si dopants in graphene under a 60-100 kV beam (Susi et al., PRL 113, 115501 (2014); Tripathi et al.,
Nano Lett. 18, 5319 (2018); Su et al., Sci. Adv. 5, eaav2252 (2019)).

State is read from the atoms: a threefold Si has 3 C within 2.05 A (on a lattice site), a fourfold Si sits
between two sites of a divacancy with 4 C at 1.88 A. Channels and their cross sections (McKinley-Feshbach,
thermally averaged over the struck atom's Debye velocity along the beam, `potentials.knockon`):

- "jump" (threefold): an electron strikes a C neighbour, which swaps with the Si (bond inversion). Effective
  threshold `inversion_threshold_ev`.
- "to_fourfold": a C neighbour is knocked out; the Si relaxes into the divacancy (fourfold). Effective
  threshold `neighbour_threshold_ev`.
- "si_ejection": the Si is knocked out (a vacancy remains). Threshold `si_threshold_ev`.
- "to_threefold" (fourfold): a C adatom fills one site of the divacancy and the Si returns to the other;
  `to_threefold_cross_section_barn`, energy independent.
- "c_knockon": any other C is knocked out (pristine graphene damage), threshold `carbon_threshold_ev`.

The defaults and their sources are in docs/validation.md ("Beam-induced dynamics").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from potentials.knockon import debye_velocity_rms, displacement_cross_section
from twin.dynamics.engine import AbstractDynamics, Channel

CC_BOND = 1.42  # [Angstrom]
NEIGHBOUR_CUTOFF = 2.05  # Si-C neighbours: 1.42 A threefold, 1.88 A fourfold; next C at 2.46 A [Angstrom]
CARBON_MASS, SILICON_MASS = 12.0, 27.977  # 12C and 28Si [amu]
GRAPHENE_DEBYE_K = 1287.0  # out-of-plane Debye temperature of graphene (Meyer et al., PRL 108, 196102 (2012))


@dataclass(frozen=True, kw_only=True)
class SiInGraphene(AbstractDynamics):
    """Thresholds [eV] of the beam-driven channels; see the module docstring."""

    inversion_threshold_ev: float = 13.65
    neighbour_threshold_ev: float = 14.43
    si_threshold_ev: float = 7.58
    carbon_threshold_ev: float = 21.14
    to_threefold_cross_section_barn: float = 0.01
    temperature_k: float = 300.0
    name = "si-graphene"

    def __post_init__(self):
        for name in ("inversion_threshold_ev", "neighbour_threshold_ev", "si_threshold_ev", "carbon_threshold_ev",
                     "temperature_k"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name}={value!r} is not allowed; it must be positive")
        if not self.to_threefold_cross_section_barn >= 0:
            raise ValueError(f"to_threefold_cross_section_barn={self.to_threefold_cross_section_barn!r} is not "
                             "allowed; it must be >= 0 [barn]")

    def cross_sections(self, beam_energy_ev: float) -> dict[str, float]:
        """Cross section [barn] of each channel at `beam_energy_ev` [eV]."""
        return _cross_sections(self, float(beam_energy_ev))

    def check(self, atoms) -> None:
        if not set(atoms.numbers) <= {6, 14} or 6 not in atoms.numbers:
            raise ValueError("the si-graphene dynamics need a graphene sheet of C with Si dopants; this sample has "
                             f"elements {sorted(set(atoms.get_chemical_symbols()))}")

    def channels(self, atoms, beam_energy_ev: float) -> list[Channel]:
        sigma = self.cross_sections(beam_energy_ev)
        out, near = [], set()
        for si in np.flatnonzero(atoms.numbers == 14):
            carbons = _carbon_neighbours(atoms, si)
            near.update(carbons.tolist())
            out.append(Channel("si_ejection", int(si), sigma["si_ejection"]))
            if len(carbons) == 3:
                out += [Channel(kind, int(c), sigma[kind]) for c in carbons for kind in ("jump", "to_fourfold")]
            elif len(carbons) == 4:
                out.append(Channel("to_threefold", int(si), sigma["to_threefold"]))
        if sigma["c_knockon"] > 0:
            out += [Channel("c_knockon", int(c), sigma["c_knockon"]) for c in np.flatnonzero(atoms.numbers == 6)
                    if c not in near]
        return out

    def apply(self, key, atoms, channel: Channel):
        import jax

        atoms = atoms.copy()
        si = _dopant_of(atoms, channel)
        if channel.kind == "jump":
            atoms.numbers[[si, channel.atom]] = atoms.numbers[[channel.atom, si]]
        elif channel.kind == "to_fourfold":
            atoms.positions[si] = _midpoint(atoms, si, channel.atom)
            del atoms[channel.atom]
        elif channel.kind == "to_threefold":
            sites = _divacancy_sites(atoms, si)
            keep = int(jax.random.bernoulli(key))
            atoms.positions[si] = sites[keep]
            atoms += atoms[[si]]
            atoms.numbers[-1] = 6
            atoms.positions[-1] = sites[1 - keep]
        elif channel.kind in ("si_ejection", "c_knockon"):
            del atoms[channel.atom]
        else:
            raise ValueError(f"channel kind {channel.kind!r} is not one of the si-graphene channels")
        return atoms


@functools.lru_cache(maxsize=64)
def _cross_sections(model: SiInGraphene, energy: float) -> dict[str, float]:
    v_c = float(debye_velocity_rms(GRAPHENE_DEBYE_K, CARBON_MASS, model.temperature_k))
    v_si = float(debye_velocity_rms(GRAPHENE_DEBYE_K, SILICON_MASS, model.temperature_k))

    def sigma(z, mass, threshold, v):
        return float(displacement_cross_section(energy, z, mass, threshold, v))

    return {"jump": sigma(6, CARBON_MASS, model.inversion_threshold_ev, v_c),
            "to_fourfold": sigma(6, CARBON_MASS, model.neighbour_threshold_ev, v_c),
            "si_ejection": sigma(14, SILICON_MASS, model.si_threshold_ev, v_si),
            "c_knockon": sigma(6, CARBON_MASS, model.carbon_threshold_ev, v_c),
            "to_threefold": float(model.to_threefold_cross_section_barn)}


def _vectors(atoms, i, others):
    d = atoms.positions[others, :2] - atoms.positions[i, :2]
    extent = atoms.cell.lengths()[:2]
    return d - extent * np.round(d / extent)


def _carbon_neighbours(atoms, si) -> np.ndarray:
    carbons = np.flatnonzero(atoms.numbers == 6)
    distance = np.linalg.norm(_vectors(atoms, si, carbons), axis=1)
    return carbons[distance < NEIGHBOUR_CUTOFF]


def _dopant_of(atoms, channel: Channel) -> int:
    if atoms.numbers[channel.atom] == 14:
        return channel.atom
    silicons = np.flatnonzero(atoms.numbers == 14)
    return int(silicons[np.argmin(np.linalg.norm(_vectors(atoms, channel.atom, silicons), axis=1))])


def _midpoint(atoms, i, j) -> np.ndarray:
    out = atoms.positions[i].copy()
    out[:2] += _vectors(atoms, i, [j])[0] / 2
    return out


def _divacancy_sites(atoms, si) -> np.ndarray:
    """The two lattice sites (2, 3) between which a fourfold Si sits: each 0.71 A from it, away from the
    midpoint of the pair of its C neighbours that belonged to that site."""
    carbons = _carbon_neighbours(atoms, si)
    d = _vectors(atoms, si, carbons)
    first = int(np.argmin(np.linalg.norm(d[1:] - d[0], axis=1))) + 1  # d[0]'s partner on the same site
    rest = [k for k in range(1, 4) if k != first]
    sites = []
    for pair in ((0, first), tuple(rest)):
        direction = d[list(pair)].mean(0)
        site = atoms.positions[si].copy()
        site[:2] += CC_BOND / 2 * direction / np.linalg.norm(direction)
        sites.append(site)
    return np.array(sites)
