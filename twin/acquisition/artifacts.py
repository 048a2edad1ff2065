"""Image artifacts: effective source size (blur of the ideal signal), spikes and dead pixels.

`source_blur` acts on the ideal, noise-free image (the finite source is incoherent: it convolves the
intensity; abTEM tutorial default sigma = 0.35 Angstrom, physics.md section 5). `add_artifacts` acts on
recorded output: spikes (stray X-rays, discharges: a large value added to random pixels) and dead pixels
(dropouts read as 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from twin.acquisition._checks import is_number, require


def source_blur(image, pixel_ang, sigma_ang) -> jax.Array:
    """I * G_sigma: periodic Gaussian blur in Fourier space, I(k) exp(-2 pi^2 sigma^2 |k|^2).

    image: (..., ny, nx) on a square pixel grid of step pixel_ang [Angstrom]; sigma_ang: standard deviation
    of the effective source (per axis) [Angstrom]. Keeps the sum of the image exactly (k = 0 untouched).
    Source: Kirkland, Advanced Computing in Electron Microscopy (2010), partial spatial coherence in STEM
    as a convolution of the image with the demagnified source.
    """
    image = jnp.asarray(image)
    dtype = image.dtype if jnp.issubdtype(image.dtype, jnp.floating) else jnp.float32
    ny, nx = image.shape[-2:]
    ky = jnp.fft.fftfreq(ny, d=pixel_ang)[:, None]
    kx = jnp.fft.fftfreq(nx, d=pixel_ang)[None, :]
    kernel = jnp.exp(-2 * jnp.pi**2 * sigma_ang**2 * (ky**2 + kx**2))
    return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(image) * kernel)).astype(dtype)


@dataclass(frozen=True, kw_only=True)
class ArtifactSpec:
    """Per-frame artifacts of recorded output.

    spike_probability: probability that a pixel gets a spike, in [0, 1].
    spike_amplitude: value added at a spike [output units], >= 0.
    dead_pixel_fraction: probability that a pixel reads 0 (applied after spikes), in [0, 1].
    """

    spike_probability: float = 0.0
    spike_amplitude: float = 1.0e3
    dead_pixel_fraction: float = 0.0

    def __post_init__(self):
        require(is_number(self.spike_probability) and 0 <= self.spike_probability <= 1, "spike_probability",
                self.spike_probability, "it is a probability in [0, 1]")
        require(is_number(self.spike_amplitude) and self.spike_amplitude >= 0, "spike_amplitude",
                self.spike_amplitude, "the spike height must be >= 0 [output units]")
        require(is_number(self.dead_pixel_fraction) and 0 <= self.dead_pixel_fraction <= 1,
                "dead_pixel_fraction", self.dead_pixel_fraction, "it is a probability in [0, 1]")


def add_artifacts(key, image, spec: ArtifactSpec) -> jax.Array:
    """out = where(dead, 0, image + A spike), spike ~ Bernoulli(p), dead ~ Bernoulli(f), per pixel.

    image: recorded output, any shape; spec: ArtifactSpec (static under jit). Same shape and dtype (float
    images) as `image`. Pixels are independent; use one key per frame.
    """
    image = jnp.asarray(image)
    if not jnp.issubdtype(image.dtype, jnp.floating):
        image = image.astype(jnp.float32)
    k_spike, k_dead = jax.random.split(key)
    spikes = jax.random.bernoulli(k_spike, spec.spike_probability, image.shape)
    dead = jax.random.bernoulli(k_dead, spec.dead_pixel_fraction, image.shape)
    out = image + jnp.where(spikes, jnp.asarray(spec.spike_amplitude, image.dtype), 0)
    return jnp.where(dead, jnp.zeros((), image.dtype), out)
