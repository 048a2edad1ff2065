"""A rotation- and translation-invariant variational autoencoder (rVAE) for patches around atoms.

The encoder maps a patch (size, size) to a posterior over an angle phi [rad], a shift t = (dx, dy) [pixels]
and latents z (latent_dim,). The decoder is a spatial generator: an MLP of (coordinate, z) that predicts
the intensity at each pixel of a coordinate grid moved into the template frame, u = R(-phi) (r - t) with
r = (x, y) the pixel offset from the patch centre (x along columns, y down the rows): a patch whose object
is the template turned by phi and moved by t. Orientation and position are thus carried by (phi, t) and
only the rest of the patch's content by z. The loss is the negative ELBO: a Gaussian reconstruction
term plus the KL divergences to the priors (z ~ N(0, 1); t ~ N(0, shift_prior_px^2); phi uniform on the
circle; AtomAI and pyroVED use a normal angle prior, which suits small rotations, not all orientations).

    patches, kept = extract_patches(image, coords_px, 24)        # coords_px (n, 2) as (x, y) = (col, row)
    model = RVAE(patch_size=24, latent_dim=2, rngs=nnx.Rngs(0))
    model, history = train_rvae(model, (patches - mean) / std, key=jax.random.key(0), epochs=40)
    code = encode(model, (patches - mean) / std)   # {"angle", "angle_std", "shift", "shift_std", "z", "z_std"}

Unlike the MLP encoders of pyroVED and AtomAI, the angle and the shift come from a pose head that is
equivariant by construction (`PoseHead`), refined by an MLP of the patch turned back into the template
frame; z comes from that MLP too, so it is invariant to rotation and shift. With an MLP pose the angle did
not train on objects seen at every orientation (see `PoseHead`). Angles and shifts are those of the patch
relative to a template the model learns itself: the angle is defined up to a global offset (and, compared
with another convention, a direction), the shift is in pixels of the image frame about the point of the
object that sits at the patch centre on average (`centre_rotation`). With `symmetry=n` the angle is
found modulo 2 pi / n, for objects with n-fold rotational symmetry (n = 3 for a graphene sublattice site).

References: Bepler et al., NeurIPS 32 (2019) (spatial-VAE); Kalinin et al., Sci. Adv. 7, eabd5084 (2021)
(rVAE on atomic patches of graphene); Ziatdinov et al., pyroVED and AtomAI (`iVAE`, `rVAE`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from learners import train
from learners.train import register_builder


# ---------------------------------------------------------------------------------------------------------
# Patches

def _patch(image, centre_xy, size: int):
    """(size, size) bilinear samples of `image` (ny, nx) on a grid centred at (x, y) = (col, row) [pixels]."""
    offsets = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    rows, cols = jnp.meshgrid(centre_xy[1] + offsets, centre_xy[0] + offsets, indexing="ij")
    return jax.scipy.ndimage.map_coordinates(image, [rows, cols], order=1, mode="nearest")


def extract_patches(image, coords_px, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Patches (m, size, size) float32 of `image` (ny, nx) centred on `coords_px` (n, 2) = (x, y) = (col, row)
    [pixels, fractional; pixel centres at integers], by bilinear interpolation, and the indices (m,) of the
    coordinates kept: a patch that would leave the image (or a NaN coordinate, as in padded labels) is
    dropped."""
    image, coords = np.asarray(image), np.asarray(coords_px)
    if image.ndim != 2:
        raise ValueError(f"image shape {image.shape} (rank {image.ndim}) is not allowed; give a 2-D image (ny, nx)")
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords_px shape {coords.shape} is not allowed; give (n_atoms, 2) as (x, y) pixels")
    if not (isinstance(size, (int, np.integer)) and 4 <= size <= min(image.shape)):
        raise ValueError(f"patch size {size!r} is not allowed; give an integer from 4 to {min(image.shape)} "
                         f"(the image is {image.shape[1]} x {image.shape[0]} pixels)")
    half = (size - 1) / 2
    ny, nx = image.shape
    with np.errstate(invalid="ignore"):
        inside = ((coords[:, 0] - half >= 0) & (coords[:, 0] + half <= nx - 1) & (coords[:, 1] - half >= 0)
                  & (coords[:, 1] + half <= ny - 1))
    kept = np.flatnonzero(inside)
    if not len(kept):
        return np.zeros((0, size, size), np.float32), kept
    sample = jax.jit(jax.vmap(_patch, in_axes=(None, 0, None)), static_argnums=2)
    patches = sample(jnp.asarray(image, jnp.float32), jnp.asarray(coords[kept], jnp.float32), int(size))
    return np.asarray(patches), kept


# ---------------------------------------------------------------------------------------------------------
# The model

def pixel_grid(size: int):
    """(size * size, 2) pixel offsets (x, y) from the patch centre [pixels], rows of the patch in order."""
    offsets = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    y, x = jnp.meshgrid(offsets, offsets, indexing="ij")
    return jnp.stack([x.ravel(), y.ravel()], axis=-1)


def rotate(vectors, angle):
    """R(angle) v for vectors (..., 2) = (x, y); angle [rad] broadcast against the leading axes."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * vectors[..., 0] - s * vectors[..., 1], s * vectors[..., 0] + c * vectors[..., 1]], -1)


def transform_grid(grid, angle, shift):
    """u = R(angle) (r - shift) for every row r of `grid` (p, 2) [pixels]; angle [rad], shift (2,) [pixels]."""
    return rotate(grid - shift, angle)


@register_builder("rvae")
class RVAE(nnx.Module):
    """patch_size [pixels]; latent_dim: number of latents besides angle and shift (0 allowed); hidden: width
    of the MLPs; features: intensity channels of the pose head; symmetry: n of an n-fold rotational symmetry
    of the objects (angles modulo 2 pi / n; 1: none); shift_prior_px: std of the shift prior [pixels];
    noise_std: std of the Gaussian likelihood in the units of the (normalized) patches."""

    def __init__(self, *, patch_size: int, latent_dim: int = 2, hidden: int = 64, features: int = 8,
                 symmetry: int = 1, shift_prior_px: float = 1.5, noise_std: float = 0.1, rngs: nnx.Rngs):
        for name, value, low, high in (("patch_size", patch_size, 4, 512), ("latent_dim", latent_dim, 0, 256),
                                       ("hidden", hidden, 1, 4096), ("features", features, 1, 256),
                                       ("symmetry", symmetry, 1, 12)):
            if not (isinstance(value, int) and low <= value <= high):
                raise ValueError(f"RVAE {name}={value!r} is not allowed; give an integer from {low} to {high}")
        for name, value in (("shift_prior_px", shift_prior_px), ("noise_std", noise_std)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"RVAE {name}={value!r} is not allowed; give a finite number > 0")
        self.patch_size, self.latent_dim, self.symmetry = patch_size, latent_dim, symmetry
        self.shift_prior_px, self.noise_std = float(shift_prior_px), float(noise_std)
        self.pose = PoseHead(patch_size, features, symmetry, rngs=rngs)
        self.offset = nnx.Param(jnp.zeros(2))  # the rotation centre in the template frame [pixels]
        self.enc1 = nnx.Linear(patch_size * patch_size, hidden, rngs=rngs)
        self.enc2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.enc_out = nnx.Linear(hidden, 3 + 2 * latent_dim, rngs=rngs)
        self.refine = nnx.Linear(hidden, 3, kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.dec_coord = nnx.Linear(2, hidden, kernel_init=nnx.initializers.normal(3.0),
                                    bias_init=nnx.initializers.normal(1.0), rngs=rngs)
        self.dec_latent = nnx.Linear(max(latent_dim, 1), hidden, use_bias=False, rngs=rngs)
        self.dec1 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.dec2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.dec_out = nnx.Linear(hidden, 1, rngs=rngs)

    def _check(self, patches):
        if patches.ndim != 3 or patches.shape[1:] != (self.patch_size, self.patch_size):
            raise ValueError(f"patches shape {tuple(patches.shape)} is not allowed; give (batch, "
                             f"{self.patch_size}, {self.patch_size})")

    def _pose(self, patches):
        """(angle (batch,), shift without the rotation centre term (batch, 2), MLP output (batch, 3 + 2k))."""
        self._check(patches)
        coarse_angle, centre = jax.vmap(self.pose)(patches)
        aligned = jax.vmap(align_patch)(patches, coarse_angle, centre)
        h = jnp.tanh(self.enc2(jnp.tanh(self.enc1(aligned.reshape(patches.shape[0], -1)))))
        refine = self.refine(h)  # residual angle and shift, seen in the coarse template frame
        return coarse_angle + refine[:, 0], centre + rotate(refine[:, 1:], coarse_angle), self.enc_out(h)

    def posterior(self, patches):
        """patches (batch, size, size) -> dict of means and log-variances: angle (batch,) [rad], shift
        (batch, 2) [pixels, (dx, dy)], z (batch, latent_dim). The pose head gives a coarse angle and centre;
        an MLP of the patch moved back into that frame (so invariant to rotation and shift) gives z, the
        variances and a residual angle and shift, which keeps the pose equivariant."""
        angle, base, out = self._pose(patches)
        k = self.latent_dim
        # the offset turns with the angle, which is only defined modulo 2 pi / n for n > 1: there it stays 0
        shift = base + rotate(self.offset[...], angle) if self.symmetry == 1 else base
        return {"angle": angle, "angle_logvar": out[:, 0] - 4.0, "shift": shift,
                "shift_logvar": out[:, 1:3] - 4.0, "z": out[:, 3:3 + k], "z_logvar": out[:, 3 + k:] - 4.0}

    def decode(self, angle, shift, z):
        """angle (batch,) [rad], shift (batch, 2) [pixels], z (batch, latent_dim) -> patches (batch, size, size):
        the spatial generator evaluated at u = R(-angle) (r - shift) for every pixel offset r."""
        grid = pixel_grid(self.patch_size)
        u = jax.vmap(transform_grid, in_axes=(None, 0, 0))(grid, -angle, shift) / (self.patch_size / 2)
        z = z if self.latent_dim else jnp.zeros((len(angle), 1))
        h = jnp.tanh(self.dec_coord(u) + self.dec_latent(z)[:, None, :])
        h = jnp.tanh(self.dec2(jnp.tanh(self.dec1(h))))
        return self.dec_out(h)[..., 0].reshape(len(angle), self.patch_size, self.patch_size)

    def __call__(self, patches, *, key):
        """One sample of the posterior decoded: (reconstruction (batch, size, size), posterior dict)."""
        post = self.posterior(patches)
        keys = jax.random.split(key, 3)
        sample = {name: post[name] + jnp.exp(0.5 * post[f"{name}_logvar"]) * jax.random.normal(k, post[name].shape)
                  for name, k in zip(("angle", "shift", "z"), keys)}
        return self.decode(sample["angle"], sample["shift"], sample["z"]), post


class PoseHead(nnx.Module):
    """Coarse angle and centre of one patch, equivariant by construction (up to pixelation and the window):
    the centre t0 is the windowed centroid of a learned intensity map w(I); the angle is 1/n times the
    argument of the n-th circular harmonic about t0 of learned intensity features,
    sum_p sum_kj W_kj f_k(I_p) B_j(rho_p) exp(i n theta_p). Rotating (shifting) the patch rotates (shifts)
    both, whatever the weights. An MLP pose starts with random, inconsistent angles, and a decoder that
    learns the rotational average of those gives the angle no gradient: measured on the test's asymmetric
    clusters, circular correlation |r| < 0.25 after 40 epochs, where this head reaches > 0.99 in 15."""

    def __init__(self, patch_size: int, features: int, symmetry: int, *, rngs: nnx.Rngs):
        self.symmetry = symmetry
        n_radial = max(2, patch_size // 3)
        self.radii = tuple(float(r) for r in np.linspace(1.0, patch_size / 2, n_radial))
        self.width = self.radii[1] - self.radii[0]
        self.window = patch_size / 4
        self.centroid_scale = nnx.Param(jnp.array([2.0, 0.0]))  # w(I) = softplus(a I + b)
        self.feature_scale = nnx.Param(1.0 + 0.5 * jax.random.normal(rngs.params(), (2, features)))
        self.harmonic = nnx.Param(jax.random.normal(rngs.params(), (features, n_radial)) / math.sqrt(features))

    def __call__(self, patch):
        grid = pixel_grid(patch.shape[0])
        intensity = patch.ravel()
        a, b = self.centroid_scale[...]
        weight = jax.nn.softplus(a * intensity + b) * jnp.exp(-jnp.sum(grid ** 2, -1) / (2 * self.window ** 2))
        centre = jnp.sum(weight[:, None] * grid, 0) / (jnp.sum(weight) + 1e-6)
        d = grid - centre
        rho = jnp.sqrt(jnp.sum(d ** 2, -1) + 1e-6)
        scale = self.feature_scale[...]
        f = jax.nn.softplus(intensity[:, None] * scale[0] + scale[1] - 1.0)  # (p, features)
        radial = jnp.exp(-((rho[:, None] - jnp.array(self.radii)) / self.width) ** 2 / 2)  # (p, n_radial)
        amplitude = jnp.einsum("pk,pj,kj->p", f, radial, self.harmonic[...])
        moment = jnp.sum(amplitude * ((d[:, 0] + 1j * d[:, 1]) / rho) ** self.symmetry)
        return jnp.arctan2(moment.imag, moment.real) / self.symmetry, centre


def align_patch(patch, angle, shift):
    """`patch` (size, size) resampled (bilinear) at r = shift + R(angle) u for every template offset u: the
    patch seen in the template frame."""
    size = patch.shape[0]
    r = rotate(pixel_grid(size), angle) + shift + (size - 1) / 2
    values = jax.scipy.ndimage.map_coordinates(patch, [r[:, 1], r[:, 0]], order=1, mode="nearest")
    return values.reshape(size, size)


def _kl_normal(mean, logvar, prior_std):
    """KL(N(mean, exp(logvar)) || N(0, prior_std^2)), elementwise."""
    return 0.5 * ((jnp.exp(logvar) + mean ** 2) / prior_std ** 2 - 1.0 - logvar) + jnp.log(prior_std)


def rvae_loss(model: RVAE, patches, key, *, beta: float = 1.0):
    """(negative ELBO per patch, averaged over the batch; metrics {"reconstruction", "kl"}) for patches
    (batch, size, size). The angle KL against a uniform prior on the circle is log(2 pi) minus the entropy
    of the posterior normal (exact for a posterior narrow against 2 pi)."""
    recon, post = model(patches, key=key)
    reconstruction = jnp.sum((recon - patches) ** 2, axis=(1, 2)) / (2 * model.noise_std ** 2)
    kl_angle = jnp.log(2 * jnp.pi / model.symmetry) - 0.5 * (jnp.log(2 * jnp.pi * jnp.e) + post["angle_logvar"])
    kl = (kl_angle + _kl_normal(post["shift"], post["shift_logvar"], model.shift_prior_px).sum(-1)
          + _kl_normal(post["z"], post["z_logvar"], 1.0).sum(-1))
    loss = jnp.mean(reconstruction + beta * kl)
    return loss, {"reconstruction": jnp.mean(reconstruction), "kl": jnp.mean(kl)}


# ---------------------------------------------------------------------------------------------------------
# Using a model

@nnx.jit
def _posterior(model: RVAE, patches):
    return model.posterior(patches)


@nnx.jit
def _decode(model: RVAE, angle, shift, z):
    return model.decode(angle, shift, z)


@nnx.jit
def _pose(model: RVAE, patches):
    return model._pose(patches)


def encode(model: RVAE, patches, *, batch_size: int = 1024) -> dict:
    """Posterior means and standard deviations of patches (n, size, size): "angle" (n,) [rad, in [-pi/m, pi/m)
    for symmetry m],
    "shift" (n, 2) [pixels, (dx, dy)], "z" (n, latent_dim) and "angle_std", "shift_std", "z_std" of the
    same shapes. Runs `batch_size` patches at a time."""
    patches = jnp.asarray(patches, jnp.float32)
    model._check(patches)
    parts = [_posterior(model, patches[i:i + batch_size]) for i in range(0, len(patches), batch_size)]
    post = {name: jnp.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else \
        model.posterior(patches)
    out = {name: np.asarray(post[name]) for name in ("shift", "z")} | {
        f"{name}_std": np.asarray(jnp.exp(0.5 * post[f"{name}_logvar"])) for name in ("angle", "shift", "z")}
    period = 2 * np.pi / model.symmetry
    return {"angle": np.asarray(jnp.mod(post["angle"] + period / 2, period) - period / 2)} | out


def decode(model: RVAE, angle, shift, z) -> np.ndarray:
    """Patches (batch, size, size) for angle (batch,) [rad], shift (batch, 2) [pixels], z (batch, latent_dim)."""
    angle, shift, z = (jnp.asarray(a, jnp.float32) for a in (angle, shift, z))
    if angle.ndim != 1 or shift.shape != (len(angle), 2) or z.shape != (len(angle), model.latent_dim):
        raise ValueError(f"decode: shapes angle {angle.shape}, shift {shift.shape}, z {z.shape} are not allowed; "
                         f"give (batch,), (batch, 2), (batch, {model.latent_dim})")
    return np.asarray(_decode(model, angle, shift, z))


def make_rvae_loss(graphdef, *, beta: float = 1.0):
    """loss_fn(params, batch, key) for `learners.train.make_train_step`; batch = {"patches": (b, size, size)}."""

    def loss_fn(params, batch, key):
        return rvae_loss(nnx.merge(graphdef, params), batch["patches"], key, beta=beta)

    return loss_fn


@functools.lru_cache(maxsize=8)
def _adam_step(graphdef, learning_rate: float, beta: float):
    """(optimizer, jitted step), kept so that training the same architecture again does not compile again."""
    optimizer = optax.adam(learning_rate)
    return optimizer, train.make_train_step(make_rvae_loss(graphdef, beta=beta), optimizer)


def train_rvae(model: RVAE, patches, *, key, epochs: int, batch_size: int = 64, learning_rate: float = 2e-3,
               beta: float = 1.0, checkpoint_dir=None, on_epoch=None) -> tuple[RVAE, list[dict]]:
    """Fit `model` to normalized patches (n, size, size) with Adam through `learners.train.fit`; the batches
    of epoch e are a permutation drawn from fold_in(key, e). Returns the trained model (a new object) and
    the metrics of each epoch."""
    patches = jnp.asarray(patches, jnp.float32)
    model._check(patches)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r} is not allowed; give an integer >= 1")
    n = len(patches)
    if n < batch_size:
        raise ValueError(f"{n} patches are too few for batch_size={batch_size}; give at least {batch_size}")
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer, step = _adam_step(graphdef, float(learning_rate), float(beta))
    order_key, step_key = jax.random.split(key)

    def epoch_batches(epoch):
        order = jax.random.permutation(jax.random.fold_in(order_key, epoch), n)
        return [{"patches": patches[order[i:i + batch_size]]} for i in range(0, n - batch_size + 1, batch_size)]

    state, history = train.fit(train.init_state(params, optimizer), step, epoch_batches, epochs=epochs,
                               key=step_key, checkpoint_dir=checkpoint_dir, on_epoch=on_epoch)
    model = nnx.merge(graphdef, state.params)
    centre_rotation(model, patches)
    return model, history


def centre_rotation(model: RVAE, patches) -> None:
    """Move the rotation centre d (in place) to the shift prior's optimum over `patches` (n, size, size),
    d = -mean_i R(-angle_i) t0_i (the minimum of sum_i |t0_i + R(angle_i) d|^2), and the decoder's
    coordinate bias with it, so that reconstructions and latents do not change. The rotation centre is
    otherwise fixed only by the shift prior's weak pull; this places it where the shifts are smallest, i.e.
    on the point of the object that sits at the patch centre on average (the located atom). With symmetry
    n > 1 the rotation centre is the centre of symmetry: d stays 0 and nothing changes."""
    if model.symmetry != 1:
        return
    angle, base, _ = _pose(model, jnp.asarray(patches, jnp.float32))
    new = -jnp.mean(rotate(base, -angle), axis=0)
    delta = new - model.offset[...]
    kernel = model.dec_coord.kernel[...]
    model.dec_coord.bias[...] = model.dec_coord.bias[...] + (delta / (model.patch_size / 2)) @ kernel
    model.offset[...] = new
