"""Bi dopants in Si [110]: the sample builder, the mechanism gate of physics.md section 2 (no direct Bi
knock-on; exchange only from the split vacancy with the beam on an adjacent Si column; nothing at 100 kV) and
the waiting times of the kinetic Monte Carlo against sigma (I / e) P."""

import jax
import numpy as np
import pytest

from potentials import units
from potentials.knockon import max_energy_transfer
from twin.dynamics import make_dynamics
from twin.dynamics.bi_si import BISMUTH_MASS, BiInSi, bi_states, silicon_neighbours, split_vacancy_sites
from twin.dynamics.engine import BARN, Exposure, advance, probe_field
from twin.samples import bi_si110, named_sample
from twin.samples.bi_si import SI_BOND, Z_MARGIN, silicon110
from twin.stem.probe import ProbeSpec
from twin.structures import check_atoms, graphene

PROBE = ProbeSpec(energy=200e3, semiangle=25)
CURRENT_PA = 30.0
SMALL = {"repeat": (3, 2), "thickness_cells": 3}  # 11.5 x 10.9 x 11.5 A, 72 sites: fast fields


def _mic(atoms, d):
    lengths = atoms.cell.lengths()
    return d - lengths * np.round(d / lengths)


def _bi(atoms) -> int:
    return int(np.flatnonzero(atoms.numbers == 83)[0])


def _parked(x, y, dwell_s):
    return Exposure(x=np.array([x]), y=np.array([y]), dwell_s=np.array([dwell_s]), t_s=np.array([0.0]))


def _total_rate(model, atoms, x, y, probe=PROBE):
    """sum_c sigma_c (I / e) P(r_c - r_probe) [1/s] over the open channels."""
    field = probe_field(probe, tuple(atoms.cell.lengths()[:2]))
    flux = CURRENT_PA * 1e-12 / units.E
    return sum(c.cross_section_barn * BARN * flux * float(field(atoms.positions[c.atom, 0] - x,
                                                                atoms.positions[c.atom, 1] - y))
               for c in model.channels(atoms, probe.energy))


# --- builder ------------------------------------------------------------------------------------------------

def test_builder_cell_counts_and_substitutional_geometry():
    atoms = bi_si110(0, n_bi=3)
    lengths = check_atoms(atoms)
    assert lengths == pytest.approx((8 * 5.431 / np.sqrt(2), 6 * 5.431, 6 * 5.431 / np.sqrt(2)))
    assert len(atoms) == 8 * 6 * 6 * 4 and np.sum(atoms.numbers == 83) == 3
    bis = np.flatnonzero(atoms.numbers == 83)
    for bi in bis:
        d = np.sort(np.linalg.norm(_mic(atoms, atoms.positions - atoms.positions[bi]), axis=1))
        assert d[1:5] == pytest.approx([SI_BOND] * 4, abs=1e-6) and d[5] > 3.8
        assert Z_MARGIN <= atoms.positions[bi, 2] <= lengths[2] - Z_MARGIN
    pair = _mic(atoms, atoms.positions[bis][:, None] - atoms.positions[bis][None])
    assert np.linalg.norm(pair, axis=-1)[~np.eye(3, dtype=bool)].min() >= 8.0
    assert set(bi_states(atoms).values()) == {"substitutional"}


def test_builder_split_vacancy_geometry():
    atoms = bi_si110(4, n_bi=2, split_vacancy=True)
    perfect = silicon110()
    assert len(atoms) == len(perfect) - 2 and np.sum(atoms.numbers == 83) == 2
    for bi in np.flatnonzero(atoms.numbers == 83):
        d = np.sort(np.linalg.norm(_mic(atoms, atoms.positions - atoms.positions[bi]), axis=1))
        assert d[1:7] == pytest.approx([SI_BOND * np.sqrt(19 / 12)] * 6, abs=1e-6)  # 2.959 A
        assert d[7] == pytest.approx(4.016, abs=1e-3)
        a, b = split_vacancy_sites(atoms, bi)
        assert np.linalg.norm(b - a) == pytest.approx(SI_BOND)
        for site in (a, b):  # a lattice site of the perfect crystal, now empty
            assert np.linalg.norm(_mic(perfect, perfect.positions - site), axis=1).min() < 1e-6
            assert np.linalg.norm(_mic(atoms, atoms.positions - site), axis=1).min() > 1.0
    assert set(bi_states(atoms).values()) == {"split_vacancy"}


def test_builder_is_deterministic_per_seed():
    for split in (False, True):
        first, again = bi_si110(7, split_vacancy=split), bi_si110(7, split_vacancy=split)
        assert np.array_equal(first.numbers, again.numbers) and np.array_equal(first.positions, again.positions)
        others = [bi_si110(s, split_vacancy=split).positions[_bi(bi_si110(s, split_vacancy=split))]
                  for s in range(3)]
        assert len({tuple(np.round(p, 6)) for p in others}) > 1


@pytest.mark.parametrize("kwargs, name", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"repeat": (2, 6)}, "repeat"), ({"repeat": (8,)}, "repeat"),
    ({"thickness_cells": 2}, "thickness_cells"), ({"thickness_cells": 3.0}, "thickness_cells"),
    ({"n_bi": -1}, "n_bi"), ({"n_bi": 10_000}, "n_bi"), ({"n_bi": 2, **SMALL}, "n_bi"),
    ({"split_vacancy": "yes"}, "split_vacancy")])
def test_builder_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bi_si110(**kwargs)


# --- registry -----------------------------------------------------------------------------------------------

def test_registry():
    atoms = named_sample("bi-si")
    assert sorted(set(atoms.numbers)) == [14, 83]
    assert isinstance(make_dynamics("auto", atoms, "bi-si"), BiInSi)
    assert isinstance(make_dynamics("auto", atoms), BiInSi)
    assert isinstance(make_dynamics("bi-si", atoms, "bi-si"), BiInSi)
    with pytest.raises(ValueError, match="bi-si"):
        make_dynamics("bi-si", graphene((4, 3)), "graphene")
    with pytest.raises(ValueError, match="exchange_threshold_ev"):
        BiInSi(exchange_threshold_ev=-1.0)


# --- mechanism gate (physics.md section 2) -------------------------------------------------------------------

def test_direct_bi_knockon_is_exactly_zero_up_to_300kv():
    assert float(max_energy_transfer(300e3, BISMUTH_MASS)) < 4.1
    for threshold in (8.0, 10.0, 20.0):
        model = BiInSi(bi_threshold_ev=threshold)
        for energy in np.linspace(60e3, 300e3, 13):
            assert model.cross_sections(energy)["bi_knockon"] == 0.0


def test_no_bi_knockon_over_a_long_exposure_on_the_bi():
    """300 kV, beam parked on a substitutional Bi for 100 s: Si neighbours move it, it is never knocked on."""
    atoms = bi_si110(1, **SMALL)
    x, y = atoms.positions[_bi(atoms), :2]
    probe = ProbeSpec(energy=300e3, semiangle=25)
    _, events, states = advance(BiInSi(), jax.random.PRNGKey(0), atoms, _parked(x, y, 100.0), probe, CURRENT_PA,
                                max_events=200)
    assert events and all(e["kind"] in ("vacancy_capture", "exchange") for e in events)
    assert all(np.sum(s.numbers == 83) == 1 for s in states)


def _columns(atoms, indices):
    """Groups of `indices` that share a projected column (x, y within 0.01 A)."""
    groups: list[list[int]] = []
    for i in indices:
        for group in groups:
            if np.linalg.norm(_mic(atoms, atoms.positions[i] - atoms.positions[group[0]])[:2]) < 0.01:
                group.append(int(i))
                break
        else:
            groups.append([int(i)])
    return groups


def _far_site(atoms, bi, j):
    """The vacant site of a split-vacancy Bi that is not a lattice neighbour of its Si neighbour j."""
    a, b = split_vacancy_sites(atoms, bi)
    to_a, to_b = (np.linalg.norm(_mic(atoms, atoms.positions[j] - site)) for site in (a, b))
    return b if to_a < to_b else a


@pytest.mark.parametrize("seed, columns, steps", [
    (0, 6, [0.0, 0.0, 1.663, 1.663, 1.663, 1.663]),  # split along a dumbbell (a, b in its two columns)
    (2, 4, [1.663, 1.663, 1.663, 1.663, 1.92, 1.92])])  # across two dumbbells: 2 columns hold 2 neighbours
def test_split_vacancy_bi_exchanges_when_an_adjacent_column_is_hit(seed, columns, steps):
    """Parked on each column holding a Si neighbour of a split-vacancy Bi at mid(a, b): a neighbour j in that
    column fires; with j next to a, j moves into b and the Bi steps by (j - b) / 2, 1.92 A (in projection
    1.663 A or 1.92 A to an adjacent bond centre, or 0 when j shares b's column)."""
    atoms = bi_si110(seed, split_vacancy=True, **SMALL)
    bi, model = _bi(atoms), BiInSi()
    neighbours = silicon_neighbours(atoms, bi)
    projected = [np.linalg.norm(_mic(atoms, atoms.positions[j] - _far_site(atoms, bi, j))[:2]) / 2 for j in neighbours]
    assert sorted(np.round(projected, 3)) == steps
    groups = _columns(atoms, neighbours)
    assert len(groups) == columns
    for k, group in enumerate(groups):
        x, y = atoms.positions[group[0], :2]
        after, events, _ = advance(model, jax.random.PRNGKey(k), atoms, _parked(x, y, 1e3), PROBE, CURRENT_PA,
                                   max_events=1)
        assert [e["kind"] for e in events] == ["exchange"] and events[0]["atom"] in group
        j = events[0]["atom"]
        far = _far_site(atoms, bi, j)
        moved = _mic(after, after.positions[bi] - atoms.positions[bi])
        assert moved == pytest.approx(_mic(atoms, atoms.positions[j] - far) / 2, abs=1e-9)
        assert np.linalg.norm(moved) == pytest.approx(SI_BOND * np.sqrt(8 / 3) / 2)  # half of a / sqrt(2)
        assert np.linalg.norm(_mic(after, after.positions[j] - far)) < 1e-9  # j filled the far site
        assert len(after) == len(atoms) and bi_states(after) == {bi: "split_vacancy"}


def test_beam_parked_far_from_the_bi_essentially_never_moves_it():
    atoms = bi_si110(0, split_vacancy=True)
    bi, model = _bi(atoms), BiInSi()
    x, y = atoms.positions[bi, :2] + [0.0, 12.0]
    near = silicon_neighbours(atoms, bi)
    assert np.linalg.norm(_mic(atoms, atoms.positions[near] - [x, y, 0])[:, :2], axis=1).min() > 8.0
    dwell = 100.0
    assert _total_rate(model, atoms, x, y) * dwell < 0.05  # expected events
    nx, ny = atoms.positions[near[0], :2]
    assert _total_rate(model, atoms, nx, ny) * dwell > 50  # the same dwell next to it
    _, events, _ = advance(model, jax.random.PRNGKey(3), atoms, _parked(x, y, dwell), PROBE, CURRENT_PA)
    assert events == []


def test_substitutional_bi_moves_only_after_a_vacancy_capture():
    atoms = bi_si110(5, **SMALL)
    bi = _bi(atoms)
    j = int(silicon_neighbours(atoms, bi)[0])
    x, y = atoms.positions[j, :2]
    _, events, states = advance(BiInSi(), jax.random.PRNGKey(1), atoms, _parked(x, y, 100.0), PROBE, CURRENT_PA,
                                max_events=5)
    assert (events[0]["kind"], events[0]["atom"]) == ("vacancy_capture", j)
    assert all(e["kind"] == "exchange" for e in events[1:])
    first = states[0]
    assert len(first) == len(atoms) - 1 and bi_states(first) == {bi - (j < bi): "split_vacancy"}
    moved = _mic(first, first.positions[bi - (j < bi)] - atoms.positions[bi])
    assert moved == pytest.approx(_mic(atoms, atoms.positions[j] - atoms.positions[bi]) / 2, abs=1e-9)


def test_nothing_moves_at_100kv():
    """E_max(28Si, 100 kV) = 8.6 eV, far below the thresholds: every cross section is exactly 0."""
    model, probe = BiInSi(), ProbeSpec(energy=100e3, semiangle=25)
    assert float(max_energy_transfer(100e3, 27.977)) == pytest.approx(8.61, abs=0.01)
    assert set(model.cross_sections(100e3).values()) == {0.0}
    for split in (False, True):
        atoms = bi_si110(0, split_vacancy=split, **SMALL)
        x, y = atoms.positions[silicon_neighbours(atoms, _bi(atoms))[0], :2]
        after, events, _ = advance(model, jax.random.PRNGKey(0), atoms, _parked(x, y, 1e4), probe, CURRENT_PA)
        assert events == [] and np.array_equal(after.positions, atoms.positions)


# --- rates ----------------------------------------------------------------------------------------------------

def test_waiting_time_matches_sigma_flux_probe():
    """200 kV, 30 pA parked on a Si neighbour of a split-vacancy Bi: the mean first-event time over 1000 keys
    is 1 / sum_c sigma_c (I / e) P(r_c - r_probe) within 4 standard errors (4 / sqrt(1000) = 12.6%)."""
    atoms = bi_si110(2, split_vacancy=True, **SMALL)
    model = BiInSi()
    j = next(g[0] for g in _columns(atoms, silicon_neighbours(atoms, _bi(atoms))) if len(g) == 1)
    x, y = atoms.positions[j, :2]
    expected = 1 / _total_rate(model, atoms, x, y)
    field = probe_field(PROBE, tuple(atoms.cell.lengths()[:2]))
    single = 1 / (model.cross_sections(200e3)["exchange"] * BARN * CURRENT_PA * 1e-12 / units.E
                  * float(field(0.0, 0.0)))
    assert expected == pytest.approx(single, rel=0.01)  # the struck neighbour dominates
    n, root = 1000, jax.random.PRNGKey(11)
    times = []
    for i in range(n):
        _, events, _ = advance(model, jax.random.fold_in(root, i), atoms, _parked(x, y, 1e4), PROBE, CURRENT_PA,
                               max_events=1)
        times.append(events[0]["time_s"])
    assert abs(np.mean(times) - expected) < 4 * expected / np.sqrt(n)


# --- the virtual instrument ------------------------------------------------------------------------------------

def test_virtual_stem_dwell_near_the_bi():
    from twin.instrument import VirtualSTEM

    stem = VirtualSTEM("bi-si", controls={"beam_energy_ev": 200e3, "convergence_semiangle_rad": 0.025})
    assert isinstance(stem.dynamics, BiInSi)
    atoms = stem.truth()["atoms"]
    x, y = atoms.positions[silicon_neighbours(atoms, _bi(atoms))[0], :2]
    ds = stem.dwell(float(x), float(y), 0.5)
    assert ds["haadf"].values.shape == (1, 1) and ds["haadf"].values[0, 0] > 0
    truth = stem.truth()
    assert {e["kind"] for e in truth["events"]} <= {"vacancy_capture", "exchange"}
    assert np.sum(truth["atoms"].numbers == 83) == 1
