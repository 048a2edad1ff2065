"""Figures of simulated images, written as PNG files."""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

import numpy as np
import xarray as xr

# Scale-bar lengths to choose from [Angstrom], as 1-2-5 steps per decade.
ROUND_STEPS = (1.0, 2.0, 5.0)


def scale_bar_length(width: float) -> float:
    """The largest 1-2-5 round length [Angstrom] not above a quarter of `width` [Angstrom].

    Example: scale_bar_length(12.3) == 2.0; scale_bar_length(42) == 10.0.
    """
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width={width!r} is not allowed; it must be a positive length [Angstrom]")
    target = width / 4
    decade = 10.0 ** math.floor(math.log10(target))
    return max(step * decade for step in ROUND_STEPS if step * decade <= target * (1 + 1e-9))


def _extent(image: xr.DataArray) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) [Angstrom] of pixel edges, from the x and y pixel-centre coordinates."""
    edges = []
    for axis in ("x", "y"):
        values = np.asarray(image[axis], dtype=np.float64)
        step = float(values[1] - values[0]) if len(values) > 1 else 1.0
        edges += [float(values[0]) - step / 2, float(values[-1]) + step / 2]
    return tuple(edges)


def save_image_png(image: xr.DataArray, path, title: str | None = None) -> Path:
    """Draw a (y, x) image with a colorbar and an Angstrom scale bar, and write it to `path` as PNG.

    image: DataArray with dims ("y", "x") and x, y coordinates [Angstrom]; its "units" attr labels the
    colorbar. The file is written atomically (a temporary file in the same folder, then renamed).
    Returns the path written.

    Example: save_image_png(dataset["HAADF"], "out/haadf.png", title="HAADF")
    """
    if set(image.dims) != {"y", "x"}:
        raise ValueError(f"image dims {image.dims} are not allowed; it must have dims ('y', 'x')")
    # A bare Figure renders PNG with the Agg canvas and leaves pyplot's global state (and backend) alone.
    from matplotlib.figure import Figure
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    path = Path(path)
    extent = _extent(image)
    length = scale_bar_length(extent[1] - extent[0])
    fig = Figure(figsize=(6, 6 * (extent[3] - extent[2]) / (extent[1] - extent[0]) + 0.6), layout="constrained")
    ax = fig.add_subplot()
    shown = ax.imshow(image.transpose("y", "x").values, extent=extent, origin="lower", cmap="gray",
                      interpolation="nearest")
    fig.colorbar(shown, ax=ax, label=image.attrs.get("units", ""), shrink=0.8)
    bar = AnchoredSizeBar(ax.transData, length, f"{length:g} Å", "lower left", pad=0.5, color="white",
                          frameon=False, size_vertical=(extent[3] - extent[2]) / 100, sep=4)
    ax.add_artist(bar)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name rather than tempfile.mkstemp, so the file gets the usual permissions (umask), not 0600.
    temp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fig.savefig(temp, format="png", dpi=150, bbox_inches="tight")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
