"""The atom finder: an ensemble of U-Nets that predicts, per pixel, a heatmap of atomic columns and the class
of the nearest atom, and turns them into atom positions with sub-pixel precision, a class and a confidence.

After Ziatdinov et al., ACS Nano 11, 12742 (2017) (AtomNet/AtomAI) and Lakshminarayanan et al., NeurIPS
(2017) (deep ensembles). Images are resampled to `MODEL_PIXEL_ANG` = 0.2 A per pixel by box integration
(2x2 sum-binning of 0.1 A images, which keeps Poisson statistics) and normalized per image.

    model, metadata = load_builtin()
    atoms = locate(model, metadata, image, pixel_ang=0.1)   # dict of (n,) arrays: x_ang, y_ang, class, ...

Network output (members, batch, ny, nx, 2 + n_classes): channel 0 the heatmap (unit Gaussians of
`heatmap_sigma_ang` on the columns), channels 1: the logits of (background, class_0, ..., class_{K-1}).
Training: `train_atomfinder(*read_training_set(directory), key=...)` on a twin dataset (learners/train.py's
step and fit).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from learners.atoms import (MODEL_PIXEL_ANG, centred_inside, f1_from_counts, find_peaks, lattice_average,
                            lattice_vectors, match, normalize, pixels_to_model, refine_subpixel, resample)
from learners.nets.unet import UNet
from learners.train import fit, init_state, load_model, make_train_step, register_builder

BUILDER = "atomfinder"
DEFAULT_THRESHOLD = 0.5  # of the heatmap, whose peaks are 1 on an atom
BORDER_FRACTION = 0.3  # of the training crops along each axis that touch the image border
TRAINING_MARGIN_ANG = 1.0  # frame cut from the training images (see prepare_sample)


@register_builder(BUILDER)
class AtomFinder(nnx.Module):
    """`members` U-Nets (different initial weights from one `rngs` stream) trained side by side on the same
    batches; their spread is the ensemble's uncertainty."""

    def __init__(self, *, n_classes: int, members: int = 3, depth: int = 3, width: int = 8,
                 dilations: tuple[int, ...] = (1, 2, 4), rngs: nnx.Rngs):
        if not (isinstance(members, int) and members >= 1):
            raise ValueError(f"AtomFinder members={members!r} is not allowed; give an integer >= 1")
        if not (isinstance(n_classes, int) and n_classes >= 1):
            raise ValueError(f"AtomFinder n_classes={n_classes!r} is not allowed; give an integer >= 1")
        self.depth = depth
        self.members = nnx.List([UNet(in_channels=1, out_channels=2 + n_classes, depth=depth, width=width,
                                      dilations=tuple(dilations), rngs=rngs) for _ in range(members)])

    def __call__(self, x):
        """(batch, ny, nx, 1) normalized images -> (members, batch, ny, nx, 2 + n_classes)."""
        return jnp.stack([member(x) for member in self.members])


def make_loss(graphdef, class_weights, *, heatmap_weight: float = 10.0):
    """loss_fn(params, batch, key) -> (loss, metrics) for learners.train: `heatmap_weight` x the mean squared
    heatmap error + the cross entropy of the per-pixel classes weighted by `class_weights` (1 + K,), both
    averaged over the members. batch: "x" (b, ny, nx, 1), "heatmap" (b, ny, nx), "classes" (b, ny, nx) int."""
    weights = jnp.asarray(class_weights, jnp.float32)

    def loss_fn(params, batch, key):
        del key  # augmentation happens when the batches are drawn
        out = nnx.merge(graphdef, params)(batch["x"])
        mse = jnp.mean((out[..., 0] - batch["heatmap"][None]) ** 2)
        log_p = jax.nn.log_softmax(out[..., 1:], axis=-1)
        labels = batch["classes"].astype(jnp.int32)
        nll = -jnp.take_along_axis(log_p, labels[None, ..., None], axis=-1)[..., 0]
        w = weights[labels][None]
        cross_entropy = jnp.sum(nll * w) / (jnp.sum(w) * out.shape[0])
        accuracy = jnp.mean(jnp.argmax(out[..., 1:], axis=-1) == labels[None])
        return heatmap_weight * mse + cross_entropy, {"heatmap_mse": mse, "cross_entropy": cross_entropy,
                                                      "pixel_accuracy": accuracy}

    return loss_fn


def make_optimizer(learning_rate: float, total_steps: int) -> optax.GradientTransformation:
    """Adam with a cosine decay over `total_steps` after a short warm-up, gradients clipped at norm 1."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(total_steps // 20, 1), max(total_steps, 2),
                                                  end_value=learning_rate / 20)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


def _forward(model: AtomFinder, image: np.ndarray) -> np.ndarray:
    """(ny, nx) normalized image -> (members, ny, nx, 2 + K), padded with zeros (the mean) to a multiple of 32
    pixels, as the convolutions pad the other two sides (images of similar sizes share one compiled function)."""
    multiple = max(2 ** model.depth, 32)
    ny, nx = image.shape
    padded = np.pad(image, ((0, -ny % multiple), (0, -nx % multiple)))
    out = _apply(*nnx.split(model), jnp.asarray(padded[None, ..., None]))
    return np.asarray(out[:, 0, :ny, :nx])


@jax.jit
def _apply(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


def _dihedral_forward(model: AtomFinder, image: np.ndarray) -> np.ndarray:
    """`_forward` averaged over the 8 turns and flips of the square lattice: each output is turned back before
    the mean, so the maps turn and flip exactly with the image (test-time augmentation)."""
    total = 0.0
    for turns in range(4):
        for flip in (False, True):
            view = np.rot90(image, turns)
            out = _forward(model, np.ascontiguousarray(view[:, ::-1] if flip else view))
            total = total + np.rot90(out[:, :, ::-1] if flip else out, -turns, axes=(1, 2))
    return total / 8


def predict_maps(model: AtomFinder, image, pixel_ang: float, pixel_model_ang: float = MODEL_PIXEL_ANG):
    """Per-member maps of `image` (ny, nx) with pixels of `pixel_ang` [A], on the model's grid, averaged over
    the 8 turns and flips (`_dihedral_forward`): heatmaps (members, my, mx) and class probabilities
    (members, my, mx, 1 + K), background first."""
    small = resample(image, pixel_ang, pixel_model_ang)
    if min(small.shape) < 8:
        raise ValueError(f"image of shape {np.shape(image)} at {pixel_ang} A per pixel is only {small.shape} "
                         f"pixels at the model's {pixel_model_ang} A; give an image at least "
                         f"{8 * pixel_model_ang:.1f} A on a side")
    out = _dihedral_forward(model, normalize(small))
    return out[..., 0], np.asarray(jax.nn.softmax(out[..., 1:], axis=-1))


def locate(model: AtomFinder, metadata: dict, image, pixel_ang: float, *, threshold: float | None = None,
           lattice: bool | None = None) -> dict:
    """Atoms in `image` (ny, nx) with pixels of `pixel_ang` [A].

    Peaks of the ensemble-mean heatmap above `threshold` (default: the model's), less those of atoms centred
    outside the image (`centred_inside`), refined to sub-pixel precision; per atom the class with the largest
    ensemble-mean probability (background excluded) in the 3x3 pixels around the peak. With `lattice` (default:
    the model's "lattice", True for the built-in graphene model) the positions are then averaged with those
    their neighbours predict through the crystal's own displacement vectors (`learners.atoms.lattice_vectors`,
    `lattice_average`); leave it out to measure strain or polarization, which it would smooth.

    Returns (n,) arrays: "x_ang", "y_ang" [A, from the image corner: pixel (row, col) has its centre at
    ((col + 0.5) p, (row + 0.5) p)], "col", "row" [input pixels], "class" (names), "class_index", "species",
    "confidence" (ensemble-mean class probability x the fraction of members whose own heatmap passes the
    threshold there, in [0, 1]), "agreement" (that fraction) and "position_std_ang" (the RMS spread of the
    members' refined positions [A])."""
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise ValueError(f"image of shape {image.shape} is not allowed; give a 2-D (ny, nx) image")
    if not np.all(np.isfinite(image)):
        raise ValueError("image has NaN or infinite values; give finite intensities")
    threshold = metadata.get("threshold", DEFAULT_THRESHOLD) if threshold is None else threshold
    pixel_model = float(metadata.get("pixel_ang", MODEL_PIXEL_ANG))
    heatmaps, probs = predict_maps(model, image, pixel_ang, pixel_model)
    mean_heat = heatmaps.mean(axis=0)
    peaks = find_peaks(mean_heat, threshold=threshold, min_distance_px=2)
    peaks = peaks[centred_inside(mean_heat, peaks)]
    position = refine_subpixel(mean_heat, peaks)
    members = np.stack([refine_subpixel(h, peaks) for h in heatmaps]) if len(peaks) else np.zeros((len(heatmaps), 0, 2))
    spread = np.sqrt(np.mean(np.sum((members - position[None]) ** 2, axis=-1), axis=0)) * pixel_model
    agreement = np.mean([h[tuple(peaks.T)] > threshold for h in heatmaps], axis=0) if len(peaks) else np.zeros(0)
    window = _window_mean(probs.mean(axis=0), peaks)[:, 1:]
    window = window / np.maximum(window.sum(axis=-1, keepdims=True), 1e-12)
    class_index = np.argmax(window, axis=-1).astype(int)
    class_prob = window[np.arange(len(peaks)), class_index] if len(peaks) else np.zeros(0)
    classes, species = list(metadata["classes"]), list(metadata["species"])
    x_ang, y_ang = (position[:, 1] + 0.5) * pixel_model, (position[:, 0] + 0.5) * pixel_model
    if metadata.get("lattice", False) if lattice is None else lattice:
        points = np.column_stack([x_ang, y_ang])
        x_ang, y_ang = lattice_average(points, lattice_vectors(points)).T
    return {"x_ang": x_ang, "y_ang": y_ang, "col": x_ang / pixel_ang - 0.5, "row": y_ang / pixel_ang - 0.5,
            "class": np.array([classes[i] for i in class_index], dtype=object),
            "species": np.array([species[i] for i in class_index], dtype=object), "class_index": class_index,
            "confidence": class_prob * agreement, "agreement": agreement, "position_std_ang": spread}


def _window_mean(maps: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """(n, C): the mean of `maps` (ny, nx, C) over the 3x3 pixels around each peak (clipped at the border)."""
    ny, nx, _ = maps.shape
    total = np.zeros((len(peaks), maps.shape[-1]))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            total += maps[np.clip(peaks[:, 0] + dy, 0, ny - 1), np.clip(peaks[:, 1] + dx, 0, nx - 1)]
    return total / 9


def builtin_path():
    """Path of the built-in model shipped with the package (learners/pretrained/atomfinder.twin)."""
    from importlib import resources

    return resources.files("learners") / "pretrained" / "atomfinder.twin"


def load_atomfinder(path) -> tuple[AtomFinder, dict]:
    """(model, metadata) of an atom-finder file, or of the built-in model for path "builtin"."""
    if str(path) == "builtin":
        path = builtin_path()
        if not path.is_file():
            raise ValueError("the built-in atom finder is not installed (learners/pretrained/atomfinder.twin); "
                             "build it with `make pretrained`")
    return load_model(path, builder=BUILDER)


# ---------------------------------------------------------------------------------------------------------
# Training data


def targets(shape, col, row, class_index, *, sigma_px: float, radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Training targets on a (ny, nx) grid from atoms at pixel coordinates (col, row) with classes
    `class_index` (0..K-1): heatmap (ny, nx), the sum of unit Gaussians of `sigma_px` over the 4 nearest
    atoms, and classes (ny, nx) int32, 1 + the class of the nearest atom within `radius_px`, else 0."""
    from scipy.spatial import cKDTree

    ny, nx = shape
    rows, cols = np.mgrid[0:ny, 0:nx]
    grid = np.column_stack([rows.ravel(), cols.ravel()]).astype(np.float64)
    if len(col) == 0:
        return np.zeros(shape, np.float32), np.zeros(shape, np.int32)
    tree = cKDTree(np.column_stack([row, col]))
    k = min(4, len(col))
    distance, nearest = tree.query(grid, k=k)
    distance, nearest = distance.reshape(len(grid), k), nearest.reshape(len(grid), k)
    heatmap = np.exp(-0.5 * (distance / sigma_px) ** 2).sum(axis=1).reshape(shape)
    classes = np.where(distance[:, 0] < radius_px, 1 + np.asarray(class_index)[nearest[:, 0]], 0).reshape(shape)
    return heatmap.astype(np.float32), classes.astype(np.int32)


def prepare_sample(image, pixel_ang: float, col, row, class_index, *, pixel_model_ang: float = MODEL_PIXEL_ANG,
                   sigma_ang: float = 0.3, radius_ang: float = 0.4, margin_ang: float = TRAINING_MARGIN_ANG) -> dict:
    """One labelled image (ny, nx) with pixels of `pixel_ang` [A] and atoms at pixel coordinates (col, row)
    -> {"x": normalized image on the model grid (my, mx), "heatmap", "classes"} (see `targets`), less a
    `margin_ang` frame on every side.

    The labels hold only the atoms centred in the field of view, so the targets near the border lack the
    tails of the atoms just outside it, which the image shows. Without the frame, every edge of a training
    crop is an interior cut whose targets do hold those tails, as at the edges of an image to locate, where
    `centred_inside` then drops the peaks of atoms centred outside."""
    small = resample(image, pixel_ang, pixel_model_ang)
    mcol, mrow = pixels_to_model(col, row, pixel_ang, pixel_model_ang)
    heatmap, classes = targets(small.shape, mcol, mrow, class_index, sigma_px=sigma_ang / pixel_model_ang,
                               radius_px=radius_ang / pixel_model_ang)
    m = int(round(margin_ang / pixel_model_ang))
    inner = (slice(m, small.shape[0] - m), slice(m, small.shape[1] - m))
    return {"x": normalize(small[inner]), "heatmap": heatmap[inner], "classes": classes[inner]}


def read_training_set(directory, *, pixel_model_ang: float = MODEL_PIXEL_ANG, sigma_ang: float = 0.3,
                      radius_ang: float = 0.4) -> tuple[list[dict], dict]:
    """The samples of the twin dataset in `directory` prepared by `prepare_sample`, and the class table
    {"classes": atom class names, "species": their element symbols} (vacancy classes, with no atom, are left
    out). Pixel sizes come from each sample's fov_ang / pixels."""
    from ase.data import chemical_symbols

    from twin.generate import open_dataset

    ds = open_dataset(directory).load()
    names = list(np.atleast_1d(ds.attrs["classes"]))
    z, cls = ds["atom_z"].values, ds["atom_class"].values
    present = cls >= 0
    vacancy = {int(c) for c in np.unique(cls[present & (z == 0)])}
    atom_ids = [i for i in range(len(names)) if i not in vacancy]
    species = []
    for i in atom_ids:
        seen = z[present & (cls == i)]
        species.append(chemical_symbols[int(np.bincount(seen).argmax())] if len(seen) else names[i].split("_")[0])
    remap = {old: new for new, old in enumerate(atom_ids)}
    pixel = ds["param.acquisition.fov_ang"].values / ds["param.acquisition.pixels"].values
    samples = []
    for k in range(ds.sizes["sample"]):
        keep = (cls[k] >= 0) & (z[k] > 0)
        samples.append(prepare_sample(ds["image"].values[k], float(pixel[k]), ds["atom_col"].values[k][keep],
                                      ds["atom_row"].values[k][keep], [remap[int(c)] for c in cls[k][keep]],
                                      pixel_model_ang=pixel_model_ang, sigma_ang=sigma_ang, radius_ang=radius_ang))
    return samples, {"classes": [str(names[i]) for i in atom_ids], "species": species}


def class_weights(samples: list[dict], n_classes: int, *, cap: float = 10.0) -> np.ndarray:
    """(1 + K,) weights of the per-pixel classes: (largest count / count) ** 0.5, capped at `cap`."""
    counts = np.bincount(np.concatenate([s["classes"].ravel() for s in samples]), minlength=1 + n_classes)
    return np.minimum(np.sqrt(counts.max() / np.maximum(counts, 1)), cap).astype(np.float32)


def make_epoch_batches(samples: list[dict], key, *, steps: int, batch_size: int, crop_px: int):
    """epoch -> list of `steps` batches of `batch_size` random `crop_px` crops with a random rotation by a
    multiple of 90 degrees or (half of them) by any angle, and a random flip; a pure function of (key, epoch).
    An unturned crop touches each border of the (framed, see `prepare_sample`) image with probability
    `BORDER_FRACTION`, so the network learns atoms cut by an edge where its convolutions pad with zeros."""
    small = [s for s in samples if min(s["x"].shape) >= crop_px]
    if not small:
        raise ValueError(f"crop_px={crop_px} is larger than every training image on the model grid")

    def epoch_batches(epoch: int):
        draws = jax.random.uniform(jax.random.fold_in(key, epoch), (steps, batch_size, 7))
        batches = []
        for step_draws in np.asarray(draws):
            parts = {"x": [], "heatmap": [], "classes": []}
            for u_sample, u_row, u_col, u_rot, u_flip, u_edge_row, u_edge_col in step_draws:
                s = small[int(u_sample * len(small))]
                if u_rot >= 0.5:  # half the crops: any angle, from the interior of the turned image
                    s, u_edge_row, u_edge_col = _turned(s, (u_rot - 0.5) * 720.0, crop_px), 0.5, 0.5
                ny, nx = s["x"].shape
                r, c = (_offset(u, u_edge, n - crop_px) for u, u_edge, n in ((u_row, u_edge_row, ny),
                                                                              (u_col, u_edge_col, nx)))
                for name in parts:
                    crop = np.rot90(s[name][r:r + crop_px, c:c + crop_px], int(u_rot * 8) % 4)
                    parts[name].append(crop[:, ::-1] if u_flip < 0.5 else crop)
            batch = {name: np.ascontiguousarray(np.stack(value)) for name, value in parts.items()}
            batch["x"] = batch["x"][..., None]
            batches.append(batch)
        return batches

    return epoch_batches


def _turned(sample: dict, angle_deg: float, crop_px: int) -> dict:
    """`sample` turned by `angle_deg` about its centre (linear interpolation; nearest for the classes), cut to
    the central square that lies inside the original image (at least `crop_px`)."""
    from scipy import ndimage

    ny, nx = sample["x"].shape
    theta = np.deg2rad(angle_deg)
    side = max(int(min(ny, nx) / (abs(np.cos(theta)) + abs(np.sin(theta)))), crop_px)
    r0, c0 = (ny - side) // 2, (nx - side) // 2
    return {name: ndimage.rotate(sample[name], angle_deg, reshape=False, order=0 if name == "classes" else 1,
                                 mode="nearest")[r0:r0 + side, c0:c0 + side] for name in ("x", "heatmap", "classes")}


def _offset(u: float, u_edge: float, largest: int) -> int:
    if u_edge < BORDER_FRACTION / 2:
        return 0
    if u_edge > 1 - BORDER_FRACTION / 2:
        return largest
    return int(u * (largest + 1))


def train_atomfinder(samples: list[dict], class_table: dict, *, key, epochs: int = 10, steps_per_epoch: int = 50,
                     batch_size: int = 8, crop_px: int = 64, members: int = 3, depth: int = 3, width: int = 8,
                     learning_rate: float = 3e-3, checkpoint_dir=None, on_epoch=None, jit: bool = True,
                     init: AtomFinder | None = None):
    """Train an AtomFinder on prepared `samples` (see `read_training_set`), from random weights or from the
    weights of `init` (same architecture). Returns (model, metadata, history); the run is a pure function of
    `key` and the arguments."""
    n_classes = len(class_table["classes"])
    arguments = {"n_classes": n_classes, "members": members, "depth": depth, "width": width, "dilations": [1, 2, 4]}
    k_init, k_data, k_step = jax.random.split(key, 3)
    seed = int(jax.random.randint(k_init, (), 0, 2**31 - 1))
    model = AtomFinder(**arguments, rngs=nnx.Rngs(seed))
    if init is not None:
        nnx.update(model, nnx.state(init, nnx.Param))
    graphdef, params = nnx.split(model, nnx.Param)
    weights = class_weights(samples, n_classes)
    optimizer = make_optimizer(learning_rate, epochs * steps_per_epoch)
    step = make_train_step(make_loss(graphdef, weights), optimizer, jit=jit)
    batches = make_epoch_batches(samples, k_data, steps=steps_per_epoch, batch_size=batch_size, crop_px=crop_px)
    state, history = fit(init_state(params, optimizer), step, batches, epochs=epochs, key=k_step,
                         checkpoint_dir=checkpoint_dir, on_epoch=on_epoch)
    nnx.update(model, state.params)
    metadata = {**class_table, "pixel_ang": MODEL_PIXEL_ANG, "threshold": DEFAULT_THRESHOLD,
                "heatmap_sigma_ang": 0.3, "class_radius_ang": 0.4, "normalization": "per image: zero mean, unit std",
                "arguments": arguments, "class_weights": weights.tolist(),
                "training": {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size,
                             "crop_px": crop_px, "learning_rate": learning_rate, "n_images": len(samples)}}
    return model, metadata, history


# ---------------------------------------------------------------------------------------------------------
# Scores


def score_image(found: dict, x_ang, y_ang, species, *, tolerance_ang: float = 0.355, field_ang=None) -> dict:
    """Detections `found` (from `locate`) against true atoms at (x_ang, y_ang) [A] with element symbols
    `species`: tp, fp, fn, precision, recall, f1, "species_correct" among the matched atoms, and "dopants"
    (counted non-C atoms) with "dopants_right" (those matched with the right element).

    With `field_ang` = (width, height) [A] of the image, the atoms centred within `tolerance_ang` of its edge
    are left out, with the detections matched to them and the unmatched detections there: no detector can tell
    an atom centred just inside the edge from one just outside it (which the labels do not hold), as both lie
    within the match radius of the edge."""
    predicted = np.column_stack([found["x_ang"], found["y_ang"]])
    truth = np.column_stack([x_ang, y_ang])
    i_pred, i_true = match(predicted, truth, tolerance_ang)
    count_true, count_pred = np.ones(len(truth), bool), np.ones(len(predicted), bool)
    if field_ang is not None:
        count_true, count_pred = (_interior(p, field_ang, tolerance_ang) for p in (truth, predicted))
        count_pred[i_pred] = count_true[i_true]  # a matched detection counts when its atom does
    counted = count_true[i_true]
    tp = int(counted.sum())
    fp, fn = int(count_pred.sum()) - tp, int(count_true.sum()) - tp
    species = np.asarray(species)
    right = np.asarray(found["species"])[i_pred][counted] == species[i_true][counted]
    doped = species[i_true][counted] != "C"
    return {"tp": tp, "fp": fp, "fn": fn, **f1_from_counts(tp, fp, fn), "species_correct": int(right.sum()),
            "dopants": int(np.sum((species != "C") & count_true)), "dopants_right": int(right[doped].sum())}


def _interior(points: np.ndarray, field_ang, margin_ang: float) -> np.ndarray:
    """(n,) bool: (x, y) `points` [A] at least `margin_ang` inside a field of `field_ang` = (width, height)."""
    upper = np.asarray(field_ang, np.float64) - margin_ang
    return np.all((points >= margin_ang) & (points <= upper), axis=1)


def sample_truth(sample: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(x_ang, y_ang, species, pixel_ang) of the atoms of a `twin.generate` sample (vacancies left out), in
    the image frame of `locate` (pixel centres at (col + 0.5) p)."""
    from ase.data import chemical_symbols

    parameters = sample["parameters"]
    pixel = float(parameters["acquisition.fov_ang"]) / float(parameters["acquisition.pixels"])
    keep = np.asarray(sample["atom_z"]) > 0
    x = (np.asarray(sample["atom_col"])[keep] + 0.5) * pixel
    y = (np.asarray(sample["atom_row"])[keep] + 0.5) * pixel
    species = np.array([chemical_symbols[int(z)] for z in np.asarray(sample["atom_z"])[keep]], dtype=object)
    return x, y, species, pixel


def score_samples(model: AtomFinder, metadata: dict, samples, *, tolerance_ang: float = 0.355) -> dict:
    """Detection and species scores of `locate` summed over `samples` (outputs of generate_sample): f1,
    precision, recall (a detection matches a true atom within `tolerance_ang`, one to one), species_accuracy
    (matched atoms whose element is right), dopant_recall (non-C atoms found with the right element) and
    the counts, over the whole field of view; "interior": f1, precision, recall and counts without the atoms
    centred within `tolerance_ang` of the edge (see `score_image`)."""
    totals = {"whole": np.zeros(6, int), "interior": np.zeros(6, int)}
    keys = ("tp", "fp", "fn", "species_correct", "dopants", "dopants_right")
    n = 0
    for sample in samples:
        x, y, species, pixel = sample_truth(sample)
        found = locate(model, metadata, sample["image"], pixel)
        field = np.array(np.shape(sample["image"])[::-1]) * pixel
        for name, field_ang in (("whole", None), ("interior", field)):
            scores = score_image(found, x, y, species, tolerance_ang=tolerance_ang, field_ang=field_ang)
            totals[name] += [scores[k] for k in keys]
        n += 1
    dopants, dopants_right = totals["whole"][4:]
    out = {}
    for name, (tp, fp, fn, right, _, _) in totals.items():
        out[name] = {**f1_from_counts(int(tp), int(fp), int(fn)), "species_accuracy": right / tp if tp else 0.0,
                     "tp": int(tp), "fp": int(fp), "fn": int(fn)}
    return {**out["whole"], "interior": out["interior"],
            "dopant_recall": dopants_right / dopants if dopants else float("nan"), "dopants": int(dopants),
            "n_images": n}
