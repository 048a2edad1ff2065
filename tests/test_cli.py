"""The `twin` command line: a small STEM run end to end, and one clear error line for each bad input."""

from __future__ import annotations

import subprocess
import sys

import ase.io
import numpy as np
import pytest
import typer
import xarray as xr
from ase import Atoms
from typer.testing import CliRunner

from twin.cli import app
from twin.io import write_dataset_atomic
from twin.structures import graphene

runner = CliRunner()


@pytest.fixture
def dirs(tmp_path):
    """(input directory with structure files, empty output directory)."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    ase.io.write(inputs / "graphene.xyz", graphene(), format="extxyz")
    ase.io.write(inputs / "graphene.cif", graphene())
    ase.io.write(inputs / "empty.xyz", Atoms(cell=[5, 5, 5], pbc=True), format="extxyz")
    ase.io.write(inputs / "molecule.xyz", Atoms("CO", positions=[(0, 0, 0), (0, 0, 1.13)]), format="xyz")
    ase.io.write(inputs / "big.xyz", Atoms("C", positions=[(25, 25, 25)], cell=[50, 50, 50], pbc=True),
                 format="extxyz")
    (inputs / "garbage.xyz").write_text("hello\nworld\n1 2 3\n")
    return inputs, outputs


def stem_args(inputs, outputs, structure="graphene.xyz", **overrides):
    """Arguments of the small graphene job, with `overrides` {option: value} (None drops the option)."""
    options = {"--energy": "80e3", "--semiangle": "25", "--sampling": "0.1", "--slice-thickness": "2",
               "--scan-step": "0.5", "--out": str(outputs / "images.nc")}
    options.update({"--" + k.lstrip("-").replace("_", "-"): v for k, v in overrides.items()})
    args = ["simulate", "stem", str(inputs / structure)]
    for name, value in options.items():
        if value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            args.append(f"{name}={v}")
    return args


def test_small_run_writes_a_dataset(dirs):
    inputs, outputs = dirs
    result = runner.invoke(app, stem_args(inputs, outputs, detector=["BF=0:25", "HAADF"]))
    assert result.exit_code == 0, result.output
    path = outputs / "images.nc"
    assert str(path) in result.stdout
    assert sorted(p.name for p in outputs.iterdir()) == ["images.nc"]
    ds = xr.load_dataset(path, engine="h5netcdf")
    assert list(ds.data_vars) == ["BF", "HAADF"]
    for name in ("BF", "HAADF"):
        assert ds[name].dims == ("y", "x")
        assert ds[name].attrs["units"] == "fraction of incident intensity"
    assert ds.x.attrs["units"] == ds.y.attrs["units"] == "Angstrom"
    assert ds.HAADF.attrs["inner_mrad"] == 75.0
    assert ds.HAADF.attrs["outer_mrad"] == pytest.approx(ds.attrs["antialias_cutoff_angle_mrad"])
    assert ds.attrs["energy_eV"] == 80e3 and ds.attrs["semiangle_mrad"] == 25.0
    assert ds.sizes == {"y": 9, "x": 5}
    assert np.all(ds.BF > 0.5) and np.all((ds.HAADF > 0) & (ds.HAADF < 0.05))


def test_dpc_com_4d_phonons_and_windows_from_the_command_line(dirs):
    inputs, outputs = dirs
    result = runner.invoke(app, stem_args(inputs, outputs, segmented="dpc=5:25:4:1:0.1", diffraction="40",
                                          phonons="2", seed="3", phonon_sigma="C=0.05,0.05,0.02") + ["--com"])
    assert result.exit_code == 0, result.output
    windowed = runner.invoke(app, stem_args(inputs, outputs, window="1.5", out=str(outputs / "windowed.nc")))
    assert windowed.exit_code == 0, windowed.output
    assert xr.load_dataset(outputs / "windowed.nc", engine="h5netcdf").attrs["window_x_ang"] < 2.0
    ds = xr.load_dataset(outputs / "images.nc", engine="h5netcdf")
    assert list(ds.data_vars) == ["dpc", "com", "diffraction"]
    assert ds["dpc"].dims == ("y", "x", "dpc_ring", "dpc_segment") and ds["dpc"].attrs["rotation"] == 0.1
    assert ds["com"].dims == ("y", "x", "component") and ds["com"].attrs["units"] == "mrad"
    assert ds["diffraction"].dims == ("y", "x", "ky", "kx") and float(abs(ds.kx).max()) <= 40
    assert ds.attrs["phonon_configurations"] == 2 and ds.attrs["phonon_seed"] == 3


def test_default_detector_is_haadf_and_cif_reads(dirs):
    inputs, outputs = dirs
    result = runner.invoke(app, stem_args(inputs, outputs, "graphene.cif", scan_region="0,0,1,1",
                                          defocus="20", aberration="Cs=1e4", precision="float64",
                                          parametrization="kirkland", projection="finite"))
    assert result.exit_code == 0, result.output
    ds = xr.load_dataset(outputs / "images.nc", engine="h5netcdf")
    assert list(ds.data_vars) == ["HAADF"]
    assert ds.attrs["C10_ang"] == -20.0 and ds.attrs["C30_ang"] == 1e4
    assert ds.attrs["precision"] == "float64" and ds.attrs["projection"] == "finite"


BAD = {
    "missing structure": ({"structure": "nothere.xyz"}, ["nothere.xyz", "does not exist"]),
    "unparseable structure": ({"structure": "garbage.xyz"}, ["garbage.xyz", "could not be read"]),
    "no atoms": ({"structure": "empty.xyz"}, ["empty.xyz", "no atoms"]),
    "no periodic cell": ({"structure": "molecule.xyz"}, ["molecule.xyz", "periodic cell"]),
    "zero energy": ({"energy": "0"}, ["energy=0"]),
    "negative energy": ({"energy": "-80e3"}, ["energy=-80000"]),
    "energy not a number": ({"energy": "fast"}, ["--energy", "valid number"]),
    "missing energy": ({"energy": None}, ["--energy"]),
    "negative sampling": ({"sampling": "-0.1"}, ["sampling=-0.1"]),
    "negative slice thickness": ({"slice_thickness": "-2"}, ["slice_thickness=-2"]),
    "negative scan step": ({"scan_step": "-0.5"}, ["step=-0.5"]),
    "aberration without value": ({"aberration": "C30"}, ["--aberration", "'C30'", "NAME=VALUE"]),
    "aberration not a number": ({"aberration": "C30=big"}, ["--aberration", "C30=big"]),
    "unknown aberration": ({"aberration": "C99=1"}, ["C99", "does not exist"]),
    "defocus twice": ({"defocus": "10", "aberration": "C10=5"}, ["--defocus", "C10"]),
    "detector syntax": ({"detector": "BF=0-25"}, ["--detector", "BF=0-25", "INNER:OUTER"]),
    "unknown preset": ({"detector": "DF"}, ["--detector", "'DF'", "HAADF"]),
    "detector inner above outer": ({"detector": "X=30:20"}, ["detector X", "inner=30"]),
    "detector beyond antialiasing": ({"detector": "X=0:500"}, ["detector X", "500 mrad", "135.8 mrad",
                                                               "a sampling of"]),
    "scan region syntax": ({"scan_region": "0,0,1"}, ["--scan-region", "'0,0,1'"]),
    "scan region outside cell": ({"scan_region": "0,0,10,10"}, ["scan region", "outside the cell"]),
    "unknown precision": ({"precision": "float16"}, ["--precision", "float16"]),
    "unknown parametrization": ({"parametrization": "doyle"}, ["--parametrization", "doyle"]),
    "output directory missing": ({"out": "{out}/nodir/images.nc"}, ["--out", "nodir", "does not exist"]),
    "job too large for memory": ({"structure": "big.xyz", "sampling": "0.0005"}, ["GiB", "100000x100000"]),
    "negative phonon sigma": ({"phonons": "2", "phonon_sigma": "C=-0.1"}, ["sigmas", "C", "-0.1"]),
    "phonon sigma syntax": ({"phonons": "2", "phonon_sigma": "C=0.1,0.2"}, ["--phonon-sigma", "C=0.1,0.2"]),
    "negative phonon count": ({"phonons": "-1"}, ["--phonons", "-1"]),
    "segmented syntax": ({"segmented": "dpc=5"}, ["--segmented", "'dpc=5'"]),
    "diffraction not an angle": ({"diffraction": "wide"}, ["--diffraction", "'wide'"]),
    "interpolation not dividing the grid": ({"method": "prism", "interpolation": "7"}, ["interpolation=7",
                                                                                      "does not divide"]),
    "unknown method": ({"method": "bloch"}, ["--method", "bloch"]),
    "negative window": ({"window": "-5"}, ["window=-5"]),
    "4D output larger than the disk": ({"diffraction": "cutoff", "scan_step": "0.01"}, ["GiB free"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_error_line(dirs, case, monkeypatch):
    import shutil

    inputs, outputs = dirs
    # a disk with 10 MB free, so a large 4D-STEM output is refused
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12, 10**7))
    overrides, expected = BAD[case]
    overrides = dict(overrides)
    if "out" in overrides:
        overrides["out"] = overrides["out"].format(out=outputs)
    result = runner.invoke(app, stem_args(inputs, outputs, **overrides))
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in result.output
    assert list(outputs.iterdir()) == []


def test_help_lists_commands_and_every_option_has_a_unit():
    assert "simulate" in runner.invoke(app, ["--help"]).stdout
    assert "stem" in runner.invoke(app, ["simulate", "--help"]).stdout
    stem = typer.main.get_command(app).commands["simulate"].commands["stem"]
    units = ("[eV]", "[mrad]", "[Angstrom]", "[rad]", "[K]", "[no unit]", "[file path]")
    for param in stem.params:
        if param.name != "help":
            assert any(u in param.help for u in units), param.name


def test_help_does_not_import_jax():
    code = "import sys; from twin.cli import app; assert 'jax' not in sys.modules and 'xarray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_failed_write_leaves_no_file(tmp_path):
    ds = xr.Dataset({"a": ("x", np.arange(3.0))}, attrs={"not_serializable": {"a": 1}})
    with pytest.raises(TypeError):
        write_dataset_atomic(ds, tmp_path / "a.nc")
    assert list(tmp_path.iterdir()) == []
    write_dataset_atomic(ds.drop_attrs(), tmp_path / "a.nc")
    assert [p.name for p in tmp_path.iterdir()] == ["a.nc"]
