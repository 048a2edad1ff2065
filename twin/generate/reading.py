"""Reading a generated dataset: lazily as one xarray.Dataset, or as shuffled numpy batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twin.generate.store import PADDING, read_manifest, shard_name

BATCH_VARIABLES = ("image", "clean", "mask", "heatmap")
RAGGED = ("atom", "cell", "site")


def _shards(directory) -> list[Path]:
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise ValueError(f"{str(directory)!r} is not a twin dataset (no manifest.json)")
    if not manifest.get("complete"):
        raise ValueError(f"the dataset in {str(directory)!r} is incomplete; finish it with `twin generate ... --resume`")
    n = -(-manifest["n_samples"] // manifest["shard_size"])
    return [directory / shard_name(k) for k in range(n)]


def open_dataset(directory):
    """The whole dataset as a lazy (dask-backed) xarray.Dataset with dims (sample, y, x, atom, ...); the
    ragged dims (atom, cell, site) are padded to the longest shard as in the store (NaN, -1 or 0)."""
    import xarray as xr

    shards = [xr.open_dataset(path, engine="h5netcdf", chunks={}) for path in _shards(directory)]
    longest = {dim: max(ds.sizes.get(dim, 0) for ds in shards) for dim in RAGGED}
    return xr.concat([_pad(ds, longest) for ds in shards], dim="sample", data_vars="all", coords="minimal",
                     compat="override", combine_attrs="drop_conflicts")


def _pad(ds, longest: dict):
    """`ds` with its ragged dims padded to `longest`, each variable with its store fill value."""
    import xarray as xr

    variables = {}
    for name, var in ds.data_vars.items():
        widths = {dim: (0, longest[dim] - ds.sizes[dim]) for dim in var.dims if dim in longest}
        if any(w[1] for w in widths.values()):
            fill = PADDING.get(name, np.nan if var.dtype.kind == "f" else 0)
            var = var.pad(widths, constant_values=fill).astype(var.dtype)
        variables[name] = var
    return xr.Dataset(variables, coords=ds.coords, attrs=ds.attrs)


def batches(directory, batch_size: int, key, variables=BATCH_VARIABLES):
    """Yield dicts of numpy arrays (batch_size, ...) of `variables` in an order shuffled by the jax `key`;
    the last batch may be smaller. Every sample appears once per pass."""
    import jax

    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r} is not allowed; give an integer >= 1")
    ds = open_dataset(directory)
    order = np.asarray(jax.random.permutation(key, ds.sizes["sample"]))
    for start in range(0, len(order), batch_size):
        chosen = np.sort(order[start:start + batch_size])
        part = ds[list(variables)].isel(sample=chosen).load()
        inverse = np.argsort(np.argsort(order[start:start + batch_size]))
        yield {name: part[name].values[inverse] for name in variables}
