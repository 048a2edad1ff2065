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


def test_pose_is_equivariant_to_quarter_turns():
    """np.rot90 turns (x, y) (x along columns, y down the rows) by R(-pi/2) about the patch centre, exactly
    on the pixel grid: the angle must drop by pi/2 and the shift turn with it, for any weights."""
    rng = np.random.default_rng(3)
    patches = render(rng.uniform(0, 2 * np.pi, 4), rng.uniform(-1.5, 1.5, (4, 2)), rng)
    model = RVAE(patch_size=SIZE, latent_dim=2, rngs=nnx.Rngs(5))
    a, b = encode(model, patches), encode(model, np.rot90(patches, axes=(1, 2)).copy())
    difference = np.angle(np.exp(1j * (b["angle"] - a["angle"])))
    np.testing.assert_allclose(difference, -np.pi / 2, atol=1e-4)
    np.testing.assert_allclose(b["shift"], np.stack([a["shift"][:, 1], -a["shift"][:, 0]], -1), atol=1e-4)
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


@pytest.mark.parametrize("kwargs, match", [({"patch_size": 3}, "patch_size=3"),
                                            ({"patch_size": 16, "latent_dim": -1}, "latent_dim=-1"),
                                            ({"patch_size": 16, "noise_std": 0.0}, "noise_std=0.0"),
                                            ({"patch_size": 16, "shift_prior_px": float("nan")}, "shift_prior_px")])
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
