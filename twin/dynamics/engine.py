"""Kinetic Monte Carlo under the beam: sample events driven by dose, pixel by pixel.

Each event channel c has a cross section sigma_c [barn] and a struck atom at r_c; with the probe at r_n the
rate is sigma_c (I / e) P(r_c - r_n), P the probe intensity [1/Angstrom^2, integral 1] of the current optics
(`probe_field`, periodic over the cell, aberrations included). Over a sequence of probe positions held for
dwell times t_n the process is a Poisson process with piecewise-constant rates; `advance` samples it
exactly: the first event comes where the cumulative hazard sum_n sum_c rate_cn t_n passes an Exp(1) draw,
its channel with probability rate_cn / sum_c rate_cn at that pixel, and after the event (which changes the
sample and so the channels) the clock restarts from that instant inside that pixel.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from potentials import units
from twin.stem.fields import SignalField
from twin.stem.fast import nyquist_shape, probe_transfer
from twin.stem.probe import ProbeSpec

BARN = 1e-8  # [Angstrom^2]
NEGLIGIBLE_BARN = 1e-12  # channels below this are dropped: one event would need 1e20 e/A^2
CHUNK = 1 << 20  # rates evaluated at most this many (channel, pixel) pairs at a time


@dataclass(frozen=True)
class Channel:
    """One way the sample can change: `kind`, the struck atom's index in the atoms, its cross section [barn],
    and model-specific `data` (e.g. the site the dopant moves to)."""

    kind: str
    atom: int
    cross_section_barn: float
    data: tuple = field(default=())


class AbstractDynamics(abc.ABC):
    """A sample's physics under the beam: which channels exist in a state, and what each one does."""

    name: str = ""

    @abc.abstractmethod
    def check(self, atoms) -> None:
        """Raise ValueError if `atoms` is not a sample this model describes."""

    @abc.abstractmethod
    def channels(self, atoms, beam_energy_ev: float) -> list[Channel]:
        """The channels open in the state `atoms` at `beam_energy_ev` [eV]."""

    @abc.abstractmethod
    def apply(self, key, atoms, channel: Channel):
        """The sample after `channel` fires (a new ase.Atoms; `atoms` is not changed)."""


def probe_field(probe: ProbeSpec, extent: tuple[float, float]) -> SignalField:
    """P(r) [1/Angstrom^2] of `probe` (vacuum, entrance plane), periodic over a cell of `extent` (x, y)."""
    transfer = probe_transfer(probe, nyquist_shape(probe, extent), extent)
    return SignalField(transfer / (extent[0] * extent[1]), extent)


@dataclass
class Exposure:
    """Probe positions x, y (n,) [Angstrom] held for dwell_s (n,) [s], starting at times t_s (n,) [s]."""

    x: np.ndarray
    y: np.ndarray
    dwell_s: np.ndarray
    t_s: np.ndarray


def advance(dynamics: AbstractDynamics, key, atoms, exposure: Exposure, probe: ProbeSpec, current_pa: float,
            electrons0: float = 0.0, max_events: int = 10_000):
    """Run the sample through `exposure`. Returns (atoms after, events, states): events are dicts with
    time_s, kind, atom, x_ang, y_ang (the struck atom), probe_x_ang, probe_y_ang, pixel, electrons (delivered
    in the session up to the event, from electrons0); states[k] is the sample after event k."""
    flux = current_pa * 1e-12 / units.E
    extent = tuple(float(v) for v in atoms.cell.lengths()[:2])
    field_p = probe_field(probe, extent)
    events, states = [], []
    start, used = 0, 0.0  # pixel where the clock stands and the fraction of its dwell already spent
    n = len(exposure.x)
    while start < n and len(events) < max_events:
        channels = [c for c in dynamics.channels(atoms, probe.energy) if c.cross_section_barn >= NEGLIGIBLE_BARN]
        if not channels:
            break
        key, k_time, k_pick = jax.random.split(key, 3)
        target = float(jax.random.exponential(k_time))
        found = _first_crossing(channels, atoms, exposure, start, used, field_p, flux, target)
        if found is None:
            break
        pixel, fraction, rates = found
        channel = channels[_pick(k_pick, rates)]
        x, y = atoms.positions[channel.atom, :2]
        electrons = electrons0 + flux * (float(np.sum(exposure.dwell_s[:pixel])) + fraction * exposure.dwell_s[pixel])
        atoms = dynamics.apply(jax.random.fold_in(k_pick, 1), atoms, channel)
        events.append({"time_s": float(exposure.t_s[pixel] + fraction * exposure.dwell_s[pixel]),
                       "kind": channel.kind, "atom": int(channel.atom), "x_ang": float(x), "y_ang": float(y),
                       "probe_x_ang": float(exposure.x[pixel]), "probe_y_ang": float(exposure.y[pixel]),
                       "pixel": int(pixel), "electrons": float(electrons)})
        states.append(atoms)
        start, used = pixel, fraction
    return atoms, events, states


def _first_crossing(channels, atoms, exposure, start, used, field_p, flux, target):
    """(pixel, fraction of its dwell, rates per channel there) where the cumulative hazard from (start, used)
    reaches `target`, or None if it never does within the exposure."""
    struck = atoms.positions[[c.atom for c in channels], :2]
    sigma = np.array([c.cross_section_barn for c in channels]) * BARN * flux
    total = 0.0
    step = max(1, CHUNK // len(channels))
    for first in range(start, len(exposure.x), step):
        last = min(first + step, len(exposure.x))
        rates = sigma[:, None] * field_p(struck[:, :1] - exposure.x[None, first:last],
                                         struck[:, 1:] - exposure.y[None, first:last])  # (channels, pixels)
        rates = np.maximum(rates, 0.0)  # spline ringing must not make a negative rate
        remaining = exposure.dwell_s[first:last].copy()
        if first == start:
            remaining[0] *= 1.0 - used
        hazard = np.cumsum(rates.sum(0) * remaining) + total
        if hazard[-1] >= target:
            i = int(np.searchsorted(hazard, target))
            before = hazard[i - 1] if i else total
            offset = (target - before) / (rates[:, i].sum() * exposure.dwell_s[first + i])
            fraction = (used if first + i == start else 0.0) + offset
            return first + i, min(fraction, 1.0), rates[:, i]
        total = hazard[-1]
    return None


def _pick(key, weights: np.ndarray) -> int:
    cumulative = np.cumsum(weights)
    return int(min(np.searchsorted(cumulative, float(jax.random.uniform(key)) * cumulative[-1], side="right"),
                   len(weights) - 1))


def event_summary(events: list[dict[str, Any]]) -> dict[str, int]:
    """Count of events per kind."""
    counts: dict[str, int] = {}
    for e in events:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    return counts
