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


class Method(str, Enum):
    auto = "auto"
    multislice = "multislice"
    prism = "prism"


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
    segmented: Annotated[list[str] | None, typer.Option(
        help="Segmented (DPC) detector NAME=INNER:OUTER[:SEGMENTS[:RINGS[:ROTATION]]], angles [mrad], rotation "
             "of the first segment from +x [rad]; default 4 segments, 1 ring; repeatable.",
        metavar="NAME=INNER:OUTER[:S[:R[:ROT]]]", show_default=False)] = None,
    com: Annotated[bool, typer.Option(
        "--com", help="Record the centre of mass of the diffraction pattern [mrad].")] = False,
    diffraction: Annotated[str | None, typer.Option(
        help="Record 4D-STEM diffraction patterns up to this angle [mrad], or 'cutoff' for the grid's "
             "antialiased limit; streamed to --out.", metavar="MRAD|cutoff", show_default=False)] = None,
    phonons: Annotated[int, typer.Option(
        help="Frozen-phonon configurations to average [no unit]; 0: atoms at rest.", metavar="N")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the frozen-phonon displacements [no unit].", metavar="S")] = 0,
    phonon_sigma: Annotated[list[str] | None, typer.Option(
        help="RMS displacement per direction EL=SIGMA or EL=SX,SY,SZ [Angstrom], repeatable; other elements: "
             "the Debye model at --temperature.", metavar="EL=SIGMA", show_default=False)] = None,
    temperature: Annotated[float, typer.Option(
        help="Temperature of the default (Debye) phonon displacements [K].", metavar="K")] = 300.0,
    method: Annotated[Method, typer.Option(
        help="multislice, prism (S-matrix; every detector) or auto (PRISM where it is exact and cheaper) "
             "[no unit].")] = Method.auto,
    interpolation: Annotated[int, typer.Option(
        help="PRISM interpolation factor, dividing the grid; 1 is exact [no unit].", metavar="F")] = 1,
    window: Annotated[float | None, typer.Option(
        help="Propagate each probe in a window of about this side, not the whole cell: faster for large fields "
             "of view, with an error of about the probe's intensity outside half the window [Angstrom].",
        metavar="ANG", show_default=False)] = None,
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
                         precision=precision.value, segmented=segmented or [], com=com, diffraction=diffraction,
                         phonons=phonons, seed=seed, phonon_sigma=phonon_sigma or [], temperature=temperature,
                         method=method.value, interpolation=interpolation, window=window)
    except (ValueError, MemoryError, OSError) as e:
        _fail(str(e) or type(e).__name__)
    from rich.console import Console
    from rich.markup import escape

    Console(soft_wrap=True).print(f"wrote {escape(str(path.resolve()))}")


def parse_segmented(items: list[str]) -> list:
    """SegmentedDetectors from NAME=INNER:OUTER[:SEGMENTS[:RINGS[:ROTATION]]] (angles [mrad], rotation [rad])."""
    from twin.stem.detectors import SegmentedDetector

    detectors = []
    for item in items:
        name, _, spec = item.partition("=")
        parts = spec.split(":")
        try:
            inner, outer = float(parts[0]), float(parts[1])
            segments, rings = (int(parts[i]) if len(parts) > i else default for i, default in ((2, 4), (3, 1)))
            rotation = float(parts[4]) if len(parts) > 4 else 0.0
        except (ValueError, IndexError):
            raise ValueError(f"--segmented {item!r} is not NAME=INNER:OUTER[:SEGMENTS[:RINGS[:ROTATION]]] "
                             "(angles [mrad], rotation [rad])") from None
        if len(parts) > 5:
            raise ValueError(f"--segmented {item!r} has more than five fields after NAME=")
        detectors.append(SegmentedDetector(name=name.strip(), inner=inner, outer=outer, segments=segments,
                                           rings=rings, rotation=rotation))
    return detectors


def parse_phonon_sigmas(items: list[str]) -> dict:
    """{element: sigma or (sx, sy, sz)} [Angstrom] from EL=SIGMA or EL=SX,SY,SZ."""
    sigmas = {}
    for item in items:
        element, sep, value = item.partition("=")
        try:
            numbers = tuple(float(v) for v in value.split(","))
        except ValueError:
            numbers = ()
        if not sep or len(numbers) not in (1, 3):
            raise ValueError(f"--phonon-sigma {item!r} is not EL=SIGMA or EL=SX,SY,SZ [Angstrom]")
        sigmas[element.strip()] = numbers[0] if len(numbers) == 1 else numbers
    return sigmas


def _run_stem(*, structure, energy, semiangle, sampling, slice_thickness, scan_step, out, defocus, aberrations,
              scan_region, detectors, parametrization, projection, precision, segmented, com, diffraction,
              phonons, seed, phonon_sigma, temperature, method, interpolation, window) -> Path:
    """Validate everything cheap first, then simulate, streaming to the output file; returns its path."""
    from potentials.projected import PotentialSpec, grid_shape
    from twin.io import enable_compilation_cache, read_structure
    from twin.stem.detectors import CenterOfMassDetector, PixelatedDetector
    from twin.stem.optics import cutoff_angle
    from twin.stem.probe import ProbeSpec
    from twin.stem.scan import GridScan
    from twin.stem.simulate import simulate_to_file

    check_output(out)
    probe = ProbeSpec(energy=energy, semiangle=semiangle, aberrations=parse_aberrations(aberrations, defocus))
    potential = PotentialSpec(sampling=sampling, slice_thickness=slice_thickness,
                              parametrization=parametrization, projection=projection)
    scan = GridScan(step=scan_step, region=parse_region(scan_region))
    if phonons < 0:
        raise ValueError(f"--phonons {phonons} is not allowed; give 0 (no phonons) or more configurations")
    frozen = None
    if phonons:  # imported only when asked: the module costs start-up time
        from potentials.phonons import FrozenPhonons

        frozen = FrozenPhonons(n_configurations=phonons, seed=seed, sigmas=parse_phonon_sigmas(phonon_sigma) or None,
                               temperature=temperature)
    atoms = read_structure(structure)
    if frozen is not None:
        frozen.sigma_table(atoms.numbers)  # an element without a default sigma fails here, before any work
    extent = tuple(float(v) for v in atoms.cell.lengths()[:2])
    max_angle = cutoff_angle(grid_shape(extent, sampling), extent, energy) * 1e3
    chosen = parse_detectors(detectors, semiangle, max_angle) if detectors or not (segmented or com or diffraction) \
        else []
    chosen += parse_segmented(segmented)
    if com:
        chosen.append(CenterOfMassDetector())
    if diffraction is not None:
        try:
            limit = None if diffraction == "cutoff" else float(diffraction)
        except ValueError:
            raise ValueError(f"--diffraction {diffraction!r} is not an angle [mrad] or 'cutoff'") from None
        chosen.append(PixelatedDetector(max_angle=limit))
    enable_compilation_cache()
    return simulate_to_file(atoms, out, probe=probe, potential=potential, scan=scan, detectors=chosen,
                            precision=precision, phonons=frozen, method=method, interpolation=interpolation,
                            window=window, progress=True)


from twin import cli_instrument  # noqa: E402,F401  (registers serve, keys and replay on `app`)
from twin import cli_stm  # noqa: E402,F401  (registers `simulate stm`)
from twin import cli_generate  # noqa: E402,F401  (registers generate and datasets)


if __name__ == "__main__":  # `python -m twin.cli`: run the registered app of the imported module
    from twin.cli import app as _app

    _app()
