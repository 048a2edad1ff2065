"""Training plumbing shared by every learner: one jitted step, Optax, Orbax checkpoints, model files.

A learner is a Flax NNX module split into (graphdef, params): the training step is a pure function of
(state, batch, key), so it jits, is deterministic for a fixed key, and equals its un-jitted self.

    model = UNet(in_channels=1, out_channels=3, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    def loss_fn(params, batch, key):          # -> (scalar loss, dict of scalar metrics)
        out = nnx.merge(graphdef, params)(batch["x"])
        ...
    state = init_state(params, optax.adam(1e-3))
    step = make_train_step(loss_fn, optax.adam(1e-3))
    state, history = fit(state, step, epoch_batches, epochs=5, key=key, checkpoint_dir="ckpt")

Models leave training as one file (`save_model` / `load_model`): msgpack holding the builder name, its
keyword arguments, free-form metadata (pixel size, classes, normalization) and the parameters.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

MODEL_FORMAT = "twin-model"
MODEL_VERSION = 1


class TrainState(NamedTuple):
    """Everything a training run carries from step to step."""

    step: jax.Array  # () int32
    params: Any  # pytree of arrays (an nnx.State of nnx.Param)
    opt_state: Any  # the optax state of `params`


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, *, jit: bool = True) -> Callable:
    """(state, batch, key) -> (state, metrics): one Optax update of `loss_fn(params, batch, key) -> (loss,
    metrics)`. The key is folded with the step number, so a run is a pure function of its first key."""

    def step(state: TrainState, batch, key):
        key = jax.random.fold_in(key, state.step)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(state.step + 1, params, opt_state), {"loss": loss, **metrics}

    return jax.jit(step) if jit else step


def make_eval_step(metric_fn: Callable, *, jit: bool = True) -> Callable:
    """(params, batch) -> metrics of `metric_fn(params, batch)`; no gradients, no state change."""
    return jax.jit(metric_fn) if jit else metric_fn


def evaluate(eval_step: Callable, params, batches: Iterable) -> dict:
    """Metrics of `eval_step` averaged over `batches`, weighted by batch size (the leading axis)."""
    totals, count = {}, 0
    for batch in batches:
        n = len(jax.tree.leaves(batch)[0])
        for name, value in eval_step(params, batch).items():
            totals[name] = totals.get(name, 0.0) + float(value) * n
        count += n
    if not count:
        raise ValueError("evaluate: no batches were given")
    return {name: total / count for name, total in totals.items()}


def fit(state: TrainState, step: Callable, epoch_batches: Callable[[int], Iterable], *, epochs: int, key,
        checkpoint_dir: str | os.PathLike | None = None, on_epoch: Callable[[int, dict], None] | None = None
        ) -> tuple[TrainState, list[dict]]:
    """Run `epochs` passes of `step` over `epoch_batches(epoch)` (which must be a pure function of the epoch
    number). With `checkpoint_dir`, save after every epoch and, when the directory already holds a
    checkpoint, resume from it: an interrupted run then finishes with the same state as an uninterrupted
    one. Returns the final state and one dict of mean metrics per epoch run here."""
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"epochs={epochs!r} is not allowed; give an integer >= 0")
    manager = _manager(checkpoint_dir) if checkpoint_dir is not None else None
    with contextlib.closing(manager) if manager is not None else contextlib.nullcontext():  # closed on errors too
        first = 0
        if manager is not None and manager.latest_step() is not None:
            first = manager.latest_step() + 1
            state = _restore(manager, first - 1, state)
        history = []
        for epoch in range(first, epochs):
            sums, n = {}, 0
            for batch in epoch_batches(epoch):
                state, metrics = step(state, batch, key)
                for name, value in metrics.items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                n += 1
            means = {name: total / max(n, 1) for name, total in sums.items()}
            history.append(means)
            if manager is not None:
                _save(manager, epoch, state)
            if on_epoch is not None:
                on_epoch(epoch, means)
    return state, history


def _manager(directory):
    import orbax.checkpoint as ocp

    # synchronous saves: every save is waited for anyway, and no background thread outlives a failed fit
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def _save(manager, epoch: int, state: TrainState) -> None:
    import orbax.checkpoint as ocp

    leaves = {str(i): np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(state))}
    manager.save(epoch, args=ocp.args.StandardSave(leaves))


def _restore(manager, epoch: int, template: TrainState) -> TrainState:
    import orbax.checkpoint as ocp

    leaves, treedef = jax.tree.flatten(template)
    target = {str(i): np.asarray(leaf) for i, leaf in enumerate(leaves)}
    restored = manager.restore(epoch, args=ocp.args.StandardRestore(target))
    if len(restored) != len(leaves):
        raise ValueError(f"checkpoint {epoch} in {manager.directory} does not match this model")
    return jax.tree.unflatten(treedef, [jnp.asarray(restored[str(i)]) for i in range(len(leaves))])


# ---------------------------------------------------------------------------------------------------------
# Model files

BUILDERS: dict[str, Callable] = {}


def register_builder(name: str):
    """Decorator: `@register_builder("unet")` on a function (or class) that builds an nnx.Module from
    keyword arguments and `rngs`; `load_model` rebuilds a saved model through it."""

    def wrap(builder):
        BUILDERS[name] = builder
        return builder

    return wrap


def save_model(path: str | os.PathLike, model: nnx.Module, *, builder: str, arguments: dict, metadata: dict
               ) -> None:
    """Write `model` to one file (atomically): builder name, its JSON-able `arguments`, `metadata`, params."""
    header = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "builder": builder, "arguments": arguments,
              "metadata": metadata}
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    payload = serialization.msgpack_serialize({"header": json.dumps(header), "params": _to_numpy(params)})
    from twin.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_bytes(payload)


def load_model(path: str | os.PathLike, *, builder: str | None = None) -> tuple[nnx.Module, dict]:
    """(model, metadata) from a file written by `save_model`; `builder`, when given, must match."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model {str(path)!r} does not exist or is not a file")
    try:
        content = serialization.msgpack_restore(path.read_bytes())
        header = json.loads(content["header"])
        assert header["format"] == MODEL_FORMAT
    except Exception:
        raise ValueError(f"model {str(path)!r} is not a twin model file (written by twin's save_model)") from None
    if header["version"] > MODEL_VERSION:
        raise ValueError(f"model {str(path)!r} has format version {header['version']}; this twin reads "
                         f"versions <= {MODEL_VERSION}")
    if builder is not None and header["builder"] != builder:
        raise ValueError(f"model {str(path)!r} is a {header['builder']!r} model, not a {builder!r} model")
    if header["builder"] not in BUILDERS:
        raise ValueError(f"model {str(path)!r} needs builder {header['builder']!r}; known: {sorted(BUILDERS)}")
    model = BUILDERS[header["builder"]](**header["arguments"], rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, content["params"]))
    nnx.update(model, state)
    return model, header["metadata"]


def _to_numpy(tree):
    return jax.tree.map(np.asarray, tree)
