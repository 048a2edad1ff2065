"""Reading one image for the learners' commands, with its pixel size when the file carries one.

    image, pixel_size_ang = read_image("scan.dm4")          # pixel size from the file's calibration
    image, pixel_size_ang = read_image("runs/graphene", index=3)   # sample 3 of a twin dataset

Formats: `.npy` (no calibration); `.tif`/`.tiff` (calibration from ImageJ or resolution tags when they
give a length unit); a twin dataset directory (`twin generate`) or a `twin simulate stem` file (`.h5`,
`.nc`); microscope files that RosettaSciIO reads (`.dm3`, `.dm4`, `.emd`, `.mrc`, `.ser`). Stacks take
the image `index`. The result is float32 with shape (ny, nx).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LENGTH_TO_ANG = {"a": 1.0, "å": 1.0, "ang": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01, "um": 1e4, "µm": 1e4,
                 "μm": 1e4, "micron": 1e4, "m": 1e10, "mm": 1e7, "cm": 1e8}
RSCIIO_READERS = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".emd": "emd", ".mrc": "mrc",
                  ".ser": "tia"}
SUFFIXES = (".npy", ".tif", ".tiff", ".h5", ".nc", *RSCIIO_READERS)


def read_image(path, *, index: int = 0) -> tuple[np.ndarray, float | None]:
    """(image float32 (ny, nx), pixel size [Angstrom] or None) from `path`; see the module docstring."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"IMAGE {str(path)!r} does not exist")
    if not (isinstance(index, int) and index >= 0):
        raise ValueError(f"--index {index!r} is not allowed; give an integer >= 0")
    suffix = path.suffix.lower()
    if path.is_dir():
        data, pixel = _twin_dataset(path, index)
    elif suffix == ".npy":
        data, pixel = np.load(path, allow_pickle=False), None
    elif suffix in (".tif", ".tiff"):
        data, pixel = _tiff(path)
    elif suffix in (".h5", ".nc"):
        data, pixel = _twin_simulation(path)
    elif suffix in RSCIIO_READERS:
        data, pixel = _rosettasciio(path, RSCIIO_READERS[suffix], index)
    else:
        raise ValueError(f"IMAGE {str(path)!r} has suffix {suffix!r}; allowed: a twin dataset directory or "
                         f"{', '.join(SUFFIXES)}")
    return _plane(np.asarray(data), path, index), pixel


def _plane(data: np.ndarray, path: Path, index: int) -> np.ndarray:
    """The 2-D image of `data`: squeezed, and image `index` of a (n, ny, nx) stack."""
    if data.dtype.kind not in "biuf":
        raise ValueError(f"IMAGE {str(path)!r} holds {data.dtype} data; give a real-valued image")
    data = np.squeeze(data)
    if data.ndim == 3:
        if index >= data.shape[0]:
            raise ValueError(f"--index {index} is out of range for the stack of {data.shape[0]} images in "
                             f"{str(path)!r}")
        data = data[index]
    if data.ndim != 2:
        raise ValueError(f"IMAGE {str(path)!r} has shape {data.shape} (rank {data.ndim}); give a 2-D image "
                         "(ny, nx) or a stack (n, ny, nx) with --index")
    if min(data.shape) < 8:
        raise ValueError(f"IMAGE {str(path)!r} has shape {data.shape}; give at least 8 x 8 pixels")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"IMAGE {str(path)!r} holds NaN or infinite values")
    return data.astype(np.float32)


def _to_ang(scale: float, unit) -> float | None:
    factor = LENGTH_TO_ANG.get(str(unit).strip().lower()) if unit is not None else None
    return float(scale) * factor if factor and scale and float(scale) > 0 else None


def _tiff(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        data = tif.asarray()
        unit = (tif.imagej_metadata or {}).get("unit")
        resolution = page.tags.get("XResolution")
        if unit is None and page.tags.get("ResolutionUnit") is not None:
            unit = {3: "cm"}.get(int(page.tags["ResolutionUnit"].value))  # 2 (inch) is not a length we take
    pixel = None
    if resolution is not None:
        numerator, denominator = resolution.value
        if numerator > 0:
            pixel = _to_ang(denominator / numerator, unit.replace("\\u00B5", "µ") if unit else None)
    return data, pixel


def _twin_dataset(path: Path, index: int):
    from twin.generate import open_dataset

    ds = open_dataset(path)
    n = ds.sizes["sample"]
    if index >= n:
        raise ValueError(f"--index {index} is out of range for the dataset {str(path)!r} of {n} samples")
    sample = ds.isel(sample=index)
    fov, pixels = float(sample["param.acquisition.fov_ang"]), int(sample["param.acquisition.pixels"])
    return sample["image"].values, fov / pixels


def _twin_simulation(path: Path):
    """The first (y, x) variable of a `twin simulate stem` file; pixel size from its x coordinate."""
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as ds:
        images = [name for name, var in ds.data_vars.items() if var.dims == ("y", "x")]
        if not images:
            raise ValueError(f"IMAGE {str(path)!r} holds no (y, x) image; its variables: {list(ds.data_vars)}")
        x = ds["x"].values if "x" in ds.coords else None
        data = ds[images[0]].values
    pixel = float(x[1] - x[0]) if x is not None and len(x) > 1 else None
    return data, pixel


def _rosettasciio(path: Path, reader: str, index: int):
    import importlib

    module = importlib.import_module(f"rsciio.{reader}")
    try:
        signals = module.file_reader(str(path))
    except Exception as error:
        raise ValueError(f"IMAGE {str(path)!r} could not be read as {path.suffix} ({error})") from None
    images = [s for s in signals if np.squeeze(s["data"]).ndim == 2] or signals
    if len(images) > 1 and index >= len(images):  # several images (e.g. HAADF and BF): --index picks one
        raise ValueError(f"--index {index} is out of range for the {len(images)} images in {str(path)!r}")
    signal = images[index] if len(images) > 1 else images[0]
    axes = [a for a in signal.get("axes", []) if a.get("size", 1) > 1]
    pixel = _to_ang(axes[-1].get("scale"), axes[-1].get("units")) if axes else None
    return signal["data"], pixel
