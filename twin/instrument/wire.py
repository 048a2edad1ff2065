"""Message encoding for remote instruments: msgpack headers plus raw array frames, no pickle.

A request is one frame, the msgpack map {"id": int, "method": str, "args": {name: value}}; `method` is an
`Instrument` method and `args` its keyword arguments. A reply is [header, *frames] with header
{"id", "ok": True, "result", "kind": "plain" | "dataset"} or {"id", "ok": False, "error": {"type",
"message"}}. A dataset travels as a header {"dims", "coords", "attrs", "vars"} whose variables name their
dims, dtype, shape, attrs and frame index, followed by one C-contiguous frame per variable.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgpack
import numpy as np
import xarray as xr

from twin.instrument.protocol import ERRORS, Instrument, InstrumentError, Refused

MAX_HEADER_BYTES = 64 * 1024
MAX_ATTR_ARRAY = 4096
ARRAY_KINDS = "biufcmMSU"
METHODS = {name: inspect.signature(value) for name, value in vars(Instrument).items()
           if not name.startswith("_") and callable(value)}
RETURNED_ERRORS = {**ERRORS, "ValueError": ValueError, "TypeError": TypeError}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pair(value, item=_number) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(item(v) for v in value)


def _short_string(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 128


def _channels(value) -> bool:
    return isinstance(value, (list, tuple)) and 0 < len(value) <= 64 and all(_short_string(v) for v in value)


ARG_CHECKS = {
    "fov_ang": (lambda v: _number(v) or _pair(v), "a side or (width, height) [Angstrom]"),
    "center_ang": (_pair, "(x, y) [Angstrom]"),
    "shape_yx": (lambda v: _pair(v, _integer), "two integers (ny, nx)"),
    "dwell_s": (_number, "a number [s]"),
    "rotation_rad": (_number, "a number [rad]"),
    "x_ang": (_number, "a number [Angstrom]"),
    "y_ang": (_number, "a number [Angstrom]"),
    "channels": (_channels, "a list of 1 to 64 channel names"),
    "name": (_short_string, "a control name"),
    "value": (_number, "a number"),
}


def _plain(value):
    """msgpack fallback: numpy scalars and small arrays become Python values; anything else is refused."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.size <= MAX_ATTR_ARRAY:
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot be sent; use numbers, strings, lists or dicts")


def pack(value) -> bytes:
    return msgpack.packb(value, default=_plain, use_bin_type=True)


def unpack(data, *, trusted: bool = False):
    """Decode one msgpack frame (arrays as lists, as local instruments return them). Untrusted input:
    string map keys only."""
    return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=not trusted)


def encode_request(request_id: int, method: str, args: dict[str, Any]) -> bytes:
    return pack({"id": request_id, "method": method, "args": args})


def decode_request(frames) -> tuple[int | None, str, dict[str, Any]]:
    """(id, method, args) from the frames after the routing id, or Refused saying what is wrong.

    The id is checked first so that a reply can name it; Refused carries it as `.request_id`.
    """
    data = frames[0] if frames else b""
    if len(data) > MAX_HEADER_BYTES:
        raise Refused(f"request header of {len(data)} bytes exceeds {MAX_HEADER_BYTES} bytes")
    try:
        header = unpack(data)
    except Exception as exc:
        raise Refused(f"request header is not msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise Refused(f"request header must be a map, got {type(header).__name__}")
    request_id = header.get("id")
    if not (_integer(request_id) and 0 <= request_id < 2**63):
        raise Refused(f"request id must be an integer from 0 to 2**63 - 1, got {request_id!r}"[:200])
    try:
        if len(frames) != 1:
            raise Refused(f"a request is exactly one frame, got {len(frames)}")
        return request_id, *_check_call(header)
    except Refused as exc:
        exc.request_id = request_id
        raise


def _check_call(header: dict) -> tuple[str, dict[str, Any]]:
    if set(header) != {"id", "method", "args"}:
        fields = sorted(map(str, header))
        raise Refused(f"a request header has exactly the fields id, method, args; got {fields}"[:300])
    method, args = header["method"], header["args"]
    if not isinstance(method, str) or method not in METHODS:
        raise Refused(f"unknown method {method!r}; known: {', '.join(METHODS)}"[:300])
    if not isinstance(args, dict):
        raise Refused(f"args of {method} must be a map, got {type(args).__name__}")
    parameters = {name: p for name, p in METHODS[method].parameters.items() if name != "self"}
    unknown = set(args) - set(parameters)
    if unknown:
        raise Refused(f"{method} takes no argument {sorted(unknown)[0]!r}"[:200])
    missing = [name for name, p in parameters.items() if p.default is p.empty and name not in args]
    if missing:
        raise Refused(f"{method} is missing the argument {missing[0]!r}")
    for name, value in args.items():
        check, wanted = ARG_CHECKS.get(name, (lambda v: False, "a value this server can check"))
        if not check(value):
            raise Refused(f"{method}: {name}={value!r} is not allowed; give {wanted}"[:300])
    return method, args


def encode_result(request_id: int, result) -> list:
    """[header, *frames] of a successful reply; datasets go as raw frames."""
    if isinstance(result, xr.Dataset):
        body, frames = dataset_to_wire(result)
        return [pack({"id": request_id, "ok": True, "kind": "dataset", "result": body}), *frames]
    return [pack({"id": request_id, "ok": True, "kind": "plain", "result": result})]


def encode_error(request_id: int | None, exc: BaseException) -> list:
    """[header] of a failed reply; the type is the nearest class a client may re-raise."""
    kind = next((cls.__name__ for cls in type(exc).__mro__ if RETURNED_ERRORS.get(cls.__name__) is cls),
                None)
    message = str(exc) if kind else f"{type(exc).__name__}: {exc}"
    error = {"type": kind or "InstrumentError", "message": message[:4000]}
    return [pack({"id": request_id, "ok": False, "error": error})]


def decode_reply(header: dict, frames):
    """The result of a reply, or raise its error as the class the server named."""
    if not header.get("ok"):
        error = header.get("error") or {}
        cls = RETURNED_ERRORS.get(error.get("type"), InstrumentError)
        raise cls(error.get("message", "the server gave no message"))
    if header.get("kind") == "dataset":
        return wire_to_dataset(header["result"], frames)
    if frames:
        raise InstrumentError(f"reply has {len(frames)} unexpected frames")
    return header.get("result")


def _variable_to_wire(variable: xr.Variable, frames: list) -> dict:
    data = np.asarray(variable.values, order="C")
    if data.dtype.kind not in ARRAY_KINDS:
        raise TypeError(f"arrays of dtype {data.dtype} cannot be sent; use numbers or fixed-width strings")
    frames.append(data.reshape(-1).view(np.uint8))
    return {"dims": list(variable.dims), "dtype": data.dtype.str, "shape": list(data.shape),
            "attrs": dict(variable.attrs), "frame": len(frames) - 1}


def dataset_to_wire(dataset: xr.Dataset) -> tuple[dict, list[np.ndarray]]:
    """(header body, frames): one flat uint8 view of each C-contiguous array. Attrs must be msgpack-able."""
    frames: list[np.ndarray] = []
    body = {"dims": {str(k): int(v) for k, v in dataset.sizes.items()},
            "coords": {str(k): _variable_to_wire(v.variable, frames) for k, v in dataset.coords.items()},
            "vars": {str(k): _variable_to_wire(v.variable, frames) for k, v in dataset.data_vars.items()},
            "attrs": dict(dataset.attrs)}
    return body, frames


def _wire_to_variable(spec: dict, frames) -> xr.Variable:
    dtype = np.dtype(spec["dtype"])
    shape = tuple(int(n) for n in spec["shape"])
    buffer = frames[spec["frame"]]
    buffer = getattr(buffer, "buffer", buffer)
    if dtype.kind not in ARRAY_KINDS or len(buffer) != dtype.itemsize * int(np.prod(shape)):
        raise InstrumentError(f"array frame {spec['frame']} does not hold {shape} of {dtype}")
    data = np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()
    return xr.Variable(tuple(spec["dims"]), data, attrs=dict(spec["attrs"]))


def wire_to_dataset(body: dict, frames) -> xr.Dataset:
    """The dataset `dataset_to_wire` encoded, with identical values, dtypes, dims, coords and attrs."""
    try:
        coords = {k: _wire_to_variable(v, frames) for k, v in body["coords"].items()}
        data_vars = {k: _wire_to_variable(v, frames) for k, v in body["vars"].items()}
        return xr.Dataset(data_vars, coords=coords, attrs=dict(body["attrs"]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InstrumentError(f"malformed dataset in reply ({type(exc).__name__}: {exc})") from None
