"""The kinetic Monte Carlo engine and Si dopants in graphene (physics.md section 1)."""

from dataclasses import dataclass

import jax
import numpy as np
import pytest

from potentials import units
from twin.dynamics import AbstractDynamics, Channel, Exposure, advance, make_dynamics
from twin.dynamics.engine import probe_field
from twin.dynamics.si_graphene import SiInGraphene
from twin.instrument import Refused, VirtualSTEM
from twin.samples import graphene_si, mos2
from twin.stem.probe import ProbeSpec

PROBE = ProbeSpec(energy=60e3, semiangle=30.0)
FLUX_30PA = 30e-12 / units.E


@dataclass(frozen=True)
class Counter(AbstractDynamics):
    """One channel on atom 0 that changes nothing: its events are a Poisson process."""

    sigma_barn: float = 0.5
    name = "counter"

    def check(self, atoms):
        pass

    def channels(self, atoms, beam_energy_ev):
        return [Channel("tick", 0, self.sigma_barn)]

    def apply(self, key, atoms, channel):
        return atoms.copy()


@pytest.fixture(scope="module")
def sheet():
    return graphene_si(0, repeat=(8, 5))


def expected_events(atoms, exposure, sigma_barn, probe=PROBE, current_pa=30.0):
    p = probe_field(probe, tuple(atoms.cell.lengths()[:2]))
    x, y = atoms.positions[0, :2]
    rate = sigma_barn * 1e-8 * current_pa * 1e-12 / units.E * p(x - exposure.x, y - exposure.y)
    return float(np.sum(rate * exposure.dwell_s))


def test_event_counts_are_poisson_with_the_dose_driven_rate_parked_and_scanned(sheet):
    x0, y0 = sheet.positions[0, :2]
    parked = Exposure(x=np.array([x0 + 0.3]), y=np.array([y0]), dwell_s=np.array([40.0]), t_s=np.zeros(1))
    gx, gy = np.meshgrid(x0 + np.linspace(-2, 2, 40), y0 + np.linspace(-2, 2, 40))
    scanned = Exposure(x=gx.ravel(), y=gy.ravel(), dwell_s=np.full(1600, 0.1), t_s=np.arange(1600) * 0.1)
    for exposure in (parked, scanned):
        mean = expected_events(sheet, exposure, 0.5)
        counts = [len(advance(Counter(), jax.random.key(i), sheet, exposure, PROBE, 30.0)[1]) for i in range(150)]
        assert 3 < mean < 100
        assert abs(np.mean(counts) - mean) < 4 * np.sqrt(mean / 150)
        assert np.var(counts) / mean == pytest.approx(1.0, abs=0.35)


def test_events_carry_time_dose_position_and_pixel(sheet):
    x0, y0 = sheet.positions[0, :2]
    exposure = Exposure(x=np.full(50, x0), y=np.full(50, y0), dwell_s=np.full(50, 0.5), t_s=10 + 0.6 * np.arange(50))
    _, events, states = advance(Counter(), jax.random.key(3), sheet, exposure, PROBE, 30.0, electrons0=5.0)
    assert len(events) == len(states) > 3
    times = [e["time_s"] for e in events]
    assert times == sorted(times)
    for e in events:
        start = exposure.t_s[e["pixel"]]
        assert start <= e["time_s"] <= start + 0.5
        spent = e["pixel"] * 0.5 + (e["time_s"] - start)
        assert e["electrons"] == pytest.approx(5.0 + FLUX_30PA * spent)
        assert (e["x_ang"], e["y_ang"]) == pytest.approx((x0, y0)) and e["kind"] == "tick"


def test_default_cross_sections_match_the_measured_ranges():
    sigma = SiInGraphene().cross_sections(60e3)
    assert 0.05 <= sigma["jump"] <= 1.0  # Susi 2014, Tripathi 2018: 0.1-1 b at 60 kV
    assert sigma["to_fourfold"] < 0.2 * sigma["jump"] and sigma["si_ejection"] < 0.05 * sigma["jump"]
    pristine = [SiInGraphene().cross_sections(e)["c_knockon"] for e in (60e3, 70e3, 80e3, 100e3)]
    assert pristine[0] < 1e-12 and pristine[1] < 1e-9 and pristine[2] < 1e-4  # negligible below ~80 kV
    assert pristine[3] > 0.1  # Meyer 2012: measurable at 100 kV


def si_and_neighbours(atoms):
    si = int(np.flatnonzero(atoms.numbers == 14)[0])
    d = atoms.get_distances(si, range(len(atoms)), mic=True)
    return si, np.flatnonzero((d > 0.1) & (d < 1.6))


@pytest.mark.parametrize("fraction", [0.6, 0.85])
def test_parked_probe_beside_a_si_makes_it_jump_toward_that_carbon(sheet, fraction):
    """physics.md section 1, test 4: 30 pA, 60 kV, probe 0.6-0.85 bond from Si toward one C."""
    si, carbons = si_and_neighbours(sheet)
    target = carbons[0]
    spot = sheet.positions[si, :2] + fraction * (sheet.positions[target, :2] - sheet.positions[si, :2])
    exposure = Exposure(x=spot[:1], y=spot[1:], dwell_s=np.array([200.0]), t_s=np.zeros(1))
    waits, kinds = [], []
    for i in range(300):
        _, events, _ = advance(SiInGraphene(), jax.random.key(i), sheet, exposure, PROBE, 30.0, max_events=1)
        if events:
            waits.append(events[0]["time_s"])
            kinds.append((events[0]["kind"], events[0]["atom"]))
    assert len(waits) >= 290  # nearly every run sees an event within 200 s
    mean, error = np.mean(waits), np.std(waits) / np.sqrt(len(waits))
    assert 1.0 < mean - 4 * error and mean + 4 * error < 20.0
    jumps = [atom for kind, atom in kinds if kind == "jump"]
    assert np.mean(np.array(jumps) == target) >= 0.9
    assert len(jumps) >= 0.85 * len(kinds)


def test_channel_outcomes(sheet):
    model = SiInGraphene()
    si, carbons = si_and_neighbours(sheet)
    key = jax.random.key(0)
    jumped = model.apply(key, sheet, Channel("jump", int(carbons[1]), 0.1))
    assert jumped.numbers[carbons[1]] == 14 and jumped.numbers[si] == 6 and len(jumped) == len(sheet)
    fourfold = model.apply(key, sheet, Channel("to_fourfold", int(carbons[1]), 0.01))
    si4, near4 = si_and_neighbours(fourfold)
    assert len(fourfold) == len(sheet) - 1 and len(near4) == 0
    d = fourfold.get_distances(si4, np.flatnonzero(fourfold.numbers == 6), mic=True)
    assert np.sum(d < 2.05) == 4 and d.min() == pytest.approx(1.88, abs=0.02)
    kinds = {c.kind for c in model.channels(fourfold, 60e3)}
    assert "to_threefold" in kinds and "jump" not in kinds
    back = model.apply(key, fourfold, Channel("to_threefold", si4, 0.01))
    assert len(back) == len(sheet) and len(si_and_neighbours(back)[1]) == 3
    assert sorted(map(tuple, np.round(back.positions, 6))) == sorted(map(tuple, np.round(sheet.positions, 6)))
    ejected = model.apply(key, sheet, Channel("si_ejection", si, 0.001))
    assert 14 not in ejected.numbers and len(ejected) == len(sheet) - 1


def test_virtual_stem_evolves_graphene_si_and_records_the_events():
    stem = VirtualSTEM("graphene-si", seed=0)
    atoms = stem.truth()["atoms"]
    si, carbons = si_and_neighbours(atoms)
    spot = atoms.positions[si, :2] + 0.85 * (atoms.positions[carbons[0], :2] - atoms.positions[si, :2])
    for _ in range(10):
        stem.dwell(*spot, 2.0)
        if stem.truth()["events"]:
            break
    event = stem.truth()["events"][0]
    assert event["kind"] == "jump" and event["atom"] == carbons[0]
    assert {"time_s", "electrons", "x_ang", "y_ang", "kind", "command"} <= set(event)
    moved = stem.truth()["atoms"]
    assert moved.numbers[carbons[0]] == 14
    new = moved.positions[carbons[0], :2]
    old = atoms.positions[si, :2]
    assert stem.ideal_signal("haadf", *new) > 2 * stem.ideal_signal("haadf", *old)


def test_dynamics_choices_and_bad_input():
    assert VirtualSTEM("mos2").dynamics is None
    assert VirtualSTEM("graphene-si", dynamics="none").dynamics is None
    with pytest.raises(Refused, match="si-graphene.*mos2"):
        VirtualSTEM("mos2", dynamics="si-graphene")
    with pytest.raises(Refused, match="dynamics='melt'"):
        VirtualSTEM("graphene-si", dynamics="melt")
    with pytest.raises(ValueError, match="inversion_threshold_ev"):
        SiInGraphene(inversion_threshold_ev=0.0)
    with pytest.raises(ValueError, match="si-graphene"):
        make_dynamics("si-graphene", mos2())
