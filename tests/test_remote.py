"""Remote instruments over ZeroMQ/CURVE: round trips, security on loopback, hostile input, concurrency."""

import inspect
import shutil
import threading
import time

import msgpack
import numpy as np
import pytest
import xarray as xr
import zmq
import zmq.auth

from twin.instrument import wire
from twin.instrument.protocol import Aborted, Busy, Instrument, InstrumentError, Refused
from twin.instrument.remote import (InstrumentServer, RemoteInstrument, connect, create_keys, key_paths)

ANY_PORT = "tcp://127.0.0.1:*"


class FakeInstrument:
    """A small protocol-complete instrument; `commands` counts every state-changing call."""

    def __init__(self, slow_s: float = 0.05):
        self.slow_s = slow_s
        self.commands = 0
        self.probe = (0.0, 0.0)
        self.blanked = True
        self.controls = {"defocus_ang": 0.0}
        self.closed = False
        self._abort = threading.Event()

    def describe(self):
        return {"kind": "fake", "name": "fake-stem", "version": 1, "channels": ["haadf", "bf"],
                "controls": {"defocus_ang": {"unit": "Angstrom", "min": -500.0, "max": 500.0}},
                "bounds_ang": [-100.0, -100.0, 100.0, 100.0]}

    def get_state(self):
        return {"probe_ang": list(self.probe), "blanked": self.blanked, "time_s": 0.0,
                "controls": dict(self.controls), "commands": self.commands}

    def acquire_image(self, fov_ang, center_ang, shape_yx, dwell_s: float, rotation_rad: float = 0.0,
                      channels=("haadf",)):
        if dwell_s <= 0:
            raise Refused(f"dwell_s={dwell_s!r} is not allowed")
        self.commands += 1
        return make_image(tuple(shape_yx), float(fov_ang), tuple(channels), dwell_s)

    def park_probe(self, x_ang: float, y_ang: float) -> None:
        self.commands += 1
        self.probe = (x_ang, y_ang)

    def dwell(self, x_ang: float, y_ang: float, dwell_s: float, channels=("haadf",)):
        self._abort.clear()
        if self._abort.wait(self.slow_s):
            raise Aborted("dwell stopped by abort; the beam is blanked")
        self.commands += 1
        return xr.Dataset({c: ((), np.float32(dwell_s * 1e6)) for c in channels},
                          attrs={"x_ang": x_ang, "y_ang": y_ang, "dwell_s": dwell_s})

    def blank(self) -> None:
        self.commands += 1
        self.blanked = True

    def unblank(self) -> None:
        self.commands += 1
        self.blanked = False

    def set_control(self, name: str, value: float) -> None:
        if name not in self.controls:
            raise KeyError(name)
        self.commands += 1
        self.controls[name] = value

    def get_control(self, name: str) -> float:
        if name not in self.controls:
            raise Refused(f"no control {name!r}")
        return self.controls[name]

    def dose(self):
        dose = np.arange(12, dtype=np.float64).reshape(3, 4)
        return xr.Dataset({"dose": (("y", "x"), dose, {"units": "e/A^2"})},
                          attrs={"total_electrons": 66.0, "budget_left_e": float("inf")})

    def abort(self) -> None:
        self._abort.set()
        self.blanked = True

    def close(self) -> None:
        self.closed = True


def make_image(shape, fov, channels, dwell_s):
    ny, nx = shape
    data = {c: (("y", "x"), np.arange(ny * nx, dtype=np.float32 if i else np.uint16).reshape(ny, nx) + i,
                {"units": "counts", "detector": c})
            for i, c in enumerate(channels)}
    coords = {"x": ("x", (np.arange(nx) + 0.5) * fov / nx, {"units": "Angstrom"}),
              "y": ("y", (np.arange(ny) + 0.5) * fov / ny, {"units": "Angstrom"}),
              "label": ((), "scan")}
    attrs = {"dwell_s": dwell_s, "channels": list(channels), "fov_ang": fov, "n": 3, "blanked": False,
             "note": None, "shape": [ny, nx]}
    return xr.Dataset(data, coords=coords, attrs=attrs)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return create_keys(tmp_path_factory.mktemp("remote") / "keys")["directory"]


@pytest.fixture
def served(keys):
    """(fake instrument, running server); the server and its authenticator stop on teardown."""
    fake = FakeInstrument()
    server = InstrumentServer(fake, ANY_PORT, keys=keys, max_message_bytes=1 << 20).start()
    yield fake, server
    server.stop()


@pytest.fixture
def client(served, keys):
    with connect(served[1].address, keys=keys, timeout_s=10.0) as remote:
        yield remote


def test_create_keys_layout_and_refusal(tmp_path):
    paths = create_keys(tmp_path / "k")
    names = sorted(p.name for p in paths["directory"].iterdir())
    assert names == ["authorized", "client.key", "client.key_secret", "server.key", "server.key_secret"]
    assert [p.name for p in paths["authorized"].iterdir()] == ["client.key"]
    assert paths["server_secret"].stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match=str(tmp_path / "k")):
        create_keys(tmp_path / "k")
    assert [p.name for p in tmp_path.iterdir()] == ["k"]
    (tmp_path / "empty").mkdir()
    assert create_keys(tmp_path / "empty")["client_secret"].exists()


def test_signatures_match_the_protocol(client):
    assert isinstance(client, Instrument)
    for name in wire.METHODS:
        ours = inspect.signature(getattr(RemoteInstrument, name)).parameters
        theirs = inspect.signature(getattr(Instrument, name)).parameters
        assert [(p.name, p.kind, p.default) for p in ours.values()] == \
            [(p.name, p.kind, p.default) for p in theirs.values()], name
        assert set(theirs) - {"self"} <= set(wire.ARG_CHECKS), name


def test_round_trip_of_every_method(served, client):
    fake, server = served
    assert client.describe() == fake.describe()
    image = client.acquire_image(12.0, (1.0, 2.0), (4, 5), dwell_s=2e-6, channels=("haadf", "bf"))
    expected = make_image((4, 5), 12.0, ("haadf", "bf"), 2e-6)
    xr.testing.assert_identical(image, expected)
    assert [image[c].dtype for c in image] == [np.uint16, np.float32]
    assert image.attrs == {**expected.attrs, "channels": ["haadf", "bf"], "shape": [4, 5]}
    assert image["haadf"].values.flags.writeable
    client.park_probe(3.5, -1.0)
    spot = client.dwell(3.5, -1.0, 1e-3)
    xr.testing.assert_identical(spot, FakeInstrument(slow_s=0.0).dwell(3.5, -1.0, 1e-3))
    client.unblank()
    assert client.get_state()["blanked"] is False
    client.blank()
    client.set_control("defocus_ang", -42.5)
    assert client.get_control("defocus_ang") == -42.5
    xr.testing.assert_identical(client.dose(), fake.dose())
    assert client.abort() is None
    state = client.get_state()
    assert state["probe_ang"] == [3.5, -1.0] and state["controls"] == {"defocus_ang": -42.5}
    assert state["commands"] == 6
    client.close()
    client.close()
    assert not fake.closed
    with pytest.raises(InstrumentError, match="closed"):
        client.get_state()


def test_errors_come_back_as_their_class(served, client):
    with pytest.raises(Refused, match="no control 'focus'"):
        client.get_control("focus")
    with pytest.raises(Refused, match="dwell_s=-1.0 is not allowed"):
        client.acquire_image(10.0, (0.0, 0.0), (2, 2), -1.0)
    with pytest.raises(InstrumentError, match="KeyError: 'focus'") as info:
        client.set_control("focus", 1.0)
    assert type(info.value) is InstrumentError
    with pytest.raises(Refused, match="shape_yx"):
        client.acquire_image(10.0, (0.0, 0.0), (2.5, 2), 1e-6)
    with pytest.raises(TypeError, match="cannot be sent"):
        client.park_probe(object(), 0.0)
    assert client.get_control("defocus_ang") == 0.0


def _copy_keys(source, target, server_from=None):
    shutil.copytree(source, target)
    if server_from is not None:
        shutil.copyfile(key_paths(server_from)["server_public"], key_paths(target)["server_public"])
    return target


def test_unauthenticated_clients_cannot_run_commands(served, keys, tmp_path):
    fake, server = served
    other = create_keys(tmp_path / "other")["directory"]
    wrong_server_key = _copy_keys(keys, tmp_path / "wrong-server", server_from=other)
    unknown_client = _copy_keys(other, tmp_path / "unknown-client", server_from=keys)
    for directory in (wrong_server_key, unknown_client):
        with connect(server.address, keys=directory, timeout_s=1.0) as intruder:
            for command in (lambda: intruder.park_probe(9.0, 9.0), intruder.abort):
                with pytest.raises(InstrumentError, match=f"no reply from {server.address} within 1s"):
                    command()
    context = zmq.Context.instance()
    plain = context.socket(zmq.DEALER)
    plain.linger = 0
    plain.connect(server.address)
    plain.send(wire.encode_request(1, "unblank", {}))
    assert not plain.poll(1000)
    plain.close()
    assert (fake.commands, fake.blanked, fake.probe) == (0, True, (0.0, 0.0))
    with connect(server.address, keys=keys, timeout_s=5.0) as good:
        assert good.get_state()["commands"] == 0


@pytest.fixture
def raw(served, keys):
    """An authenticated DEALER socket speaking the wire format by hand."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_serverkey, _ = zmq.auth.load_certificate(key_paths(keys)["server_public"])
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(key_paths(keys)["client_secret"])
    sock.connect(served[1].address)
    yield sock
    sock.close()
    context.term()


def _reply(sock, timeout_ms=2000):
    if not sock.poll(timeout_ms):
        return None
    return msgpack.unpackb(sock.recv_multipart()[0])


def test_malformed_requests_are_refused_and_serving_goes_on(served, raw, keys):
    fake, server = served
    good = {"id": 7, "method": "get_control", "args": {"name": "defocus_ang"}}
    cases = [
        [b"\xc1 not msgpack"], [msgpack.packb([1, 2, 3])], [msgpack.packb({**good, "id": "seven"})],
        [msgpack.packb({**good, "method": "self_destruct"})], [msgpack.packb({**good, "method": "__init__"})],
        [msgpack.packb({"id": 7, "method": "get_control"})], [msgpack.packb({**good, "extra": 1})],
        [msgpack.packb({**good, "args": {"name": 3}})], [msgpack.packb({**good, "args": {"nom": "x"}})],
        [msgpack.packb({**good, "args": [1]})], [msgpack.packb({**good, "method": {"a": 1}})],
        [msgpack.packb({"id": 7, "method": "park_probe", "args": {"x_ang": True, "y_ang": 0}})],
        [msgpack.packb({"id": 7, "method": "dwell", "args": {"x_ang": 0, "y_ang": 0, "dwell_s": 1,
                                                             "channels": "haadf"}})],
        [msgpack.packb({1: 2})], [b""], [b"\x91" * 60000 + b"\xc0"],
        [msgpack.packb({**good, "args": {"name": "a" * (wire.MAX_HEADER_BYTES + 1)}})],
        [msgpack.packb(good), b"extra frame", b"another"],
    ]
    for frames in cases:
        raw.send_multipart(frames)
        reply = _reply(raw)
        assert reply is not None and reply["ok"] is False, frames
        assert reply["error"]["type"] == "Refused", (frames, reply)
    assert reply["id"] == 7
    raw.send(msgpack.packb(good))
    assert _reply(raw) == {"id": 7, "ok": True, "kind": "plain", "result": 0.0}
    assert server.stats["refused"] == len(cases) and fake.commands == 0


def test_oversized_messages_are_dropped(served, raw, keys):
    fake, server = served
    raw.send(b"\x00" * (server.max_message_bytes + 1))
    assert _reply(raw, 500) is None
    with connect(server.address, keys=keys, timeout_s=5.0) as good:
        assert good.get_control("defocus_ang") == 0.0
        good.park_probe(1.0, 1.0)
    raw.send(msgpack.packb({"id": 3, "method": "get_state", "args": {}}))
    assert _reply(raw)["result"]["probe_ang"] == [1.0, 1.0]


def test_abort_runs_while_a_slow_command_runs(served, keys):
    fake, server = served
    fake.slow_s = 10.0
    with connect(server.address, keys=keys, timeout_s=5.0) as remote:
        outcome = {}
        def slow():
            try:
                remote.dwell(0.0, 0.0, 1.0)
            except Exception as exc:
                outcome["error"] = exc
        thread = threading.Thread(target=slow)
        thread.start()
        deadline = time.monotonic() + 5.0
        while server._running is None and time.monotonic() < deadline:
            time.sleep(0.005)
        with connect(server.address, keys=keys, timeout_s=5.0) as other:
            with pytest.raises(Busy, match="dwell is running"):
                other.get_state()
            start = time.monotonic()
            other.abort()
        thread.join(5.0)
        assert time.monotonic() - start < 1.0
        assert isinstance(outcome["error"], Aborted) and fake.blanked


def test_a_timed_out_call_leaves_the_client_usable(served, keys):
    fake, server = served
    fake.slow_s = 10.0
    with connect(server.address, keys=keys, timeout_s=0.5) as remote:
        with pytest.raises(InstrumentError, match=r"no reply from tcp://127\.0\.0\.1:\d+ within 0\.5s"):
            remote.dwell(0.0, 0.0, 1.0)
        remote.abort()
        deadline = time.monotonic() + 2.0
        while True:
            try:
                assert remote.get_control("defocus_ang") == 0.0
                break
            except Busy:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert remote.describe()["name"] == "fake-stem"


def test_concurrent_clients_get_answers_or_busy(served, keys):
    fake, server = served
    fake.slow_s = 0.002
    n_clients, n_commands = 8, 200
    tallies = [None] * n_clients

    def run(index):
        tally = {"ok": 0, "busy": 0, "wrong": 0}
        with connect(server.address, keys=keys, timeout_s=10.0) as remote:
            for i in range(n_commands):
                try:
                    if i % 4 == 0:
                        image = remote.acquire_image(8.0, (0.0, 0.0), (3, index + 1), 1e-6)
                        right = image["haadf"].shape == (3, index + 1)
                    elif i % 4 == 1:
                        right = remote.dwell(0.0, 0.0, 1e-6)["haadf"].values == np.float32(1.0)
                    elif i % 4 == 2:
                        right = remote.get_control("defocus_ang") == 0.0
                    else:
                        right = remote.describe()["name"] == "fake-stem"
                    tally["ok" if right else "wrong"] += 1
                except Busy:
                    tally["busy"] += 1
        tallies[index] = tally

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60.0)
    assert all(t is not None and t["wrong"] == 0 for t in tallies), tallies
    assert sum(t["ok"] + t["busy"] for t in tallies) == n_clients * n_commands
    assert sum(t["busy"] for t in tallies) == server.stats["busy"]
    assert sum(t["ok"] for t in tallies) > 0
    deadline = time.monotonic() + 5.0  # the server counts a reply just after sending it: let the last count land
    while server.stats["replies"] < n_clients * n_commands and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stats["replies"] == n_clients * n_commands
    print("remote concurrency", tallies)


def test_server_binds_loopback_by_default_and_stops_cleanly(keys):
    server = InstrumentServer(FakeInstrument(), keys=keys)
    assert server.requested_address == "tcp://127.0.0.1:5555"
    with InstrumentServer(FakeInstrument(), "tcp://127.0.0.1:0", keys=keys) as server:
        assert server.address.startswith("tcp://127.0.0.1:") and not server.address.endswith(":0")
    assert not any(t.is_alive() for t in server._threads)
    server.stop()
