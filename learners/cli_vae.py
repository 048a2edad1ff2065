"""`twin fit rvae`: a rotation-invariant VAE of the patches around atoms (learners/vae.py).

    twin fit rvae --data runs/graphene --out rvae.twin --embed latents.csv         # labelled atoms of a dataset
    twin fit rvae --data scan.dm4 --atoms atoms.csv --out rvae.twin --embed latents.csv  # atoms from `twin locate`

Patches of PATCH_SIZE pixels are cut (bilinear) around every atom: from a twin dataset, around its labelled
atoms ("atom_col", "atom_row"); from an image, around the atoms of a CSV with columns x_ang, y_ang [Angstrom,
pixel (row, col) centred at ((col + 0.5) p, (row + 0.5) p)] as `twin locate` writes it. Patches that leave
the image are dropped. The embedding CSV has one row per patch: where it came from (sample, atom, x_px,
y_px, class), the angle [rad] and shift [pixels] with their posterior standard deviations, and the latents.
Errors are one `error: ...` line with exit status 2; nothing is written on error.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from learners.cli import app, fit_app  # noqa: F401
from twin.cli import _fail
from twin.io import atomic_path


@fit_app.command("rvae")
def fit_rvae(
    data: Annotated[Path, typer.Option(help="Dataset directory from `twin generate`, or an image file with --atoms.",
                                       metavar="DIR|IMAGE", show_default=False)],
    out: Annotated[Path, typer.Option(help="Model file to write.", metavar="MODEL", show_default=False)],
    atoms: Annotated[Path | None, typer.Option(help="Atoms CSV (x_ang, y_ang[, class]) of the image --data, "
                                                    "e.g. from `twin locate`.", metavar="CSV")] = None,
    pixel_size: Annotated[float | None, typer.Option(
        "--pixel-size", help="Pixel size [Angstrom] of the image; default: from the file (with --atoms).",
        metavar="ANG")] = None,
    index: Annotated[int, typer.Option(help="Image of a stack (with --atoms).")] = 0,
    patch_size: Annotated[int, typer.Option(help="Patch side [pixels].", metavar="PX")] = 32,
    latent_dim: Annotated[int, typer.Option(help="Latents besides the angle and the shift.", metavar="K")] = 2,
    epochs: Annotated[int, typer.Option(help="Passes over the patches.", metavar="N")] = 40,
    batch_size: Annotated[int, typer.Option(help="Patches per step.")] = 64,
    max_patches: Annotated[int, typer.Option(help="Use at most this many patches (the first ones).")] = 20000,
    symmetry: Annotated[int, typer.Option(help="n of an n-fold rotational symmetry of the patches: angles modulo "
                                               "360/n degrees (1: none; 3: a graphene site).", metavar="N")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed: initialization and batch order.")] = 0,
    embed: Annotated[Path | None, typer.Option(help="Also write each patch's angle, shift and latents.",
                                               metavar="CSV")] = None,
):
    """Train a rotation- and translation-invariant VAE on the patches around the atoms of --data."""
    from twin.cli import check_output

    try:
        _check_options(patch_size=patch_size, latent_dim=latent_dim, epochs=epochs, batch_size=batch_size,
                       max_patches=max_patches, symmetry=symmetry, pixel_size=pixel_size)
        check_output(out)
        if embed is not None:
            if embed.suffix.lower() != ".csv":
                raise ValueError(f"--embed {str(embed)!r} has suffix {embed.suffix!r}; allowed: .csv")
            check_output(embed)
        if atoms is None:
            patches, where = dataset_patches(data, patch_size)
        else:
            patches, where = image_patches(data, atoms, patch_size, pixel_size=pixel_size, index=index)
        patches, where = patches[:max_patches], {name: v[:max_patches] for name, v in where.items()}
        if len(patches) < batch_size:
            raise ValueError(f"--data {str(data)!r} gives {len(patches)} patches of {patch_size} px inside the "
                             f"images; give at least --batch-size {batch_size} (more atoms, a smaller "
                             "--patch-size or a smaller --batch-size)")
        mean, std = float(patches.mean()), float(patches.std())
        if not std > 0:
            raise ValueError(f"--data {str(data)!r}: every patch is constant; there is nothing to learn")
        arguments = {"patch_size": patch_size, "latent_dim": latent_dim, "symmetry": symmetry}
        model, history, code = _train(patches, mean, std, arguments, epochs=epochs, batch_size=batch_size, seed=seed)
        _write(out, embed, model, where, code, arguments=arguments,
               metadata={"normalization": {"mean": mean, "std": std}, "source": str(data),
                         "n_patches": len(patches), "epochs": epochs, "seed": seed, "final": history[-1]})
    except (ValueError, OSError) as e:
        _fail(str(e))
    typer.echo(f"trained on {len(patches)} patches of {patch_size} x {patch_size} px for {epochs} epochs: "
               f"loss {history[-1]['loss']:.4g}")
    typer.echo(f"wrote {out}" + (f" and {embed}" if embed is not None else ""))


def _check_options(**values) -> None:
    limits = {"patch_size": (4, 256), "latent_dim": (0, 64), "epochs": (1, 100000), "batch_size": (1, 65536),
              "max_patches": (1, 10 ** 8), "symmetry": (1, 12)}
    for name, (low, high) in limits.items():
        value = values[name]
        if not low <= value <= high:
            raise ValueError(f"--{name.replace('_', '-')} {value!r} is not allowed; give an integer from {low} "
                             f"to {high}")
    pixel = values["pixel_size"]
    if pixel is not None and not (0 < pixel < 100):
        raise ValueError(f"--pixel-size {pixel!r} is not allowed; give a number > 0 and < 100 [Angstrom]")


def dataset_patches(directory: Path, size: int) -> tuple[np.ndarray, dict]:
    """Patches (n, size, size) around the labelled atoms of every sample of a twin dataset, and where each
    came from: {"sample", "atom", "x_px", "y_px", "class"} arrays (n,)."""
    from learners.vae import extract_patches
    from twin.generate import open_dataset
    from twin.generate.store import read_manifest

    if not Path(directory).is_dir() or read_manifest(directory) is None:
        raise ValueError(f"--data {str(directory)!r} is not a twin dataset directory (no manifest.json); give "
                         "one from `twin generate`, or an image file with --atoms CSV")
    ds = open_dataset(directory)
    if "atom_col" not in ds or "atom_row" not in ds:
        raise ValueError(f"--data {str(directory)!r} has no atom labels (atom_col, atom_row); generate it with "
                         "labels = [\"atoms\", ...] in the recipe")
    images, cols, rows = ds["image"].values, ds["atom_col"].values, ds["atom_row"].values
    classes = ds["atom_class"].values if "atom_class" in ds else np.full(cols.shape, -1)
    patches, where = [], {"sample": [], "atom": [], "x_px": [], "y_px": [], "class": []}
    for sample, image in enumerate(images):
        coords = np.stack([cols[sample], rows[sample]], axis=-1)
        found, kept = extract_patches(image, coords, size)
        patches.append(found)
        for name, values in (("sample", np.full(len(kept), sample)), ("atom", kept), ("x_px", coords[kept, 0]),
                             ("y_px", coords[kept, 1]), ("class", classes[sample][kept])):
            where[name].append(values)
    return np.concatenate(patches), {name: np.concatenate(v) for name, v in where.items()}


def image_patches(image_path: Path, atoms_path: Path, size: int, *, pixel_size: float | None, index: int
                  ) -> tuple[np.ndarray, dict]:
    """Patches around the atoms of a CSV (x_ang, y_ang[, class]) in one image, and where each came from."""
    from learners.images import read_image
    from learners.vae import extract_patches

    x_ang, y_ang, classes = read_atoms_csv(atoms_path)
    image, file_pixel = read_image(image_path, index=index)
    pixel = pixel_size if pixel_size is not None else file_pixel
    if pixel is None:
        raise ValueError(f"IMAGE {str(image_path)!r} carries no pixel size; give --pixel-size ANG (e.g. 0.1)")
    coords = np.stack([x_ang / pixel - 0.5, y_ang / pixel - 0.5], axis=-1)
    patches, kept = extract_patches(image, coords, size)
    return patches, {"sample": np.full(len(kept), index), "atom": kept, "x_px": coords[kept, 0],
                     "y_px": coords[kept, 1], "class": classes[kept]}


def read_atoms_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x_ang, y_ang, class) arrays of an atoms CSV; class is "" where the file has no class column."""
    if not Path(path).is_file():
        raise ValueError(f"--atoms {str(path)!r} does not exist or is not a file")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        columns = set(rows[0]) if rows else set()
    missing = {"x_ang", "y_ang"} - columns
    if not rows or missing:
        raise ValueError(f"--atoms {str(path)!r} has no rows with the columns x_ang, y_ang (as `twin locate` "
                         f"writes them); missing: {sorted(missing) or 'every row'}")
    try:
        x, y = (np.array([float(row[name]) for row in rows]) for name in ("x_ang", "y_ang"))
    except (TypeError, ValueError):
        raise ValueError(f"--atoms {str(path)!r} has a non-numeric x_ang or y_ang value") from None
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"--atoms {str(path)!r} has NaN or infinite positions")
    return x, y, np.array([row.get("class") or "" for row in rows])


def _train(patches, mean, std, arguments: dict, *, epochs, batch_size, seed):
    import jax
    from flax import nnx
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from learners.vae import RVAE, encode, train_rvae
    from twin.io import enable_compilation_cache

    enable_compilation_cache()
    normalized = (patches - mean) / std
    key = jax.random.PRNGKey(seed)
    model = RVAE(**arguments, rngs=nnx.Rngs(jax.random.fold_in(key, 0)))
    with Progress(TextColumn("rVAE"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                  TextColumn("{task.fields[loss]}"), TimeRemainingColumn()) as bar:
        task = bar.add_task("fit", total=epochs, loss="")

        def on_epoch(epoch, metrics):
            bar.update(task, completed=epoch + 1, loss=f"loss {metrics['loss']:.4g}")

        model, history = train_rvae(model, normalized, key=jax.random.fold_in(key, 1), epochs=epochs,
                                    batch_size=batch_size, on_epoch=on_epoch)
    if not np.isfinite(history[-1]["loss"]):
        raise ValueError("training diverged (the loss is not finite); try a smaller --batch-size or other data")
    return model, history, encode(model, normalized)


def _write(out: Path, embed: Path | None, model, where: dict, code: dict, *, arguments: dict, metadata: dict):
    """The embedding to a temporary file, the model (atomically), then the embedding renamed into place."""
    from learners.train import save_model

    with contextlib.ExitStack() as stack:  # the embedding is renamed into place only if the model is written
        if embed is not None:
            stack.enter_context(atomic_path(embed)).write_text(_embedding_csv(where, code), encoding="utf-8")
        save_model(out, model, builder="rvae", arguments=arguments, metadata=metadata)


def _embedding_csv(where: dict, code: dict) -> str:
    k = code["z"].shape[1]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["sample", "atom", "x_px", "y_px", "class", "angle_rad", "angle_std_rad", "dx_px", "dy_px",
                     "dx_std_px", "dy_std_px", *(f"z{i + 1}" for i in range(k)),
                     *(f"z{i + 1}_std" for i in range(k))])
    for i in range(len(code["angle"])):
        writer.writerow([int(where["sample"][i]), int(where["atom"][i]), f"{where['x_px'][i]:.3f}",
                         f"{where['y_px'][i]:.3f}", where["class"][i], f"{code['angle'][i]:.5f}",
                         f"{code['angle_std'][i]:.5f}", *(f"{v:.4f}" for v in code["shift"][i]),
                         *(f"{v:.4f}" for v in code["shift_std"][i]), *(f"{v:.5f}" for v in code["z"][i]),
                         *(f"{v:.5f}" for v in code["z_std"][i])])
    return text.getvalue()
