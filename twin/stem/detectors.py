"""Detectors: what is recorded of the diffracted intensity |Psi(k)|^2 at each probe position.

Every detector has `detect(intensity, grid)`: intensity (b, ny, nx) in FFT order on `grid`, in fractions
of the incident intensity; it returns (b, *shape) and names the extra axes in `dims(grid)`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from potentials.projected import spatial_frequencies

# Presets as functions of the probe semi-angle a and the largest angle the grid carries [mrad].
PRESETS = {
    "BF": lambda a, top: (0.0, a),
    "ABF": lambda a, top: (a / 2, a),
    "ADF": lambda a, top: (a, min(3 * a, top)),
    "HAADF": lambda a, top: (max(3 * a, 50.0), top),
}


@dataclass(frozen=True)
class KGrid:
    """The diffraction grid: shape (ny, nx), cell extent (x, y) [Angstrom], wavelength [Angstrom]."""

    shape: tuple[int, int]
    extent: tuple[float, float]
    wavelength: float

    @functools.cached_property
    def angles(self) -> tuple[np.ndarray, np.ndarray]:
        """(alpha_y (ny,), alpha_x (nx,)) scattering angles [mrad] along each axis, FFT order."""
        ky, kx = spatial_frequencies(self.shape, self.extent)
        return ky * self.wavelength * 1e3, kx * self.wavelength * 1e3

    @functools.cached_property
    def polar(self) -> tuple[np.ndarray, np.ndarray]:
        """(alpha [mrad], phi = atan2(alpha_y, alpha_x) [rad]) on the (ny, nx) grid."""
        ay, ax = self.angles
        return np.hypot(ay[:, None], ax[None, :]), np.arctan2(ay[:, None], ax[None, :])


def _check_angle(owner: str, label: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"detector {owner} {label}={value!r} is not allowed; it must be a non-negative angle [mrad]")


def _detect_masks(detector, intensity, grid: KGrid):
    masks = jnp.asarray(detector.masks(grid), dtype=intensity.dtype)
    return detector.from_masks(jnp.einsum("byx,myx->bm", intensity, masks))


def _check_name(name):
    if not name or not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"detector name {name!r} is not allowed; use letters, digits and _")


@dataclass(frozen=True, kw_only=True)
class AnnularDetector:
    """Sums the intensity at scattering angles inner <= alpha < outer [mrad]; `name` labels its image."""

    name: str
    inner: float
    outer: float

    def __post_init__(self):
        _check_name(self.name)
        _check_angle(self.name, "inner", self.inner)
        _check_angle(self.name, "outer", self.outer)
        if not self.inner < self.outer:
            raise ValueError(f"detector {self.name}: inner={self.inner} mrad must be below outer={self.outer} mrad")

    @property
    def max_angle(self) -> float:
        return self.outer

    def mask(self, alpha) -> np.ndarray:
        """1 where inner <= alpha < outer; alpha: scattering angles [rad] on the grid."""
        return ((alpha >= self.inner * 1e-3) & (alpha < self.outer * 1e-3)).astype(np.float64)

    def dims(self, grid: KGrid) -> dict:
        return {}

    def masks(self, grid: KGrid) -> np.ndarray:
        """(1, ny, nx): the detector as a mask on the grid."""
        return self.mask(grid.polar[0] * 1e-3)[None]

    def from_masks(self, values):
        """Output (b,) from the intensities (b, 1) on `masks`."""
        return values[:, 0]

    def detect(self, intensity, grid: KGrid):
        return _detect_masks(self, intensity, grid)


@dataclass(frozen=True, kw_only=True)
class SegmentedDetector:
    """An annulus inner <= alpha < outer [mrad] cut into `rings` x `segments` parts (DPC detectors).

    Segment j covers azimuths [rotation + 2 pi j / segments, rotation + 2 pi (j + 1) / segments) [rad],
    measured from +x towards +y; ring i covers [inner + i w, inner + (i + 1) w), w = (outer - inner) / rings.
    Output (rings, segments) per probe position, as abTEM's SegmentedDetector.
    """

    name: str
    inner: float
    outer: float
    segments: int = 4
    rings: int = 1
    rotation: float = 0.0

    def __post_init__(self):
        AnnularDetector.__post_init__(self)
        for label in ("segments", "rings"):
            value = getattr(self, label)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"detector {self.name} {label}={value!r} is not allowed; it must be an integer >= 1")

    max_angle = AnnularDetector.max_angle

    def labels(self, grid: KGrid) -> np.ndarray:
        """Flat bin index ring * segments + segment on the grid, -1 outside the annulus."""
        alpha, phi = grid.polar
        inside = (alpha >= self.inner) & (alpha < self.outer)
        ring = np.floor(self.rings * (alpha - self.inner) / (self.outer - self.inner)).astype(int)
        segment = np.floor(self.segments * (((phi - self.rotation) % (2 * np.pi)) / (2 * np.pi))).astype(int)
        return np.where(inside, np.clip(ring, 0, self.rings - 1) * self.segments
                        + np.clip(segment, 0, self.segments - 1), -1)

    def dims(self, grid: KGrid) -> dict:
        return {f"{self.name}_ring": np.arange(self.rings), f"{self.name}_segment": np.arange(self.segments)}

    def masks(self, grid: KGrid) -> np.ndarray:
        """(rings * segments, ny, nx): one mask per bin, ring-major."""
        labels = self.labels(grid)
        return np.stack([labels == i for i in range(self.rings * self.segments)]).astype(np.float64)

    def from_masks(self, values):
        """Output (b, rings, segments) from the intensities (b, rings * segments) on `masks`."""
        return values.reshape(-1, self.rings, self.segments)

    def detect(self, intensity, grid: KGrid):
        return _detect_masks(self, intensity, grid)


@dataclass(frozen=True, kw_only=True)
class CenterOfMassDetector:
    """Centre of mass of the diffraction pattern, sum I(alpha) alpha / sum I [mrad], as (x, y) components."""

    name: str = "com"

    def __post_init__(self):
        _check_name(self.name)

    max_angle = 0.0

    def dims(self, grid: KGrid) -> dict:
        return {"component": np.array(["x", "y"])}

    def detect(self, intensity, grid: KGrid):
        ay, ax = (jnp.asarray(a, dtype=intensity.dtype) for a in grid.angles)
        total = intensity.sum((-2, -1))
        com_x = jnp.einsum("byx,x->b", intensity, ax) / total
        com_y = jnp.einsum("byx,y->b", intensity, ay) / total
        return jnp.stack([com_x, com_y], -1)


@dataclass(frozen=True, kw_only=True)
class PixelatedDetector:
    """The whole diffraction pattern (4D-STEM), cropped to |alpha_x|, |alpha_y| <= max_angle [mrad].

    max_angle None keeps the antialiased range of the grid (the simulation fills it in). The pattern is
    centred (zero angle in the middle), with coordinates alpha_y, alpha_x [mrad] on dims ("ky", "kx").
    """

    name: str = "diffraction"
    max_angle: float | None = None

    def __post_init__(self):
        _check_name(self.name)
        _check_angle(self.name, "max_angle", self.max_angle, allow_none=True)

    def indices(self, grid: KGrid) -> tuple[np.ndarray, np.ndarray]:
        """(iy, ix): FFT-order rows and columns of the kept pattern on `grid`, centred order (zero angle mid)."""
        out = []
        for a in grid.angles:
            limit = abs(a).max() if self.max_angle is None else min(self.max_angle, abs(a).max())
            m = int(math.floor(limit / (abs(a[1]) if len(a) > 1 else 1.0) + 1e-9))
            out.append(np.arange(-m, m + 1) % len(a))
        return out[0], out[1]

    def dims(self, grid: KGrid) -> dict:
        iy, ix = self.indices(grid)
        return {"ky": grid.angles[0][iy], "kx": grid.angles[1][ix]}

    def detect(self, intensity, grid: KGrid):
        iy, ix = self.indices(grid)
        return intensity[:, iy][:, :, ix]


DETECTORS = (AnnularDetector, SegmentedDetector, CenterOfMassDetector, PixelatedDetector)


def preset(name: str, semiangle: float, max_angle: float) -> AnnularDetector:
    """The preset `name` (BF, ABF, ADF, HAADF) for a probe semi-angle and grid limit [mrad]."""
    if name not in PRESETS:
        raise ValueError(f"detector {name!r} needs angles NAME=INNER:OUTER [mrad], or is one of {', '.join(PRESETS)}")
    inner, outer = PRESETS[name](semiangle, max_angle)
    return AnnularDetector(name=name, inner=inner, outer=outer)
