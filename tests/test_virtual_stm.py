"""VirtualSTM: the instrument interface over Si(100)-2x1:H, pulses, repassivation, interlocks, the CLI."""

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from twin.instrument import Instrument, Limits, Refused, SafeInstrument
from twin.instrument.virtual_stm import VirtualSTM


@pytest.fixture
def stm_instrument():
    return VirtualSTM(seed=2, nx_dimers=6, ny_rows=3, db_sites=(5,))


def test_it_is_an_instrument_and_images_the_dangling_bond(stm_instrument):
    assert isinstance(stm_instrument, Instrument)
    surface = stm_instrument.truth()["surface"]
    db = surface.sites[5, :2]
    ds = stm_instrument.acquire_image(12.0, tuple(db), (48, 48), 2e-3, channels=["height", "current"])
    assert ds["height"].dims == ("y", "x") and ds["height"].attrs["units"] == "Angstrom"
    row, col = np.unravel_index(np.argmax(ds["height"].values), (48, 48))
    assert np.hypot(float(ds.x[col]) - db[0], float(ds.y[row]) - db[1]) < 1.0
    assert ds.attrs["bias_v"] == -1.8 and ds.attrs["mode"] == "constant-current"


def test_same_seed_same_data():
    a = VirtualSTM(seed=3, nx_dimers=6, ny_rows=3).acquire_image(10.0, (10.0, 10.0), (24, 24), 1e-4)
    b = VirtualSTM(seed=3, nx_dimers=6, ny_rows=3).acquire_image(10.0, (10.0, 10.0), (24, 24), 1e-4)
    assert a.identical(b)


def find_pulse_current(instrument, target_pa, bias_v):
    """Height offset [A] that gives about target_pa at bias_v over the current tip position."""
    z0 = instrument._tip_height()
    offsets = np.linspace(-4.0, 2.0, 121)
    currents = [float(instrument.current(np.array([*instrument._tip_xy, z0 + o]), bias_v)) for o in offsets]
    return float(offsets[np.argmin(np.abs(np.log(currents) - np.log(target_pa)))])


def test_a_pulse_over_a_site_desorbs_its_h_and_shows_a_current_step(stm_instrument):
    surface = stm_instrument.truth()["surface"]
    site = 8
    stm_instrument.park_probe(*surface.sites[site, :2])
    offset = find_pulse_current(stm_instrument, 2000.0, 2.5)
    for _ in range(20):
        result = stm_instrument.pulse(2.5, 0.01, offset)
        if not stm_instrument.truth()["surface"].occupied[site]:
            break
    assert not stm_instrument.truth()["surface"].occupied[site]
    event = stm_instrument.truth()["events"][-1]
    assert event["kind"] == "desorption" and event["site"] == site
    assert result["current_end_pa"] != result["current_start_pa"]


def test_repassivation_needs_an_h_on_the_tip_and_a_dangling_bond_in_reach(stm_instrument):
    surface = stm_instrument.truth()["surface"]
    stm_instrument.park_probe(*surface.sites[5, :2])
    for _ in range(10):
        stm_instrument.repassivate()
        if stm_instrument.truth()["surface"].occupied[5]:
            break
        stm_instrument.terminate_tip()
    assert stm_instrument.truth()["surface"].occupied[5]
    assert not stm_instrument.get_state()["tip_has_h"]
    with pytest.raises(Refused):
        stm_instrument.repassivate()
    stm_instrument.terminate_tip()
    before = stm_instrument.truth()["surface"].occupied.copy()
    with pytest.raises(Refused):
        stm_instrument.repassivate()  # no dangling bond within reach any more
    assert np.array_equal(stm_instrument.truth()["surface"].occupied, before)


def test_interlocks_refuse_and_leave_the_sample_unchanged(stm_instrument):
    safe = SafeInstrument(stm_instrument, Limits(controls={"bias_v": (-2.5, 2.5), "setpoint_pa": (1.0, 500.0)},
                                                 pulse_bias_v=(0.0, 4.0)))
    before = stm_instrument.truth()["surface"].occupied.copy()
    for call, word in ((lambda: safe.set_control("bias_v", -3.0), "bias_v"),
                       (lambda: safe.set_control("setpoint_pa", 1000.0), "setpoint_pa"),
                       (lambda: safe.park_probe(-1.0, 2.0), "x_ang"),
                       (lambda: safe.pulse(6.0, 0.01), "bias_v=6.0"),
                       (lambda: safe.pulse(-2.0, 0.01), "bias_v=-2.0")):
        with pytest.raises(Refused, match=word):
            call()
    assert np.array_equal(stm_instrument.truth()["surface"].occupied, before)
    assert stm_instrument.get_control("bias_v") == -1.8


def test_pulses_where_there_is_no_hydrogen_are_refused():
    bare = VirtualSTM(seed=1, nx_dimers=4, ny_rows=2, db_fraction=1.0)
    bare.park_probe(*bare.truth()["surface"].sites[0, :2])
    with pytest.raises(Refused):
        bare.pulse(2.5, 0.01, -1.0)
    assert not bare.truth()["surface"].occupied.any()


def test_cli_writes_an_stm_image(tmp_path):
    out = tmp_path / "stm.h5"
    result = subprocess.run([sys.executable, "-m", "twin.cli", "simulate", "stm", "si100-h", "--bias", "-1.8",
                             "--setpoint", "50", "--fov", "15", "--pixels", "32", "--dwell", "1e-4",
                             "--db-fraction", "0.1", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    ds = xr.load_dataset(out, engine="h5netcdf")
    assert ds["height"].attrs["units"] == "Angstrom" and ds["current"].attrs["units"] == "pA"
    assert ds.sizes["x"] == 32 and ds.sizes["db"] > 0
    missing = subprocess.run([sys.executable, "-m", "twin.cli", "simulate", "stm", "nothing.xyz", "--bias", "1",
                              "--setpoint", "50", "--out", str(tmp_path / "x.h5")], capture_output=True, text=True)
    assert missing.returncode == 2 and "si100-h" in missing.stderr and not (tmp_path / "x.h5").exists()


def test_cli_images_a_structure_file_like_the_surface_it_came_from(tmp_path):
    import ase.io

    from twin.samples import si100_h
    from twin.samples.si100_h import surface_from_atoms
    from twin.structures import graphene

    surface = si100_h(6, 3, seed=4, db_fraction=0.2)
    back = surface_from_atoms(surface.to_atoms())
    assert np.allclose(back.sites, surface.sites) and np.array_equal(back.occupied, surface.occupied)
    ase.io.write(tmp_path / "slab.xyz", surface.to_atoms(), format="extxyz")
    ase.io.write(tmp_path / "graphene.xyz", graphene((3, 2)), format="extxyz")
    args = ["--bias", "-1.8", "--setpoint", "50", "--fov", "10", "--pixels", "16", "--dwell", "1e-4"]
    run = [sys.executable, "-m", "twin.cli", "simulate", "stm"]
    good = subprocess.run([*run, str(tmp_path / "slab.xyz"), *args, "--out", str(tmp_path / "a.h5")],
                          capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stderr
    ds = xr.load_dataset(tmp_path / "a.h5", engine="h5netcdf")
    assert ds.sizes["db"] == len(surface.dangling_bonds())
    bad = subprocess.run([*run, str(tmp_path / "graphene.xyz"), *args, "--out", str(tmp_path / "b.h5")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Si(100)" in bad.stderr and not (tmp_path / "b.h5").exists()
