"""A sample drawn with its labels."""

from __future__ import annotations

import numpy as np

from twin.io import atomic_path


def save_sample_png(sample, path) -> None:
    """Write the image of one dataset sample (xarray, no sample dim) with its atoms marked by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(np.atleast_1d(sample.attrs.get("classes", [])))
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(sample["image"].values, cmap="gray", origin="lower")
    keep = np.asarray(sample["atom_class"].values) >= 0
    cls = np.asarray(sample["atom_class"].values)[keep].astype(int)
    col, row = np.asarray(sample["atom_col"].values)[keep], np.asarray(sample["atom_row"].values)[keep]
    for c in np.unique(cls):
        name = classes[c] if c < len(classes) else str(c)
        ax.scatter(col[cls == c], row[cls == c], s=12, facecolors="none", label=name,
                   edgecolors=plt.cm.tab10(c % 10))
    ax.legend(loc="upper right", fontsize=8)
    ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
