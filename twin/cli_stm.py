"""`twin simulate stm`: a scanning tunnelling microscope image of a Si(100)-2x1:H surface, to a netCDF file.

    twin simulate stm si100-h --bias -1.8 --setpoint 50 --mode constant-current --fov 30 --pixels 128 \\
        --db-fraction 0.05 --out stm.h5

Errors are one `error: ...` line with exit status 2 and no output file, as in twin.cli.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from twin.cli import _fail, check_output, simulate_app

STM_SAMPLES = ("si100-h",)


class Mode(str, Enum):
    constant_current = "constant-current"
    constant_height = "constant-height"


class Tip(str, Enum):
    sharp = "sharp"
    blunt = "blunt"
    double = "double"


@simulate_app.command("stm")
def simulate_stm(
    sample: Annotated[str, typer.Argument(help=f"A named surface ({', '.join(STM_SAMPLES)}) or a structure file "
                                               "of a Si(100)-2x1:H slab (any format ase.io.read knows, with its "
                                               "cell).", metavar="STRUCTURE_OR_SAMPLE", show_default=False)],
    bias: Annotated[float, typer.Option(help="Sample bias [V] (negative: filled states).", metavar="V")],
    setpoint: Annotated[float, typer.Option(help="Current setpoint [pA].", metavar="PA")],
    out: Annotated[Path, typer.Option(help="Output netCDF4/HDF5 file.", metavar="FILE", show_default=False)],
    mode: Annotated[Mode, typer.Option(help="Feedback mode.")] = Mode.constant_current,
    height: Annotated[float, typer.Option(help="Tip height above the H plane in constant-height mode [A].",
                                          metavar="ANG")] = 6.0,
    fov: Annotated[float, typer.Option(help="Field of view [A] (square).", metavar="ANG")] = 30.0,
    pixels: Annotated[int, typer.Option(help="Pixels per side.", metavar="N")] = 128,
    dwell: Annotated[float, typer.Option(help="Dwell per pixel [s].", metavar="S")] = 1e-3,
    tip: Annotated[Tip, typer.Option(help="Tip state.")] = Tip.sharp,
    seed: Annotated[int, typer.Option(help="Seed of the sample's defects and of the noise.")] = 0,
    nx_dimers: Annotated[int, typer.Option(help="Dimers along a row (named sample).")] = 10,
    ny_rows: Annotated[int, typer.Option(help="Dimer rows (named sample).")] = 5,
    db_fraction: Annotated[float, typer.Option(help="Fraction of DB sites (named sample).")] = 0.03,
):
    """Simulate an STM image (height [A] in constant-current mode, current [pA] in both) of SAMPLE."""
    try:
        check_output(out)
        surface = "si100-h"
        if sample not in STM_SAMPLES:
            if not Path(sample).exists():
                raise ValueError(f"STRUCTURE_OR_SAMPLE {sample!r} is neither a sample ({', '.join(STM_SAMPLES)}) "
                                 "nor an existing structure file")
            from twin.io import read_structure
            from twin.samples.si100_h import surface_from_atoms

            try:
                surface = surface_from_atoms(read_structure(sample))
            except ValueError as e:
                raise ValueError(f"{sample}: {e}; the STM twin models Si(100)-2x1:H surfaces") from None
        if not 1 <= pixels <= 4096:
            raise ValueError(f"--pixels {pixels} is not allowed; give 1 to 4096")
        from twin import stm
        from twin.instrument.virtual_stm import VirtualSTM
        from twin.io import write_dataset_atomic

        sample_options = {"nx_dimers": nx_dimers, "ny_rows": ny_rows, "db_fraction": db_fraction} \
            if isinstance(surface, str) else {}
        instrument = VirtualSTM(surface, seed=seed, tip=stm.TipSpec(kind=tip.value), **sample_options,
                                controls={"bias_v": bias, "setpoint_pa": setpoint, "height_ang": height,
                                          "feedback_on": float(mode is Mode.constant_current)})
        extent = instrument.extent
        ds = instrument.acquire_image(fov, (extent[0] / 2, extent[1] / 2), (pixels, pixels), dwell,
                                      channels=["height", "current", "error"])
        surface = instrument.truth()["surface"]
        ds["dangling_bond_x"] = ("db", surface.sites[surface.dangling_bonds(), 0], {"units": "Angstrom"})
        ds["dangling_bond_y"] = ("db", surface.sites[surface.dangling_bonds(), 1], {"units": "Angstrom"})
        write_dataset_atomic(ds, out)
    except (ValueError, OSError, MemoryError) as e:
        _fail(str(e))
    typer.echo(f"wrote {out.resolve()}")
