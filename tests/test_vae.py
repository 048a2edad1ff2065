"""The rotation-invariant VAE: recovers known rotations and shifts, patch extraction, equivariance of the
pose, jit == no-jit, determinism, model files, bad inputs, and `twin fit rvae`."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from learners import train
from learners.vae import RVAE, decode, encode, extract_patches, make_rvae_loss, train_rvae

SIZE = 16
N_TRAIN, N_TEST = 768, 256
# an asymmetric cluster: a bright atom at the origin with two weaker neighbours (x, y [px], amplitude, sigma)
CLUSTER = np.array([[0.0, 0.0, 1.0, 1.3], [3.6, 0.0, 0.75, 1.1], [-1.2, 3.0, 0.5, 1.0]])


def render(angles, shifts, rng, noise=0.05):
    """Patches (n, SIZE, SIZE) of CLUSTER rotated by `angles` [rad, counterclockwise in (x, y)] about its
    first atom and moved by `shifts` (n, 2) [px], with Gaussian noise."""
    offsets = np.arange(SIZE) - (SIZE - 1) / 2
    y, x = np.meshgrid(offsets, offsets, indexing="ij")
    out = np.zeros((len(angles), SIZE, SIZE))
    for k, (angle, (sx, sy)) in enumerate(zip(angles, shifts)):
        c, s = np.cos(angle), np.sin(angle)
        for ax, ay, amplitude, sigma in CLUSTER:
            px, py = c * ax - s * ay + sx, s * ax + c * ay + sy
            out[k] += amplitude * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma ** 2))
    return (out + noise * rng.standard_normal(out.shape)).astype(np.float32)


def fisher_lee(a, b):
    """Circular correlation of Fisher & Lee, Biometrika 70, 327 (1983): 1 (-1) when b = a + c (b = -a + c)."""
    da, db = np.sin(a[:, None] - a[None, :]), np.sin(b[:, None] - b[None, :])
    return float((da * db).sum() / np.sqrt((da ** 2).sum() * (db ** 2).sum()))


def r_squared(target, predictors):
    """R^2 of the least-squares linear fit (with intercept) of each column of target (n, m)."""
    design = np.column_stack([predictors, np.ones(len(target))])
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coefficients
    return 1 - (residual ** 2).sum(0) / ((target - target.mean(0)) ** 2).sum(0)


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    n = N_TRAIN + N_TEST
    angles, shifts = rng.uniform(0, 2 * np.pi, n), rng.uniform(-1.5, 1.5, (n, 2))
    patches = render(angles, shifts, rng)
    mean, std = patches[:N_TRAIN].mean(), patches[:N_TRAIN].std()
    return (patches - mean) / std, angles, shifts


@pytest.fixture(scope="module")
def trained(synthetic):
    patches = synthetic[0]
    model = RVAE(patch_size=SIZE, latent_dim=1, rngs=nnx.Rngs(0))
    model, history = train_rvae(model, patches[:N_TRAIN], key=jax.random.key(0), epochs=15, batch_size=32,
                                learning_rate=5e-3)
    return model, history


def test_latent_angle_and_shift_recover_the_true_rotation_and_shift(synthetic, trained):
    patches, angles, shifts = synthetic
    model, history = trained
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    code = encode(model, patches[N_TRAIN:])
    correlation = abs(fisher_lee(code["angle"], angles[N_TRAIN:]))
    r2 = r_squared(shifts[N_TRAIN:], code["shift"])
    print(f"held-out: circular correlation {correlation:.4f}, shift R^2 {r2}")
    assert correlation >= 0.9
    assert np.all(r2 >= 0.9)
    # the shift latent is in pixels of the image frame: slope ~1 against the true shift
    slope = np.polyfit(shifts[N_TRAIN:, 0], code["shift"][:, 0], 1)[0]
    assert 0.8 < slope < 1.2
    assert np.all(code["angle_std"] > 0) and np.all(code["shift_std"] > 0) and code["z"].shape == (N_TEST, 1)


def test_model_file_round_trip(trained, synthetic, tmp_path):
    model, _ = trained
    arguments = {"patch_size": SIZE, "latent_dim": 1}
    train.save_model(tmp_path / "r.twin", model, builder="rvae", arguments=arguments, metadata={"mean": 0.5})
    loaded, metadata = train.load_model(tmp_path / "r.twin", builder="rvae")
    assert metadata == {"mean": 0.5}
    patches = synthetic[0][:8]
    a, b = encode(model, patches), encode(loaded, patches)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(decode(loaded, a["angle"], a["shift"], a["z"]),
                                  decode(model, a["angle"], a["shift"], a["z"]))


@pytest.mark.parametrize("symmetry", [1, 2])
def test_pose_is_equivariant_to_quarter_turns(symmetry):
    """np.rot90 turns (x, y) (x along columns, y down the rows) by R(-pi/2) about the patch centre, exactly
    on the pixel grid: the angle must drop by pi/2 (modulo 2 pi / symmetry) and the shift turn with it, for
    any weights."""
    rng = np.random.default_rng(3)
    patches = render(rng.uniform(0, 2 * np.pi, 4), rng.uniform(-1.5, 1.5, (4, 2)), rng)
    model = RVAE(patch_size=SIZE, latent_dim=2, symmetry=symmetry, rngs=nnx.Rngs(5))
    a, b = encode(model, patches), encode(model, np.rot90(patches, axes=(1, 2)).copy())
    assert np.all(np.abs(a["angle"]) <= np.pi / symmetry)
    np.testing.assert_allclose(np.exp(1j * symmetry * (b["angle"] - a["angle"])), np.exp(-1j * symmetry * np.pi / 2),
                               atol=1e-4)
    np.testing.assert_allclose(b["shift"], np.stack([a["shift"][:, 1], -a["shift"][:, 0]], -1), atol=1e-4)
    if symmetry == 1:  # with n > 1, z is invariant for objects that have the symmetry (these do not)
        np.testing.assert_allclose(b["z"], a["z"], atol=1e-4)


def test_extract_patches_samples_bilinearly_and_drops_patches_that_leave_the_image():
    rows, cols = np.mgrid[0:30, 0:40].astype(np.float32)
    image = 2 * rows + 3 * cols  # bilinear interpolation is exact on a linear ramp
    coords = np.array([[5.3, 7.6], [20.0, 10.5], [1.0, 15.0], [38.5, 15.0], [np.nan, 4.0], [12.25, 26.0]])
    patches, kept = extract_patches(image, coords, 6)
    assert list(kept) == [0, 1, 5]
    offsets = np.arange(6) - 2.5
    for patch, (x, y) in zip(patches, coords[kept]):
        expected = 2 * (y + offsets[:, None]) + 3 * (x + offsets[None, :])
        np.testing.assert_allclose(patch, expected, atol=1e-4)
    none, kept = extract_patches(image, np.array([[0.0, 0.0]]), 6)
    assert none.shape == (0, 6, 6) and len(kept) == 0


@pytest.mark.parametrize("image, coords, size, match", [
    (np.zeros((2, 20, 20)), np.zeros((1, 2)), 8, r"image shape \(2, 20, 20\) \(rank 3\)"),
    (np.zeros((20, 20)), np.zeros((3,)), 8, r"coords_px shape \(3,\)"),
    (np.zeros((20, 20)), np.zeros((3, 3)), 8, r"coords_px shape \(3, 3\)"),
    (np.zeros((20, 20)), np.zeros((1, 2)), 21, "patch size 21 is not allowed"),
    (np.zeros((20, 20)), np.zeros((1, 2)), 3.5, "patch size 3.5 is not allowed"),
])
def test_extract_patches_rejects_bad_shapes(image, coords, size, match):
    with pytest.raises(ValueError, match=match):
        extract_patches(image, coords, size)


@pytest.mark.parametrize("kwargs, match", [
    ({"patch_size": 3}, "patch_size=3"),
    ({"patch_size": 16, "latent_dim": -1}, "latent_dim=-1"),
    ({"patch_size": 16, "noise_std": 0.0}, "noise_std=0.0"),
    ({"patch_size": 16, "symmetry": 0}, "symmetry=0"),
    ({"patch_size": 16, "shift_prior_px": float("nan")}, "shift_prior_px"),
])
def test_rvae_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RVAE(**kwargs, rngs=nnx.Rngs(0))


def test_encode_decode_and_training_reject_bad_shapes():
    model = RVAE(patch_size=SIZE, latent_dim=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"patches shape \(4, 12, 12\) is not allowed; give \(batch, 16, 16\)"):
        encode(model, np.zeros((4, 12, 12)))
    with pytest.raises(ValueError, match=r"patches shape \(16, 16\)"):
        encode(model, np.zeros((16, 16)))
    with pytest.raises(ValueError, match="decode: shapes"):
        decode(model, np.zeros(3), np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="too few"):
        train_rvae(model, np.zeros((5, SIZE, SIZE)), key=jax.random.key(0), epochs=1, batch_size=8)


def _small_problem():
    rng = np.random.default_rng(1)
    patches = render(rng.uniform(0, 2 * np.pi, 16), rng.uniform(-1, 1, (16, 2)), rng)
    return RVAE(patch_size=SIZE, latent_dim=2, hidden=16, rngs=nnx.Rngs(2)), jnp.asarray(patches)


def test_jit_equals_no_jit():
    model, patches = _small_problem()
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer = optax.sgd(1e-4)
    state = train.init_state(params, optimizer)
    loss_fn = make_rvae_loss(graphdef)
    key = jax.random.key(4)
    jitted, jit_metrics = train.make_train_step(loss_fn, optimizer)(state, {"patches": patches}, key)
    plain, plain_metrics = train.make_train_step(loss_fn, optimizer, jit=False)(state, {"patches": patches}, key)
    for a, b in zip(jax.tree.leaves(jitted.params), jax.tree.leaves(plain.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(jit_metrics["loss"], plain_metrics["loss"], rtol=1e-5)


def test_training_is_deterministic_for_a_fixed_key():
    model, patches = _small_problem()
    initial = jax.tree.leaves(nnx.state(model, nnx.Param))
    runs = [train_rvae(nnx.clone(model), patches, key=jax.random.key(0), epochs=2, batch_size=8)[0]
            for _ in range(2)]
    a, b = (jax.tree.leaves(nnx.state(m, nnx.Param)) for m in runs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, initial))  # it did train


# ---------------------------------------------------------------------------------------------------------
# Command line

def _run(*args):
    from typer.testing import CliRunner

    from learners.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two graphene samples of 48 x 48 pixels over 12 A (0.25 A per pixel), fast tier."""
    from pathlib import Path

    from twin.generate.engine import generate
    from twin.generate.recipe import load_recipe, parse_recipe

    content = load_recipe(Path(__file__).parents[1] / "datasets" / "recipes" / "graphene-dopants.toml").to_dict()
    content["n_samples"] = 2
    content["sample"]["cells"] = [6, 4]
    content["acquisition"].update({"fov_ang": 12.0, "pixels": 48})
    content["tier"] = "fast"
    directory = tmp_path_factory.mktemp("rvae") / "graphene"
    generate(parse_recipe(content), directory, shard_size=2, workers=0)
    return directory


def _inside(col, row, size, n=48):
    half = (size - 1) / 2
    return (col - half >= 0) & (col + half <= n - 1) & (row - half >= 0) & (row + half <= n - 1)


def test_fit_rvae_on_a_dataset_writes_a_model_and_the_embedding(dataset, tmp_path):
    from twin.generate import open_dataset

    out, embed = tmp_path / "r.twin", tmp_path / "latents.csv"
    result = _run("fit", "rvae", "--data", dataset, "--out", out, "--patch-size", 10, "--latent-dim", 1,
                  "--symmetry", 3, "--epochs", 2, "--batch-size", 8, "--embed", embed)
    assert result.exit_code == 0, result.output
    model, metadata = train.load_model(out, builder="rvae")
    assert (model.patch_size, model.latent_dim, model.symmetry) == (10, 1, 3)
    assert metadata["normalization"]["std"] > 0
    with open(embed) as f:
        rows = list(csv.DictReader(f))
    ds = open_dataset(dataset)
    col, row = ds["atom_col"].values, ds["atom_row"].values
    with np.errstate(invalid="ignore"):
        expected = int(_inside(col, row, 10).sum())
    assert len(rows) == expected == metadata["n_patches"] >= 16
    assert set(rows[0]) >= {"sample", "atom", "x_px", "y_px", "class", "angle_rad", "dx_px", "dy_px", "z1", "z1_std"}
    first = rows[0]
    assert abs(float(first["x_px"]) - col[int(first["sample"]), int(first["atom"])]) < 1e-3
    assert all(-np.pi / 3 <= float(r["angle_rad"]) < np.pi / 3 for r in rows)


def test_fit_rvae_from_an_image_and_an_atoms_csv(dataset, tmp_path):
    from twin.generate import open_dataset

    sample = open_dataset(dataset).isel(sample=1)
    np.save(tmp_path / "image.npy", sample["image"].values)
    keep = np.isfinite(sample["atom_col"].values)
    col, row = sample["atom_col"].values[keep], sample["atom_row"].values[keep]
    pixel = 12.0 / 48
    with open(tmp_path / "atoms.csv", "w") as f:
        f.write("x_ang,y_ang,class,confidence\n")
        f.writelines(f"{(c + 0.5) * pixel},{(r + 0.5) * pixel},C,0.9\n" for c, r in zip(col, row))
    out, embed = tmp_path / "r.twin", tmp_path / "latents.csv"
    args = ["fit", "rvae", "--data", tmp_path / "image.npy", "--atoms", tmp_path / "atoms.csv", "--out", out,
            "--patch-size", 10, "--latent-dim", 1, "--symmetry", 3, "--epochs", 1, "--batch-size", 8,
            "--embed", embed]
    missing = _run(*args)  # a .npy carries no pixel size
    assert missing.exit_code == 2 and "--pixel-size" in missing.output and not out.exists()
    result = _run(*args, "--pixel-size", pixel)
    assert result.exit_code == 0, result.output
    with open(embed) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == int(_inside(col, row, 10).sum())
    np.testing.assert_allclose([float(r["x_px"]) for r in rows], col[_inside(col, row, 10)], atol=1e-3)
    assert {r["class"] for r in rows} == {"C"}


@pytest.mark.parametrize("extra, message", [
    (["--patch-size", 3], "--patch-size 3 is not allowed"),
    (["--latent-dim", -1], "--latent-dim -1 is not allowed"),
    (["--epochs", 0], "--epochs 0 is not allowed"),
    (["--embed", "latents.txt"], "--embed 'latents.txt' has suffix '.txt'"),
    (["--batch-size", 100000], "--batch-size 100000"),
    (["--symmetry", 0], "--symmetry 0 is not allowed"),
])
def test_fit_rvae_errors_name_the_parameter_and_write_nothing(dataset, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    result = _run("fit", "rvae", "--data", dataset, "--out", "r.twin", *extra)
    assert result.exit_code == 2 and message in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_fit_rvae_refuses_what_is_not_a_dataset_or_an_atoms_table(dataset, tmp_path):
    out = tmp_path / "r.twin"
    (tmp_path / "plain").mkdir()
    result = _run("fit", "rvae", "--data", tmp_path / "plain", "--out", out)
    assert result.exit_code == 2 and "is not a twin dataset directory" in result.output
    np.save(tmp_path / "image.npy", np.zeros((32, 32), np.float32))
    (tmp_path / "atoms.csv").write_text("x,y\n1,2\n")
    result = _run("fit", "rvae", "--data", tmp_path / "image.npy", "--atoms", tmp_path / "atoms.csv",
                  "--pixel-size", 0.2, "--out", out)
    assert result.exit_code == 2 and "x_ang, y_ang" in result.output
    (tmp_path / "atoms.csv").write_text("x_ang,y_ang\n1,oops\n")
    result = _run("fit", "rvae", "--data", tmp_path / "image.npy", "--atoms", tmp_path / "atoms.csv",
                  "--pixel-size", 0.2, "--out", out)
    assert result.exit_code == 2 and "non-numeric" in result.output
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 32, 32), np.float32))
    (tmp_path / "atoms.csv").write_text("x_ang,y_ang\n3,3\n")
    result = _run("fit", "rvae", "--data", tmp_path / "cube.npy", "--atoms", tmp_path / "atoms.csv",
                  "--pixel-size", 0.2, "--out", out)
    assert result.exit_code == 2 and "rank 4" in result.output
    assert not out.exists()
