"""The `twin` command with the learners' commands added: `twin fit ...`, `twin locate`, `twin segment`.

`twin` never imports `learners`, so the console script points here: this module takes twin's app and
registers the learners' commands on it (each in its own module, importing JAX lazily inside commands).
"""

import typer

from twin.cli import app

fit_app = typer.Typer(help="Train a learner on a generated dataset.", no_args_is_help=True)
app.add_typer(fit_app, name="fit")

from learners import cli_atoms  # noqa: E402,F401  (fit atomfinder, locate)
from learners import cli_fewshot  # noqa: E402,F401  (fit fewshot, segment)
from learners import cli_vae  # noqa: E402,F401  (fit rvae)

if __name__ == "__main__":  # `python -m learners.cli`
    from learners.cli import app as _app

    _app()
