"""Dataset shards on disk: one netCDF4/HDF5 file per shard, written atomically, and manifest.json.

A shard holds samples [first, first + count) with dims ("sample", "y", "x") for images and masks, ("sample",
"atom") for the atom labels (padded with NaN / -1 to the shard's most atoms), ("sample", "cell", "vec") for
polarization, ("sample", "site") for DB occupancy, and one variable per drawn parameter ("param.<section>.<name>").
The manifest records the recipe, its hash, the twin version, the counts and every shard's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from twin.io import atomic_path

MANIFEST = "manifest.json"
FORMAT = "twin-dataset/1"
PADDING = {"atom_x": np.nan, "atom_y": np.nan, "atom_col": np.nan, "atom_row": np.nan, "atom_z": -1,
           "atom_class": -1}


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stack(samples: list[dict], name: str, fill) -> np.ndarray:
    """Arrays of different lengths along their first axis, padded with `fill` to one (n_samples, max, ...)."""
    arrays = [np.asarray(s[name]) for s in samples]
    longest = max(len(a) for a in arrays)
    dtype = np.result_type(arrays[0].dtype, np.asarray(fill).dtype)
    out = np.full((len(arrays), longest, *arrays[0].shape[1:]), fill, dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
    return out


def shard_dataset(samples: list[dict], first: int, attrs: dict):
    """The xarray.Dataset of one shard from the outputs of generate_sample."""
    import xarray as xr

    data = {name: (("sample", "y", "x"), np.stack([s[name] for s in samples]))
            for name in ("image", "clean", "mask", "heatmap")}
    for name, fill in PADDING.items():
        data[name] = (("sample", "atom"), _stack(samples, name, fill))
    if "polarization" in samples[0]:
        data["polarization"] = (("sample", "cell", "vec"), _stack(samples, "polarization", np.nan))
    if "db_occupancy" in samples[0]:
        data["db_occupancy"] = (("sample", "site"), _stack(samples, "db_occupancy", False).astype(np.int8))
    for name in sorted(samples[0]["parameters"]):  # one order whatever the recipe file's key order
        values = [s["parameters"][name] for s in samples]
        values = [json.dumps(v) if isinstance(v, (list, tuple)) else v for v in values]
        data[f"param.{name}"] = (("sample",), np.asarray(values, dtype=str if isinstance(values[0], str) else None))
    coords = {"sample": ("sample", np.arange(first, first + len(samples)))}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def write_shard(samples: list[dict], first: int, path: Path, attrs: dict) -> str:
    """Write one shard atomically; returns its sha256."""
    ds = shard_dataset(samples, first, attrs)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return sha256(path)


def read_manifest(directory: Path) -> dict | None:
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def write_manifest(directory: Path, manifest: dict) -> None:
    with atomic_path(Path(directory) / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        with open(tmp) as f:
            os.fsync(f.fileno())
