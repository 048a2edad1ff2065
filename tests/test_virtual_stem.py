"""VirtualSTEM: the instrument interface, statistics of what it returns, determinism, dose and clock."""

import numpy as np
import pytest

from potentials import units
from twin.acquisition import PMTDetector, ScanNoiseSpec
from twin.instrument import Instrument, Refused
from twin.instrument.virtual_stem import VirtualSTEM
from twin.samples import SAMPLES, named_sample
from twin.structures import check_atoms, graphene


@pytest.fixture(scope="module")
def small():
    atoms = graphene((4, 3))
    atoms.numbers[7] = 14
    return atoms


def test_named_samples_are_valid_cells():
    for name in SAMPLES:
        atoms = named_sample(name, seed=3)
        assert min(check_atoms(atoms)[:2]) > 25.0
    assert sorted(set(named_sample("graphene-si").numbers)) == [6, 14]
    assert sorted(set(named_sample("mos2").numbers)) == [16, 42]
    assert sorted(set(named_sample("srtio3").numbers)) == [8, 22, 38]
    with pytest.raises(ValueError, match="sample='gold'"):
        named_sample("gold")


def test_it_is_an_instrument_and_describes_itself(small):
    stem = VirtualSTEM(small)
    assert isinstance(stem, Instrument)
    info = stem.describe()
    assert info["channels"] == ["haadf", "adf"]
    assert info["controls"]["beam_current_pa"]["unit"] == "pA"
    assert info["bounds_ang"][2:] == pytest.approx(list(small.cell.lengths()[:2]))


def test_mean_counts_are_dose_times_signal(small):
    """Counting detector: mean counts = I t / e * ideal signal (physics.md section 5, test 1)."""
    stem = VirtualSTEM(small, seed=2, controls={"beam_current_pa": 50.0})
    dwell = 2e-5
    ds = stem.acquire_image(6.0, (5.0, 6.0), (48, 48), dwell, channels=["adf"])
    ideal = stem.ideal_signal("adf", ds.probe_x.values, ds.probe_y.values)
    electrons = 50e-12 * dwell / units.E
    counts = ds["adf"].values
    expected = electrons * ideal.sum()
    assert abs(counts.sum() - expected) < 4 * np.sqrt(expected)
    assert ds.attrs["electrons_per_pixel"] == pytest.approx(electrons)
    assert ds.attrs["dose_e_per_ang2"] == pytest.approx(electrons / (6.0 / 48) ** 2)
    assert ds["adf"].dims == ("y", "x") and ds.x.attrs["units"] == "Angstrom"


def test_same_seed_same_commands_same_data(small):
    noise = ScanNoiseSpec(line_jitter_ang=0.05, drift_ang_per_s=(0.2, -0.1))

    def session(seed):
        stem = VirtualSTEM(small, seed=seed, scan_noise=noise, detector=PMTDetector(gain=5.0, enf=1.3))
        stem.set_control("defocus_ang", 20.0)
        a = stem.acquire_image(8.0, (4.0, 5.0), (32, 32), 1e-5, rotation_rad=0.2)
        b = stem.dwell(3.0, 3.0, 1e-3, channels=["haadf", "adf"])
        return a, b, stem.get_state()

    first, again, other = session(4), session(4), session(5)
    for x, y in zip(first[:2], again[:2]):
        assert x.identical(y)
    assert first[2] == again[2]
    assert not np.array_equal(first[0]["haadf"].values, other[0]["haadf"].values)


def test_dose_map_and_clock_account_for_every_pixel(small):
    stem = VirtualSTEM(small, controls={"beam_current_pa": 20.0}, scan_noise=ScanNoiseSpec(flyback_s=1e-4))
    stem.acquire_image(5.0, (5.0, 5.0), (20, 30), 1e-5)
    stem.dwell(2.0, 2.0, 0.5)
    electrons = 20e-12 / units.E * (20 * 30 * 1e-5 + 0.5)
    dose = stem.dose()
    area = dose.attrs["bin_x_ang"] * dose.attrs["bin_y_ang"]
    assert dose.attrs["total_electrons"] == pytest.approx(electrons)
    assert float(dose["dose"].sum()) * area == pytest.approx(electrons)
    assert stem.get_state()["time_s"] == pytest.approx(20 * (30 * 1e-5 + 1e-4) + 0.5)
    peak = dose["dose"].sel(x=2.0, y=2.0, method="nearest")
    assert float(peak) == pytest.approx(20e-12 / units.E * 0.5 / area, rel=1e-3)


def test_blanked_beam_gives_no_dose_and_no_signal(small):
    stem = VirtualSTEM(small)
    stem.blank()
    ds = stem.acquire_image(5.0, (5.0, 5.0), (16, 16), 1e-4)
    assert ds["haadf"].values.sum() == 0 and stem.dose().attrs["total_electrons"] == 0
    stem.unblank()
    assert stem.acquire_image(5.0, (5.0, 5.0), (16, 16), 1e-4)["haadf"].values.sum() > 0


def test_optics_controls_change_the_image(small):
    stem = VirtualSTEM(small, seed=1, controls={"beam_current_pa": 1000.0})
    x, y = np.meshgrid(np.linspace(0, 9, 40), np.linspace(0, 12, 40))
    sharp = stem.ideal_signal("haadf", x, y)
    stem.set_control("defocus_ang", 80.0)
    assert stem.ideal_signal("haadf", x, y).max() < 0.7 * sharp.max()
    assert stem.get_control("defocus_ang") == 80.0


@pytest.mark.parametrize("call, message", [
    (lambda s: s.acquire_image(5.0, (5.0, 5.0), (16, 16), 1e-4, channels=["bf"]), "channels"),
    (lambda s: s.acquire_image(-5.0, (5.0, 5.0), (16, 16), 1e-4), "fov_ang"),
    (lambda s: s.acquire_image(5.0, (5.0, 5.0), (16, 0), 1e-4), "shape_yx"),
    (lambda s: s.dwell(1.0, 1.0, 0.0), "dwell_s"),
    (lambda s: s.park_probe(float("nan"), 1.0), "x_ang"),
    (lambda s: s.set_control("beam_energy_ev", 1e6), "beam_energy_ev"),
    (lambda s: s.set_control("focus", 1.0), "focus"),
    (lambda s: s.get_control("focus"), "focus"),
])
def test_bad_commands_are_refused_and_change_nothing(small, call, message):
    stem = VirtualSTEM(small)
    before = stem.get_state()
    with pytest.raises(Refused, match=message):
        call(stem)
    assert stem.get_state() == before


def test_multislice_fidelity_has_bright_field_channels(small):
    stem = VirtualSTEM(graphene((2, 2)), fidelity="multislice", controls={"beam_current_pa": 100.0})
    assert "bf" in stem.describe()["channels"]
    ds = stem.acquire_image(4.0, (2.0, 2.0), (8, 8), 1e-5, channels=["bf", "haadf"])
    electrons = ds.attrs["electrons_per_pixel"]
    assert 0.5 * electrons < ds["bf"].values.mean() < electrons


def test_config_rebuilds_the_same_instrument(small):
    stem = VirtualSTEM(small, seed=7, scan_noise=ScanNoiseSpec(line_jitter_ang=0.1), detector=PMTDetector(enf=1.2))
    twin = VirtualSTEM.from_config(stem.config())
    a = stem.acquire_image(5.0, (5.0, 5.0), (16, 16), 1e-5)
    b = twin.acquire_image(5.0, (5.0, 5.0), (16, 16), 1e-5)
    assert a.identical(b)


def test_an_acquisition_larger_than_memory_is_refused_before_any_work(small, monkeypatch):
    from twin.instrument import virtual_stem

    monkeypatch.setattr(virtual_stem, "available_memory", lambda: 2**20)
    stem = VirtualSTEM(small)
    with pytest.raises(Refused, match="GiB"):
        stem.acquire_image(5.0, (5.0, 5.0), (512, 512), 1e-6)
    assert stem.get_state()["time_s"] == 0 and stem.dose().attrs["total_electrons"] == 0
