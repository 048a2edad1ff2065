"""read_image: every format the learners' commands take, with the pixel size the file carries."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from learners.images import read_image
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
