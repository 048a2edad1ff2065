"""`twin segment` and `twin fit fewshot`: few-shot segmentation from a few labelled points per class.

    twin segment scan.tif --support support.json --out mask.png
    twin segment scan.dm4 --support support.json --out mask.npy --model my-fewshot.twin --pixel-size 0.1
    twin fit fewshot --data runs/fewshot-tmd --out my-fewshot.twin --epochs 40

SUPPORT.json maps class names to labelled pixels, x = column and y = row (0-based, pixel centres at
integers); a class gives points, scribbles (polylines, every pixel they cross is labelled) or both:

    {"vacuum": [[3, 4], [120, 9]],
     "metal":  {"points": [[40, 41]], "scribbles": [[[60, 60], [64, 70], [70, 71]]]},
     "sulfur": {"scribbles": [[[10, 200], [30, 210]]]}}

The mask holds k for the k-th class of the file (uint8 in .png and .tif, int32 in .npy). Errors are one
`error: ...` line with exit status 2; nothing is written on error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from learners.cli import ImageArgument, IndexOption, app, fit_app
from twin.cli import _fail
from twin.io import atomic_path

MASK_SUFFIXES = (".npy", ".png", ".tif", ".tiff")


@app.command("segment")
def segment_command(
    image: ImageArgument,
    support: Annotated[Path, typer.Option(help="JSON file: class name -> labelled points and/or scribbles [pixels].",
                                          metavar="SUPPORT.json", show_default=False)],
    out: Annotated[Path, typer.Option(help="Mask file: .npy, .png or .tif (value k = k-th class).", metavar="MASK",
                                      show_default=False)],
    model: Annotated[str, typer.Option(help="'builtin' or a model file from `twin fit fewshot`.",
                                       metavar="builtin|FILE")] = "builtin",
    pixel_size: Annotated[float | None, typer.Option(
        "--pixel-size", help="Pixel size [Angstrom]; default: from IMAGE, else taken as the model's.",
        metavar="ANG")] = None,
    index: IndexOption = 0,
):
    """Segment IMAGE into the classes labelled in SUPPORT.json and write the label MASK."""
    from twin.cli import check_output

    try:
        if out.suffix.lower() not in MASK_SUFFIXES:
            raise ValueError(f"--out {str(out)!r} has suffix {out.suffix!r}; allowed: {', '.join(MASK_SUFFIXES)}")
        check_output(out)
        if pixel_size is not None and not (pixel_size > 0 and pixel_size < 1e4):
            raise ValueError(f"--pixel-size {pixel_size!r} is not allowed; give a number > 0 [Angstrom]")
        entries = _read_support(support)
        from learners.images import read_image

        data, file_pixel = read_image(image, index=index)
        from learners import fewshot

        network, metadata = fewshot.load_fewshot(model)
        start = time.perf_counter()
        labels, names, note = _segment_at_pixel_size(fewshot, network, metadata, data, entries,
                                                     pixel_size if pixel_size is not None else file_pixel)
        _write_mask(out, labels, len(names))
    except (ValueError, OSError) as e:
        _fail(str(e))
    counts = [int((labels == k).sum()) for k in range(len(names))]
    typer.echo(f"segmented {data.shape[1]} x {data.shape[0]} px in {time.perf_counter() - start:.1f} s{note}")
    for k, (name, count) in enumerate(zip(names, counts)):
        typer.echo(f"  {k}: {name} ({100 * count / labels.size:.1f} %)")
    typer.echo(f"wrote {out}")


def _read_support(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"--support {str(path)!r} does not exist or is not a file")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--support {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(entries, dict):
        raise ValueError(f"--support {str(path)!r} holds a {type(entries).__name__}; give an object mapping class "
                         f"names to points and/or scribbles")
    if len(entries) < 2:
        raise ValueError(f"--support {str(path)!r} has {len(entries)} class(es) {list(entries)}; give at least 2 "
                         f"classes")
    return entries


def _segment_at_pixel_size(fewshot, network, metadata, data, entries, pixel_size):
    """Resample the image (and the support) to the model's pixel size when they differ by > 10 %."""
    trained = metadata.get("pixel_size_ang")
    factor, note = 1.0, ""
    if pixel_size is not None and trained:
        low, high = trained
        if not (0.9 * low <= pixel_size <= 1.1 * high):
            factor = pixel_size / (0.5 * (low + high))
            note = f" (resampled x{factor:.2f} to the model's pixel size {0.5 * (low + high):.3f} A)"
    if factor == 1.0:
        labels, _, names = fewshot.segment(network, data, entries)
        return labels, names, note
    names, flat, classes = fewshot.support_pixels(entries, data.shape)
    small = fewshot.zoom(data, factor)
    y, x = divmod(flat, data.shape[1])
    scaled = {}
    for k, name in enumerate(names):
        xs = np.clip(np.round((x[classes == k] + 0.5) * factor - 0.5), 0, small.shape[1] - 1)
        ys = np.clip(np.round((y[classes == k] + 0.5) * factor - 0.5), 0, small.shape[0] - 1)
        scaled[name] = {"points": np.unique(np.column_stack([xs, ys]), axis=0).tolist()}
    _check_disjoint(scaled)
    labels, _, names = fewshot.segment(network, small, scaled)
    return _back(labels, data.shape), names, note


def _check_disjoint(scaled: dict) -> None:
    seen = {}
    for name, entry in scaled.items():
        for point in map(tuple, entry["points"]):
            if point in seen and seen[point] != name:
                raise ValueError(f"support classes {seen[point]!r} and {name!r} fall on one pixel after resampling "
                                 f"to the model's pixel size; label points further apart")
            seen[point] = name


def _back(labels, shape):
    """Nearest-neighbour resampling of labels back to `shape`."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int), labels.shape[1] - 1)
    return labels[np.ix_(rows, cols)]


def _write_mask(out: Path, labels, n_classes: int) -> None:
    suffix = out.suffix.lower()
    with atomic_path(out) as temporary:
        if suffix == ".npy":
            with open(temporary, "wb") as f:
                np.save(f, labels.astype(np.int32))
        elif suffix == ".png":
            from PIL import Image

            Image.fromarray(labels.astype(np.uint8)).save(temporary, format="PNG")
        else:
            import tifffile

            tifffile.imwrite(temporary, labels.astype(np.uint8))


@fit_app.command("fewshot")
def fit_fewshot(
    data: Annotated[Path, typer.Option(help="Dataset directory from `twin generate` (image and mask).",
                                       metavar="DIR", show_default=False)],
    out: Annotated[Path, typer.Option(help="Model file to write.", metavar="MODEL", show_default=False)],
    epochs: Annotated[int, typer.Option(help="Passes over the dataset (one episode per image each).")] = 40,
    crop: Annotated[int, typer.Option(help="Episode crop size [pixels], a multiple of 8.")] = 128,
    width: Annotated[int, typer.Option(help="U-Net channels of the first level (doubled per level).")] = 16,
    seed: Annotated[int, typer.Option(help="Random seed of the initialisation and the episodes.")] = 0,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Orbax checkpoints; an interrupted run resumes.",
                                                        metavar="DIR")] = None,
):
    """Train few-shot segmentation features episodically on the images and masks in DIR."""
    from twin.cli import check_output

    try:
        check_output(out)
        if not (isinstance(epochs, int) and epochs >= 1):
            raise ValueError(f"--epochs {epochs!r} is not allowed; give an integer >= 1")
        if not (isinstance(width, int) and width >= 1):
            raise ValueError(f"--width {width!r} is not allowed; give an integer >= 1")
        if not (crop >= 8 and crop % 8 == 0):
            raise ValueError(f"--crop {crop!r} is not allowed; give a multiple of 8, at least 8")
        from twin.generate import open_dataset

        ds = open_dataset(data)
        if "mask" not in ds or "image" not in ds:
            raise ValueError(f"--data {str(data)!r} has no 'image' and 'mask'; generate it with the mask label")
        images, masks = ds["image"].values, ds["mask"].values
        pixel = None
        if "param.acquisition.fov_ang" in ds and "param.acquisition.pixels" in ds:
            sizes = ds["param.acquisition.fov_ang"].values / ds["param.acquisition.pixels"].values
            pixel = [float(sizes.min()), float(sizes.max())]
        import jax

        from learners import fewshot

        start = time.perf_counter()

        def report(epoch, metrics):
            typer.echo(f"epoch {epoch + 1}/{epochs}: loss {metrics['loss']:.4f}, "
                       f"accuracy {metrics['accuracy']:.3f}")

        model, history, arguments = fewshot.train_fewshot(
            images, masks, epochs=epochs, key=jax.random.PRNGKey(seed), crop=min(crop, *images.shape[1:]),
            batch_size=min(4, len(images)), model_seed=seed, checkpoint_dir=checkpoint_dir, on_epoch=report,
            width=width)
        metadata = {"data": str(data), "epochs": epochs, "seconds": round(time.perf_counter() - start),
                    "final_epoch": history[-1] if history else {}}
        if pixel:
            metadata["pixel_size_ang"] = pixel
        fewshot.save_fewshot(out, model, arguments, metadata)
    except (ValueError, OSError) as e:
        _fail(str(e))
    typer.echo(f"wrote {out}")
