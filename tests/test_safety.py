"""The safety envelope: refused, never clamped; a refused command changes nothing; abort always works."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potentials import units
from twin.instrument import Instrument, InstrumentError, Refused
from twin.instrument.safety import Limits, SafeInstrument
from twin.instrument.virtual_stem import VirtualSTEM
from twin.structures import graphene

ATOMS = graphene((4, 3))


def snapshot(instrument):
    dose = instrument.dose()
    return instrument.get_state(), dose["dose"].values.copy(), dose.attrs["budget_left_e"]


def unchanged(before, after):
    return before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2] == after[2]


def make(**limits):
    return SafeInstrument(VirtualSTEM(ATOMS, seed=1, controls={"beam_current_pa": 10.0}), Limits(**limits))


def electrons(dwell_s, current_pa=10.0):
    return current_pa * 1e-12 * dwell_s / units.E


@pytest.mark.parametrize("limits, call, message", [
    ({"bounds_ang": (1.0, 1.0, 8.0, 8.0)}, lambda s: s.park_probe(0.5, 2.0), "x 1..8"),
    ({"bounds_ang": (1.0, 1.0, 8.0, 8.0)}, lambda s: s.acquire_image(4.0, (7.0, 4.0), (8, 8), 1e-6), "scan"),
    ({"bounds_ang": (1.0, 1.0, 8.0, 8.0)}, lambda s: s.dwell(4.0, 9.0, 1e-3), "y 1..8"),
    ({"dwell_s": (1e-6, 1e-3)}, lambda s: s.dwell(4.0, 4.0, 1e-2), "dwell_s=0.01"),
    ({"dwell_s": (1e-6, 1e-3)}, lambda s: s.acquire_image(4.0, (4.0, 4.0), (8, 8), 1e-7), "dwell_s=1e-07"),
    ({"max_pixels": 100}, lambda s: s.acquire_image(4.0, (4.0, 4.0), (16, 16), 1e-6), "100 pixels"),
    ({"max_command_s": 0.01}, lambda s: s.acquire_image(4.0, (4.0, 4.0), (64, 64), 1e-5), "per command"),
    ({"controls": {"defocus_ang": (-50.0, 50.0)}}, lambda s: s.set_control("defocus_ang", 60.0), "defocus_ang=60"),
    ({"session_budget_e": 1e6}, lambda s: s.dwell(4.0, 4.0, 0.1), "session budget"),
    ({"max_dose_e_per_ang2": 1e6}, lambda s: s.dwell(4.0, 4.0, 0.1), "max_dose_e_per_ang2"),
    ({"regions": [((3.0, 3.0, 5.0, 5.0), 1e5)]}, lambda s: s.dwell(4.0, 4.0, 0.1), "region"),
])
def test_violations_are_refused_and_change_nothing(limits, call, message):
    stem = make(**limits)
    before = snapshot(stem)
    with pytest.raises(Refused, match=message):
        call(stem)
    assert unchanged(before, snapshot(stem))


def test_allowed_commands_pass_and_budgets_count_down():
    stem = make(session_budget_e=2 * electrons(0.1), regions=[((3.0, 3.0, 5.0, 5.0), 1e12)])
    assert isinstance(stem, Instrument)
    stem.dwell(1.0, 1.0, 0.1)
    assert stem.dose().attrs["budget_left_e"] == pytest.approx(electrons(0.1))
    stem.dwell(4.0, 4.0, 0.09)
    with pytest.raises(Refused, match="session budget"):
        stem.dwell(4.0, 4.0, 0.02)
    stem.blank()
    stem.dwell(4.0, 4.0, 0.5)  # blanked: no dose, allowed
    assert stem.dose().attrs["budget_left_e"] == pytest.approx(electrons(0.01))


def test_region_budget_binds_only_inside_the_region():
    stem = make(regions=[((3.0, 3.0, 5.0, 5.0), 1e6)])
    stem.dwell(8.0, 8.0, 0.1)
    with pytest.raises(Refused):
        stem.dwell(4.0, 4.0, 0.1)


class Failing(VirtualSTEM):
    def dwell(self, *args, **kwargs):
        raise RuntimeError("stage fault")


def test_an_instrument_error_blanks_the_beam_and_abort_always_works():
    stem = SafeInstrument(Failing(ATOMS), Limits())
    with pytest.raises(RuntimeError, match="stage fault"):
        stem.dwell(1.0, 1.0, 1e-3)
    assert stem.get_state()["blanked"]
    stem.unblank()
    stem.abort()
    assert stem.get_state()["blanked"]


@settings(max_examples=40, deadline=None)
@given(x=st.floats(-20, 30), y=st.floats(-20, 30), dwell=st.floats(1e-8, 10.0, allow_subnormal=False))
def test_any_dwell_is_either_inside_the_envelope_or_refused_without_effect(x, y, dwell):
    stem = make(bounds_ang=(0.0, 0.0, 9.0, 12.0), dwell_s=(1e-6, 1.0), max_dose_e_per_ang2=1e9)
    before = snapshot(stem)
    allowed = 0 <= x <= 9 and 0 <= y <= 12 and 1e-6 <= dwell <= 1.0 and electrons(dwell) / 0.25 <= 1e9
    try:
        stem.dwell(x, y, dwell)
    except Refused:
        assert not allowed and unchanged(before, snapshot(stem))
    else:
        assert allowed and math.isclose(stem.dose().attrs["total_electrons"], electrons(dwell))


def test_bad_limits_name_the_field():
    with pytest.raises(ValueError, match="dwell_s"):
        Limits(dwell_s=(1.0, 0.1))
    with pytest.raises(ValueError, match="session_budget_e"):
        Limits(session_budget_e=0)
    assert issubclass(Refused, InstrumentError)


def test_a_command_the_instrument_itself_refuses_leaves_the_beam_as_it_was():
    stem = make()
    with pytest.raises(Refused, match="channels"):
        stem.dwell(1.0, 1.0, 1e-3, channels=["bf"])
    assert not stem.get_state()["blanked"]
