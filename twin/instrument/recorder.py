"""Recording and replay of instrument sessions.

A session directory holds `session.json` (format version, seed, limits, the instrument's configuration),
`commands.jsonl` (one line per command: sequence number, wall time, instrument time, method, arguments by
name, the names carrying the units (`dwell_s`, `fov_ang`), a reference to the result or the result itself,
the error if any) and `data/` (each returned dataset as netCDF4/HDF5, written atomically). `replay` rebuilds the virtual instrument from
session.json, runs the commands again and checks that every array, value and error is reproduced exactly.
"""

from __future__ import annotations

import datetime
import inspect
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from twin.instrument.protocol import Instrument
from twin.io import atomic_path, write_dataset_atomic

FORMAT = "twin-session/1"
METHODS = ("describe", "get_state", "acquire_image", "park_probe", "dwell", "blank", "unblank", "set_control",
           "get_control", "dose", "abort", "close")


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


class Recorder:
    """`inner` (any Instrument) with every command written to the session directory `directory`.

    session: what replay needs to rebuild the instrument: {"seed", "limits", "instrument"} (see `record`).
    """

    def __init__(self, inner, directory: str | os.PathLike, session: dict[str, Any]):
        self.inner, self.directory = inner, Path(directory)
        if (self.directory / "session.json").exists():
            raise ValueError(f"session directory {str(self.directory)!r} already holds a session; choose a new one")
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        with atomic_path(self.directory / "session.json") as tmp:
            Path(tmp).write_text(json.dumps(_jsonable({"format": FORMAT, **session}), indent=1))
        self._log = open(self.directory / "commands.jsonl", "a", encoding="utf-8")
        self._seq = 0

    def _call(self, method: str, *args):
        self._seq += 1
        names = list(inspect.signature(getattr(Instrument, method)).parameters)[1:]
        line: dict[str, Any] = {"seq": self._seq, "wall_time": datetime.datetime.now(datetime.UTC).isoformat(),
                                "method": method, "args": _jsonable(dict(zip(names, args)))}
        try:
            result = getattr(self.inner, method)(*args)
        except Exception as error:
            line["error"] = {"type": type(error).__name__, "message": str(error)}
            raise
        else:
            line["result"] = self._store(result)
            return result
        finally:
            if method != "close":
                line["instrument_time_s"] = _jsonable(self.inner.get_state()["time_s"])
            self._log.write(json.dumps(line) + "\n")
            self._log.flush()
            os.fsync(self._log.fileno())

    def _store(self, result):
        if hasattr(result, "data_vars"):
            name = f"data/{self._seq:06d}.nc"
            write_dataset_atomic(result, self.directory / name)
            return {"dataset": name}
        return {"value": _jsonable(result)}

    def describe(self):
        return self._call("describe")

    def get_state(self):
        return self._call("get_state")

    def acquire_image(self, fov_ang, center_ang, shape_yx, dwell_s: float, rotation_rad: float = 0.0,
                      channels: Sequence[str] = ("haadf",)):
        return self._call("acquire_image", fov_ang, center_ang, shape_yx, dwell_s, rotation_rad, channels)

    def park_probe(self, x_ang: float, y_ang: float):
        return self._call("park_probe", x_ang, y_ang)

    def dwell(self, x_ang: float, y_ang: float, dwell_s: float, channels: Sequence[str] = ("haadf",)):
        return self._call("dwell", x_ang, y_ang, dwell_s, channels)

    def blank(self):
        return self._call("blank")

    def unblank(self):
        return self._call("unblank")

    def set_control(self, name: str, value: float):
        return self._call("set_control", name, value)

    def get_control(self, name: str):
        return self._call("get_control", name)

    def dose(self):
        return self._call("dose")

    def abort(self):
        return self._call("abort")

    def close(self):
        try:
            return self._call("close")
        finally:
            self._log.close()


def record(directory, sample="graphene-si", *, seed: int = 0, limits=None, **options):
    """A new recorded, interlocked VirtualSTEM session in `directory` (options as VirtualSTEM's)."""
    from twin.instrument.safety import Limits, SafeInstrument
    from twin.instrument.virtual_stem import VirtualSTEM

    limits = limits or Limits()
    stem = VirtualSTEM(sample, seed=seed, **options)
    session = {"seed": seed, "limits": limits.to_json(), "instrument": stem.config()}
    return Recorder(SafeInstrument(stem, limits), directory, session)


def replay(directory: str | os.PathLike) -> list[str]:
    """Run the session in `directory` again on a fresh virtual instrument; the differences found (none: [])."""
    from twin.instrument.safety import Limits, SafeInstrument
    from twin.instrument.virtual_stem import VirtualSTEM

    directory = Path(directory)
    session = json.loads((directory / "session.json").read_text())
    if session.get("format") != FORMAT:
        raise ValueError(f"{directory} is not a twin session (format {session.get('format')!r}, want {FORMAT!r})")
    instrument = SafeInstrument(VirtualSTEM.from_config(session["instrument"]), Limits.from_json(session["limits"]))
    problems = []
    for text in (directory / "commands.jsonl").read_text().splitlines():
        line = json.loads(text)
        if line["method"] not in METHODS:
            problems.append(f"command {line['seq']}: unknown method {line['method']!r}")
            continue
        try:
            result, error = getattr(instrument, line["method"])(**line["args"]), None
        except Exception as e:
            result, error = None, {"type": type(e).__name__, "message": str(e)}
        problem = _difference(directory, line, result, error)
        if problem:
            problems.append(f"command {line['seq']} ({line['method']}): {problem}")
    return problems


def _difference(directory: Path, line: dict[str, Any], result, error) -> str | None:
    """How a replayed command's result or error differs from the recorded `line` (None: it does not)."""
    import xarray as xr

    if error != line.get("error"):
        return f"error {error} instead of {line.get('error')}"
    if "dataset" in line.get("result", {}):
        recorded = xr.load_dataset(directory / line["result"]["dataset"], engine="h5netcdf")
        return None if _identical(result, recorded) else f"data differ from {line['result']['dataset']}"
    if "result" in line and _jsonable(result) != line["result"]["value"]:
        return f"{result!r} instead of {line['result']['value']!r}"
    return None


def _identical(a, b) -> bool:
    names = set(a.variables)
    return names == set(b.variables) and all(
        a[n].dims == b[n].dims and a[n].dtype == b[n].dtype and np.array_equal(a[n].values, b[n].values)
        for n in names) and _jsonable(dict(a.attrs)) == _jsonable(dict(b.attrs))

