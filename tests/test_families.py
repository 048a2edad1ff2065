"""Labelled sample families: structures, label consistency, counts, determinism and parameter errors."""

import numpy as np
import pytest

from twin.samples.families import FAMILIES, make_sample
from twin.samples.perovskite import LATTICE_ANG, O_FRACTION
from twin.structures import check_atoms, graphene

ALLOWED_NUMBERS = {  # class name -> atomic numbers it may have
    "C": {6}, "C_edge": {6}, "Si_dopant": {14}, "N_dopant": {7}, "P_dopant": {15},
    "metal": {42, 74}, "chalcogen": {16}, "antisite": {42, 74},
    "A": {38, 56, 82, 83}, "B": {22, 26, 40}, "O": {8},
    "Si_H": {14}, "dangling_bond": {14}, "bare_dimer_site": {14}, "Si_bulk": {14}, "H": {1},
}
DEFECTIVE = {
    "graphene": {"dopant_fraction": 0.05, "dopant_species": ["Si", "N", "P"], "vacancy_fraction": 0.03,
                 "hole_radius_ang": 4.0, "edge": True},
    "tmd": {"material": "WS2", "chalcogen_vacancy_fraction": 0.1, "metal_vacancy_fraction": 0.05,
            "antisite_fraction": 0.05},
    "perovskite": {"a_site": "Pb", "b_site": "Zr", "domain_wall": "90", "thickness_cells": 2},
    "si100h": {"db_fraction": 0.1, "bare_fraction": 0.1, "vacancy_fraction": 0.1},
}


def lateral(xy, point, extent):
    d = xy[:, :2] - point
    d -= extent * np.round(d / extent)
    return np.hypot(d[:, 0], d[:, 1])


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("defective", [False, True])
def test_sample_is_consistent(family, defective):
    sample = make_sample(family, DEFECTIVE[family] if defective else {}, seed=4)
    check_atoms(sample.atoms)
    assert sample.atom_class.shape == (len(sample.atoms),)
    assert set(sample.parameters) == set(FAMILIES[family])
    for name, number in zip(np.array(sample.classes)[sample.atom_class], sample.atoms.numbers):
        assert number in ALLOWED_NUMBERS[name], (name, number)
    assert sample.vacancies.shape == (len(sample.vacancy_classes), 2)
    assert np.all((0 <= sample.vacancy_classes) & (sample.vacancy_classes < len(sample.vacancy_class_names)))


def pristine(family, sample):
    if family == "graphene":
        return graphene(tuple(sample.parameters["cells"]), sample.parameters["vacuum_ang"])
    if family == "tmd":
        zero = {"chalcogen_vacancy_fraction": 0.0, "material": sample.parameters["material"]}
    else:
        zero = {"db_fraction": 0.0}
    return make_sample(family, zero, seed=0).atoms


@pytest.mark.parametrize("family", ["graphene", "tmd", "si100h"])
def test_vacancies_are_emptied_lattice_sites(family):
    sample = make_sample(family, DEFECTIVE[family], seed=11)
    assert len(sample.vacancies) > 0
    ideal, extent = pristine(family, sample), sample.atoms.cell.lengths()[:2]
    for xy in sample.vacancies:
        assert lateral(ideal.positions, xy, extent).min() < 0.01, "not a lattice site"
        before = (lateral(ideal.positions, xy, extent) < 0.5).sum()
        after = (lateral(sample.atoms.positions, xy, extent) < 0.5).sum()
        if family == "tmd":  # a single chalcogen vacancy leaves the other X of its column
            lost = np.sum(lateral(sample.vacancies, xy, extent) < 0.01)
            assert after <= before - lost
        else:
            assert after == 0


def test_graphene_counts_follow_the_fractions():
    p = {"dopant_fraction": 0.05, "dopant_species": ["Si", "N", "P"], "vacancy_fraction": 0.03}
    sample = make_sample("graphene", p, seed=2)
    n_sheet = 12 * 7 * 4
    assert len(sample.vacancies) == round(0.03 * n_sheet) == len(graphene((12, 7))) - len(sample.atoms)
    assert np.sum(sample.atoms.numbers != 6) == round(0.05 * n_sheet)
    assert set(sample.atoms.numbers) == {6, 7, 14, 15}
    assert not np.any(np.array(sample.classes)[sample.atom_class] == "C_edge")
    holed = make_sample("graphene", DEFECTIVE["graphene"], seed=2)
    n_sheet = len(holed.atoms) + len(holed.vacancies)
    assert len(holed.vacancies) == round(0.03 * n_sheet)
    assert np.sum(holed.atoms.numbers != 6) == round(0.05 * n_sheet)


def test_graphene_hole_is_empty_and_bordered_by_edge_atoms():
    sample = make_sample("graphene", {"hole_radius_ang": 5.0, "dopant_fraction": 0.0}, seed=5)
    extent, centre = sample.atoms.cell.lengths()[:2], np.array(sample.drawn["hole_centre_ang"])
    distance = lateral(sample.atoms.positions, centre, extent)
    assert distance.min() >= 5.0
    edge = np.array(sample.classes)[sample.atom_class] == "C_edge"
    assert edge.sum() >= 6 and np.all(distance[edge] < 5.0 + 1.6)
    ribbon = make_sample("graphene", {"edge": True, "dopant_fraction": 0.0}, seed=5)
    assert len(ribbon.atoms) < len(graphene((12, 7))) and "edge_line" in ribbon.drawn
    assert np.sum(ribbon.atom_class == ribbon.classes.index("C_edge")) >= 2 * 12


def test_tmd_counts_and_antisites():
    sample = make_sample("tmd", DEFECTIVE["tmd"], seed=8)
    n_metal = 10 * 6 * 2
    names = np.array(sample.vacancy_class_names)[sample.vacancy_classes]
    assert np.sum(names == "metal_vacancy") == round(0.05 * n_metal)
    assert np.sum(names == "chalcogen_vacancy") == round(0.1 * 2 * n_metal)
    antisite = sample.atom_class == sample.classes.index("antisite")
    assert antisite.sum() == round(0.05 * n_metal)
    metal_z = sample.atoms.positions[sample.atom_class == 0, 2].mean()
    assert np.allclose(sample.atoms.positions[antisite, 2], metal_z)
    ideal, extent = pristine("tmd", sample), sample.atoms.cell.lengths()[:2]
    sulfur = ideal.positions[ideal.numbers == 16]
    for xy in sample.atoms.positions[antisite, :2]:
        assert lateral(sulfur, xy, extent).min() < 0.01
        assert (lateral(sample.atoms.positions, xy, extent) < 0.5).sum() == 1


@pytest.mark.parametrize("family", list(FAMILIES))
def test_same_seed_same_sample(family):
    first, again = (make_sample(family, DEFECTIVE[family], seed=21) for _ in range(2))
    assert np.array_equal(first.atoms.numbers, again.atoms.numbers)
    assert np.array_equal(first.atoms.positions, again.atoms.positions)
    assert np.array_equal(first.atom_class, again.atom_class)
    assert np.array_equal(first.vacancies, again.vacancies)
    if family != "perovskite":
        other = make_sample(family, DEFECTIVE[family], seed=22)
        assert not (np.array_equal(first.atom_class, other.atom_class)
                    and np.array_equal(first.vacancies, other.vacancies)
                    and len(first.atoms) == len(other.atoms)
                    and np.array_equal(first.atoms.positions, other.atoms.positions))


@pytest.mark.parametrize("family, params, named", [
    ("graphene", {"dopant_fractoin": 0.01}, "dopant_fractoin"),
    ("graphene", {"dopant_fraction": 0.2}, "dopant_fraction"),
    ("graphene", {"dopant_species": ["B"]}, "dopant_species"),
    ("graphene", {"cells": [12]}, "cells"),
    ("graphene", {"cells": [12, 7.5]}, r"cells\[1\]"),
    ("graphene", {"edge": "yes"}, "edge"),
    ("graphene", {"hole_radius_ang": 40.0}, "hole_radius_ang"),
    ("graphene", {"vacancy_fraction": -0.01}, "vacancy_fraction"),
    ("tmd", {"material": "MoSe2"}, "material"),
    ("tmd", {"antisite_fraction": "0.01"}, "antisite_fraction"),
    ("tmd", {"chalcogen_vacancy_fraction": float("nan")}, "chalcogen_vacancy_fraction"),
    ("perovskite", {"polarization_pm": 50}, "polarization_pm"),
    ("perovskite", {"domain_wall": 180}, "domain_wall"),
    ("perovskite", {"wall_width_cells": 0}, "wall_width_cells"),
    ("perovskite", {"thickness_cells": True}, "thickness_cells"),
    ("si100h", {"nx_dimers": 0}, "nx_dimers"),
    ("si100h", {"layers": 2}, "layers"),
    ("diamond", {}, "diamond"),
])
def test_bad_parameters_are_named(family, params, named):
    with pytest.raises(ValueError, match=named):
        make_sample(family, params, seed=0)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        make_sample("graphene", {}, seed=seed)


@pytest.mark.parametrize("p0", [0.0, 12.5, 40.0])
def test_uniform_polarization_label_equals_the_displacement(p0):
    sample = make_sample("perovskite", {"polarization_pm": p0, "cells": [5, 4], "thickness_cells": 3}, seed=0)
    label = sample.polarization
    assert label.shape == (20, 4)
    assert np.allclose(label[:, 2], 0.0, atol=0.1) and np.allclose(label[:, 3], p0, atol=0.1)
    b = sample.atoms.positions[sample.atom_class == 1]
    assert np.allclose(np.mod(b[:, 1], LATTICE_ANG) - LATTICE_ANG / 2, p0 / 100, atol=1e-9)
    oxygen = sample.atoms.positions[sample.atom_class == 2]
    shift = np.mod(oxygen[:, 1] + LATTICE_ANG / 4, LATTICE_ANG / 2) - LATTICE_ANG / 4
    assert np.allclose(shift, -O_FRACTION * p0 / 100, atol=1e-9)


def test_180_wall_follows_tanh():
    p0, width = 20.0, 1.5
    sample = make_sample("perovskite", {"cells": [24, 2], "thickness_cells": 2, "domain_wall": "180",
                                        "wall_position": 0.25, "wall_width_cells": width}, seed=0)
    x, px, py = sample.polarization[:, 0], sample.polarization[:, 2], sample.polarization[:, 3]
    delta = x - 0.25 * 24 * LATTICE_ANG
    near = np.abs(delta) < 4 * LATTICE_ANG
    assert np.allclose(py[near], p0 * np.tanh(delta[near] / (width * LATTICE_ANG)), atol=0.1)
    assert np.allclose(px, 0.0, atol=0.1)
    partner = np.abs(delta - 12 * LATTICE_ANG) < 4 * LATTICE_ANG  # the second wall, opposite sense
    assert np.allclose(py[partner], -p0 * np.tanh((delta[partner] - 12 * LATTICE_ANG) / (width * LATTICE_ANG)),
                       atol=0.1)


def test_90_wall_rotates_at_constant_magnitude():
    sample = make_sample("perovskite", {"cells": [24, 2], "thickness_cells": 1, "domain_wall": "90",
                                        "polarization_pm": 30.0}, seed=0)
    x, p = sample.polarization[:, 0], sample.polarization[:, 2:]
    assert np.allclose(np.hypot(p[:, 0], p[:, 1]), 30.0, atol=0.1)
    wall = 12 * LATTICE_ANG
    assert np.allclose(p[np.abs(x - (wall - 3 * LATTICE_ANG)) < 1], [0.0, 30.0], atol=0.5)
    assert np.allclose(p[np.abs(x - (wall + 3 * LATTICE_ANG)) < 1], [30.0, 0.0], atol=0.5)


def test_si100h_classes_follow_the_surface():
    sample = make_sample("si100h", DEFECTIVE["si100h"], seed=6)
    surface, names = sample.surface, np.array(sample.classes)[sample.atom_class]
    occupied, present = surface.occupied, surface.present
    partner = occupied.reshape(-1, 2)[:, ::-1].ravel()
    top = names[: present.sum()]
    assert np.array_equal(top == "Si_H", occupied[present])
    assert np.array_equal(top == "dangling_bond", (~occupied & partner)[present])
    assert np.array_equal(top == "bare_dimer_site", (~occupied & ~partner)[present])
    assert np.sum(names == "H") == occupied.sum()
    assert np.all(names[present.sum():][sample.atoms.numbers[present.sum():] == 14] == "Si_bulk")
    assert len(sample.vacancies) == 2 * round(0.1 * 32) == np.sum(~present)
    assert np.allclose(sample.vacancies, surface.sites[~present, :2])
