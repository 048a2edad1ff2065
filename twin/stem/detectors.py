"""Annular detectors that integrate the diffracted intensity between two scattering angles."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Presets as functions of the probe semi-angle a and the largest angle the grid carries [mrad].
PRESETS = {
    "BF": lambda a, top: (0.0, a),
    "ABF": lambda a, top: (a / 2, a),
    "ADF": lambda a, top: (a, min(3 * a, top)),
    "HAADF": lambda a, top: (max(3 * a, 50.0), top),
}


@dataclass(frozen=True, kw_only=True)
class AnnularDetector:
    """Sums the intensity at scattering angles inner <= alpha < outer [mrad]; `name` labels its image."""

    name: str
    inner: float
    outer: float

    def __post_init__(self):
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"detector name {self.name!r} is not allowed; use letters, digits and _")
        for label in ("inner", "outer"):
            value = getattr(self, label)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"detector {self.name} {label}={value!r} is not allowed; "
                                 "it must be a non-negative angle [mrad]")
        if not self.inner < self.outer:
            raise ValueError(f"detector {self.name}: inner={self.inner} mrad must be below outer={self.outer} mrad")

    def mask(self, alpha) -> np.ndarray:
        """1 where inner <= alpha < outer; alpha: scattering angles [rad] on the grid."""
        return ((alpha >= self.inner * 1e-3) & (alpha < self.outer * 1e-3)).astype(np.float64)


def preset(name: str, semiangle: float, max_angle: float) -> AnnularDetector:
    """The preset `name` (BF, ABF, ADF, HAADF) for a probe semi-angle and grid limit [mrad]."""
    if name not in PRESETS:
        raise ValueError(f"detector {name!r} needs angles NAME=INNER:OUTER [mrad], or is one of {', '.join(PRESETS)}")
    inner, outer = PRESETS[name](semiangle, max_angle)
    return AnnularDetector(name=name, inner=inner, outer=outer)
