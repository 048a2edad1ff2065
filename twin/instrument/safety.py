"""The safety envelope: interlocks around any Instrument, virtual or real.

A command outside the limits is refused with an error that names the parameter, its value and what is
allowed, and changes nothing (it never reaches the instrument); nothing is clamped. Dose is accounted from
the nominal probe positions before a command runs, per session and per region. An error from the instrument
itself blanks the beam before it is passed on. abort() always goes through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from twin.acquisition.dose import electrons_per_pixel
from twin.instrument import protocol
from twin.instrument.protocol import Refused



@dataclass(frozen=True, kw_only=True)
class Limits:
    """Interlock limits. bounds_ang: (x0, y0, x1, y1) the probe may visit [Angstrom] (None: the instrument's
    own bounds); dwell_s: (min, max) per pixel or point; max_pixels per image; max_command_s: longest
    beam-on time of one command [s]; session_budget_e: electrons the session may deliver;
    max_dose_e_per_ang2: dose any dose_bin_ang square may receive; regions: ((x0, y0, x1, y1), budget
    [electrons/Angstrom^2]) pairs, each a cap on the dose of every bin inside; controls: {name: (min, max)};
    pulse_bias_v [V], pulse_duration_s [s]: allowed ranges of tip pulses; max_pulses per session."""

    bounds_ang: tuple[float, float, float, float] | None = None
    dwell_s: tuple[float, float] = (1e-7, 60.0)
    max_pixels: int = 4096 * 4096
    max_command_s: float = 600.0
    session_budget_e: float = math.inf
    max_dose_e_per_ang2: float = math.inf
    regions: tuple[tuple[tuple[float, float, float, float], float], ...] = ()
    controls: dict[str, tuple[float, float]] = field(default_factory=dict)
    dose_bin_ang: float = 0.5
    pulse_bias_v: tuple[float, float] = (-8.0, 8.0)
    pulse_duration_s: tuple[float, float] = (1e-6, 1.0)
    max_pulses: int = 100_000

    def __post_init__(self):
        lo, hi = self.dwell_s
        if not (0 < lo <= hi):
            raise ValueError(f"dwell_s={self.dwell_s!r} is not allowed; give (min, max) with 0 < min <= max [s]")
        for name in ("session_budget_e", "max_dose_e_per_ang2", "max_command_s", "dose_bin_ang"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; it must be positive")
        for name in ("pulse_bias_v", "pulse_duration_s"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; give (min, max) with min <= max")
        for name, (lo, hi) in self.controls.items():
            if not lo <= hi:
                raise ValueError(f"controls[{name!r}]=({lo}, {hi}) is not allowed; it needs min <= max")
        object.__setattr__(self, "regions", tuple((tuple(r), float(b)) for r, b in self.regions))
        object.__setattr__(self, "controls", {k: tuple(v) for k, v in self.controls.items()})

    def to_json(self) -> dict[str, Any]:
        return {"bounds_ang": self.bounds_ang, "dwell_s": self.dwell_s, "max_pixels": self.max_pixels,
                "max_command_s": self.max_command_s, "session_budget_e": _num(self.session_budget_e),
                "max_dose_e_per_ang2": _num(self.max_dose_e_per_ang2),
                "regions": [[list(r), b] for r, b in self.regions], "controls": self.controls,
                "dose_bin_ang": self.dose_bin_ang, "pulse_bias_v": self.pulse_bias_v,
                "pulse_duration_s": self.pulse_duration_s, "max_pulses": self.max_pulses}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        values = dict(data)
        for name in ("session_budget_e", "max_dose_e_per_ang2"):
            values[name] = float(values[name])
        values["bounds_ang"] = None if values["bounds_ang"] is None else tuple(values["bounds_ang"])
        for name in ("dwell_s", "pulse_bias_v", "pulse_duration_s"):
            values[name] = tuple(values[name])
        return cls(**values)


def _num(value: float):
    return value if math.isfinite(value) else "inf"


class SafeInstrument:
    """`inner` behind the interlocks of `limits`; itself an Instrument."""

    def __init__(self, inner, limits: Limits = Limits()):
        self.inner, self.limits = inner, limits
        self.bounds = limits.bounds_ang or tuple(inner.describe()["bounds_ang"])
        x0, y0, x1, y1 = self.bounds
        self._shape = (max(1, math.ceil((y1 - y0) / limits.dose_bin_ang)),
                       max(1, math.ceil((x1 - x0) / limits.dose_bin_ang)))
        self._electrons = np.zeros(self._shape)
        self._current = inner.describe().get("dose_control", "beam_current_pa")  # the control that sets the current
        self._pulses = 0

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "limits": self.limits.to_json(), "bounds_ang": list(self.bounds)}

    def get_state(self) -> dict[str, Any]:
        return self.inner.get_state()

    def acquire_image(self, fov_ang, center_ang, shape_yx, dwell_s: float, rotation_rad: float = 0.0,
                      channels: Sequence[str] = ("haadf",)):
        x, y = protocol.scan_positions(fov_ang, center_ang, shape_yx, rotation_rad)
        if x.size > self.limits.max_pixels:
            raise Refused(f"shape_yx={tuple(shape_yx)} is not allowed; at most {self.limits.max_pixels} pixels")
        self._check_dwell(dwell_s, x.size)
        self._check_inside(x, y, "the scan (fov_ang, center_ang, rotation_rad)")
        electrons = self._check_dose(x, y, dwell_s)
        out = self._run("acquire_image", fov_ang, center_ang, shape_yx, dwell_s, rotation_rad, channels)
        self._electrons = electrons
        return out

    def park_probe(self, x_ang: float, y_ang: float) -> None:
        x, y = protocol.check_point("(x_ang, y_ang)", (x_ang, y_ang))
        self._check_inside(np.array([x]), np.array([y]), "(x_ang, y_ang)")
        return self._run("park_probe", x_ang, y_ang)

    def dwell(self, x_ang: float, y_ang: float, dwell_s: float, channels: Sequence[str] = ("haadf",)):
        x, y = protocol.check_point("(x_ang, y_ang)", (x_ang, y_ang))
        self._check_dwell(dwell_s, 1)
        self._check_inside(np.array([x]), np.array([y]), "(x_ang, y_ang)")
        electrons = self._check_dose(np.array([x]), np.array([y]), dwell_s)
        out = self._run("dwell", x_ang, y_ang, dwell_s, channels)
        self._electrons = electrons
        return out

    def pulse(self, bias_v: float, duration_s: float, height_offset_ang: float = 0.0):
        """A voltage pulse at the tip (scanning probes only), inside pulse_bias_v, pulse_duration_s, max_pulses."""
        if not hasattr(self.inner, "pulse"):
            raise Refused(f"{self.inner.describe()['name']} has no pulse(); only scanning probes pulse")
        for name, value, (lo, hi) in (("bias_v", bias_v, self.limits.pulse_bias_v),
                                      ("duration_s", duration_s, self.limits.pulse_duration_s)):
            if not (protocol._finite(value) and lo <= value <= hi):
                raise Refused(f"pulse {name}={value!r} is not allowed by the interlocks; allowed: {lo:g} to {hi:g}")
        if self._pulses >= self.limits.max_pulses:
            raise Refused(f"the session has used its max_pulses={self.limits.max_pulses}")
        out = self._run("pulse", bias_v, duration_s, height_offset_ang)
        self._pulses += 1
        return out

    def repassivate(self):
        """Hand the tip's apex H to the dangling bond under it (scanning probes only)."""
        if not hasattr(self.inner, "repassivate"):
            raise Refused(f"{self.inner.describe()['name']} has no repassivate(); only scanning probes do")
        return self._run("repassivate")

    def blank(self) -> None:
        return self.inner.blank()

    def unblank(self) -> None:
        return self._run("unblank")

    def set_control(self, name: str, value: float) -> None:
        if name in self.limits.controls:
            lo, hi = self.limits.controls[name]
            if not (protocol._finite(value) and lo <= value <= hi):
                raise Refused(f"{name}={value!r} is not allowed by the interlocks; allowed: {lo:g} to {hi:g}")
        return self._run("set_control", name, value)

    def get_control(self, name: str) -> float:
        return self.inner.get_control(name)

    def dose(self):
        ds = self.inner.dose()
        ds.attrs["budget_left_e"] = float(self.limits.session_budget_e - self._electrons.sum())
        return ds

    def abort(self) -> None:
        return self.inner.abort()

    def close(self) -> None:
        return self.inner.close()

    # --- checks --------------------------------------------------------------------------------------------

    def _run(self, method: str, *args):
        try:
            return getattr(self.inner, method)(*args)
        except Refused:
            raise
        except Exception:
            try:
                self.inner.blank()
            finally:
                raise

    def _check_dwell(self, dwell_s, n_pixels: int):
        dwell_s = protocol.check_dwell(dwell_s)
        lo, hi = self.limits.dwell_s
        if not lo <= dwell_s <= hi:
            raise Refused(f"dwell_s={dwell_s!r} is not allowed by the interlocks; allowed: {lo:g} to {hi:g} s")
        if dwell_s * n_pixels > self.limits.max_command_s:
            raise Refused(f"dwell_s={dwell_s!r} over {n_pixels} pixels takes {dwell_s * n_pixels:.3g} s; "
                          f"allowed: at most {self.limits.max_command_s:g} s per command")

    def _check_inside(self, x, y, what: str):
        x0, y0, x1, y1 = self.bounds
        if x.min() < x0 or x.max() > x1 or y.min() < y0 or y.max() > y1:
            raise Refused(f"{what} reaches x {x.min():.4g}..{x.max():.4g}, y {y.min():.4g}..{y.max():.4g} "
                          f"Angstrom; allowed: x {x0:g}..{x1:g}, y {y0:g}..{y1:g} Angstrom")

    def _check_dose(self, x, y, dwell_s) -> np.ndarray:
        """The electron map after the command, or Refused if it breaks a budget (nothing is changed)."""
        if self.inner.get_state()["blanked"]:
            return self._electrons
        per_pixel = float(electrons_per_pixel(self.inner.get_control(self._current), dwell_s))
        x0, y0, _, _ = self.bounds
        bin_ = self.limits.dose_bin_ang
        rows = np.minimum(((y.ravel() - y0) / bin_).astype(int), self._shape[0] - 1)
        cols = np.minimum(((x.ravel() - x0) / bin_).astype(int), self._shape[1] - 1)
        after = self._electrons.copy()
        np.add.at(after, (rows, cols), per_pixel)
        if after.sum() > self.limits.session_budget_e:
            raise Refused(f"the command needs {after.sum() - self._electrons.sum():.4g} electrons; the session "
                          f"budget has {self.limits.session_budget_e - self._electrons.sum():.4g} left "
                          f"(session_budget_e={self.limits.session_budget_e:g})")
        dose = after / bin_**2
        if dose.max() > self.limits.max_dose_e_per_ang2:
            raise Refused(f"the command would raise the dose to {dose.max():.4g} e/A^2 somewhere; allowed: "
                          f"max_dose_e_per_ang2={self.limits.max_dose_e_per_ang2:g}")
        yc = y0 + (np.arange(self._shape[0]) + 0.5) * bin_
        xc = x0 + (np.arange(self._shape[1]) + 0.5) * bin_
        for (rx0, ry0, rx1, ry1), budget in self.limits.regions:
            inside = np.outer((yc >= ry0) & (yc <= ry1), (xc >= rx0) & (xc <= rx1))
            if inside.any() and dose[inside].max() > budget:
                raise Refused(f"the command would raise the dose in region {(rx0, ry0, rx1, ry1)} to "
                              f"{dose[inside].max():.4g} e/A^2; its budget is {budget:g} e/A^2")
        return after
