"""The `twin` command with the learners' commands added: `twin fit ...`, `twin locate`, `twin segment`.

`twin` never imports `learners`, so the console script points here: this module takes twin's app and
registers the learners' commands on it (each in its own module, importing JAX lazily inside commands).
"""

from pathlib import Path
from typing import Annotated

import typer

from twin.cli import app

# Arguments that the commands reading one image share
ImageArgument = Annotated[Path, typer.Argument(help="Image file (.npy, .tif, .dm3/.dm4, .emd, a twin dataset, ...).",
                                               metavar="IMAGE", show_default=False)]
IndexOption = Annotated[int, typer.Option(help="Image of a stack or dataset.")]

fit_app = typer.Typer(help="Train a learner on a generated dataset.", no_args_is_help=True)
app.add_typer(fit_app, name="fit")

from learners import cli_atoms  # noqa: E402,F401  (fit atomfinder, locate)
from learners import cli_fewshot  # noqa: E402,F401  (fit fewshot, segment)
from learners import cli_vae  # noqa: E402,F401  (fit rvae)

if __name__ == "__main__":  # `python -m learners.cli`
    from learners.cli import app as _app

    _app()
