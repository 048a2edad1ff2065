"""What the virtual instruments share: controls with limits, blanking, the command counter and its keys, the
instrument clock and the dose map."""

from __future__ import annotations

import threading
from typing import Any

import jax

from twin.instrument import protocol
from twin.instrument.dosemap import DoseMap
from twin.instrument.protocol import Refused


def check_seed(seed) -> int:
    """`seed` if it is an integer in [0, 2**31), else Refused naming it."""
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**31):
        raise Refused(f"seed={seed!r} is not allowed; give an integer from 0 to 2**31 - 1")
    return seed


class VirtualInstrument:
    """Base of VirtualSTEM and VirtualSTM. CONTROLS: {name: (unit, min, max, default)}. Command n draws its
    randomness from fold_in(PRNGKey(seed), n), so the same seed and commands give the same data."""

    CONTROLS: dict[str, tuple[str, float, float, float]] = {}

    def _setup(self, seed: int, controls: dict[str, float] | None, extent, dose_bin_ang: float) -> None:
        self.seed = check_seed(seed)
        self._controls = {name: spec[3] for name, spec in self.CONTROLS.items()}
        for name, value in (controls or {}).items():
            self._check_control(name, value)
            self._controls[name] = float(value)
        self._start_controls = dict(self._controls)
        self._dose = DoseMap(extent, dose_bin_ang)
        self._blanked, self._time, self._count = False, 0.0, 0
        self._events: list[dict[str, Any]] = []
        self._abort = threading.Event()

    def describe_controls(self) -> dict[str, dict[str, Any]]:
        return {n: {"unit": u, "min": lo, "max": hi} for n, (u, lo, hi, _) in self.CONTROLS.items()}

    def blank(self) -> None:
        self._blanked = True
        self._count += 1

    def unblank(self) -> None:
        self._blanked = False
        self._abort.clear()
        self._count += 1

    def set_control(self, name: str, value: float) -> None:
        self._check_control(name, value)
        self._controls[name] = float(value)
        self._count += 1

    def get_control(self, name: str) -> float:
        if name not in self.CONTROLS:
            raise Refused(f"control {name!r} does not exist; allowed: {', '.join(self.CONTROLS)}")
        return self._controls[name]

    def dose(self):
        return self._dose.dataset()

    def abort(self) -> None:
        self._abort.set()
        self._blanked = True

    def _next_key(self):
        self._count += 1
        self._abort.clear()
        return jax.random.fold_in(jax.random.PRNGKey(self.seed), self._count)

    def _check_control(self, name, value) -> None:
        if name not in self.CONTROLS:
            raise Refused(f"control {name!r} does not exist; allowed: {', '.join(self.CONTROLS)}")
        unit, lo, hi, _ = self.CONTROLS[name]
        if not (protocol._finite(value) and lo <= value <= hi):
            raise Refused(f"{name}={value!r} is not allowed; allowed: {lo:g} to {hi:g} [{unit}]")

    def _check_channels(self, channels, allowed, context: str = "") -> tuple[str, ...]:
        channels = (channels,) if isinstance(channels, str) else tuple(channels)
        if not channels or any(c not in allowed for c in channels) or len(set(channels)) != len(channels):
            raise Refused(f"channels={list(channels)!r} is not allowed{context}; choose distinct names from "
                          f"{', '.join(allowed)}")
        return channels
