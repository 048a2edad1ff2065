"""Labelled sample families for the training-data generator: random structures and their per-atom labels.

`make_sample(family, params, seed)` builds one sample of a family ("graphene", "tmd", "perovskite",
"si100h") with its parameters validated against FAMILIES (defaults filled in) and all randomness drawn from
numpy.random.default_rng(seed): the same (params, seed) gives the same sample.

Example: make_sample("graphene", {"dopant_species": ["Si", "N"], "dopant_fraction": 0.02}, seed=7)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.build import make_supercell, mx2
from ase.neighborlist import neighbor_list

from twin.samples.perovskite import CLASSES as PEROVSKITE_CLASSES
from twin.samples.perovskite import build_perovskite
from twin.samples.si100_h import HSurface, si100_h
from twin.structures import graphene

BOND_CUTOFF_ANG = 1.6  # C-C neighbour cutoff [Angstrom] for edge detection
DOPANTS = {"Si": 14, "N": 7, "P": 15}
TMD = {"MoS2": (3.16, 3.19), "WS2": (3.153, 3.14)}  # a, chalcogen-chalcogen thickness [Angstrom]
TMD_VACUUM_ANG = 2.0


@dataclass(frozen=True, kw_only=True, eq=False)
class LabelledSample:
    """One sample and its labels.

    atoms: ase.Atoms, orthorhombic, periodic in x and y, beam along z. classes: class names, index = id.
    atom_class: (n_atoms,) int into classes. vacancies: (m, 2) lateral positions [A] of vacant lattice
    sites; vacancy_classes: (m,) int into vacancy_class_names. polarization: None or (n_cells, 4) rows
    (x [A], y [A], px [pm], py [pm]). surface: the HSurface (si100h) or None. parameters: the parameters
    used, defaults filled in. drawn: the random choices that are not per-atom (hole centre, edge line).
    """

    atoms: Atoms
    classes: tuple[str, ...]
    atom_class: np.ndarray
    vacancies: np.ndarray
    vacancy_classes: np.ndarray
    vacancy_class_names: tuple[str, ...]
    polarization: np.ndarray | None = None
    surface: HSurface | None = None
    parameters: dict = field(default_factory=dict)
    drawn: dict = field(default_factory=dict)

    def __post_init__(self):
        if np.shape(self.atom_class) != (len(self.atoms),):
            raise ValueError(f"atom_class has shape {np.shape(self.atom_class)}; give ({len(self.atoms)},)")
        m = len(self.vacancy_classes)
        if np.shape(self.vacancies) != (m, 2):
            raise ValueError(f"vacancies has shape {np.shape(self.vacancies)}; give ({m}, 2)")


# ---- parameter checks: each takes (name, value) and returns the normalised value or raises ValueError ----

def _bad(name, value, allowed):
    return ValueError(f"parameter {name}={value!r} is not allowed; give {allowed}")


def _is_number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(value))


def _integer(low, high):
    def check(name, value):
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and low <= value <= high):
            raise _bad(name, value, f"an integer from {low} to {high}")
        return int(value)
    return check


def _number(low, high, *, open_low=False):
    def check(name, value):
        if not (_is_number(value) and (low < value if open_low else low <= value) and value <= high):
            raise _bad(name, value, f"a number above {low} and at most {high}" if open_low
                       else f"a number from {low} to {high}")
        return float(value)
    return check


def _choice(options):
    def check(name, value):
        if value not in options or not isinstance(value, str):
            raise _bad(name, value, f"one of {', '.join(map(repr, options))}")
        return value
    return check


def _boolean(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise _bad(name, value, "true or false")
    return bool(value)


def _pair(low, high):
    def check(name, value):
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise _bad(name, value, f"two integers [nx, ny], each from {low} to {high}")
        return [_integer(low, high)(f"{name}[{k}]", v) for k, v in enumerate(value)]
    return check


def _subset(options):
    def check(name, value):
        if (not isinstance(value, (list, tuple)) or not value or len(set(map(str, value))) != len(value)
                or not all(isinstance(v, str) and v in options for v in value)):
            raise _bad(name, value, f"a non-empty list of distinct entries from {', '.join(options)}")
        return list(value)
    return check


FAMILIES: dict[str, dict[str, tuple]] = {
    "graphene": {"cells": ([12, 7], _pair(1, 200)), "dopant_fraction": (0.01, _number(0, 0.1)),
                 "dopant_species": (["Si"], _subset(tuple(DOPANTS))),
                 "vacancy_fraction": (0.0, _number(0, 0.05)), "hole_radius_ang": (0.0, _number(0, 1000)),
                 "edge": (False, _boolean), "vacuum_ang": (2.0, _number(1, 100))},
    "tmd": {"material": ("MoS2", _choice(tuple(TMD))), "cells": ([10, 6], _pair(1, 200)),
            "chalcogen_vacancy_fraction": (0.02, _number(0, 0.2)),
            "metal_vacancy_fraction": (0.0, _number(0, 0.05)), "antisite_fraction": (0.0, _number(0, 0.05))},
    "perovskite": {"a_site": ("Sr", _choice(("Sr", "Ba", "Pb", "Bi"))),
                   "b_site": ("Ti", _choice(("Ti", "Fe", "Zr"))), "cells": ([8, 8], _pair(1, 100)),
                   "thickness_cells": (5, _integer(1, 100)), "polarization_pm": (20.0, _number(0, 40)),
                   "domain_wall": ("none", _choice(("none", "180", "90"))),
                   "wall_position": (0.5, _number(0, 1)),
                   "wall_width_cells": (1.0, _number(0, 100, open_low=True))},
    "si100h": {"nx_dimers": (8, _integer(1, 500)), "ny_rows": (4, _integer(1, 500)),
               "db_fraction": (0.05, _number(0, 0.5)), "bare_fraction": (0.0, _number(0, 0.5)),
               "vacancy_fraction": (0.0, _number(0, 0.5))},
}


def check_parameters(family: str, params: Mapping) -> dict:
    """The parameters of `family` with defaults filled in, or a ValueError naming the bad one."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} does not exist; allowed: {', '.join(FAMILIES)}")
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a mapping of parameter names to values, got {type(params).__name__}")
    schema = FAMILIES[family]
    unknown = sorted(set(params) - set(schema), key=str)
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for family {family!r}; "
                         f"allowed: {', '.join(schema)}")
    return {name: check(name, params.get(name, default)) for name, (default, check) in schema.items()}


def make_sample(family: str, params: Mapping, seed: int) -> LabelledSample:
    """One labelled sample of `family` (see FAMILIES for its parameters, ranges and defaults).

    seed: integer >= 0; all random choices come from numpy.random.default_rng(seed). Bad family, parameter
    names, types or values raise ValueError naming them. Per-family models in the _graphene, _tmd,
    twin.samples.perovskite and _si100h docstrings.
    """
    p = check_parameters(family, params)
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed={seed!r} is not allowed; give an integer >= 0")
    rng = np.random.default_rng(int(seed))
    if family == "graphene":
        return _graphene(p, rng)
    if family == "tmd":
        return _tmd(p, rng)
    if family == "perovskite":
        atoms, atom_class, polarization = build_perovskite(**p)
        return LabelledSample(atoms=atoms, classes=PEROVSKITE_CLASSES, atom_class=atom_class,
                              vacancies=np.zeros((0, 2)), vacancy_classes=np.zeros(0, int),
                              vacancy_class_names=(), polarization=polarization, parameters=p)
    return _si100h(p, int(seed))


def _neighbour_count(atoms: Atoms, cutoff: float = BOND_CUTOFF_ANG) -> np.ndarray:
    return np.bincount(neighbor_list("i", atoms, cutoff), minlength=len(atoms))


def _lateral_distance(xy: np.ndarray, point: np.ndarray, extent: np.ndarray) -> np.ndarray:
    d = xy - point
    d -= extent * np.round(d / extent)
    return np.hypot(d[:, 0], d[:, 1])


def _graphene(p: dict, rng: np.random.Generator) -> LabelledSample:
    """Graphene (orthorhombic 2.46 x 4.26 A cells) with a hole, an edge, vacancies and dopants.

    In order: a round hole of hole_radius_ang at a uniform random centre removes every atom within the
    radius (lateral, minimum image); `edge` removes every atom above the line y = y0 + tan(phi)(x - Lx/2),
    y0 uniform in [0.35, 0.65] Ly, phi uniform in [-20, 20] deg: with the periodic cell kept, the sheet
    becomes a ribbon with vacuum between its periodic images (two edges; the line's step at the x boundary
    is a kink). Atoms left with fewer than 2 neighbours are removed (repeatedly); C with fewer than 3
    neighbours within 1.6 A are then "C_edge". Of the N sheet atoms left, round(vacancy_fraction N) random
    ones are removed (point vacancies, class "C_vacancy"; their neighbours stay "C") and round(dopant_fraction
    N) other random ones become dopants, each species drawn uniformly from dopant_species, substitutional
    and in plane (3-fold, no buckling). Dopants are not kept apart.
    """
    classes = ("C", "Si_dopant", "N_dopant", "P_dopant", "C_edge")
    atoms = graphene(tuple(p["cells"]), p["vacuum_ang"])
    extent = atoms.cell.lengths()[:2]
    xy, keep, drawn = atoms.positions[:, :2], np.ones(len(atoms), bool), {}
    radius = p["hole_radius_ang"]
    if radius > extent.min() / 2:
        raise _bad("hole_radius_ang", radius, f"a number from 0 to {extent.min() / 2:.2f} (half the smaller "
                                              "cell side for these cells) [Angstrom]")
    if radius > 0:
        centre = rng.uniform(0.0, 1.0, 2) * extent
        keep &= _lateral_distance(xy, centre, extent) >= radius
        drawn["hole_centre_ang"] = centre.tolist()
    if p["edge"]:
        y0, phi = rng.uniform(0.35, 0.65) * extent[1], rng.uniform(-20.0, 20.0)
        keep &= xy[:, 1] <= y0 + np.tan(np.radians(phi)) * (xy[:, 0] - extent[0] / 2)
        drawn["edge_line"] = {"y_at_centre_ang": float(y0), "angle_deg": float(phi)}
    atoms = atoms[keep]
    while len(atoms) and (count := _neighbour_count(atoms)).min() < 2:
        atoms = atoms[count >= 2]
    if not len(atoms):
        raise ValueError(f"hole_radius_ang={radius!r} with edge={p['edge']!r} leaves no atoms; "
                         "give a smaller hole")
    atom_class = np.where(_neighbour_count(atoms) < 3, classes.index("C_edge"), 0)
    n = len(atoms)
    n_vacancies, n_dopants = round(p["vacancy_fraction"] * n), round(p["dopant_fraction"] * n)
    chosen = rng.choice(n, size=n_vacancies + n_dopants, replace=False)
    gone, doped = chosen[:n_vacancies], chosen[n_vacancies:]
    species = [p["dopant_species"][s] for s in rng.integers(0, len(p["dopant_species"]), n_dopants)]
    atoms.numbers[doped] = [DOPANTS[s] for s in species]
    atom_class[doped] = [classes.index(f"{s}_dopant") for s in species]
    vacancies = atoms.positions[gone, :2].copy()
    keep = np.ones(n, bool)
    keep[gone] = False
    return LabelledSample(atoms=atoms[keep], classes=classes, atom_class=atom_class[keep], vacancies=vacancies,
                          vacancy_classes=np.zeros(len(gone), int), vacancy_class_names=("C_vacancy",),
                          parameters=p, drawn=drawn)


def _tmd_lattice(material: str, cells: list[int]) -> Atoms:
    """A 2H MX2 monolayer in orthorhombic a x a sqrt(3) cells (as twin.samples.builders.mos2)."""
    a, thickness = TMD[material]
    cell = make_supercell(mx2(material, kind="2H", a=a, thickness=thickness), [[1, 0, 0], [1, 2, 0], [0, 0, 1]])
    cell.cell[2, 2] = thickness + 2 * TMD_VACUUM_ANG
    cell.positions[:, 2] += TMD_VACUUM_ANG + thickness / 2 - cell.positions[:, 2].mean()
    cell.wrap()
    return cell.repeat((*cells, 1))


def _tmd(p: dict, rng: np.random.Generator) -> LabelledSample:
    """A 2H MoS2 (a = 3.16 A) or WS2 (a = 3.153 A) monolayer with antisites and vacancies.

    Of the N chalcogen columns (top and bottom X at the same x, y; as many as metal atoms), round(
    antisite_fraction N) random ones become antisites: both X removed, one metal atom put at the metal-plane
    height (class "antisite"). Then round(metal_vacancy_fraction N) random metal atoms are removed (class
    "metal_vacancy") and round(chalcogen_vacancy_fraction 2N) random single X of the other columns (top or
    bottom; a column may lose both) are removed (class "chalcogen_vacancy"; the column keeps its other X).
    """
    classes, vacancy_names = ("metal", "chalcogen", "antisite"), ("chalcogen_vacancy", "metal_vacancy")
    atoms = _tmd_lattice(p["material"], p["cells"])
    lattice_xy = atoms.positions[:, :2].copy()
    extent = atoms.cell.lengths()[:2]
    metal_number = atoms.numbers.max()
    metals = np.flatnonzero(atoms.numbers == metal_number)
    chalcogens = np.flatnonzero(atoms.numbers != metal_number)
    grid = np.round(extent * 100).astype(int)
    key = np.round(atoms.positions[chalcogens, :2] * 100).astype(int) % grid
    column = np.unique(key, axis=0, return_inverse=True)[1].ravel()
    n = len(metals)
    if np.bincount(column).tolist() != [2] * n:
        raise RuntimeError("the TMD lattice has chalcogen columns that are not pairs")
    antisite_columns = rng.choice(n, size=round(p["antisite_fraction"] * n), replace=False)
    metal_gone = rng.choice(metals, size=round(p["metal_vacancy_fraction"] * n), replace=False)
    free = chalcogens[~np.isin(column, antisite_columns)]
    count = round(p["chalcogen_vacancy_fraction"] * 2 * n)
    if count > len(free):
        raise _bad("chalcogen_vacancy_fraction", p["chalcogen_vacancy_fraction"],
                   f"a smaller number: {count} vacancies asked but only {len(free)} chalcogens are left")
    chalcogen_gone = rng.choice(free, size=count, replace=False)
    first_of_column = chalcogens[np.unique(column, return_index=True)[1]]
    antisite_xy = atoms.positions[first_of_column[antisite_columns], :2]
    metal_z = atoms.positions[metals, 2].mean()
    removed = np.concatenate([metal_gone, chalcogen_gone, chalcogens[np.isin(column, antisite_columns)]])
    keep = np.ones(len(atoms), bool)
    keep[removed.astype(int)] = False
    atom_class = np.where(atoms.numbers == metal_number, 0, 1)[keep]
    atoms = atoms[keep]
    atoms.extend(Atoms(numbers=[metal_number] * len(antisite_xy),
                       positions=np.column_stack([antisite_xy, np.full(len(antisite_xy), metal_z)])))
    atom_class = np.concatenate([atom_class, np.full(len(antisite_xy), 2)])
    vacancies = lattice_xy[np.concatenate([chalcogen_gone, metal_gone]).astype(int)]
    vacancy_classes = np.repeat([0, 1], [len(chalcogen_gone), len(metal_gone)])
    return LabelledSample(atoms=atoms, classes=classes, atom_class=atom_class,
                          vacancies=vacancies.reshape(-1, 2), vacancy_classes=vacancy_classes,
                          vacancy_class_names=vacancy_names, parameters=p)



def _si100h(p: dict, seed: int) -> LabelledSample:
    """Si(100)-2x1:H from twin.samples.si100_h.si100_h (its random draws from `seed`), labelled.

    Top-layer Si of `to_atoms()`: "Si_H" when its H is there, "dangling_bond" when only its own H is
    missing, "bare_dimer_site" when both H of its dimer are missing (also when both were drawn as single
    DBs: the label follows the occupancy). Deeper Si: "Si_bulk"; H: "H". Vacancies: the sites of missing
    dimers (class "dimer_vacancy").
    """
    classes = ("Si_H", "dangling_bond", "bare_dimer_site", "Si_bulk", "H")
    surface = si100_h(p["nx_dimers"], p["ny_rows"], seed=seed, db_fraction=p["db_fraction"],
                      bare_fraction=p["bare_fraction"], vacancy_fraction=p["vacancy_fraction"])
    atoms = surface.to_atoms()
    occupied = surface.occupied
    partner = occupied.reshape(-1, 2)[:, ::-1].ravel()
    site_class = np.where(occupied, 0, np.where(partner, 1, 2))[surface.present]
    n_h = int(occupied.sum())
    atom_class = np.concatenate([site_class, np.full(len(atoms) - len(site_class) - n_h, 3), np.full(n_h, 4)])
    vacancies = surface.sites[~surface.present, :2]
    return LabelledSample(atoms=atoms, classes=classes, atom_class=atom_class, vacancies=vacancies,
                          vacancy_classes=np.zeros(len(vacancies), int),
                          vacancy_class_names=("dimer_vacancy",), surface=surface, parameters=p)
