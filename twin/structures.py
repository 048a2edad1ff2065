"""Checks and small builders for the ase.Atoms that the simulators take."""

from __future__ import annotations

import numpy as np
from ase import Atoms


def check_atoms(atoms) -> tuple[float, float, float]:
    """Cell side lengths (x, y, z) [Angstrom] of `atoms`, or a ValueError naming what is wrong.

    The simulators need at least one atom and an orthorhombic cell that is periodic in x and y.
    """
    if not isinstance(atoms, Atoms):
        raise ValueError(f"atoms must be an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    cell = np.asarray(atoms.cell)
    lengths = atoms.cell.lengths()
    if not (atoms.pbc[0] and atoms.pbc[1]) or np.any(lengths <= 0):
        raise ValueError(f"the structure needs a periodic cell in x and y; got pbc={atoms.pbc.tolist()}, "
                         f"cell lengths {np.round(lengths, 4).tolist()} Angstrom")
    if not np.allclose(cell, np.diag(lengths), atol=1e-8 * lengths.max()):
        raise ValueError("the structure's cell is not orthorhombic (cell vectors along x, y, z); "
                         "make it so, e.g. with ase.build.make_supercell or abtem.orthogonalize_cell")
    return tuple(float(v) for v in lengths)


def graphene(repeat: tuple[int, int] = (1, 1), vacuum: float = 2.0, bond: float = 1.42) -> Atoms:
    """Orthorhombic graphene: 4 atoms per (3^0.5 b) x (3 b) cell, b the C-C bond [Angstrom], in z at `vacuum`."""
    a = bond * np.sqrt(3)
    scaled = [(0, 0), (0.5, 1 / 6), (0.5, 0.5), (0, 2 / 3)]
    atoms = Atoms("C4", scaled_positions=[(x, y, 0.0) for x, y in scaled], cell=[a, 3 * bond, 2 * vacuum],
                  pbc=True)
    atoms.positions[:, 2] = vacuum
    return atoms.repeat((*repeat, 1))


def graphene_with_defects(repeat: tuple[int, int] = (5, 3), vacuum: float = 2.0) -> Atoms:
    """Graphene with one Si substituted for C and one vacancy, well apart: the demo sample."""
    atoms = graphene(repeat, vacuum)
    centre = atoms.cell.lengths()[:2] / 2
    distance = np.linalg.norm(atoms.positions[:, :2] - centre * [0.6, 1.0], axis=1)
    atoms.numbers[int(np.argmin(distance))] = 14
    far = np.linalg.norm(atoms.positions[:, :2] - centre * [1.5, 1.0], axis=1)
    del atoms[int(np.argmin(far))]
    return atoms
