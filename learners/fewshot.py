"""Few-shot segmentation: prototypical networks on U-Net features, refined on the image being segmented.

Training (Snell, Swersky & Zemel, "Prototypical networks for few-shot learning", NeurIPS (2017)), one
episode per image crop: draw `shots` support pixels of every class present in the label mask, take each
class prototype as the mean embedding of its support pixels, and minimise the class-balanced cross-entropy
of the softmax over negative squared distances -|f(x) - p_c|^2 on all pixels of the crop. The classes are
whatever the mask holds (mask value k), so a model is not tied to a class list.

Segmentation of a new image from a few labelled points or scribbles per class (`segment`):
1. embed the image (per-image standardised) with the U-Net, prototypes = mean embedding of each class's
   labelled pixels;
2. transductive refinement, soft k-means with class priors (Ren et al., "Meta-learning for semi-supervised
   few-shot classification", ICLR (2018)): `refine_steps` times, responsibilities
   r_qc = softmax_c(log pi_c - |f_q - p_c|^2) over every pixel q, then p_c = (sum_support f + sum_q r_qc
   f_q) / (n_c + sum_q r_qc) and pi_c = mean_q r_qc. The priors matter: 5 labelled points per class say
   nothing about how much of the image a class covers (background is ~80 % of an atomic-resolution image);
3. spatial smoothing: the class probabilities are blurred with a Gaussian of `smooth_px` pixels before the
   arg max, which removes isolated pixels that noise flips.

    model, metadata = load_fewshot("builtin")
    labels, probabilities = segment(model, image, {"metal": [[12, 40]], "vacuum": [[3, 3]]})

Shapes: image (ny, nx); support pixel coordinates (x, y) = (column, row), 0-based; labels (ny, nx) int32,
value k = k-th class of the support in its order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from learners.nets.unet import UNet
from learners.train import load_model

LEARNER = "fewshot"
BUILTIN = Path(__file__).parent / "pretrained" / "fewshot.twin"
MODEL_ARGUMENTS = {"in_channels": 1, "out_channels": 16, "depth": 3, "width": 16, "dilations": [1, 2, 4]}


def make_model(*, seed: int = 0, **overrides) -> UNet:
    """The feature extractor: a U-Net whose output (1x1 head on the last decoder layer) is the embedding."""
    arguments = {**MODEL_ARGUMENTS, **overrides}
    return UNet(**{**arguments, "dilations": tuple(arguments["dilations"])}, rngs=nnx.Rngs(seed))


def standardize(images):
    """(..., ny, nx) -> zero mean, unit standard deviation per image (counts and detectors differ)."""
    mean = images.mean(axis=(-2, -1), keepdims=True)
    std = images.std(axis=(-2, -1), keepdims=True)
    return (images - mean) / jnp.maximum(std, 1e-6)


def embed(model: UNet, images):
    """(batch, ny, nx) images -> (batch, ny, nx, dim) embeddings; ny, nx divisible by 2**depth."""
    return model(standardize(images)[..., None])


# ---------------------------------------------------------------------------------------------------------
# Episodic training


def _episode_loss(embedding, mask, key, *, n_classes: int, shots: int):
    """Prototypical loss of one crop: embedding (ny, nx, dim), mask (ny, nx) int in [0, n_classes)."""
    flat = embedding.reshape(-1, embedding.shape[-1])
    labels = mask.reshape(-1)
    onehot = jax.nn.one_hot(labels, n_classes)  # (P, C)
    present = onehot.sum(0) > 0
    scores = jax.random.uniform(key, (n_classes, labels.size))
    scores = jnp.where(onehot.T > 0, scores, -1.0)
    _, support = jax.lax.top_k(scores, shots)  # (C, shots) pixel indices, random pixels of each class
    prototypes = flat[support].mean(axis=1)  # (C, dim)
    distances = ((flat[:, None, :] - prototypes[None]) ** 2).sum(-1)
    logits = jnp.where(present[None], -distances, -jnp.inf)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    per_pixel = -jnp.sum(jnp.where(onehot > 0, log_p, 0.0), axis=-1)
    counts = onehot.sum(0)
    per_class = (onehot * per_pixel[:, None]).sum(0) / jnp.maximum(counts, 1.0)
    loss = per_class.sum() / present.sum()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, accuracy


def make_loss(graphdef, *, n_classes: int, shots: int = 5):
    """loss_fn(params, batch, key) -> (loss, {"accuracy"}) for learners.train.make_train_step; batch
    {"image": (b, ny, nx) float, "mask": (b, ny, nx) int in [0, n_classes)}."""

    def loss_fn(params, batch, key):
        embeddings = embed(nnx.merge(graphdef, params), batch["image"])
        keys = jax.random.split(key, len(embeddings))
        loss, accuracy = jax.vmap(lambda e, m, k: _episode_loss(e, m, k, n_classes=n_classes, shots=shots))(
            embeddings, batch["mask"], keys)
        return loss.mean(), {"accuracy": accuracy.mean()}

    return loss_fn


def episode_batches(images: np.ndarray, masks: np.ndarray, *, crop: int, batch_size: int, key):
    """epoch -> list of batches of random crops (with random flips and quarter turns) of (n, ny, nx) images
    and masks; one crop per image per epoch, a pure function of (key, epoch)."""
    n, ny, nx = images.shape
    if crop > min(ny, nx):
        raise ValueError(f"crop={crop} is not allowed; give at most the image size {min(ny, nx)}")

    def batches(epoch: int):
        k_order, k_y, k_x, k_turn = jax.random.split(jax.random.fold_in(key, epoch), 4)
        order = np.asarray(jax.random.permutation(k_order, n))
        y0 = np.asarray(jax.random.randint(k_y, (n,), 0, ny - crop + 1))
        x0 = np.asarray(jax.random.randint(k_x, (n,), 0, nx - crop + 1))
        turns = np.asarray(jax.random.randint(k_turn, (n, 2), 0, 4))
        out = []
        for start in range(0, n - batch_size + 1, batch_size):
            chosen = order[start:start + batch_size]
            image, mask = [], []
            for i in chosen:
                a = images[i, y0[i]:y0[i] + crop, x0[i]:x0[i] + crop]
                b = masks[i, y0[i]:y0[i] + crop, x0[i]:x0[i] + crop]
                if turns[i, 1] % 2:
                    a, b = a[:, ::-1], b[:, ::-1]
                image.append(np.rot90(a, turns[i, 0]))
                mask.append(np.rot90(b, turns[i, 0]))
            out.append({"image": np.stack(image).astype(np.float32), "mask": np.stack(mask).astype(np.int32)})
        return out

    return batches


# ---------------------------------------------------------------------------------------------------------
# Segmentation


def _gaussian_blur(maps, sigma_px: float):
    """(ny, nx, C) -> each channel blurred by a Gaussian of sigma_px pixels (edge values repeated)."""
    if sigma_px <= 0:
        return maps
    radius = int(np.ceil(3 * sigma_px))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma_px) ** 2)
    kernel = jnp.asarray(kernel / kernel.sum(), maps.dtype)
    padded = jnp.pad(maps, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    ny, nx = maps.shape[:2]
    rows = sum(kernel[i] * padded[i:i + ny] for i in range(2 * radius + 1))
    return sum(kernel[i] * rows[:, i:i + nx] for i in range(2 * radius + 1))


def segment_embedding(embedding, support_index, support_class, *, n_classes: int, refine_steps: int = 5,
                      smooth_px: float = 1.0):
    """Labels and class probabilities of every pixel from its embedding and the labelled pixels.

    embedding (ny, nx, dim); support_index (n,) flat pixel indices; support_class (n,) int in [0, n_classes)
    with every class present. Returns labels (ny, nx) int32 and probabilities (ny, nx, n_classes). See the
    module docstring for the refinement (soft k-means with priors) and the smoothing."""
    ny, nx, dim = embedding.shape
    flat = embedding.reshape(-1, dim)
    support = flat[support_index]
    onehot = jax.nn.one_hot(support_class, n_classes)
    sums, counts = onehot.T @ support, onehot.sum(0)
    prototypes = sums / counts[:, None]
    log_prior = jnp.full((n_classes,), -jnp.log(n_classes))

    def logits_of(prototypes, log_prior):
        distances = (flat ** 2).sum(-1)[:, None] - 2 * flat @ prototypes.T + (prototypes ** 2).sum(-1)[None]
        return log_prior[None] - distances

    for _ in range(refine_steps):
        r = jax.nn.softmax(logits_of(prototypes, log_prior), axis=-1)
        mass = r.sum(0)
        prototypes = (sums + r.T @ flat) / (counts + mass)[:, None]
        log_prior = jnp.log(jnp.maximum(mass / flat.shape[0], 1e-6))
    probabilities = jax.nn.softmax(logits_of(prototypes, log_prior), axis=-1).reshape(ny, nx, n_classes)
    probabilities = _gaussian_blur(probabilities, smooth_px)
    return jnp.argmax(probabilities, axis=-1).astype(jnp.int32), probabilities


def support_pixels(support: Mapping, shape: tuple[int, int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(class names, flat pixel indices (n,), class of each (n,)) from a support mapping.

    support: {class name: [[x, y], ...]} or {class name: {"points": [[x, y], ...], "scribbles": [[[x, y],
    [x, y], ...], ...]}}; x is the column, y the row, in pixels (0-based, pixel centres at integers). A
    scribble is a polyline; every pixel it passes through is labelled. At least two classes, each with at
    least one pixel inside the image; a pixel may not be given two classes."""
    if not isinstance(support, Mapping):
        raise ValueError(f"support must map class names to points or scribbles, got {type(support).__name__}")
    if len(support) < 2:
        raise ValueError(f"support has {len(support)} class(es) {list(support)}; give at least 2 classes")
    ny, nx = shape
    names, indices, classes = [], [], []
    for k, (name, entry) in enumerate(support.items()):
        points, scribbles = _entry(name, entry)
        xy = [points] + [_rasterize(line) for line in scribbles]
        xy = np.round(np.concatenate(xy)).astype(int)
        if not len(xy):
            raise ValueError(f"support class {name!r} has no points or scribbles; give at least one point")
        outside = (xy[:, 0] < 0) | (xy[:, 0] >= nx) | (xy[:, 1] < 0) | (xy[:, 1] >= ny)
        if outside.any():
            raise ValueError(f"support class {name!r} has point (x, y) = {tuple(xy[outside][0])} outside the "
                             f"image; allowed: 0 <= x < {nx}, 0 <= y < {ny} [pixels]")
        flat = np.unique(xy[:, 1] * nx + xy[:, 0])
        names.append(str(name))
        indices.append(flat)
        classes.append(np.full(len(flat), k))
    indices, classes = np.concatenate(indices), np.concatenate(classes)
    unique, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        y, x = divmod(int(unique[counts > 1][0]), nx)
        raise ValueError(f"support pixel (x, y) = ({x}, {y}) is labelled with two classes; give each pixel one")
    return names, indices, classes


def _entry(name, entry):
    if isinstance(entry, Mapping):
        unknown = set(entry) - {"points", "scribbles"}
        if unknown:
            raise ValueError(f"support class {name!r} has key {sorted(unknown)[0]!r}; allowed: points, scribbles")
        points, scribbles = entry.get("points", []), entry.get("scribbles", [])
    else:
        points, scribbles = entry, []
    try:
        points = np.asarray(points, float)
        points = points.reshape(0, 2) if points.size == 0 else points
        scribbles = [np.asarray(line, float) for line in scribbles]
        if points.ndim != 2 or points.shape[1] != 2 or any(
                line.ndim != 2 or line.shape[1] != 2 or len(line) < 1 for line in scribbles):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"support class {name!r} is not allowed; give points as [[x, y], ...] and scribbles "
                         f"as [[[x, y], [x, y], ...], ...] in pixels") from None
    if not np.isfinite(points).all() or not all(np.isfinite(line).all() for line in scribbles):
        raise ValueError(f"support class {name!r} has a coordinate that is not a finite number")
    return points, scribbles


def _rasterize(line: np.ndarray) -> np.ndarray:
    """Pixel positions along a polyline (n, 2), sampled every 0.25 pixel."""
    pieces = [line[:1]]
    for a, b in zip(line[:-1], line[1:]):
        steps = max(int(np.ceil(4 * np.hypot(*(b - a)))), 1)
        pieces.append(a + (b - a) * (np.arange(1, steps + 1) / steps)[:, None])
    return np.concatenate(pieces)


def _pad(image: np.ndarray, multiple: int) -> np.ndarray:
    ny, nx = image.shape
    return np.pad(image, ((0, -ny % multiple), (0, -nx % multiple)), mode="reflect")


def image_embedding(model: UNet, image) -> jax.Array:
    """(ny, nx) image of any size -> (ny, nx, dim) embedding (reflect-padded to a multiple of 2**depth)."""
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise ValueError(f"image has shape {image.shape} (rank {image.ndim}); give a 2-D image (ny, nx)")
    if min(image.shape) < 2 ** model.depth or not np.isfinite(image).all():
        raise ValueError(f"image of shape {image.shape} is not allowed; give a finite image of at least "
                         f"{2 ** model.depth} x {2 ** model.depth} pixels")
    ny, nx = image.shape
    return _embed_jit(model, jnp.asarray(_pad(image, 2 ** model.depth))[None])[0, :ny, :nx]


@nnx.jit
def _embed_jit(model, images):
    return embed(model, images)


def segment(model: UNet, image, support: Mapping, *, refine_steps: int = 5, smooth_px: float = 1.0,
            jit: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Segment `image` (ny, nx) into the classes of `support` (see support_pixels for its format).

    Returns labels (ny, nx) int32 (value k = k-th support class), probabilities (ny, nx, n_classes) and the
    class names. The image should have about the pixel size the model was trained at (metadata
    "pixel_size_ang"; `zoom` adapts it)."""
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise ValueError(f"image has shape {image.shape} (rank {image.ndim}); give a 2-D image (ny, nx)")
    if not (isinstance(refine_steps, int) and refine_steps >= 0):
        raise ValueError(f"refine_steps={refine_steps!r} is not allowed; give an integer >= 0")
    if not (np.isfinite(smooth_px) and smooth_px >= 0):
        raise ValueError(f"smooth_px={smooth_px!r} is not allowed; give a number >= 0 [pixels]")
    names, index, classes = support_pixels(support, image.shape)
    embedding = image_embedding(model, image)
    run = _segment_jit if jit else segment_embedding
    labels, probabilities = run(embedding, jnp.asarray(index), jnp.asarray(classes), n_classes=len(names),
                                refine_steps=refine_steps, smooth_px=float(smooth_px))
    return np.asarray(labels), np.asarray(probabilities), names


_segment_jit = jax.jit(segment_embedding, static_argnames=("n_classes", "refine_steps", "smooth_px"))


def zoom(image: np.ndarray, factor: float, *, order: int = 1) -> np.ndarray:
    """`image` zoomed by `factor` (spline of `order`; 0 for labels); factor 1 returns it unchanged."""
    if abs(factor - 1.0) < 1e-3:
        return image
    from scipy import ndimage

    return ndimage.zoom(image, factor, order=order, mode="nearest", grid_mode=True)


def load_fewshot(model: str | Path = "builtin") -> tuple[UNet, dict]:
    """(feature model, metadata) from "builtin" (the shipped model) or a file written by `save_fewshot`."""
    path = BUILTIN if str(model) == "builtin" else Path(model)
    loaded, metadata = load_model(path, builder="unet")
    if metadata.get("learner") != LEARNER:
        raise ValueError(f"model {str(path)!r} is a {metadata.get('learner')!r} model, not a few-shot "
                         f"segmentation ({LEARNER!r}) model")
    return loaded, metadata


def save_fewshot(path, model: UNet, arguments: dict, metadata: dict) -> None:
    from learners.train import save_model

    save_model(path, model, builder="unet", arguments=arguments, metadata={"learner": LEARNER, **metadata})


def train_fewshot(images: np.ndarray, masks: np.ndarray, *, epochs: int, key, crop: int = 128,
                  batch_size: int = 4, shots: int = 5, learning_rate: float = 2e-3, model_seed: int = 0,
                  checkpoint_dir=None, on_epoch=None, **model_arguments) -> tuple[UNet, list[dict], dict]:
    """Episodic training on images (n, ny, nx) with label masks (n, ny, nx) (int, value = class; e.g. the
    "mask" of twin's generator). Returns (model, per-epoch metrics, the model's builder arguments)."""
    import optax

    from learners.train import fit, init_state, make_train_step

    images, masks = np.asarray(images, np.float32), np.asarray(masks)
    if images.ndim != 3 or masks.shape != images.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} are not allowed; give two (n, ny, nx) "
                         f"arrays of the same shape")
    if masks.min() < 0 or len(np.unique(masks)) < 2:
        raise ValueError(f"masks hold classes {np.unique(masks).tolist()}; give integers >= 0 with at least 2 "
                         f"classes")
    if len(images) < batch_size:
        raise ValueError(f"{len(images)} images are not enough for batch_size={batch_size}; give more images")
    arguments = {**MODEL_ARGUMENTS, **model_arguments}
    model = make_model(seed=model_seed, **arguments)
    graphdef, params = nnx.split(model, nnx.Param)
    n_classes = int(masks.max()) + 1
    optimizer = optax.adamw(optax.cosine_decay_schedule(learning_rate, max(epochs * (len(images) // batch_size),
                                                                           1)), weight_decay=1e-4)
    step = make_train_step(make_loss(graphdef, n_classes=n_classes, shots=shots), optimizer)
    batches = episode_batches(images, masks, crop=crop, batch_size=batch_size, key=jax.random.fold_in(key, 1))
    state, history = fit(init_state(params, optimizer), step, batches, epochs=epochs, key=key,
                         checkpoint_dir=checkpoint_dir, on_epoch=on_epoch)
    return nnx.merge(graphdef, state.params), history, arguments
