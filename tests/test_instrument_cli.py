"""`twin keys`, `twin serve` and `twin replay` as processes: a policy cannot tell local from remote."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from twin.instrument import Instrument
from twin.instrument.remote import connect
from twin.instrument.safety import Limits, SafeInstrument
from twin.instrument.virtual_stem import VirtualSTEM

TWIN = [sys.executable, "-m", "twin.cli"]


def twin(*args, **kwargs):
    return subprocess.run([*TWIN, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)


def policy(instrument: Instrument):
    """Overview, find the brightest spot (the Si), dwell beside it, image it closely."""
    instrument.set_control("beam_current_pa", 40.0)
    overview = instrument.acquire_image(16.0, (15.0, 15.0), (48, 48), 4e-6, channels=["haadf", "adf"])
    row, col = np.unravel_index(np.argmax(overview["adf"].values), overview["adf"].shape)
    x, y = float(overview.x[col]), float(overview.y[row])
    point = instrument.dwell(x + 0.5, y, 0.05)
    close = instrument.acquire_image(4.0, (x, y), (24, 24), 1e-5, rotation_rad=0.1)
    return [overview, point, close, instrument.dose()]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_keys_refuse_to_overwrite(tmp_path):
    assert twin("keys", "create", tmp_path / "k").returncode == 0
    again = twin("keys", "create", tmp_path / "k")
    assert again.returncode == 2 and again.stderr.startswith("error:") and len(again.stderr.splitlines()) == 1


def test_bad_serve_options_are_one_line_errors(tmp_path):
    twin("keys", "create", tmp_path / "k")
    for args, word in ((["--sample", "gold"], "gold"), (["--port", "0"], "--port"), (["--seed", "-1"], "seed")):
        result = twin("serve", "stem", "--keys", tmp_path / "k", *args)
        assert result.returncode == 2 and word in result.stderr and len(result.stderr.splitlines()) == 1
    missing = twin("serve", "stem", "--keys", tmp_path / "nothing")
    assert missing.returncode == 2 and "server key" in missing.stderr


def test_policy_runs_identically_in_process_and_through_serve_and_connect(tmp_path):
    keys, session, port = tmp_path / "k", tmp_path / "session", free_port()
    twin("keys", "create", keys)
    errors = (tmp_path / "serve.err").open("w")  # a file, not a pipe nobody reads, which could fill and block
    server = subprocess.Popen([*TWIN, "serve", "stem", "--keys", keys, "--port", str(port), "--seed", "3",
                               "--record", session], stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        assert "serving" in server.stdout.readline()
        with connect(f"tcp://127.0.0.1:{port}", keys=keys, timeout_s=120) as remote:
            far = policy(remote)
        local = policy(SafeInstrument(VirtualSTEM("graphene-si", seed=3), Limits()))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        errors.close()
    for a, b in zip(far, local):
        assert a.identical(b)
    replayed = twin("replay", session)
    assert replayed.returncode == 0 and "identical" in replayed.stdout


def test_replay_of_a_missing_session_is_an_error(tmp_path):
    result = twin("replay", tmp_path)
    assert result.returncode == 2 and "session.json" in result.stderr
