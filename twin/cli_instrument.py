"""`twin serve`, `twin keys` and `twin replay`: the virtual instrument on the command line.

    twin keys create ~/.twin/keys
    twin serve stem --sample graphene-si --port 5555 --keys ~/.twin/keys --record session1
    twin replay session1

Errors are one `error: ...` line with exit status 2, as in twin.cli.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from twin.cli import _fail, _OneLineErrors, app

serve_app = typer.Typer(cls=_OneLineErrors, help="Serve a virtual instrument over the network (ZeroMQ, CURVE).",
                        no_args_is_help=True, rich_markup_mode=None)
keys_app = typer.Typer(cls=_OneLineErrors, help="Manage the keys of `twin serve`.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(serve_app, name="serve")
app.add_typer(keys_app, name="keys")


class Fidelity(str, Enum):
    fast = "fast"
    prism = "prism"
    multislice = "multislice"


@keys_app.command("create")
def keys_create(directory: Annotated[Path, typer.Argument(help="New directory for the keys.", metavar="DIR")]):
    """Create a server key pair and one authorized client key pair in DIR (give DIR to both sides)."""
    from twin.instrument.remote import create_keys

    try:
        paths = create_keys(directory)
    except (ValueError, OSError) as e:
        _fail(str(e))
    typer.echo(f"wrote keys to {paths['directory']}; clients listed in {paths['authorized']}")


@serve_app.command("stem")
def serve_stem(
    keys: Annotated[Path, typer.Option(help="Key directory made by `twin keys create`.", metavar="DIR")],
    sample: Annotated[str, typer.Option(help="Named sample: graphene-si, mos2 or srtio3.")] = "graphene-si",
    port: Annotated[int, typer.Option(help="TCP port (1-65535).")] = 5555,
    host: Annotated[str, typer.Option(help="Address to bind; anything but 127.0.0.1 exposes the instrument "
                                           "to the network.")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Seed of the sample and of all noise.")] = 0,
    fidelity: Annotated[Fidelity, typer.Option(help="Image formation tier.")] = Fidelity.fast,
    record: Annotated[Path | None, typer.Option(help="Record the session into this new directory.",
                                                metavar="DIR")] = None,
    session_budget_e: Annotated[float, typer.Option(help="Electrons the session may deliver.")] = math.inf,
    max_dose: Annotated[float, typer.Option(help="Dose any 0.5 A square may receive [e/A^2].")] = math.inf,
    max_dwell: Annotated[float, typer.Option(help="Longest dwell per pixel or point [s].")] = 60.0,
):
    """Serve a VirtualSTEM, behind the safety envelope, to the clients whose keys are in DIR/authorized."""
    try:
        instrument = _virtual_stem(sample, seed, fidelity.value, record, session_budget_e, max_dose, max_dwell)
        if not 1 <= port <= 65535:
            raise ValueError(f"--port {port} is not allowed; give 1 to 65535")
        from twin.instrument.remote import key_paths, serve

        if not key_paths(keys)["server_secret"].is_file():
            raise ValueError(f"--keys {str(keys)!r} holds no server key; make one with `twin keys create DIR`")
        serve(instrument, f"tcp://{host}:{port}", keys=keys,
              on_ready=lambda address: typer.echo(f"serving VirtualSTEM ({sample}) on {address}; Ctrl-C stops"))
    except (ValueError, OSError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        if "instrument" in locals():
            instrument.close()


def _virtual_stem(sample, seed, fidelity, record, session_budget_e, max_dose, max_dwell):
    from twin.instrument.safety import Limits, SafeInstrument
    from twin.instrument.virtual_stem import VirtualSTEM
    from twin.io import enable_compilation_cache

    limits = Limits(session_budget_e=session_budget_e, max_dose_e_per_ang2=max_dose,
                    dwell_s=(min(1e-7, max_dwell), max_dwell))
    enable_compilation_cache()
    if record is not None:
        from twin.instrument.recorder import record as recorded

        return recorded(record, sample, seed=seed, limits=limits, fidelity=fidelity)
    return SafeInstrument(VirtualSTEM(sample, seed=seed, fidelity=fidelity), limits)


@app.command("replay")
def replay(session: Annotated[Path, typer.Argument(help="Session directory written by a recorder.",
                                                   metavar="SESSION")]):
    """Run a recorded session again on a fresh virtual instrument and check every result bit for bit."""
    from twin.instrument.recorder import replay as run

    if not (session / "session.json").is_file():
        _fail(f"SESSION {str(session)!r} has no session.json; give a directory written by a recorder")
    try:
        problems = run(session)
    except (ValueError, OSError, KeyError) as e:
        _fail(str(e))
    for line in problems:
        typer.echo(line)
    n = sum(1 for _ in (session / "commands.jsonl").open())
    typer.echo(f"replayed {n} commands: {'identical' if not problems else f'{len(problems)} differ'}")
    raise typer.Exit(0 if not problems else 1)
