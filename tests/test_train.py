"""Training plumbing: determinism, jit == no-jit, Orbax resume, model files, U-Net shapes and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from learners import train
from learners.nets import UNet


def _problem(seed=0):
    model = UNet(out_channels=2, depth=2, width=4, dilations=(1, 2), rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 1))
    batch = {"x": x, "y": jnp.concatenate([x, -x], axis=-1)}

    def loss_fn(params, batch, key):
        noise = 0.01 * jax.random.normal(key, batch["x"].shape)
        loss = jnp.mean((nnx.merge(graphdef, params)(batch["x"] + noise) - batch["y"]) ** 2)
        return loss, {"rmse": jnp.sqrt(loss)}

    optimizer = optax.adam(3e-3)
    return model, train.init_state(params, optimizer), loss_fn, optimizer, (lambda epoch: [batch, batch])


def _max_difference(a, b):
    return max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_training_lowers_the_loss_and_is_deterministic():
    _, state, loss_fn, optimizer, batches = _problem()
    step = train.make_train_step(loss_fn, optimizer)
    key = jax.random.PRNGKey(7)
    a, history = train.fit(state, step, batches, epochs=4, key=key)
    b, _ = train.fit(state, step, batches, epochs=4, key=key)
    assert history[-1]["loss"] < history[0]["loss"]
    assert _max_difference(a.params, b.params) == 0.0
    assert int(a.step) == 8


def test_jit_equals_no_jit():
    # SGD: Adam's first step is lr * sign(g), which amplifies rounding differences of tiny gradients
    _, state, loss_fn, _, batches = _problem()
    optimizer = optax.sgd(0.1)
    state = train.init_state(state.params, optimizer)
    key = jax.random.PRNGKey(3)
    jitted, jit_metrics = train.make_train_step(loss_fn, optimizer)(state, batches(0)[0], key)
    plain, plain_metrics = train.make_train_step(loss_fn, optimizer, jit=False)(state, batches(0)[0], key)
    assert _max_difference(jitted.params, plain.params) < 1e-5
    assert abs(float(jit_metrics["loss"]) - float(plain_metrics["loss"])) < 1e-6


def test_resume_from_a_checkpoint_gives_the_uninterrupted_result(tmp_path):
    _, state, loss_fn, optimizer, batches = _problem()
    step = train.make_train_step(loss_fn, optimizer)
    key = jax.random.PRNGKey(5)
    whole, _ = train.fit(state, step, batches, epochs=3, key=key)
    train.fit(state, step, batches, epochs=2, key=key, checkpoint_dir=tmp_path / "ckpt")  # "interrupted"
    resumed, history = train.fit(state, step, batches, epochs=3, key=key, checkpoint_dir=tmp_path / "ckpt")
    assert len(history) == 1
    assert _max_difference(whole.params, resumed.params) == 0.0
    assert _max_difference(whole.opt_state, resumed.opt_state) == 0.0


def test_evaluate_never_trains():
    model, state, loss_fn, _, batches = _problem()
    evaluate = train.make_eval_step(lambda params, batch: loss_fn(params, batch, jax.random.PRNGKey(0))[1])
    before = jax.tree.map(np.array, state.params)
    metrics = train.evaluate(evaluate, state.params, batches(0))
    assert set(metrics) == {"rmse"} and metrics["rmse"] > 0
    assert _max_difference(before, state.params) == 0.0


def test_model_file_round_trip(tmp_path):
    model, *_ = _problem(seed=3)
    arguments = {"out_channels": 2, "depth": 2, "width": 4, "dilations": [1, 2]}
    train.save_model(tmp_path / "m.twin", model, builder="unet", arguments=arguments, metadata={"pixel": 0.2})
    loaded, metadata = train.load_model(tmp_path / "m.twin", builder="unet")
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 16, 16, 1))
    assert metadata == {"pixel": 0.2}
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert [p.name for p in tmp_path.iterdir()] == ["m.twin"]


def test_bad_model_files_are_clear_errors(tmp_path):
    (tmp_path / "junk.twin").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a twin model file"):
        train.load_model(tmp_path / "junk.twin")
    with pytest.raises(ValueError, match="does not exist"):
        train.load_model(tmp_path / "missing.twin")
    model, *_ = _problem()
    train.save_model(tmp_path / "m.twin", model, builder="unet",
                     arguments={"out_channels": 2, "depth": 2, "width": 4, "dilations": [1, 2]}, metadata={})
    with pytest.raises(ValueError, match="is a 'unet' model, not a 'rvae' model"):
        train.load_model(tmp_path / "m.twin", builder="rvae")


@pytest.mark.parametrize("kwargs, match", [({"out_channels": 0}, "out_channels=0"),
                                            ({"out_channels": 1, "dilations": ()}, "dilations"),
                                            ({"out_channels": 1, "depth": 0}, "depth=0")])
def test_unet_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs, rngs=nnx.Rngs(0))


def test_unet_rejects_bad_shapes():
    model = UNet(out_channels=1, depth=2, width=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="divisible by 4"):
        model(jnp.ones((1, 10, 16, 1)))
    with pytest.raises(ValueError, match=r"\(batch, ny, nx, channels\)"):
        model(jnp.ones((16, 16, 1)))
