"""Bi dopants in crystalline Si viewed along [110] (Hudak et al., ACS Nano 12, 5873 (2018); Markevich et al.,
J. Phys. Chem. C 125, 16041 (2021)).

Diamond Si (a = 5.431 A) in an orthorhombic cell: x along [-110] (a / sqrt 2 = 3.840 A per cell), y along
[001] (5.431 A), z (the beam) along [110] (3.840 A per cell), 4 atoms per cell. Projected along z the atoms
form dumbbells: pairs of columns 1.358 A apart along y. (x along [-110] rather than [1-10] makes the frame
right-handed; the two are mirror images and project identically.)

A substitutional Bi replaces a Si on its lattice site (4 Si neighbours at 2.352 A). A split-vacancy Bi sits
at the midpoint of two neighbouring lattice sites, both vacant; on the unrelaxed lattice its 6 Si neighbours
(the other 3 neighbours of each site) are at sqrt(19/12) x 2.352 = 2.959 A and the next Si at 3.84 A
(DFT relaxation pulls the 6 in to ~2.6-2.7 A [M: Markevich 2021]; the twin keeps the Si on lattice sites).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.lattice.cubic import Diamond

SI_LATTICE = 5.431  # [Angstrom] (Kittel, Introduction to Solid State Physics)
SI_BOND = SI_LATTICE * np.sqrt(3) / 4  # 2.352 [Angstrom]
MIN_BI_SPACING = 8.0  # [Angstrom]
Z_MARGIN = 4.0  # Bi sites at least this far from z = 0 and z = thickness: the Bi, its sites and all their
# neighbours then lie inside the slab without wrapping [Angstrom]
BISMUTH = 83


def _check_int(name: str, value, low: int, high: int) -> int:
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and low <= value <= high):
        raise ValueError(f"{name}={value!r} is not allowed; give an integer from {low} to {high}")
    return int(value)


def silicon110(repeat: tuple[int, int] = (8, 6), thickness_cells: int = 6) -> Atoms:
    """Perfect diamond Si with the beam along [110]: `repeat` (x, y) cells of 3.840 x 5.431 A and
    `thickness_cells` cells of 3.840 A along z; periodic, orthorhombic, positions wrapped into the cell."""
    unit = Diamond(directions=[[-1, 1, 0], [0, 0, 1], [1, 1, 0]], symbol="Si", latticeconstant=SI_LATTICE)
    atoms = unit.repeat((*repeat, thickness_cells))
    scaled = np.mod(np.round(atoms.get_scaled_positions(wrap=False), 12), 1.0)
    atoms.set_scaled_positions(scaled)
    return atoms


def bi_si110(seed: int = 0, *, repeat: tuple[int, int] = (8, 6), thickness_cells: int = 6, n_bi: int = 1,
             split_vacancy: bool = False) -> Atoms:
    """Si viewed along [110] with `n_bi` Bi dopants at random sites drawn from `seed`.

    repeat: cells along x ([-110], 3.840 A) and y ([001], 5.431 A), each 3 to 200 (cell sides >= 10.9 A);
    thickness_cells: cells along the beam (z, [110], 3.840 A), 3 to 200; n_bi: number of Bi, each at a
    lattice site at least Z_MARGIN = 4 A from both z faces and >= 8 A from every other Bi (periodic images
    included). split_vacancy: False puts each Bi on its site (substitutional); True removes the site and a
    random one of its 4 neighbours and puts the Bi at their midpoint (the split-vacancy configuration,
    Markevich et al. 2021). Returns ase.Atoms (Si first, then any split-vacancy Bi), orthorhombic and periodic;
    the default sample is 30.7 x 32.6 x 23.0 A with 1152 atoms. Same seed, same sample.

    Example: bi_si110(3, n_bi=2, split_vacancy=True)
    """
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed={seed!r} is not allowed; give a non-negative integer")
    if not (isinstance(repeat, (tuple, list)) and len(repeat) == 2):
        raise ValueError(f"repeat={repeat!r} is not allowed; give two integers (cells along x and y)")
    _check_int("repeat[0]", repeat[0], 3, 200)
    _check_int("repeat[1]", repeat[1], 2, 200)
    thickness_cells = _check_int("thickness_cells", thickness_cells, 3, 200)
    if not isinstance(split_vacancy, (bool, np.bool_)):
        raise ValueError(f"split_vacancy={split_vacancy!r} is not allowed; give True or False")
    atoms = silicon110(tuple(int(n) for n in repeat), thickness_cells)
    n_bi = _check_int("n_bi", n_bi, 0, len(atoms) // 64 + 1)
    rng = np.random.default_rng(int(seed))
    sites = _draw_sites(atoms, n_bi, rng)
    if not split_vacancy:
        atoms.numbers[sites] = BISMUTH
        return atoms
    vacant, bismuth = [], []
    for site in sites:
        neighbours = _neighbours(atoms, site)
        partner = int(neighbours[rng.integers(len(neighbours))])
        bismuth.append(atoms.positions[site] + _vectors(atoms, site, [partner])[0] / 2)
        vacant += [site, partner]
    del atoms[sorted(vacant)]
    atoms += Atoms(numbers=[BISMUTH] * len(bismuth), positions=np.reshape(bismuth, (-1, 3)))
    return atoms


def _draw_sites(atoms: Atoms, n_bi: int, rng: np.random.Generator) -> list[int]:
    """`n_bi` lattice sites inside the slab (Z_MARGIN), pairwise >= MIN_BI_SPACING apart; ValueError if they do
    not fit."""
    z = atoms.positions[:, 2]
    inside = np.flatnonzero((z >= Z_MARGIN) & (z <= atoms.cell[2, 2] - Z_MARGIN))
    chosen: list[int] = []
    for i in rng.permutation(inside):
        if len(chosen) == n_bi:
            break
        if not chosen or np.linalg.norm(_vectors(atoms, int(i), chosen), axis=1).min() >= MIN_BI_SPACING:
            chosen.append(int(i))
    if len(chosen) < n_bi:
        raise ValueError(f"n_bi={n_bi} is not allowed: only {len(chosen)} Bi fit {MIN_BI_SPACING} A apart and "
                         f"{Z_MARGIN} A inside this cell; give fewer or a larger repeat / thickness_cells")
    return chosen


def _vectors(atoms: Atoms, i: int, others) -> np.ndarray:
    """Minimum-image vectors (len(others), 3) [Angstrom] from atom i to `others` (orthorhombic cell)."""
    d = atoms.positions[others] - atoms.positions[i]
    lengths = atoms.cell.lengths()
    return d - lengths * np.round(d / lengths) * atoms.pbc


def _neighbours(atoms: Atoms, i: int) -> np.ndarray:
    """Indices of the 4 lattice neighbours (at SI_BOND) of atom i."""
    distance = np.linalg.norm(_vectors(atoms, i, np.arange(len(atoms))), axis=1)
    return np.flatnonzero(np.abs(distance - SI_BOND) < 0.1)
