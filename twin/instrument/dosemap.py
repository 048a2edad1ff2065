"""The cumulative dose map that virtual instruments keep: electrons per bin of a periodic cell."""

from __future__ import annotations

import numpy as np

from twin.instrument import protocol
from twin.instrument.protocol import Refused


class DoseMap:
    """Electrons delivered per bin of about `bin_ang` [Angstrom] over a periodic cell of `extent` (x, y)."""

    def __init__(self, extent: tuple[float, float], bin_ang: float):
        if not (protocol._finite(bin_ang) and bin_ang > 0):
            raise Refused(f"dose_bin_ang={bin_ang!r} is not allowed; it must be a positive length [Angstrom]")
        self.extent, self.bin_ang = extent, float(bin_ang)
        self.shape = tuple(max(1, int(np.ceil(side / bin_ang))) for side in (extent[1], extent[0]))
        self.electrons = np.zeros(self.shape)

    @property
    def total(self) -> float:
        return float(self.electrons.sum())

    def deposit(self, x, y, electrons) -> None:
        """Add `electrons` (scalar or per position) at positions x, y [Angstrom], wrapped into the cell."""
        rows = (np.mod(np.asarray(y) / self.extent[1], 1.0) * self.shape[0]).astype(int) % self.shape[0]
        cols = (np.mod(np.asarray(x) / self.extent[0], 1.0) * self.shape[1]).astype(int) % self.shape[1]
        np.add.at(self.electrons, (rows, cols), electrons)

    def dataset(self):
        """xarray.Dataset: "dose" (y, x) [electrons/Angstrom^2], attrs total_electrons, budget_left_e (inf),
        bin_x_ang, bin_y_ang."""
        import xarray as xr

        bin_y, bin_x = self.extent[1] / self.shape[0], self.extent[0] / self.shape[1]
        y = (np.arange(self.shape[0]) + 0.5) * bin_y
        x = (np.arange(self.shape[1]) + 0.5) * bin_x
        return xr.Dataset({"dose": (("y", "x"), self.electrons / (bin_x * bin_y), {"units": "electrons/Angstrom^2"})},
                          coords={"y": ("y", y, {"units": "Angstrom"}), "x": ("x", x, {"units": "Angstrom"})},
                          attrs={"total_electrons": self.total, "budget_left_e": float("inf"), "bin_x_ang": bin_x,
                                 "bin_y_ang": bin_y})
