"""Recording a session and replaying it bit for bit."""

import json

import numpy as np
import pytest
import xarray as xr

from twin.acquisition import PMTDetector, ScanNoiseSpec
from twin.instrument import Refused
from twin.instrument.recorder import record, replay
from twin.instrument.safety import Limits


def run_session(directory):
    stem = record(directory, "graphene-si", seed=3, limits=Limits(dwell_s=(1e-6, 1.0)),
                  scan_noise=ScanNoiseSpec(line_jitter_ang=0.05, drift_ang_per_s=(0.1, 0.0)),
                  detector=PMTDetector(gain=3.0, enf=1.3, readout_sigma=0.5))
    stem.describe()
    stem.set_control("defocus_ang", 15.0)
    overview = stem.acquire_image(12.0, (15.0, 15.0), (32, 32), 2e-6)
    with pytest.raises(Refused):
        stem.dwell(15.0, 15.0, 5.0)
    stem.dwell(14.0, 15.5, 1e-3, channels=["haadf", "adf"])
    stem.acquire_image((8.0, 6.0), (14.0, 14.0), (24, 32), 2e-6, rotation_rad=0.4)
    stem.dose()
    stem.get_state()
    stem.close()
    return overview


def test_replay_reproduces_every_array(tmp_path):
    overview = run_session(tmp_path / "s")
    lines = [json.loads(t) for t in (tmp_path / "s" / "commands.jsonl").read_text().splitlines()]
    assert [line["method"] for line in lines][:4] == ["describe", "set_control", "acquire_image", "dwell"]
    assert lines[3]["error"]["type"] == "Refused" and "dwell_s=5.0" in lines[3]["error"]["message"]
    assert all("instrument_time_s" in line for line in lines[:-1])
    stored = xr.load_dataset(tmp_path / "s" / lines[2]["result"]["dataset"], engine="h5netcdf")
    assert np.array_equal(stored["haadf"].values, overview["haadf"].values)
    session = json.loads((tmp_path / "s" / "session.json").read_text())
    assert session["seed"] == 3 and session["limits"]["dwell_s"] == [1e-6, 1.0]
    assert replay(tmp_path / "s") == []


def test_replay_finds_a_changed_array(tmp_path):
    run_session(tmp_path / "s")
    path = tmp_path / "s" / "data" / "000003.nc"
    ds = xr.load_dataset(path, engine="h5netcdf")
    ds["haadf"].values[0, 0] += 1
    path.unlink()
    ds.to_netcdf(path, engine="h5netcdf")
    problems = replay(tmp_path / "s")
    assert len(problems) == 1 and "000003.nc" in problems[0]


def test_a_session_directory_is_never_overwritten(tmp_path):
    record(tmp_path / "s", "graphene-si").close()
    with pytest.raises(ValueError, match="already holds a session"):
        record(tmp_path / "s", "graphene-si")


def test_commands_are_logged_with_named_arguments(tmp_path):
    stem = record(tmp_path / "s", "graphene-si")
    stem.dwell(3.0, 4.0, 1e-3)
    line = json.loads((tmp_path / "s" / "commands.jsonl").read_text().splitlines()[0])
    assert line["args"] == {"x_ang": 3.0, "y_ang": 4.0, "dwell_s": 1e-3, "channels": ["haadf"]}
