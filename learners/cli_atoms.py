"""`twin locate` and `twin fit atomfinder`: atom positions, classes and confidences from an image.

    twin locate scan.dm4 --out atoms.csv                       # built-in model, pixel size from the file
    twin locate scan.npy --pixel-size 0.1 --out atoms.csv --model my-atomfinder.twin
    twin locate runs/graphene --index 3 --out atoms.csv        # sample 3 of a twin dataset
    twin fit atomfinder --data runs/graphene --out my-atomfinder.twin --epochs 10

atoms.csv has the columns x_ang, y_ang, class, confidence: positions [Angstrom] from the image's top-left
corner (x along columns, y along rows; pixel (row, col) has its centre at ((col + 0.5) p, (row + 0.5) p)),
the class name of the model, and the ensemble's confidence in [0, 1]. Errors are one `error: ...` line with
exit status 2; nothing is written on error.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from learners.cli import ImageArgument, IndexOption, app, fit_app
from twin.cli import _fail
from twin.io import atomic_path

COLUMNS = ("x_ang", "y_ang", "class", "confidence")


@app.command("locate")
def locate_command(
    image: ImageArgument,
    out: Annotated[Path, typer.Option(help="CSV file: x_ang, y_ang, class, confidence.", metavar="CSV",
                                      show_default=False)],
    model: Annotated[str, typer.Option(help="'builtin' or a model file from `twin fit atomfinder`.",
                                       metavar="builtin|FILE")] = "builtin",
    pixel_size: Annotated[float | None, typer.Option(
        "--pixel-size", help="Pixel size [Angstrom]; default: from IMAGE (required when IMAGE has none).",
        metavar="ANG")] = None,
    index: IndexOption = 0,
    threshold: Annotated[float | None, typer.Option(help="Heatmap threshold of a detection (default: the "
                                                         "model's; 0.25 for builtin).")] = None,
    lattice: Annotated[bool | None, typer.Option(
        "--lattice/--no-lattice", help="Average positions with those their neighbours predict through the "
        "image's own lattice (default: the model's; on for builtin). Use --no-lattice to measure strain.",
        show_default=False)] = None,
):
    """Find the atoms in IMAGE and write their positions, classes and confidences to CSV."""
    from twin.cli import check_output

    try:
        if out.suffix.lower() != ".csv":
            raise ValueError(f"--out {str(out)!r} has suffix {out.suffix!r}; allowed: .csv")
        check_output(out)
        if pixel_size is not None and not (0 < pixel_size < 100):
            raise ValueError(f"--pixel-size {pixel_size!r} is not allowed; give a number > 0 and < 100 [Angstrom]")
        if threshold is not None and not (0 < threshold < 1):
            raise ValueError(f"--threshold {threshold!r} is not allowed; give a number in (0, 1)")
        from learners.images import read_image

        data, file_pixel = read_image(image, index=index)
        pixel = pixel_size if pixel_size is not None else file_pixel
        if pixel is None:
            raise ValueError(f"IMAGE {str(image)!r} carries no pixel size; give --pixel-size ANG (e.g. 0.1)")
        from learners.segment import load_atomfinder, locate

        network, metadata = load_atomfinder(model)
        start = time.perf_counter()
        found = locate(network, metadata, data, pixel, threshold=threshold, lattice=lattice)
        write_csv(out, found)
    except (ValueError, OSError) as e:
        _fail(str(e))
    counts = Counter(found["class"]).most_common()
    typer.echo(f"found {len(found['x_ang'])} atoms in {data.shape[1]} x {data.shape[0]} px at {pixel:.4g} A "
               f"in {time.perf_counter() - start:.1f} s: " + ", ".join(f"{name} {n}" for name, n in counts))
    typer.echo(f"wrote {out}")


def write_csv(path: Path, found: dict) -> None:
    """Write the COLUMNS of `found` (from learners.segment.locate) to `path` atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for x, y, name, confidence in zip(found["x_ang"], found["y_ang"], found["class"], found["confidence"]):
        writer.writerow([f"{x:.4f}", f"{y:.4f}", name, f"{confidence:.4f}"])
    with atomic_path(path) as temporary:
        temporary.write_text(text.getvalue(), encoding="utf-8")


@fit_app.command("atomfinder")
def fit_atomfinder(
    data: Annotated[Path, typer.Option(help="Dataset directory from `twin generate` (image and atom labels).",
                                       metavar="DIR", show_default=False)],
    out: Annotated[Path, typer.Option(help="Model file to write.", metavar="MODEL", show_default=False)],
    epochs: Annotated[int, typer.Option(help="Epochs of --steps steps each.")] = 10,
    steps: Annotated[int, typer.Option(help="Steps per epoch.")] = 100,
    batch: Annotated[int, typer.Option(help="Crops per step.")] = 8,
    crop: Annotated[int, typer.Option(help="Crop size [pixels at 0.2 A], a multiple of 4.")] = 64,
    members: Annotated[int, typer.Option(help="Networks in the ensemble (different initial weights).")] = 3,
    width: Annotated[int, typer.Option(help="U-Net channels of the first level: 1, 2, 4 or a multiple of 8.")] = 8,
    depth: Annotated[int, typer.Option(help="U-Net poolings.")] = 2,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate of Adam (cosine decay).")] = 3e-3,
    seed: Annotated[int, typer.Option(help="Random seed of the initialisation and the crops.")] = 0,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Orbax checkpoints; an interrupted run resumes.",
                                                        metavar="DIR")] = None,
):
    """Train an atom-finder ensemble on the images and atom labels in DIR and write MODEL."""
    from twin.cli import check_output

    try:
        check_output(out)
        for name, value, low in (("--epochs", epochs, 1), ("--steps", steps, 1), ("--batch", batch, 1),
                                 ("--members", members, 1), ("--depth", depth, 1), ("--seed", seed, 0)):
            if value < low:
                raise ValueError(f"{name} {value!r} is not allowed; give an integer >= {low}")
        if not (width in (1, 2, 4) or (width >= 8 and width % 8 == 0)):
            raise ValueError(f"--width {width!r} is not allowed; give 1, 2, 4 or a multiple of 8")
        if not (crop >= 2 ** depth and crop % 2 ** depth == 0):
            raise ValueError(f"--crop {crop!r} is not allowed; give a multiple of {2 ** depth} (2 ** --depth)")
        if not (0 < learning_rate < 1):
            raise ValueError(f"--learning-rate {learning_rate!r} is not allowed; give a number in (0, 1)")
        import jax

        from learners.segment import read_training_set, train_atomfinder
        from learners.train import save_model

        samples, table = read_training_set(data)
        start = time.perf_counter()

        def report(epoch, metrics):
            typer.echo(f"epoch {epoch + 1}/{epochs}: loss {metrics['loss']:.4f}, heatmap mse "
                       f"{metrics['heatmap_mse']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.3f} "
                       f"({time.perf_counter() - start:.0f} s)")

        network, metadata, _ = train_atomfinder(
            samples, table, key=jax.random.key(seed), epochs=epochs, steps_per_epoch=steps, batch_size=batch,
            crop_px=crop, members=members, depth=depth, width=width, learning_rate=learning_rate,
            checkpoint_dir=checkpoint_dir, on_epoch=report)
        metadata["training"]["data"] = str(data)
        save_model(out, network, builder="atomfinder", arguments=metadata["arguments"], metadata=metadata)
    except (ValueError, OSError) as e:
        _fail(str(e))
    typer.echo(f"wrote {out}")
