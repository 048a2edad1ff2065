"""Multislice propagation of batches of waves (Kirkland 2010, Sec. 6.2; Cowley & Moodie 1957).

Waves are carried in Fourier space between slices. One step through slice s is

    Psi <- FFT[ IFFT[Psi] * t_s ] * P,     t_s = band-limit(exp(i sigma V_s)),  P = exp(-i pi lambda dz k^2) A(k)

(transmit, then propagate to the next slice), with A the antialiasing aperture.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def transmission_functions(slices, sigma: float, antialias):
    """Band-limited transmission functions exp(i sigma V) of potential slices.

    slices: (n_slices, ny, nx) [V Angstrom]; sigma [rad / (V Angstrom)]; antialias: (ny, nx) in FFT order.
    """
    t = jnp.exp(1j * sigma * slices)
    return jnp.fft.ifft2(jnp.fft.fft2(t) * antialias)


def fresnel_propagator(k2, thickness: float, wavelength: float, antialias):
    """Fresnel free-space propagator exp(-i pi lambda dz k^2) A(k) over `thickness` [Angstrom].

    k2: (ny, nx) squared spatial frequency [1/Angstrom^2]; wavelength [Angstrom].
    """
    return jnp.exp(-1j * np.pi * wavelength * thickness * k2) * antialias


def multislice(psi_k, transmissions, propagator):
    """Propagate waves through all slices. psi_k: (..., ny, nx) in Fourier space; returns the same."""

    def step(psi, t):
        return jnp.fft.fft2(jnp.fft.ifft2(psi) * t) * propagator, None

    psi_k, _ = jax.lax.scan(step, psi_k, transmissions)
    return psi_k


def shifted_probes(probe_k, ey, ex):
    """Probes at many positions: probe_k (ny, nx) times phase factors ey (b, ny), ex (b, nx)."""
    return probe_k[None] * ey[:, :, None] * ex[:, None, :]
