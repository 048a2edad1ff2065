"""VirtualSTM: a simulated scanning tunnelling microscope over Si(100)-2x1:H behind the Instrument interface.

It owns the surface (an HSurface whose H occupancy is the state that changes), the tip (position, whether
its apex carries an H), the bias, the current setpoint and the feedback, an instrument clock and a map of
the tunnelling electrons. Images come from twin.stm (Tersoff-Hamann-level tunnelling, PI feedback on ln I,
noise and drift); pulses and repassivation from twin.dynamics.hdl. Command n draws its randomness from
fold_in(PRNGKey(seed), n), so the same seed and commands give the same data.

Channels: "height" [Angstrom] (tip height; constant-current topography), "current" [pA], "error" (ln I -
ln I_set). feedback_on = 1 is constant-current mode, 0 constant height at height_ang above the Si plane.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from twin import stm
from twin.acquisition.dose import electrons_per_pixel
from twin.dynamics import hdl
from twin.instrument import protocol
from twin.instrument.protocol import Refused
from twin.instrument.virtual import VirtualInstrument, check_seed

VERSION = "twin-virtual-stm/1"
CHANNELS = ("height", "current", "error")
CHANNEL_UNITS = {"height": "Angstrom", "current": "pA", "error": "ln(I / I_set)"}
CHANNEL_KEYS = {"height": "height_ang", "current": "current_pa", "error": "error"}
# name: (unit, min, max, default)
CONTROLS = {
    "bias_v": ("V", -10.0, 10.0, -1.8),
    "setpoint_pa": ("pA", 0.1, 1e4, 50.0),
    "feedback_on": ("1 = constant current, 0 = constant height", 0.0, 1.0, 1.0),
    "height_ang": ("Angstrom above the Si plane", 2.5, 30.0, 7.0),
    "work_function_ev": ("eV", 1.0, 6.0, 4.5),
}
NEGATIVE_IMAGING_V = 3.0  # [V]
MIN_TIP_HEIGHT_ANG = 2.5  # apex above the Si plane; the H sit about 1.5 A above it
SAFE_IMAGING = 1e-3  # largest expected number of desorptions an image or dwell may cause; above it: Refused


class VirtualSTM(VirtualInstrument):
    """A virtual STM over `surface` (a twin.samples.HSurface, or "si100-h" built from `seed` with `sample`
    options). tip, feedback, noise, hdl: twin.stm.TipSpec, FeedbackSpec, StmNoiseSpec, hdl.HDLSpec.

    Example: VirtualSTM(seed=1).acquire_image(30.0, (15.0, 15.0), (64, 64), 1e-3)
    """

    CONTROLS = CONTROLS

    def __init__(self, surface="si100-h", *, seed: int = 0, controls: dict[str, float] | None = None, tip=None,
                 feedback=None, noise=None, hdl_spec=None, tip_has_h: bool = True, dose_bin_ang: float = 0.5,
                 **sample):
        from twin.samples import si100_h

        check_seed(seed)
        if isinstance(surface, str):
            if surface != "si100-h":
                raise Refused(f"surface={surface!r} is not allowed; the virtual STM knows 'si100-h' or an HSurface")
            surface = si100_h(seed=seed, **sample)
        self.sample_name = "si100-h"
        self._surface = surface
        self.extent = tuple(float(v) for v in surface.extent)
        self.tip, self.feedback = tip or stm.TipSpec(), feedback or stm.FeedbackSpec()
        self.noise, self.hdl = noise or stm.StmNoiseSpec(), hdl_spec or hdl.HDLSpec()
        self._setup(seed, controls, self.extent, dose_bin_ang)
        self._tip_xy, self._tip_has_h = (self.extent[0] / 2, self.extent[1] / 2), tip_has_h

    # --- the Instrument interface -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {"kind": "stm", "name": "VirtualSTM", "version": VERSION, "sample": self.sample_name,
                "channels": list(CHANNELS), "dose_control": "setpoint_pa",
                "controls": self.describe_controls(),
                "bounds_ang": [0.0, 0.0, self.extent[0], self.extent[1]]}

    def get_state(self) -> dict[str, Any]:
        return {"probe_ang": list(self._tip_xy), "blanked": self._blanked, "time_s": self._time,
                "controls": dict(self._controls), "tip_has_h": self._tip_has_h, "total_electrons": self._dose.total}

    def acquire_image(self, fov_ang, center_ang, shape_yx, dwell_s: float, rotation_rad: float = 0.0,
                      channels: Sequence[str] = ("height",)):
        x, y = protocol.scan_positions(fov_ang, center_ang, shape_yx, rotation_rad)
        if rotation_rad != 0:
            raise Refused(f"rotation_rad={rotation_rad!r} is not allowed; the virtual STM scans along x only (0)")
        dwell_s, channels = protocol.check_dwell(dwell_s), self._check_channels(channels)
        self._check_gentle(x.size * dwell_s)
        key = self._next_key()
        ny, nx = x.shape
        width, height = protocol.fov_sides(fov_ang)
        if self._blanked:
            data = {c: np.zeros((ny, nx)) for c in channels}
        else:
            out = stm.scan(key, self._surface, fov_ang=(width, height), center_ang=tuple(center_ang),
                           shape_yx=(ny, nx), dwell_s=dwell_s, **self._scan_options())
            data = {c: np.asarray(out[CHANNEL_KEYS[c]]) for c in channels}
            self._dose.deposit(x, y, self._electrons(dwell_s))
        self._time += x.size * dwell_s
        self._tip_xy = (float(x[-1, -1]), float(y[-1, -1]))
        coords = {"x": ("x", x[0], {"units": "Angstrom"}), "y": ("y", y[:, 0], {"units": "Angstrom"})}
        return self._dataset(data, coords, dwell_s, width / nx)

    def park_probe(self, x_ang: float, y_ang: float) -> None:
        self._tip_xy = protocol.check_point("(x_ang, y_ang)", (x_ang, y_ang))
        self._count += 1

    def dwell(self, x_ang: float, y_ang: float, dwell_s: float, channels: Sequence[str] = ("height",)):
        x, y = protocol.check_point("(x_ang, y_ang)", (x_ang, y_ang))
        dwell_s, channels = protocol.check_dwell(dwell_s), self._check_channels(channels)
        self._check_gentle(dwell_s)
        self._next_key()
        self._tip_xy = (x, y)
        z = self._tip_height()
        current = self.setpoint_current(z)
        values = {"height": z, "current": current, "error": np.log(current / self._controls["setpoint_pa"])}
        if not self._blanked:
            self._dose.deposit(np.array([x]), np.array([y]), self._electrons(dwell_s))
        self._time += dwell_s
        coords = {"x": ("x", [x], {"units": "Angstrom"}), "y": ("y", [y], {"units": "Angstrom"})}
        return self._dataset({c: np.array([[0.0 if self._blanked else values[c]]]) for c in channels}, coords,
                             dwell_s, 0.0)

    def blank(self) -> None:
        """Retract the tip (no current, no tunnelling)."""
        super().blank()

    def unblank(self) -> None:
        """Approach the tip again."""
        super().unblank()

    def close(self) -> None:
        pass

    # --- scanning-probe commands ---------------------------------------------------------------------------

    def pulse(self, bias_v: float, duration_s: float, height_offset_ang: float = 0.0) -> dict[str, float]:
        """A voltage pulse with the feedback off: the tip stops at the current position and setpoint height,
        moves by height_offset_ang (negative: closer) [Angstrom], applies bias_v [V] for duration_s [s].
        Returns the current at the start and at the end of the pulse [pA] (a desorption shows as a step)."""
        for name, value in (("bias_v", bias_v), ("duration_s", duration_s), ("height_offset_ang", height_offset_ang)):
            if not protocol._finite(value):
                raise Refused(f"pulse {name}={value!r} is not allowed; it must be a finite number")
        if duration_s <= 0:
            raise Refused(f"pulse duration_s={duration_s!r} is not allowed; it must be positive [s]")
        if self._blanked:
            raise Refused("pulse is not allowed with the tip retracted; unblank() first")
        z = self._tip_height() + height_offset_ang
        if z < MIN_TIP_HEIGHT_ANG:
            raise Refused(f"height_offset_ang={height_offset_ang!r} would crash the tip into the H ({z:.2f} A above "
                          f"the Si plane; allowed: >= {MIN_TIP_HEIGHT_ANG:g} A)")
        key = self._next_key()
        tip_xyz = np.array([*self._tip_xy, z])
        start = float(self.current(tip_xyz, bias_v))
        try:
            occupied, events = hdl.pulse(key, self._surface.occupied, self._surface.sites[:, :2],
                                         self._surface.present, np.array(self._tip_xy), bias_v=bias_v,
                                         current_pa=start, duration_s=duration_s, spec=self.hdl,
                                         extent=self.extent, t0_s=self._time)
        except ValueError as e:
            raise Refused(str(e)) from None
        self._surface = self._surface.with_occupancy(occupied)
        self._events.extend({**e, "command": self._count} for e in events)
        self._time += duration_s
        self._dose.deposit(np.array([self._tip_xy[0]]), np.array([self._tip_xy[1]]),
                           float(electrons_per_pixel(abs(start), duration_s)))
        return {"current_start_pa": start, "current_end_pa": float(self.current(tip_xyz, bias_v)),
                "bias_v": float(bias_v), "duration_s": float(duration_s), "height_ang": float(z)}

    def repassivate(self) -> dict[str, Any]:
        """Hand the tip's apex H to the dangling bond under the tip; the tip must carry an H."""
        key = self._next_key()
        try:
            occupied, has_h, events = hdl.repassivate(key, self._surface.occupied, self._surface.sites[:, :2],
                                                      self._surface.present, np.array(self._tip_xy),
                                                      tip_has_h=self._tip_has_h, spec=self.hdl, extent=self.extent,
                                                      t0_s=self._time)
        except ValueError as e:
            raise Refused(str(e)) from None
        self._surface, self._tip_has_h = self._surface.with_occupancy(occupied), has_h
        self._events.extend({**e, "command": self._count} for e in events)
        return {"tip_has_h": bool(has_h), "events": len(events)}

    def terminate_tip(self) -> None:
        """Pick up an H on the tip apex (the contact-and-retract step of Pavlicek et al.)."""
        self._tip_has_h = True
        self._count += 1

    # --- ground truth and helpers ---------------------------------------------------------------------------

    def truth(self) -> dict[str, Any]:
        """The surface (HSurface, with the H occupancy) and the event log."""
        return {"surface": self._surface, "events": [dict(e) for e in self._events]}

    def current(self, tip_xyz, bias_v: float) -> np.ndarray:
        """Noise-free tunnelling current [pA] with the tip apex at tip_xyz (..., 3) [Angstrom]."""
        return np.asarray(stm.current_at(self._surface, np.asarray(tip_xyz), bias_v, tip=self.tip,
                                         work_function_ev=self._controls["work_function_ev"]))

    def setpoint_current(self, z: float) -> float:
        return float(self.current(np.array([*self._tip_xy, z]), self._controls["bias_v"]))

    def _tip_height(self) -> float:
        if not self._controls["feedback_on"]:
            return self._controls["height_ang"]
        return float(stm.height_for_current(self._surface, np.array(self._tip_xy), self._controls["bias_v"],
                                            self._controls["setpoint_pa"], tip=self.tip,
                                            work_function_ev=self._controls["work_function_ev"]))

    def _scan_options(self) -> dict[str, Any]:
        c = self._controls
        mode = "constant-current" if c["feedback_on"] else "constant-height"
        return {"bias_v": c["bias_v"], "setpoint_pa": c["setpoint_pa"], "mode": mode, "height_ang": c["height_ang"],
                "tip": self.tip, "feedback": self.feedback, "noise": self.noise,
                "work_function_ev": c["work_function_ev"], "t0_s": self._time}

    def _check_gentle(self, duration_s: float) -> None:
        """Refuse imaging that the HDL model says would desorb H (imaging must not write). The model has no
        negative-bias channel, so filled-state imaging is allowed only below NEGATIVE_IMAGING_V in size."""
        bias = self._controls["bias_v"]
        if bias <= 0:
            if bias < -NEGATIVE_IMAGING_V:
                raise Refused(f"bias_v={bias:g} is not allowed for imaging; negative-bias desorption is not "
                              f"modelled, so filled-state imaging needs |bias_v| <= {NEGATIVE_IMAGING_V:g} V")
            return
        rate = float(np.max(hdl.desorption_rates(bias, np.array([self._controls["setpoint_pa"]]), self.hdl)))
        if rate * duration_s > SAFE_IMAGING:
            raise Refused(f"bias_v={self._controls['bias_v']:g} at setpoint_pa={self._controls['setpoint_pa']:g} "
                          f"would desorb H while imaging ({rate * duration_s:.2g} expected); use a gentler bias "
                          "or setpoint, or pulse()")

    def _electrons(self, dwell_s: float) -> float:
        return float(electrons_per_pixel(self._controls["setpoint_pa"], dwell_s))

    def _check_channels(self, channels) -> tuple[str, ...]:
        return super()._check_channels(channels, CHANNELS)

    def _dataset(self, data, coords, dwell_s, pixel):
        import xarray as xr

        variables = {c: (("y", "x"), np.asarray(v, float), {"units": CHANNEL_UNITS[c]}) for c, v in data.items()}
        attrs = {"bias_v": self._controls["bias_v"], "setpoint_pa": self._controls["setpoint_pa"],
                 "mode": "constant-current" if self._controls["feedback_on"] else "constant-height",
                 "dwell_s": dwell_s, "pixel_size_ang": pixel, "seed": self.seed, "command": self._count,
                 "time_s": self._time, "signal_origin": "virtual:stm", "sample": self.sample_name,
                 "retracted": int(self._blanked)}
        return xr.Dataset(variables, coords=coords, attrs=attrs)
