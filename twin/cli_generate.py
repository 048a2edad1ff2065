"""`twin generate` and `twin datasets`: labelled training sets from recipes, and looking at them.

    twin generate datasets/recipes/graphene-dopants.toml --out data/graphene --n 256 --workers 2
    twin datasets info data/graphene
    twin datasets verify data/graphene
    twin datasets show data/graphene 7 --out sample7.png

Errors are one `error: ...` line with exit status 2, as in twin.cli.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from twin.cli import _fail, _OneLineErrors, app

datasets_app = typer.Typer(cls=_OneLineErrors, help="Inspect generated datasets.", no_args_is_help=True,
                           rich_markup_mode=None)
app.add_typer(datasets_app, name="datasets")


@app.command("generate")
def generate(
    recipe: Annotated[Path, typer.Argument(help="Recipe file (TOML), e.g. datasets/recipes/graphene-dopants.toml.",
                                           metavar="RECIPE", show_default=False)],
    out: Annotated[Path, typer.Option(help="Dataset directory (new, or an interrupted one with --resume).",
                                      metavar="DIR", show_default=False)],
    n: Annotated[int | None, typer.Option(help="Number of samples (default: the recipe's n_samples).")] = None,
    workers: Annotated[int, typer.Option(help="Local Dask worker processes (0: run in this process).")] = 2,
    scheduler: Annotated[str | None, typer.Option(help="Address of an existing Dask scheduler.",
                                                  metavar="ADDRESS")] = None,
    resume: Annotated[bool, typer.Option(help="Complete an interrupted run in DIR.")] = False,
    shard_size: Annotated[int, typer.Option(help="Samples per shard file.")] = 16,
):
    """Generate the labelled dataset of RECIPE into DIR (sample i depends only on the recipe and i)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from twin.generate.engine import generate as run
    from twin.generate.recipe import load_recipe

    try:
        parsed = load_recipe(recipe)
        total = parsed.n_samples if n is None else n
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn()) as bar:
            task = bar.add_task(parsed.name, total=total, rate="")
            start = time.perf_counter()

            def progress(done, _total):
                elapsed = time.perf_counter() - start
                bar.update(task, completed=done, rate=f"{done / max(elapsed, 1e-9):.2f} samples/s")

            manifest = run(parsed, out, n_samples=n, shard_size=shard_size, workers=workers, scheduler=scheduler,
                           resume=resume, progress=progress)
    except (ValueError, OSError) as e:
        _fail(f"{e}" + ("; the finished shards are kept, run again with --resume" if isinstance(e, OSError) else ""))
    typer.echo(f"wrote {manifest['n_samples']} samples in {len(manifest['shards'])} shards to {out}")


@datasets_app.command("info")
def info(directory: Annotated[Path, typer.Argument(metavar="DIR", help="Dataset directory.")]):
    """Recipe, counts, variables and sizes of the dataset in DIR."""
    from twin.generate import open_dataset
    from twin.generate.store import read_manifest

    manifest = read_manifest(directory)
    if manifest is None:
        _fail(f"DIR {str(directory)!r} is not a twin dataset (no manifest.json)")
    typer.echo(f"recipe {manifest['recipe']['name']} (sha256 {manifest['recipe_hash'][:12]}), twin "
               f"{manifest['twin_version']}, {manifest['n_samples']} samples in {len(manifest['shards'])} shards of "
               f"{manifest['shard_size']}, complete: {manifest['complete']}")
    if manifest["complete"]:
        ds = open_dataset(directory)
        for name, var in ds.data_vars.items():
            typer.echo(f"  {name}: {dict(var.sizes)} {var.dtype}")


@datasets_app.command("verify")
def verify(directory: Annotated[Path, typer.Argument(metavar="DIR", help="Dataset directory.")]):
    """Check every shard against the manifest's checksums; exit 1 if anything is wrong."""
    from twin.generate.engine import verify as check

    problems = check(directory)
    for line in problems:
        typer.echo(line)
    typer.echo("ok" if not problems else f"{len(problems)} problems")
    raise typer.Exit(1 if problems else 0)


@datasets_app.command("show")
def show(directory: Annotated[Path, typer.Argument(metavar="DIR", help="Dataset directory.")],
         index: Annotated[int, typer.Argument(metavar="INDEX", help="Sample index.")],
         out: Annotated[Path, typer.Option(help="PNG file.", metavar="PNG", show_default=False)]):
    """Draw sample INDEX with its atom labels (class-coloured markers) into a PNG."""
    from twin.cli import check_output
    from twin.generate import open_dataset
    from twin.generate.plot import save_sample_png

    try:
        check_output(out)
        ds = open_dataset(directory)
        if not 0 <= index < ds.sizes["sample"]:
            raise ValueError(f"INDEX {index} is not allowed; the dataset has samples 0 to {ds.sizes['sample'] - 1}")
        save_sample_png(ds.isel(sample=index).load(), out)
    except (ValueError, OSError) as e:
        _fail(str(e))
    typer.echo(f"wrote {out}")
