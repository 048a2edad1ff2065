"""The generator: determinism across workers, resume after SIGKILL, labels that match the structures."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from twin.generate import batches, open_dataset
from twin.generate.engine import generate, verify
from twin.generate.recipe import load_recipe, parse_recipe
from twin.generate.sample import generate_sample
from twin.generate.store import shard_name

RECIPES = Path(__file__).parents[1] / "datasets" / "recipes"


@pytest.fixture(scope="module")
def small():
    """The graphene recipe made small: 48 x 48 pixels over 12 A, fast tier."""
    recipe = load_recipe(RECIPES / "graphene-dopants.toml")
    content = recipe.to_dict()
    content["n_samples"] = 6
    content["sample"]["cells"] = [6, 4]
    content["acquisition"].update({"fov_ang": 12.0, "pixels": 48})
    content["tier"] = "fast"
    return parse_recipe(content)


def shard_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).glob("shard-*.h5"))}


def test_one_or_two_workers_give_identical_bytes(small, tmp_path):
    generate(small, tmp_path / "a", shard_size=2, workers=0)
    generate(small, tmp_path / "b", shard_size=2, workers=2)
    a, b = shard_bytes(tmp_path / "a"), shard_bytes(tmp_path / "b")
    assert list(a) == [shard_name(k) for k in range(3)] and a == b
    assert verify(tmp_path / "a") == [] and verify(tmp_path / "b") == []
    generate(small, tmp_path / "c", shard_size=4, workers=0)  # another shard size: the same samples
    a, c = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "c")
    for name in ("image", "clean", "mask", "heatmap"):
        assert np.array_equal(a[name].values, c[name].values)


def test_a_sample_is_a_pure_function_of_recipe_and_index(small, tmp_path):
    generate(small, tmp_path / "d", shard_size=4, workers=0)
    ds = open_dataset(tmp_path / "d")
    again = generate_sample(small, 5)
    assert np.array_equal(ds["image"].values[5], again["image"])
    assert ds.sizes["sample"] == 6 and ds["image"].dims == ("sample", "y", "x")


def test_labels_sit_on_the_atoms(small):
    sample = generate_sample(small, 2)
    n = sample["image"].shape[0]
    keep = sample["atom_class"] >= 0
    assert keep.sum() > 20
    rows, cols = np.round(sample["atom_row"][keep]).astype(int), np.round(sample["atom_col"][keep]).astype(int)
    inside = (rows >= 0) & (rows < n) & (cols >= 0) & (cols < n)
    assert np.all(sample["mask"][rows[inside], cols[inside]] == sample["atom_class"][keep][inside] + 1)
    # the clean HAADF signal is brighter on atoms than between them
    assert sample["clean"][rows[inside], cols[inside]].mean() > 1.5 * np.median(sample["clean"])
    # every atom of the structure inside the field of view has a label
    assert sample["heatmap"][rows[inside], cols[inside]].min() > 0.9


def test_scan_rotation_turns_the_image_and_its_labels(small):
    """A quarter turn of the scan frame about the cell centre is np.rot90 of the clean image (pixel (i, j)
    of the turned frame sees the sample where pixel (j, n - 1 - i) of the unturned one does), and the labels
    turn with it."""
    content = small.to_dict()
    content["acquisition"]["scan_rotation_rad"] = 0.0
    plain = generate_sample(parse_recipe(content), 1)
    content["acquisition"]["scan_rotation_rad"] = np.pi / 2
    turned = generate_sample(parse_recipe(content), 1)
    n = plain["clean"].shape[0]
    np.testing.assert_allclose(turned["clean"], np.rot90(plain["clean"]), rtol=1e-4,
                               atol=1e-4 * plain["clean"].max())
    assert not np.allclose(turned["clean"], plain["clean"], atol=1e-2 * plain["clean"].max())
    np.testing.assert_array_equal(turned["mask"], np.rot90(plain["mask"]))
    plain_labels = sorted(zip(np.round(n - 1 - plain["atom_col"], 6), np.round(plain["atom_row"], 6),
                              plain["atom_class"]))
    turned_labels = sorted(zip(np.round(turned["atom_row"], 6), np.round(turned["atom_col"], 6),
                               turned["atom_class"]))
    assert len(plain_labels) > 10 and plain_labels == turned_labels


def test_resume_after_sigkill_gives_the_uninterrupted_dataset(small, tmp_path):
    recipe_file = tmp_path / "small.toml"
    from twin.generate.recipe import save_recipe

    save_recipe(small, recipe_file)
    command = [sys.executable, "-m", "twin.cli", "generate", str(recipe_file), "--out", str(tmp_path / "k"),
               "--workers", "0", "--shard-size", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (tmp_path / "k" / shard_name(1)).exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not json.loads((tmp_path / "k" / "manifest.json").read_text())["complete"]
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    generate(small, tmp_path / "u", shard_size=1, workers=0)
    assert shard_bytes(tmp_path / "k") == shard_bytes(tmp_path / "u")


def test_an_io_error_mid_run_leaves_a_resumable_dataset(small, tmp_path, monkeypatch):
    from twin.generate import engine

    real, calls = engine.write_shard, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(engine, "write_shard", failing)
    with pytest.raises(OSError, match="No space"):
        generate(small, tmp_path / "f", shard_size=2, workers=0)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["manifest.json", shard_name(0)]
    monkeypatch.setattr(engine, "write_shard", real)
    generate(small, tmp_path / "f", shard_size=2, workers=0, resume=True)
    assert verify(tmp_path / "f") == []


def test_bad_output_directories_and_schedulers(small, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a twin dataset"):
        generate(small, tmp_path / "other", workers=0)
    generate(small, tmp_path / "d", shard_size=3, workers=0)
    with pytest.raises(ValueError, match="--resume"):
        generate(small, tmp_path / "d", shard_size=3, workers=0)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="did not answer"):
        generate(small, tmp_path / "s", scheduler="tcp://127.0.0.1:9", workers=1)
    assert time.perf_counter() - start < 20


def test_batches_shuffle_and_cover_every_sample(small, tmp_path):
    generate(small, tmp_path / "d", shard_size=4, workers=0)
    ds = open_dataset(tmp_path / "d")
    seen = [b["image"] for b in batches(tmp_path / "d", 4, jax.random.key(1))]
    stacked = np.concatenate(seen)
    assert stacked.shape == ds["image"].shape
    order = [int(np.flatnonzero([np.array_equal(img, ref) for ref in ds["image"].values])[0]) for img in stacked]
    assert sorted(order) == list(range(6)) and order != list(range(6))


def test_datasets_info_verify_and_show(small, tmp_path):
    generate(small, tmp_path / "d", shard_size=4, workers=0)
    run = [sys.executable, "-m", "twin.cli", "datasets"]
    info = subprocess.run([*run, "info", str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "6 samples in 2 shards" in info.stdout and "image" in info.stdout
    shown = subprocess.run([*run, "show", str(tmp_path / "d"), "3", "--out", str(tmp_path / "s.png")],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([*run, "show", str(tmp_path / "d"), "9", "--out", str(tmp_path / "t.png")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "INDEX 9" in bad.stderr and not (tmp_path / "t.png").exists()
    assert subprocess.run([*run, "verify", str(tmp_path / "d")], capture_output=True).returncode == 0
    shard = tmp_path / "d" / shard_name(1)
    shard.write_bytes(shard.read_bytes()[:-10] + b"corrupted!")
    broken = subprocess.run([*run, "verify", str(tmp_path / "d")], capture_output=True, text=True)
    assert broken.returncode == 1 and "checksum" in broken.stdout


def test_labels_match_the_structure_they_came_from(small):
    from twin.generate.recipe import draw
    from twin.generate.sample import sample_key
    from twin.samples import make_sample

    index = 4
    sample = generate_sample(small, index)
    key = sample_key(small.seed, index)
    params = draw(small, jax.random.fold_in(key, 0))
    seed = int(jax.random.randint(jax.random.fold_in(key, 1), (), 0, 2**31 - 1))
    labelled = make_sample("graphene", {k: v for k, v in params["sample"].items() if k != "family"}, seed)
    fov, n = 12.0, 48
    centre = labelled.atoms.cell.lengths()[:2] / 2
    xy = labelled.atoms.positions[:, :2]
    theta = params["acquisition"]["scan_rotation_rad"]  # the scan frame is turned by theta about the centre
    frame = (xy - centre) @ np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    in_view = np.all(np.abs(frame) < fov / 2 - 1e-6, axis=1)
    assert in_view.sum() > 20
    labelled_points = np.stack([sample["atom_x"], sample["atom_y"]], 1)[sample["atom_z"] > 0]
    for point, in_frame, cls in zip(xy[in_view], frame[in_view], labelled.atom_class[in_view]):
        d = np.hypot(*(labelled_points - point).T)
        j = int(np.argmin(d))
        assert d[j] < 1e-6 and sample["atom_class"][sample["atom_z"] > 0][j] == cls
        col, row = (in_frame + fov / 2) / (fov / n) - 0.5
        assert abs(sample["atom_col"][sample["atom_z"] > 0][j] - col) < 1e-6
        assert abs(sample["atom_row"][sample["atom_z"] > 0][j] - row) < 1e-6
    assert sample["parameters"]["sample.family"] == "graphene"


@pytest.mark.parametrize("name, extra", [("tmd-defects", None), ("perovskite-polarization", "polarization"),
                                         ("si-h-dangling-bonds", "db_occupancy")])
def test_every_shipped_recipe_makes_a_labelled_sample(name, extra):
    content = load_recipe(RECIPES / f"{name}.toml").to_dict()
    content["acquisition"]["pixels"] = 32
    if content["instrument"] == "stem":
        content["tier"] = "fast"
    sample = generate_sample(parse_recipe(content), 0)
    assert sample["image"].shape == sample["mask"].shape == (32, 32)
    assert np.isfinite(sample["image"]).all() and (sample["atom_class"] >= 0).sum() > 10
    assert set(np.unique(sample["mask"])) - {0}
    if extra:
        assert len(sample[extra]) > 0
