"""Raster scans of the probe over the cell."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class GridScan:
    """A raster of probe positions, as abTEM's GridScan(start, end, sampling=step, endpoint=False).

    step: largest allowed distance between positions [Angstrom]; region: (x0, y0, x1, y1) [Angstrom], or
    None for the whole cell. Each axis has ceil((end - start) / step) positions spaced (end - start) / n.
    """

    step: float
    region: tuple[float, float, float, float] | None = None

    def __post_init__(self):
        if not (isinstance(self.step, (int, float)) and math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"scan step={self.step!r} is not allowed; it must be a positive length [Angstrom]")
        if self.region is not None:
            if len(self.region) != 4 or not all(math.isfinite(v) for v in self.region):
                raise ValueError(f"scan region={self.region!r} is not allowed; give four numbers X0,Y0,X1,Y1 [Angstrom]")
            x0, y0, x1, y1 = self.region
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"scan region={self.region!r} is not allowed; it needs X0 < X1 and Y0 < Y1")

    def bounds(self, extent: tuple[float, float]) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) [Angstrom], checked against the cell `extent` = (x, y)."""
        if self.region is None:
            return (0.0, 0.0, float(extent[0]), float(extent[1]))
        x0, y0, x1, y1 = self.region
        tol = 1e-9 * max(extent)
        if x0 < -tol or y0 < -tol or x1 > extent[0] + tol or y1 > extent[1] + tol:
            raise ValueError(f"scan region={self.region} is outside the cell; allowed: 0 <= X0 < X1 <= "
                             f"{extent[0]:g} and 0 <= Y0 < Y1 <= {extent[1]:g} [Angstrom]")
        return tuple(float(v) for v in self.region)

    def coordinates(self, extent: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Probe coordinates (x (nx,), y (ny,)) [Angstrom]."""
        x0, y0, x1, y1 = self.bounds(extent)
        axes = []
        for start, end in ((x0, x1), (y0, y1)):
            n = max(1, math.ceil((end - start) / self.step - 1e-9))
            axes.append(start + np.arange(n) * (end - start) / n)
        return axes[0], axes[1]
