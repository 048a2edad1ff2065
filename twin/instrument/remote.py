"""Remote access to any `Instrument` over ZeroMQ, encrypted and authenticated with CURVE.

One key directory holds everything (`create_keys`): the server's key pair, one client key pair and
`authorized/`, the public certificates of the clients the server accepts. The server (`InstrumentServer`,
or the blocking `serve`) binds a ROUTER socket on loopback unless told otherwise, refuses every client
whose key is not in `authorized/`, runs one command at a time in a worker thread, answers `Busy` while one
runs and executes `abort` at once. The client (`connect` -> `RemoteInstrument`) satisfies `Instrument`
with the same signatures, returns identical xarray datasets and re-raises the server's errors as the same
classes. Messages are msgpack headers plus raw array frames (`twin.instrument.wire`); nothing is pickled.

Example:
    keys = create_keys("~/.twin/keys")
    with InstrumentServer(VirtualSTEM(...), "tcp://127.0.0.1:0", keys=keys["directory"]) as server:
        stem = connect(server.address, keys=keys["directory"], timeout_s=10.0)
        image = stem.acquire_image(50.0, (0.0, 0.0), (64, 64), dwell_s=2e-6)
        stem.close()
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from twin.instrument import wire
from twin.instrument.protocol import Busy, Instrument, InstrumentError, Refused

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
MAX_MESSAGE_BYTES = 16 * 2**20
_POLL_MS = 200


def key_paths(directory) -> dict[str, Path]:
    """The files of a key directory: server and client key pairs and the `authorized/` folder."""
    directory = Path(directory).expanduser()
    return {"directory": directory,
            "server_public": directory / "server.key", "server_secret": directory / "server.key_secret",
            "client_public": directory / "client.key", "client_secret": directory / "client.key_secret",
            "authorized": directory / "authorized"}


def create_keys(directory) -> dict[str, Path]:
    """Make a CURVE server key pair and one authorized client key pair in a new directory.

    The keys are written to a temporary sibling directory (mode 0700, secrets 0600) renamed into place, so
    a crash leaves either no key set or a whole one. Raises ValueError naming the path if it already holds
    keys or other files. Returns `key_paths(directory)`.
    """
    paths = key_paths(directory)
    directory = paths["directory"]
    existing = [name for name, path in paths.items() if name != "directory" and path.exists()]
    if existing:
        raise ValueError(f"{directory} already holds keys ({', '.join(existing)}); not overwriting them")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ValueError(f"{directory} is not an empty directory; give a new one for the keys")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        zmq.auth.create_certificates(staging, "server")
        zmq.auth.create_certificates(staging, "client")
        for name in ("server.key_secret", "client.key_secret"):
            os.chmod(staging / name, 0o600)
        (staging / "authorized").mkdir()
        shutil.copyfile(staging / "client.key", staging / "authorized" / "client.key")
        if directory.exists():
            directory.rmdir()
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return paths


class InstrumentServer:
    """Serves one instrument to the clients whose public keys are in `keys/authorized/`.

    `start()` binds (errors such as an address in use raise here) and returns self; `stop()` ends the
    I/O, worker and authenticator threads; both work from any thread, and the server is a context
    manager. `address` is the bound endpoint (the real port when bound to port 0 or `*`). Commands run
    one at a time in a worker thread; a request arriving meanwhile gets `Busy`, except `abort`, which
    calls `instrument.abort()` at once, and `close`, which only acknowledges (the served instrument
    stays open). Each frame is bounded by `max_message_bytes` [bytes] (larger ones drop the
    connection); malformed requests get `Refused`. `stats` counts replies, busy and refused.
    """

    def __init__(self, instrument: Instrument, address: str = DEFAULT_ADDRESS, *, keys,
                 max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.instrument = instrument
        self.requested_address = address
        self.keys = key_paths(keys)
        self.max_message_bytes = int(max_message_bytes)
        self.address: str | None = None
        self.stats: collections.Counter = collections.Counter()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running: str | None = None

    def start(self) -> InstrumentServer:
        with self._lock:
            if self._threads or self._stopping.is_set():
                raise RuntimeError("an InstrumentServer starts once")
            public, secret = zmq.auth.load_certificate(self.keys["server_secret"])
            if secret is None or not self.keys["authorized"].is_dir():
                raise ValueError(f"{self.keys['directory']} lacks the server secret key or authorized/")
            self._context = zmq.Context()
            self._auth = ThreadAuthenticator(self._context)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(self.keys["authorized"]))
            self._router = self._context.socket(zmq.ROUTER)
            self._router.setsockopt(zmq.LINGER, 0)
            self._router.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            self._router.curve_server = True
            self._router.curve_publickey, self._router.curve_secretkey = public, secret
            try:
                self._router.bind(self.requested_address)
            except zmq.ZMQError:
                self._router.close()
                self._auth.stop()
                self._context.term()
                raise
            self.address = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._wake_read, self._wake_write = socket.socketpair()
            for end in (self._wake_read, self._wake_write):
                end.setblocking(False)
            self._threads = [threading.Thread(target=target, name=f"twin-remote-{name}", daemon=True)
                             for name, target in (("io", self._serve_io), ("worker", self._work))]
            for thread in self._threads:
                thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving; waits up to timeout_s [s] for a running command. The instrument stays open."""
        with self._lock:
            if self._stopping.is_set() or not self._threads:
                self._stopping.set()
                return
            self._stopping.set()
            self._wake()
            self._jobs.put(None)
            for thread in self._threads:
                thread.join(timeout_s)
            self._auth.stop()
            self._context.term()
            self._wake_read.close()
            self._wake_write.close()

    def wait(self) -> None:
        """Block until stop() is called from another thread or Ctrl-C, then stop."""
        with contextlib.suppress(KeyboardInterrupt):
            while not self._stopping.wait(0.5):
                pass
        self.stop()

    def __enter__(self) -> InstrumentServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")

    def _serve_io(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_read.fileno(), zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                events = dict(poller.poll(_POLL_MS))
                if self._wake_read.fileno() in events:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_read.recv(4096)
                self._send_results()
                if self._router in events:
                    self._read_requests()
        finally:
            self._router.close(linger=0)

    def _send_results(self) -> None:
        while not self._results.empty():
            self._running = None
            self._send(self._results.get())

    def _send(self, frames: list) -> None:
        try:
            self._router.send_multipart(frames, copy=False)
        except zmq.ZMQError:
            self.stats["undeliverable"] += 1
        else:
            self.stats["replies"] += 1

    def _read_requests(self, limit: int = 100) -> None:
        for _ in range(limit):
            try:
                identity = self._router.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            frames = []
            while self._router.getsockopt(zmq.RCVMORE):
                frame = self._router.recv()
                frames.append(frame if not frames else b"")
            self._handle(identity, frames)

    def _handle(self, identity: bytes, frames: list) -> None:
        try:
            request_id, method, args = wire.decode_request(frames)
        except Refused as exc:
            self.stats["refused"] += 1
            self._send([identity, *wire.encode_error(getattr(exc, "request_id", None), exc)])
            return
        if method == "close":
            self._send([identity, *wire.encode_result(request_id, None)])
        elif method == "abort":
            self._send([identity, *self._execute(request_id, method, args)])
        elif self._running is not None:
            self.stats["busy"] += 1
            busy = Busy(f"{self._running} is running; try again")
            self._send([identity, *wire.encode_error(request_id, busy)])
        else:
            self._running = method
            self._jobs.put((identity, request_id, method, args))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            identity, request_id, method, args = job
            self._results.put([identity, *self._execute(request_id, method, args)])
            self._wake()

    def _execute(self, request_id: int, method: str, args: dict) -> list:
        try:
            result = getattr(self.instrument, method)(**args)
        except Exception as exc:
            return wire.encode_error(request_id, exc)
        try:
            return wire.encode_result(request_id, result)
        except Exception as exc:
            return wire.encode_error(request_id, InstrumentError(f"{method}'s result cannot be sent: {exc}"))


def serve(instrument: Instrument, address: str = DEFAULT_ADDRESS, *, keys,
          max_message_bytes: int = MAX_MESSAGE_BYTES, on_ready=None) -> None:
    """Serve `instrument` until Ctrl-C (blocking; for `twin serve`). on_ready(address) runs once bound."""
    server = InstrumentServer(instrument, address, keys=keys, max_message_bytes=max_message_bytes).start()
    if on_ready is not None:
        on_ready(server.address)
    server.wait()


class _Channel:
    """One DEALER socket and its lock: one request and its reply at a time, within a deadline."""

    def __init__(self, context: zmq.Context, address: str, keys: tuple[bytes, ...], timeout_s: float):
        self.context, self.address, self.keys, self.timeout_s = context, address, keys, timeout_s
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.socket = self._open()

    def _open(self) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.linger, sock.immediate = 0, 1
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = self.keys
        sock.connect(self.address)
        return sock

    def request(self, method: str, args: dict[str, Any]):
        with self.lock:
            if self.socket is None:
                raise InstrumentError(f"the connection to {self.address} is closed")
            request_id = next(self.ids)
            message = wire.encode_request(request_id, method, args)
            deadline = time.monotonic() + self.timeout_s
            if not self._poll(zmq.POLLOUT, deadline):
                self._timed_out()
            self.socket.send(message)
            while self._poll(zmq.POLLIN, deadline):
                header, *frames = self.socket.recv_multipart(copy=False)
                header = wire.unpack(header.buffer, trusted=True)
                if isinstance(header, dict) and header.get("id") == request_id:
                    return wire.decode_reply(header, frames)
            self._timed_out()

    def _poll(self, event: int, deadline: float) -> bool:
        remaining_ms = (deadline - time.monotonic()) * 1000
        return remaining_ms > 0 and bool(self.socket.poll(max(1, int(remaining_ms)), event))

    def _timed_out(self):
        """A fresh socket, so that no late request or reply of this call is ever delivered; then raise."""
        self.socket.close(linger=0)
        self.socket = self._open()
        raise InstrumentError(f"no reply from {self.address} within {self.timeout_s:g}s")

    def close(self) -> None:
        with self.lock:
            if self.socket is not None:
                self.socket.close(linger=0)
                self.socket = None


class RemoteInstrument:
    """An `Instrument` served by an `InstrumentServer`: same methods, signatures, results and errors.

    Each call waits up to timeout_s [s] for its reply, else raises InstrumentError. Calls from several
    threads are serialized, except `abort`, which has its own connection and never waits behind a
    running command. `close()` ends this client's session only; the served instrument stays open.
    """

    def __init__(self, address: str, *, server_public: bytes, client_public: bytes, client_secret: bytes,
                 timeout_s: float = 30.0):
        self.address = address
        self.timeout_s = float(timeout_s)
        self._context = zmq.Context()
        keys = (server_public, client_public, client_secret)
        self._main = _Channel(self._context, address, keys, self.timeout_s)
        self._urgent = _Channel(self._context, address, keys, self.timeout_s)
        self._closed = False

    def describe(self) -> dict[str, Any]:
        return self._main.request("describe", {})

    def get_state(self) -> dict[str, Any]:
        return self._main.request("get_state", {})

    def acquire_image(self, fov_ang, center_ang, shape_yx, dwell_s: float, rotation_rad: float = 0.0,
                      channels: Sequence[str] = ("haadf",)):
        return self._main.request("acquire_image", {
            "fov_ang": fov_ang, "center_ang": center_ang, "shape_yx": shape_yx, "dwell_s": dwell_s,
            "rotation_rad": rotation_rad, "channels": channels})

    def park_probe(self, x_ang: float, y_ang: float) -> None:
        return self._main.request("park_probe", {"x_ang": x_ang, "y_ang": y_ang})

    def dwell(self, x_ang: float, y_ang: float, dwell_s: float, channels: Sequence[str] = ("haadf",)):
        return self._main.request("dwell", {"x_ang": x_ang, "y_ang": y_ang, "dwell_s": dwell_s,
                                            "channels": channels})

    def blank(self) -> None:
        return self._main.request("blank", {})

    def unblank(self) -> None:
        return self._main.request("unblank", {})

    def set_control(self, name: str, value: float) -> None:
        return self._main.request("set_control", {"name": name, "value": value})

    def get_control(self, name: str) -> float:
        return self._main.request("get_control", {"name": name})

    def dose(self):
        return self._main.request("dose", {})

    def abort(self) -> None:
        return self._urgent.request("abort", {})

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._main.close()
            self._urgent.close()
            self._context.term()

    def __enter__(self) -> RemoteInstrument:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


for _name in wire.METHODS:
    getattr(RemoteInstrument, _name).__doc__ = getattr(Instrument, _name).__doc__


def connect(address: str, keys, timeout_s: float = 30.0) -> RemoteInstrument:
    """A client of the server at `address`, with the server's public key and the client key pair from the
    key directory `keys` (see `create_keys`); calls wait up to timeout_s [s] for their reply."""
    paths = key_paths(keys)
    server_public, _ = zmq.auth.load_certificate(paths["server_public"])
    client_public, client_secret = zmq.auth.load_certificate(paths["client_secret"])
    if client_secret is None:
        raise ValueError(f"{paths['client_secret']} holds no secret key")
    return RemoteInstrument(address, server_public=server_public, client_public=client_public,
                            client_secret=client_secret, timeout_s=timeout_s)
