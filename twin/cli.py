"""The `twin` command line: simulations from a structure file to a netCDF file.

    twin simulate stem graphene.xyz --energy 80e3 --semiangle 25 --sampling 0.05 --slice-thickness 1 \\
        --scan-step 0.2 --detector HAADF --detector BF=0:25 --out graphene.nc

Every user error (bad value, unreadable file, job too large) ends the program with one line
`error: ...` on stderr and exit status 2, and leaves no output file behind. JAX and the simulator are
imported inside the commands, so `twin --help` is fast.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

USAGE_ERROR = 2
PRESET_NAMES = ("BF", "ABF", "ADF", "HAADF")


class _OneLineErrors(TyperGroup):
    """A command group that reports usage errors (missing or malformed options) as one `error:` line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `twin`: the help text is the message
                if e.format_message().strip():
                    typer.echo(e.format_message(), err=True)
                sys.exit(USAGE_ERROR)
            _fail(e.format_message())
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str):
    """Print `error: message` as one line on stderr and exit with status 2."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(USAGE_ERROR)


app = typer.Typer(cls=_OneLineErrors, help="twin: a physics-first digital twin of the STEM.",
                  add_completion=False, no_args_is_help=True, rich_markup_mode=None)
simulate_app = typer.Typer(cls=_OneLineErrors, help="Simulate images.", no_args_is_help=True,
                           rich_markup_mode=None)
app.add_typer(simulate_app, name="simulate")


class Parametrization(str, Enum):
    lobato = "lobato"
    kirkland = "kirkland"


class Projection(str, Enum):
    infinite = "infinite"
    finite = "finite"


class Precision(str, Enum):
    float32 = "float32"
    float64 = "float64"


def parse_aberrations(items: list[str], defocus: float | None) -> dict[str, float]:
    """{name: value} from NAME=VALUE strings, plus `defocus` [Angstrom] when given."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name or number is None:
            raise ValueError(f"--aberration {item!r} is not NAME=VALUE (e.g. C30=1e4; lengths [Angstrom], "
                             "angles [rad])")
        if name in out:
            raise ValueError(f"--aberration {name} is given twice")
        out[name] = number
    if defocus is not None:
        clash = [name for name in ("defocus", "C10") if name in out]
        if clash:
            raise ValueError(f"--defocus and --aberration {clash[0]} both set the defocus; give one")
        out["defocus"] = defocus
    return out


def parse_region(text: str | None) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) [Angstrom] from "X0,Y0,X1,Y1", or None for None."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ValueError(f"--scan-region {text!r} is not four numbers X0,Y0,X1,Y1 [Angstrom]")
    return values


def parse_detectors(items: list[str], semiangle: float, max_angle: float) -> list:
    """AnnularDetectors from NAME=INNER:OUTER [mrad] or preset names; HAADF when `items` is empty.

    semiangle: probe semi-angle [mrad]; max_angle: largest angle the grid carries [mrad], for presets.
    """
    from twin.stem.detectors import AnnularDetector, preset

    detectors = []
    for item in items or ["HAADF"]:
        name, sep, angles = item.partition("=")
        if not sep:
            if item not in PRESET_NAMES:
                raise ValueError(f"--detector {item!r} is neither NAME=INNER:OUTER [mrad] nor a preset "
                                 f"({', '.join(PRESET_NAMES)})")
            detectors.append(preset(item, semiangle, max_angle))
            continue
        inner, colon, outer = angles.partition(":")
        try:
            inner, outer = float(inner), float(outer)
        except ValueError:
            colon = ""
        if not colon:
            raise ValueError(f"--detector {item!r} is not NAME=INNER:OUTER (angles [mrad], e.g. BF=0:25)")
        detectors.append(AnnularDetector(name=name.strip(), inner=inner, outer=outer))
    return detectors


def check_output(path: Path):
    """Refuse, before any work, an output path that cannot be written."""
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"--out {str(path)!r}: directory {str(parent)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"--out {str(path)!r} is a directory; give a file name")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out {str(path)!r}: directory {str(parent)!r} is not writable")


@simulate_app.command("stem")
def stem(
    structure: Annotated[Path, typer.Argument(
        help="Structure file that ase.io.read reads (e.g. .cif, extended .xyz), with an orthorhombic cell "
             "periodic in x and y; positions and cell [Angstrom].", metavar="STRUCTURE", show_default=False)],
    energy: Annotated[float, typer.Option(help="Beam energy [eV].", metavar="EV", show_default=False)],
    semiangle: Annotated[float, typer.Option(help="Probe convergence semi-angle [mrad].", metavar="MRAD",
                                               show_default=False)],
    sampling: Annotated[float, typer.Option(
        help="Largest pixel size of the potential and wave grid [Angstrom].", metavar="ANG", show_default=False)],
    slice_thickness: Annotated[float, typer.Option(
        help="Largest slice thickness; the cell height is cut into equal slices [Angstrom].", metavar="ANG",
        show_default=False)],
    scan_step: Annotated[float, typer.Option(
        help="Largest distance between probe positions [Angstrom].", metavar="ANG", show_default=False)],
    out: Annotated[Path, typer.Option(help="Output netCDF file, written atomically [file path].",
                                      metavar="FILE", show_default=False)],
    defocus: Annotated[float | None, typer.Option(
        help="Defocus, = -C10; positive is underfocus [Angstrom].", metavar="ANG", show_default=False)] = None,
    aberration: Annotated[list[str] | None, typer.Option(
        help="Aberration NAME=VALUE, repeatable: Krivanek C10 ... C56, Cs, C5 [Angstrom]; phi12 ... phi56 [rad].",
        metavar="NAME=VALUE", show_default=False)] = None,
    scan_region: Annotated[str | None, typer.Option(
        help="Scanned rectangle X0,Y0,X1,Y1 [Angstrom]; default: the whole cell.", metavar="X0,Y0,X1,Y1",
        show_default=False)] = None,
    detector: Annotated[list[str] | None, typer.Option(
        help="Annular detector NAME=INNER:OUTER [mrad], or a preset BF, ABF, ADF, HAADF (angles [mrad] from "
             "the semi-angle and the grid's antialiasing cutoff); repeatable; default: HAADF.",
        metavar="NAME=INNER:OUTER|PRESET", show_default=False)] = None,
    parametrization: Annotated[Parametrization, typer.Option(
        help="Scattering-factor parametrization of the atomic potentials [no unit].")] = Parametrization.lobato,
    projection: Annotated[Projection, typer.Option(
        help="Projection of each atom into slices: infinite (whole atom in its slice) or finite [no unit].")]
        = Projection.infinite,
    precision: Annotated[Precision, typer.Option(
        help="Floating-point precision of the multislice [no unit].")] = Precision.float32,
):
    """Simulate annular-detector STEM images of STRUCTURE by multislice and write them to --out.

    The file holds one (y, x) image per detector, in fractions of the incident intensity, with the probe
    positions x, y [Angstrom] as coordinates and every parameter, with its unit, in the attributes.
    """
    try:
        path = _run_stem(structure=structure, energy=energy, semiangle=semiangle, sampling=sampling,
                         slice_thickness=slice_thickness, scan_step=scan_step, out=out, defocus=defocus,
                         aberrations=aberration or [], scan_region=scan_region, detectors=detector or [],
                         parametrization=parametrization.value, projection=projection.value,
                         precision=precision.value)
    except (ValueError, MemoryError, OSError) as e:
        _fail(str(e) or type(e).__name__)
    from rich.console import Console
    from rich.markup import escape

    Console(soft_wrap=True).print(f"wrote {escape(str(path.resolve()))}")


def _run_stem(*, structure, energy, semiangle, sampling, slice_thickness, scan_step, out, defocus, aberrations,
              scan_region, detectors, parametrization, projection, precision) -> Path:
    """Validate everything cheap first, then simulate and write; returns the path written."""
    from potentials.projected import PotentialSpec, grid_shape
    from twin.io import enable_compilation_cache, read_structure, write_dataset_atomic
    from twin.stem.optics import cutoff_angle
    from twin.stem.probe import ProbeSpec
    from twin.stem.scan import GridScan
    from twin.stem.simulate import simulate

    check_output(out)
    probe = ProbeSpec(energy=energy, semiangle=semiangle, aberrations=parse_aberrations(aberrations, defocus))
    potential = PotentialSpec(sampling=sampling, slice_thickness=slice_thickness,
                              parametrization=parametrization, projection=projection)
    scan = GridScan(step=scan_step, region=parse_region(scan_region))
    atoms = read_structure(structure)
    extent = tuple(float(v) for v in atoms.cell.lengths()[:2])
    max_angle = cutoff_angle(grid_shape(extent, sampling), extent, energy) * 1e3
    enable_compilation_cache()
    ds = simulate(atoms, probe=probe, potential=potential, scan=scan,
                  detectors=parse_detectors(detectors, semiangle, max_angle), precision=precision,
                  progress=True)
    return write_dataset_atomic(ds, out)
