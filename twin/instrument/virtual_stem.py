"""VirtualSTEM: a simulated scanning transmission electron microscope behind the Instrument interface.

It owns the sample (ase.Atoms, periodic cell), the optics, a probe position, a beam blank, an instrument
clock and a dose map. Images come from signal fields (twin.stem.fields) at the caller's fidelity,
sampled where the probe really is (scan noise and drift from twin.acquisition move it) and counted by a
detector model. Command n draws its randomness from fold_in(PRNGKey(seed), n): the same seed and the same
command sequence give the same data, bit for bit. Sample dynamics (twin.dynamics) plug in as `dynamics`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from twin import acquisition
from twin.dynamics import MODELS, Exposure, advance, make_dynamics
from twin.instrument import protocol
from twin.instrument.protocol import Aborted, Refused
from twin.instrument.virtual import VirtualInstrument, check_seed
from twin.stem.fields import CHANNELS, DARK_FIELD, FIDELITIES, channel_angles, compute_field
from twin.stem.job import available_memory
from twin.stem.probe import ProbeSpec

VERSION = "twin-virtual-stem/1"
# Working memory of an acquisition: float64 positions, offsets and times; per channel the signal, counts
# and a padded copy [bytes per pixel].
BYTES_PER_PIXEL, BYTES_PER_CHANNEL = 12 * 8, 4 * 8
FIELD_CACHE = 16  # signal fields kept (per channel, optics and sample state)

# name: (unit, min, max, default). Aberrations are Krivanek coefficients.
CONTROLS = {
    "beam_energy_ev": ("eV", 20e3, 300e3, 60e3),
    "convergence_semiangle_rad": ("rad", 5e-3, 50e-3, 30e-3),
    "beam_current_pa": ("pA", 0.0, 1000.0, 30.0),
    "defocus_ang": ("Angstrom", -1e4, 1e4, 0.0),
    "cs_ang": ("Angstrom", -1e8, 1e8, 0.0),
    "c12_ang": ("Angstrom", 0.0, 1e4, 0.0),
    "phi12_rad": ("rad", -7.0, 7.0, 0.0),
    "c21_ang": ("Angstrom", 0.0, 1e6, 0.0),
    "phi21_rad": ("rad", -7.0, 7.0, 0.0),
    "c23_ang": ("Angstrom", 0.0, 1e6, 0.0),
    "phi23_rad": ("rad", -7.0, 7.0, 0.0),
    "source_size_ang": ("Angstrom", 0.0, 5.0, 0.0),
}
_KRIVANEK = {"defocus_ang": ("C10", -1.0), "cs_ang": ("C30", 1.0), "c12_ang": ("C12", 1.0),
             "phi12_rad": ("phi12", 1.0), "c21_ang": ("C21", 1.0), "phi21_rad": ("phi21", 1.0),
             "c23_ang": ("C23", 1.0), "phi23_rad": ("phi23", 1.0)}


class VirtualSTEM(VirtualInstrument):
    """A virtual STEM over `sample` (an ase.Atoms, or a name in twin.samples.SAMPLES built from `seed`).

    fidelity: "fast" (incoherent imaging; dark-field channels), "prism" or "multislice".
    controls: initial values of CONTROLS. scan_noise: acquisition.ScanNoiseSpec (None: ideal scan).
    detector: acquisition detector spec (default: a counting detector). artifacts: acquisition.ArtifactSpec.
    dynamics: how the sample changes under the beam: "auto" (the sample's own physics, e.g. Si jumps for
    graphene-si; static if it has none), "none", a name in twin.dynamics.MODELS or an AbstractDynamics.

    Example: VirtualSTEM("graphene-si", seed=1).acquire_image(20.0, (15.0, 15.0), (128, 128), 4e-6)
    """

    CONTROLS = CONTROLS

    def __init__(self, sample="graphene-si", *, seed: int = 0, fidelity: str = "fast",
                 controls: dict[str, float] | None = None, scan_noise=None, detector=None, artifacts=None,
                 dose_bin_ang: float = 0.25, dynamics="auto"):
        from twin.samples import named_sample
        from twin.structures import check_atoms

        if fidelity not in FIDELITIES:
            raise Refused(f"fidelity={fidelity!r} is not allowed; allowed: {', '.join(FIDELITIES)}")
        check_seed(seed)
        self.sample_name = sample if isinstance(sample, str) else "custom"
        atoms = named_sample(sample, seed) if isinstance(sample, str) else sample.copy()
        self.extent = check_atoms(atoms)[:2]
        self._atoms, self._initial = atoms, atoms.copy()
        self.fidelity = fidelity
        self.scan_noise = scan_noise or acquisition.ScanNoiseSpec()
        self.detector = detector or acquisition.CountingDetector()
        self.artifacts = artifacts
        try:
            self.dynamics = make_dynamics(dynamics, atoms, self.sample_name)
        except ValueError as e:
            raise Refused(str(e)) from None
        self._setup(seed, controls, self.extent, dose_bin_ang)
        self._probe = (self.extent[0] / 2, self.extent[1] / 2)
        self._fields: dict[tuple, Any] = {}
        self._version = 0  # sample state: one more after every event

    # --- the Instrument interface -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        channels = DARK_FIELD if self.fidelity == "fast" else tuple(CHANNELS)
        return {"kind": "stem", "name": "VirtualSTEM", "version": VERSION, "sample": self.sample_name,
                "fidelity": self.fidelity, "channels": list(channels),
                "controls": self.describe_controls(),
                "bounds_ang": [0.0, 0.0, self.extent[0], self.extent[1]]}

    def get_state(self) -> dict[str, Any]:
        return {"probe_ang": list(self._probe), "blanked": self._blanked, "time_s": self._time,
                "controls": dict(self._controls), "total_electrons": self._dose.total}

    def acquire_image(self, fov_ang, center_ang, shape_yx, dwell_s: float, rotation_rad: float = 0.0,
                      channels: Sequence[str] = ("haadf",)):
        x, y = protocol.scan_positions(fov_ang, center_ang, shape_yx, rotation_rad)
        dwell_s, channels = protocol.check_dwell(dwell_s), self._check_channels(channels)
        need = x.size * (BYTES_PER_PIXEL + BYTES_PER_CHANNEL * len(channels))
        if need > available_memory() / 2:
            raise Refused(f"shape_yx={tuple(shape_yx)} needs about {need / 2**30:.2g} GiB, more than half the "
                          f"{available_memory() / 2**30:.2g} GiB available; scan fewer pixels")
        key = self._next_key()
        ny, nx = x.shape
        width, height = protocol.fov_sides(fov_ang)
        pixel = width / nx
        dx, dy = (np.asarray(v, float) for v in
                  acquisition.probe_offsets(jax.random.fold_in(key, 0), (ny, nx), pixel, dwell_s, self.scan_noise,
                                            t0_s=self._time, scan_rotation_rad=rotation_rad))
        c, s = np.cos(rotation_rad), np.sin(rotation_rad)
        x_true, y_true = x + c * dx - s * dy, y + s * dx + c * dy
        times = np.asarray(acquisition.pixel_times((ny, nx), dwell_s, self.scan_noise.flyback_s), float)
        frame_s = ny * (nx * dwell_s + self.scan_noise.flyback_s)
        segments = self._expose(key, x_true.ravel(), y_true.ravel(), dwell_s, times.ravel(), frame_s)
        data = self._record(key, x_true, y_true, dwell_s, channels, segments)
        self._probe = (float(x_true[-1, -1]), float(y_true[-1, -1]))
        u = (np.arange(nx) + 0.5) * pixel - width / 2
        v = (np.arange(ny) + 0.5) * height / ny - height / 2
        coords = {"x": ("x", u + float(center_ang[0]), {"units": "Angstrom", "frame": "scan"}),
                  "y": ("y", v + float(center_ang[1]), {"units": "Angstrom", "frame": "scan"}),
                  "probe_x": (("y", "x"), x, {"units": "Angstrom", "frame": "sample, nominal"}),
                  "probe_y": (("y", "x"), y, {"units": "Angstrom", "frame": "sample, nominal"})}
        return self._dataset(data, coords, dwell_s, pixel, rotation_rad=float(rotation_rad),
                             frame_time_s=frame_s)

    def park_probe(self, x_ang: float, y_ang: float) -> None:
        self._probe = protocol.check_point("(x_ang, y_ang)", (x_ang, y_ang))
        self._count += 1

    def dwell(self, x_ang: float, y_ang: float, dwell_s: float, channels: Sequence[str] = ("haadf",)):
        x, y = protocol.check_point("(x_ang, y_ang)", (x_ang, y_ang))
        dwell_s, channels = protocol.check_dwell(dwell_s), self._check_channels(channels)
        key = self._next_key()
        xs, ys = np.array([[x]]), np.array([[y]])
        segments = self._expose(key, xs.ravel(), ys.ravel(), dwell_s, np.zeros(1), dwell_s)
        data = self._record(key, xs, ys, dwell_s, channels, segments)
        self._probe = (x, y)
        coords = {"x": ("x", [x], {"units": "Angstrom"}), "y": ("y", [y], {"units": "Angstrom"})}
        return self._dataset(data, coords, dwell_s, 0.0)

    def close(self) -> None:
        self._fields.clear()

    # --- ground truth and configuration --------------------------------------------------------------------

    def truth(self) -> dict[str, Any]:
        """The current sample (ase.Atoms copy) and the event log (time, dose, position, kind of each event)."""
        return {"atoms": self._atoms.copy(), "events": [dict(e) for e in self._events]}

    def ideal_signal(self, channel: str, x_ang, y_ang) -> np.ndarray:
        """The noise-free signal of `channel` [fraction of the beam] at probe positions x_ang, y_ang (any equal
        shapes) [Angstrom] for the current sample and optics: ground truth, not an instrument command."""
        return self._field(self._check_channels([channel])[0], self._atoms, self._version)(x_ang, y_ang)

    def config(self) -> dict[str, Any]:
        """JSON-able arguments that rebuild this instrument in its initial state (see `from_config`)."""
        sample = self.sample_name if self.sample_name != "custom" else {
            "numbers": self._initial.numbers.tolist(), "positions": self._initial.positions.tolist(),
            "cell": np.asarray(self._initial.cell).tolist()}
        specs = {name: None if spec is None else {"type": type(spec).__name__, **dataclasses.asdict(spec)}
                 for name, spec in (("scan_noise", self.scan_noise), ("detector", self.detector),
                                    ("artifacts", self.artifacts))}
        dynamics = None if self.dynamics is None else {"name": self.dynamics.name,
                                                       **dataclasses.asdict(self.dynamics)}
        return {"sample": sample, "seed": self.seed, "fidelity": self.fidelity,
                "controls": dict(self._start_controls), "dose_bin_ang": self._dose.bin_ang, "dynamics": dynamics,
                **specs}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VirtualSTEM:
        from ase import Atoms

        sample = config["sample"]
        if isinstance(sample, dict):
            sample = Atoms(numbers=sample["numbers"], positions=sample["positions"], cell=sample["cell"], pbc=True)
        specs = {name: None if spec is None else _spec(spec) for name, spec in config.items()
                 if name in ("scan_noise", "detector", "artifacts")}
        dynamics = dict(config["dynamics"] or {"name": "none"})
        name = dynamics.pop("name")
        return cls(sample, seed=config["seed"], fidelity=config["fidelity"], controls=config["controls"],
                   dose_bin_ang=config["dose_bin_ang"], dynamics=MODELS[name](**dynamics) if dynamics else name,
                   **specs)

    # --- internals -----------------------------------------------------------------------------------------

    def _check_channels(self, channels) -> tuple[str, ...]:
        return super()._check_channels(channels, self.describe()["channels"], f" at fidelity {self.fidelity!r}")

    def probe_spec(self) -> ProbeSpec:
        """The probe of the current optics."""
        aberrations = {}
        for name, (target, sign) in _KRIVANEK.items():
            aberrations[target] = sign * self._controls[name]
        return ProbeSpec(energy=self._controls["beam_energy_ev"],
                         semiangle=self._controls["convergence_semiangle_rad"] * 1e3, aberrations=aberrations)

    def _field(self, channel: str, atoms, version: int):
        """The signal field of `channel` for the sample state `version` (atoms) and the current optics."""
        key = (channel, tuple(sorted(self._controls.items())), version)
        if key not in self._fields:
            field = compute_field(atoms, self.probe_spec(), channel, self.fidelity)
            size = self._controls["source_size_ang"]
            self._fields[key] = field.blurred(size) if size > 0 else field
            while len(self._fields) > FIELD_CACHE:
                self._fields.pop(next(iter(self._fields)))
        return self._fields[key]

    def _record(self, key, x, y, dwell_s, channels, segments) -> dict[str, np.ndarray]:
        """Counts per channel at probe positions x, y (any shape); segments: (first pixel, atoms, version)
        of each sample state the exposure went through."""
        electrons = acquisition.electrons_per_pixel(self._controls["beam_current_pa"], dwell_s)
        bounds = [first for first, _, _ in segments[1:]] + [x.size]
        out = {}
        for i, channel in enumerate(channels):
            ideal = np.zeros(x.size)
            if not self._blanked:
                for (first, atoms, version), last in zip(segments, bounds):
                    field = self._field(channel, atoms, version)
                    ideal[first:last] = field(x.ravel()[first:last], y.ravel()[first:last])
            k = jax.random.fold_in(key, i + 1)
            flat = np.zeros(_bucket(ideal.size), np.float32)  # a few padded sizes: few compilations
            flat[:ideal.size] = ideal
            counts = acquisition.detect(k, flat, 0.0 if self._blanked else electrons, self.detector)
            if self.artifacts is not None:
                counts = acquisition.add_artifacts(jax.random.fold_in(k, 1000), counts, self.artifacts)
            out[channel] = np.asarray(counts)[:ideal.size].reshape(x.shape)
        if self._abort.is_set():
            raise Aborted("acquisition aborted; the beam is blanked")
        return out

    def _expose(self, key, x, y, dwell_s, times, duration_s: float) -> list[tuple[int, Any, int]]:
        """Deposit the dose of probe positions x, y (n,) [Angstrom] held for dwell_s each from times (n,)
        [s] after now, advance the clock and the sample. Returns the segments of `_record`."""
        t0, atoms0, version0 = self._time, self._atoms, self._version
        self._time = t0 + duration_s
        if self._blanked or self._controls["beam_current_pa"] == 0:
            return [(0, atoms0, version0)]
        current = self._controls["beam_current_pa"]
        electrons0 = self._dose.total
        self._dose.deposit(x, y, acquisition.electrons_per_pixel(current, dwell_s))
        if self.dynamics is None:
            return [(0, atoms0, version0)]
        exposure = Exposure(x=x, y=y, dwell_s=np.full(x.shape, dwell_s), t_s=t0 + times)
        self._atoms, events, states = advance(self.dynamics, jax.random.fold_in(key, 2000), atoms0, exposure,
                                              self.probe_spec(), current, electrons0)
        segments = [(0, atoms0, version0)]
        for event, atoms in zip(events, states):
            self._version += 1
            self._events.append({**event, "command": self._count})
            segments.append((event["pixel"] + 1, atoms, self._version))
        return segments

    def _dataset(self, data, coords, dwell_s, pixel, **extra):
        import xarray as xr

        variables = {}
        for name, counts in data.items():
            inner, outer = channel_angles(name, self._controls["convergence_semiangle_rad"] * 1e3)
            variables[name] = (("y", "x"), counts, {"units": "counts", "inner_mrad": inner, "outer_mrad": outer})
        electrons = acquisition.electrons_per_pixel(self._controls["beam_current_pa"], dwell_s)
        attrs = {"beam_energy_ev": self._controls["beam_energy_ev"],
                 "convergence_semiangle_rad": self._controls["convergence_semiangle_rad"],
                 "beam_current_pa": self._controls["beam_current_pa"], "dwell_s": dwell_s, "pixel_size_ang": pixel,
                 "electrons_per_pixel": 0.0 if self._blanked else float(electrons),
                 "dose_e_per_ang2": 0.0 if self._blanked or pixel == 0 else float(electrons) / pixel**2,
                 "seed": self.seed, "command": self._count, "time_s": self._time,
                 "signal_origin": f"virtual:{self.fidelity}", "sample": self.sample_name,
                 "blanked": int(self._blanked), **extra}
        return xr.Dataset(variables, coords=coords, attrs=attrs)


def _bucket(n: int) -> int:
    """The smallest power of two >= max(n, 256)."""
    return 1 << max(8, (n - 1).bit_length())


def _spec(spec: dict[str, Any]):
    values = dict(spec)
    cls = getattr(acquisition, values.pop("type"))
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
