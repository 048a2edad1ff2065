"""read_image: every format the learners' commands take, with the pixel size the file carries."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from learners.images import read_image
from tests.dmfile import write_dm
from twin.cli import app
from twin.generate.engine import generate
from twin.generate.recipe import load_recipe, parse_recipe

RECIPES = Path(__file__).parents[1] / "datasets" / "recipes"
IMAGE = np.arange(24 * 32, dtype=np.float32).reshape(24, 32)


def test_npy_has_no_calibration(tmp_path):
    np.save(tmp_path / "a.npy", IMAGE.astype(np.uint16))
    image, pixel = read_image(tmp_path / "a.npy")
    assert image.dtype == np.float32 and pixel is None
    np.testing.assert_array_equal(image, IMAGE)


@pytest.mark.parametrize("unit, pixels_per_unit, expected", [("nm", 50.0, 0.2), ("A", 5.0, 0.2),
                                                              ("pm", 0.05, 0.2)])
def test_imagej_tiff_calibration(tmp_path, unit, pixels_per_unit, expected):
    tifffile.imwrite(tmp_path / "a.tif", IMAGE, imagej=True, resolution=(pixels_per_unit, pixels_per_unit),
                     metadata={"unit": unit})
    image, pixel = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(image, IMAGE)
    assert pixel == pytest.approx(expected, rel=1e-5)


def test_plain_tiff_and_stacks(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.stack([IMAGE, 2 * IMAGE]))
    image, pixel = read_image(tmp_path / "a.tif", index=1)
    assert pixel is None
    np.testing.assert_array_equal(image, 2 * IMAGE)
    with pytest.raises(ValueError, match="--index 2 is out of range for the stack of 2"):
        read_image(tmp_path / "a.tif", index=2)


def test_emd_through_rosettasciio(tmp_path):
    from rsciio.emd import file_writer

    axes = [{"name": name, "size": size, "scale": 0.025, "offset": 0.0, "units": "nm", "navigate": False}
            for name, size in (("y", 24), ("x", 32))]
    file_writer(str(tmp_path / "a.emd"), {"data": IMAGE, "axes": axes, "metadata": {"General": {"title": "haadf"}, "Signal": {}}, "original_metadata": {}})
    image, pixel = read_image(tmp_path / "a.emd")
    np.testing.assert_array_equal(image, IMAGE)
    assert pixel == pytest.approx(0.25)


@pytest.mark.parametrize("suffix", [".dm3", ".dm4"])
def test_digitalmicrograph_image_and_calibration(tmp_path, suffix):
    path = write_dm(tmp_path / f"a{suffix}", IMAGE, scale=0.01, units="nm")  # thumbnail first, as DM writes
    image, pixel = read_image(path)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, IMAGE)  # (ny, nx) = (24, 32): rows are y, not transposed
    assert pixel == pytest.approx(0.1, rel=1e-6)  # float32 scale 0.01 nm


@pytest.mark.parametrize("units, scale, expected", [("\u00c5", 0.25, 0.25), ("\u00b5m", 2e-5, 0.2),
                                                     ("\u03bcm", 2e-5, 0.2), ("1/nm", 0.5, None), ("", 1.0, None)])
def test_digitalmicrograph_units(tmp_path, units, scale, expected):
    """Angstrom, micrometre with the micro sign and with Greek mu; a reciprocal or no unit gives no pixel size."""
    image, pixel = read_image(write_dm(tmp_path / "a.dm4", IMAGE, scale=scale, units=units))
    np.testing.assert_array_equal(image, IMAGE)
    assert pixel == (pytest.approx(expected, rel=1e-6) if expected else None)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int32, np.float64])
def test_digitalmicrograph_data_types(tmp_path, dtype):
    data = (IMAGE - 300).astype(dtype) if np.issubdtype(dtype, np.signedinteger) else IMAGE.astype(dtype)
    image, pixel = read_image(write_dm(tmp_path / "a.dm3", data, scale=0.01, units="nm"))
    assert image.dtype == np.float32 and pixel == pytest.approx(0.1, rel=1e-6)
    np.testing.assert_array_equal(image, data.astype(np.float32))


def test_digitalmicrograph_stack(tmp_path):
    path = write_dm(tmp_path / "a.dm4", np.stack([IMAGE, 2 * IMAGE, 3 * IMAGE]), scale=0.01, units="nm")
    image, pixel = read_image(path, index=2)
    np.testing.assert_array_equal(image, 3 * IMAGE)
    assert pixel == pytest.approx(0.1, rel=1e-6)
    with pytest.raises(ValueError, match="--index 3 is out of range for the stack of 3"):
        read_image(path, index=3)


def test_twin_dataset_and_simulation_files(tmp_path):
    content = load_recipe(RECIPES / "graphene-dopants.toml").to_dict()
    content.update(n_samples=2, tier="fast")
    content["sample"]["cells"] = [6, 4]
    content["acquisition"].update({"fov_ang": 12.0, "pixels": 48})
    generate(parse_recipe(content), tmp_path / "data", shard_size=2, workers=0)
    image, pixel = read_image(tmp_path / "data", index=1)
    assert image.shape == (48, 48) and pixel == pytest.approx(0.25)
    with pytest.raises(ValueError, match="--index 5 is out of range for the dataset"):
        read_image(tmp_path / "data", index=5)

    from ase.io import write

    from twin.structures import graphene

    write(tmp_path / "g.xyz", graphene(), format="extxyz")
    result = CliRunner().invoke(app, ["simulate", "stem", str(tmp_path / "g.xyz"), "--energy=80e3",
                                      "--semiangle=25", "--sampling=0.1", "--slice-thickness=2",
                                      "--scan-step=0.25", f"--out={tmp_path / 'sim.nc'}"])
    assert result.exit_code == 0, result.output
    image, pixel = read_image(tmp_path / "sim.nc")
    assert image.ndim == 2 and pixel == pytest.approx(2.46 / 10, rel=1e-3)  # the scan fits the 2.46 A cell


def test_bad_images_are_clear_errors(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 16, 16)))
    np.save(tmp_path / "line.npy", np.zeros(16))
    np.save(tmp_path / "nan.npy", np.full((16, 16), np.nan))
    (tmp_path / "a.png").write_bytes(b"")
    cases = [("cube.npy", r"shape \(2, 3, 16, 16\) \(rank 4\); give a 2-D image"),
             ("line.npy", r"shape \(16,\) \(rank 1\)"), ("nan.npy", "NaN"), ("a.png", "suffix '.png'"),
             ("missing.npy", "does not exist")]
    for name, match in cases:
        with pytest.raises(ValueError, match=match):
            read_image(tmp_path / name)
