"""The one instrument interface: what a policy may ask of a virtual or a real microscope.

Every implementation (VirtualSTEM, the remote client, hardware adapters) satisfies `Instrument`, so a
policy written against it runs unchanged on each. Units are in the names: `_ang` Angstrom, `_s` seconds,
`_pa` picoampere, `_ev` electronvolt, `_v` volt, `_rad` radian. Datasets returned have dims ("y", "x"),
coordinates in Angstrom (sample frame) and attrs carrying every acquisition parameter with its unit.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


class InstrumentError(RuntimeError):
    """Base of every error an instrument raises on purpose."""


class Refused(InstrumentError, ValueError):
    """The command was refused (bad input, outside the safety envelope); nothing changed."""


class Busy(InstrumentError):
    """Another command is running; try again."""


class Aborted(InstrumentError):
    """The command was stopped by abort(); the beam is blanked."""


ERRORS = {cls.__name__: cls for cls in (InstrumentError, Refused, Busy, Aborted)}


@runtime_checkable
class Instrument(Protocol):
    """A scanning microscope as a policy sees it. See the module docstring for units and datasets."""

    def describe(self) -> dict[str, Any]:
        """Static facts: kind, name, version, channels, controls {name: {unit, min, max}}, bounds_ang."""

    def get_state(self) -> dict[str, Any]:
        """Now: probe_ang (x, y), blanked, time_s (instrument clock), controls {name: value}."""

    def acquire_image(self, fov_ang, center_ang, shape_yx, dwell_s: float, rotation_rad: float = 0.0,
                      channels: Sequence[str] = ("haadf",)):
        """Scan a (ny, nx) raster over a field of view fov_ang (side, or (width, height)) centred on
        center_ang (x, y), rotated by rotation_rad; return an xarray.Dataset, one variable per channel."""

    def park_probe(self, x_ang: float, y_ang: float) -> None:
        """Move the probe (no dose while blanked)."""

    def dwell(self, x_ang: float, y_ang: float, dwell_s: float, channels: Sequence[str] = ("haadf",)):
        """Hold the probe at (x, y) for dwell_s; return an xarray.Dataset of scalar signals."""

    def blank(self) -> None:
        """Blank the beam."""

    def unblank(self) -> None:
        """Unblank the beam."""

    def set_control(self, name: str, value: float) -> None:
        """Set one control (names and limits in describe()["controls"])."""

    def get_control(self, name: str) -> float:
        """Read one control."""

    def dose(self):
        """xarray.Dataset: the cumulative dose map [electrons/Angstrom^2] (y, x) and attrs total_electrons
        and budget_left_e (electrons the session may still deliver; inf without a budget)."""

    def abort(self) -> None:
        """Stop what is running and blank the beam. Always allowed."""

    def close(self) -> None:
        """Release the instrument."""


def fov_sides(fov_ang) -> tuple[float, float]:
    """(width, height) [Angstrom] from a side or a pair, or Refused naming the value."""
    sides = (fov_ang, fov_ang) if np.isscalar(fov_ang) else tuple(fov_ang)
    if len(sides) != 2 or not all(_finite(v) and v > 0 for v in sides):
        raise Refused(f"fov_ang={fov_ang!r} is not allowed; give a positive side or (width, height) [Angstrom]")
    return float(sides[0]), float(sides[1])


def scan_positions(fov_ang, center_ang, shape_yx, rotation_rad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Nominal probe positions (x (ny, nx), y (ny, nx)) [Angstrom] of a raster, pixel centres.

    The raster's own frame has x along the fast scan; it is rotated by rotation_rad (counter-clockwise)
    about center_ang. Raises Refused for malformed arguments.
    """
    width, height = fov_sides(fov_ang)
    center = check_point("center_ang", center_ang)
    shape = tuple(shape_yx) if not np.isscalar(shape_yx) else ()
    if len(shape) != 2 or not all(isinstance(n, (int, np.integer)) and 1 <= n <= 8192 for n in shape):
        raise Refused(f"shape_yx={shape_yx!r} is not allowed; give two integers (ny, nx) from 1 to 8192")
    if not _finite(rotation_rad):
        raise Refused(f"rotation_rad={rotation_rad!r} is not allowed; give a finite angle [rad]")
    ny, nx = shape
    u = (np.arange(nx) + 0.5) / nx * width - width / 2
    v = (np.arange(ny) + 0.5) / ny * height - height / 2
    uu, vv = np.meshgrid(u, v)
    c, s = math.cos(rotation_rad), math.sin(rotation_rad)
    return center[0] + c * uu - s * vv, center[1] + s * uu + c * vv


def check_point(name: str, point) -> tuple[float, float]:
    """(x, y) [Angstrom] as floats, or Refused naming `name`."""
    try:
        x, y = (float(v) for v in point)
    except (TypeError, ValueError):
        raise Refused(f"{name}={point!r} is not allowed; give (x, y) [Angstrom]") from None
    if not (_finite(x) and _finite(y)):
        raise Refused(f"{name}={point!r} is not allowed; the coordinates must be finite [Angstrom]")
    return x, y


def check_dwell(dwell_s) -> float:
    if not (_finite(dwell_s) and dwell_s > 0):
        raise Refused(f"dwell_s={dwell_s!r} is not allowed; it must be a positive time [s]")
    return float(dwell_s)


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)
