"""Bi dopants in crystalline Si under a 200 kV beam: vacancy capture and the indirect exchange of Markevich et
al., J. Phys. Chem. C 125, 16041 (2021) (the mechanism behind the Bi manipulation of Hudak et al., ACS Nano
12, 5873 (2018)).

State is read from the atoms (`twin.samples.bi_si`, Si on the unrelaxed diamond lattice): a Bi with 4 Si
within NEIGHBOUR_CUTOFF (at 2.352 A) is substitutional on lattice site s; a Bi with 6 (at 2.959 A) is in the
split-vacancy configuration, at the midpoint of two vacant neighbouring sites a and b, its neighbours the
other 3 lattice neighbours of a and of b. Any other count (a Bi at a free surface, two defects touching) has
only "bi_knockon". Channels (McKinley-Feshbach, thermally averaged over the struck atom's Debye velocity
along the beam, `potentials.knockon`):

- "vacancy_capture" (substitutional): an electron displaces a Si neighbour j, which leaves as an interstitial
  (removed from the cell); the vacancy binds to the Bi, which relaxes to the midpoint of s and j (split
  vacancy). Threshold `capture_threshold_ev`.
- "exchange" (split vacancy; the indirect exchange): an electron strikes a Si neighbour j of site a (or of b);
  j moves into the other vacant site b (or a) and the Bi relaxes to the midpoint of a and j (of b and j). The
  Bi-vacancy complex turns about a (b): the Bi moves by (j - b) / 2, 1.92 A, toward j, from one bond centre
  to an adjacent one. In projection along [110]: for a split along a dumbbell (a, b in its two columns) the
  step is 1.663 A for 4 neighbours and 0 (along the beam) for the 2 that share a column with the far site;
  for a split across two dumbbells it is 1.663 A for the 4 neighbours in the partner columns of a and b (two
  per column) and 1.92 A for the other 2. Effective threshold `exchange_threshold_ev`.
- "bi_knockon": the Bi is displaced directly (removed from the cell). Threshold `bi_threshold_ev`; closed at
  <= 300 kV, where E_max(209Bi) <= 4.07 eV.

A cross section is exactly 0 when the threshold exceeds E_max + TAIL_SIGMAS standard deviations of its thermal
Doppler spread 2 pc v_rms / c (the Gaussian weight beyond is < 1e-9). Defaults, sources and uncertainties are
in docs/validation.md ("Bi in Si [110]").
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from potentials import units
from potentials.knockon import debye_velocity_rms, displacement_cross_section, max_energy_transfer
from twin.dynamics.engine import AbstractDynamics, Channel

SILICON, BISMUTH = 14, 83
SILICON_MASS, BISMUTH_MASS = 27.977, 208.98  # 28Si and 209Bi [amu]
SILICON_DEBYE_K = 645.0  # Debye temperature of Si (Kittel, Introduction to Solid State Physics) [K]
NEIGHBOUR_CUTOFF = 3.3  # Bi-Si: 2.352 A substitutional, 2.959 A split vacancy; next Si at 3.84 A [Angstrom]
TAIL_SIGMAS = 6.0


@dataclass(frozen=True, kw_only=True)
class BiInSi(AbstractDynamics):
    """Thresholds [eV] of the beam-driven channels and the temperature [K]; see the module docstring.

    Example: BiInSi().cross_sections(200e3)   # {"vacancy_capture": 0.195, "exchange": 0.195, "bi_knockon": 0.0}
    """

    capture_threshold_ev: float = 20.0
    exchange_threshold_ev: float = 20.0
    bi_threshold_ev: float = 10.0
    temperature_k: float = 300.0
    name = "bi-si"

    def __post_init__(self):
        for name in ("capture_threshold_ev", "exchange_threshold_ev", "bi_threshold_ev", "temperature_k"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and value > 0):
                raise ValueError(f"{name}={value!r} is not allowed; it must be a positive number")

    def cross_sections(self, beam_energy_ev: float) -> dict[str, float]:
        """Cross section [barn] of each channel at `beam_energy_ev` [eV]."""
        return _cross_sections(self, float(beam_energy_ev))

    def check(self, atoms) -> None:
        elements = set(atoms.numbers.tolist())
        if elements != {SILICON, BISMUTH}:
            raise ValueError("the bi-si dynamics need crystalline Si with Bi dopants; this sample has elements "
                             f"{sorted(set(atoms.get_chemical_symbols()))}")

    def channels(self, atoms, beam_energy_ev: float) -> list[Channel]:
        sigma = self.cross_sections(beam_energy_ev)
        out = []
        for bi in np.flatnonzero(atoms.numbers == BISMUTH):
            bi = int(bi)
            out.append(Channel("bi_knockon", bi, sigma["bi_knockon"]))
            neighbours = silicon_neighbours(atoms, bi)
            kind = {4: "vacancy_capture", 6: "exchange"}.get(len(neighbours))
            if kind is not None:
                out += [Channel(kind, int(j), sigma[kind], (bi,)) for j in neighbours]
        return out

    def apply(self, key, atoms, channel: Channel):
        atoms = atoms.copy()
        if channel.kind == "bi_knockon":
            del atoms[channel.atom]
            return atoms
        if channel.kind not in ("vacancy_capture", "exchange"):
            raise ValueError(f"channel kind {channel.kind!r} is not one of the bi-si channels")
        bi, j = channel.data[0], channel.atom
        if channel.kind == "vacancy_capture":
            atoms.positions[bi] += _vectors(atoms, bi, [j])[0] / 2
            _wrap(atoms, [bi])
            del atoms[j]
        else:
            centre = atoms.positions[bi].copy()
            to_j = _vectors(atoms, bi, [j])[0]
            near, far = sorted((site - centre for site in split_vacancy_sites(atoms, bi)),
                               key=lambda site: float(np.linalg.norm(to_j - site)))  # j is a neighbour of `near`
            atoms.positions[j] = centre + far
            atoms.positions[bi] = centre + (near + to_j) / 2
            _wrap(atoms, [bi, j])
        return atoms


def bi_states(atoms) -> dict[int, str]:
    """Configuration of each Bi (index: "substitutional", "split_vacancy" or "other") read from its Si
    neighbours."""
    names = {4: "substitutional", 6: "split_vacancy"}
    return {int(bi): names.get(len(silicon_neighbours(atoms, int(bi))), "other")
            for bi in np.flatnonzero(atoms.numbers == BISMUTH)}


def silicon_neighbours(atoms, bi: int) -> np.ndarray:
    """Indices of the Si within NEIGHBOUR_CUTOFF of atom `bi` (minimum image)."""
    silicons = np.flatnonzero(atoms.numbers == SILICON)
    distance = np.linalg.norm(_vectors(atoms, bi, silicons), axis=1)
    return silicons[distance < NEIGHBOUR_CUTOFF]


def split_vacancy_sites(atoms, bi: int) -> tuple[np.ndarray, np.ndarray]:
    """The two vacant lattice sites a, b (each (3,) [Angstrom], unwrapped, near the Bi) of a split-vacancy Bi.

    Its 6 neighbours are a + d_k (3) and b + d'_k (3); with d = b - a each triplet's centroid is a - d / 3
    (b + d / 3), i.e. Bi -/+ 5 d / 6, and the triplets split by the sign of v . v_0 (r^2 / 4 within one,
    < 0 across)."""
    v = _vectors(atoms, bi, silicon_neighbours(atoms, bi))
    if len(v) != 6:
        raise ValueError(f"Bi {bi} has {len(v)} Si neighbours, not the 6 of a split vacancy")
    side = v @ v[0] > 0
    d = 0.6 * (v[~side].mean(0) - v[side].mean(0))
    centre = atoms.positions[bi]
    return centre - d / 2, centre + d / 2


def _vectors(atoms, i: int, others) -> np.ndarray:
    """Minimum-image vectors (len(others), 3) [Angstrom] from atom i to `others` (orthorhombic cell)."""
    d = atoms.positions[others] - atoms.positions[i]
    lengths = atoms.cell.lengths()
    return d - lengths * np.round(d / lengths) * atoms.pbc


def _wrap(atoms, indices) -> None:
    """Bring `indices` back into the cell along its periodic axes (the other atoms are left as they are)."""
    lengths = atoms.cell.lengths()
    wrapped = np.mod(atoms.positions[indices], lengths)
    atoms.positions[indices] = np.where(atoms.pbc, wrapped, atoms.positions[indices])


def _beam_momentum_ev(beam_energy_ev: float) -> float:
    return math.sqrt(beam_energy_ev * (beam_energy_ev + 2 * units.MC2_EV))


def thermal_cross_section(beam_energy_ev, atomic_number, mass_amu, threshold_ev, v_rms) -> float:
    """MF cross section [barn] averaged over the thermal velocity (`displacement_cross_section`), set to exactly
    0 where threshold_ev > E_max + TAIL_SIGMAS x 2 pc v_rms / c (a > 6-sigma Doppler tail)."""
    e_max = float(max_energy_transfer(beam_energy_ev, mass_amu))
    spread = 2 * _beam_momentum_ev(beam_energy_ev) * v_rms / units.C
    if threshold_ev >= e_max + TAIL_SIGMAS * spread:
        return 0.0
    return float(displacement_cross_section(beam_energy_ev, atomic_number, mass_amu, threshold_ev, v_rms))


@functools.lru_cache(maxsize=64)
def _cross_sections(model: BiInSi, energy: float) -> dict[str, float]:
    v_si = float(debye_velocity_rms(SILICON_DEBYE_K, SILICON_MASS, model.temperature_k))
    v_bi = float(debye_velocity_rms(SILICON_DEBYE_K, BISMUTH_MASS, model.temperature_k))
    return {"vacancy_capture": thermal_cross_section(energy, SILICON, SILICON_MASS, model.capture_threshold_ev, v_si),
            "exchange": thermal_cross_section(energy, SILICON, SILICON_MASS, model.exchange_threshold_ev, v_si),
            "bi_knockon": thermal_cross_section(energy, BISMUTH, BISMUTH_MASS, model.bi_threshold_ev, v_bi)}
