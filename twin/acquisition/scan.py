"""Serial-scan effects as probe-position offsets: line jitter, vibration, fly-back settling, drift, rotation.

The probe of a STEM visits the pixels one after another, so anything that moves the probe (or the sample)
during the frame displaces the position where the sample is actually sampled (Jones, Microscopy Today
(2014): fast instabilities tear the columns, slow drift shears the lattice). The physically right way to
simulate it is to sample the ideal signal at the displaced positions: `probe_offsets` gives them, in the
scan frame; `probe_positions` gives the sampled points in the sample frame. `distort` resamples an ideal
image that exists only on the nominal grid. Draw a fresh key for each frame
(`jax.random.fold_in(key, frame)`).

Frames: the scan frame has x along the fast axis (pixels of a line, array axis 1) and y along the slow
axis (lines, array axis 0). A scan rotated by theta maps scan (x, y) to sample R(theta) (x, y).
Units: Angstrom, seconds.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from twin.acquisition._checks import is_number, require

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclass(frozen=True, kw_only=True)
class ScanNoiseSpec:
    """Serial-scan imperfections of one frame.

    line_jitter_ang: RMS offset of each line along the fast axis, constant within a line, independent
        between lines [Angstrom] (typical 0.05-0.3, physics.md section 5).
    distortion_rms: RMS of the relative magnification error (1 + d ux/dx)(1 + d uy/dy) - 1 over the frame,
        as a FRACTION (0.01 = 1 %), made by a sum of sinusoids in time on each axis (abTEM noise.py).
        abTEM's `rms_power` is the FWHM in percent: rms_power = 235.5 * distortion_rms.
    max_frequency_hz: highest vibration frequency [Hz]; frequencies are uniform in (0, max].
    n_frequencies: number of sinusoids per axis; amplitudes uniform in [0, 1) / sqrt(f).
    flyback_s: time between the last pixel of a line and the first of the next [s].
    settle_ang, settle_s: line-start offset along the fast axis, settle_ang exp(-t_line / settle_s), with
        t_line the time since the line started [Angstrom, s]; settle_s > 0 whenever settle_ang != 0.
    drift_ang_per_s: (vx, vy) linear drift of the sample in the SAMPLE frame [Angstrom / s]: features
        appear displaced by +v t at instrument time t.
    rotation_rad: miscalibration of the scan rotation: the raster is turned by this angle about its
        centre [rad].
    """

    line_jitter_ang: float = 0.0
    distortion_rms: float = 0.0
    max_frequency_hz: float = 500.0
    n_frequencies: int = 1000
    flyback_s: float = 0.0
    settle_ang: float = 0.0
    settle_s: float = 0.0
    drift_ang_per_s: tuple[float, float] = (0.0, 0.0)
    rotation_rad: float = 0.0

    def __post_init__(self):
        require(is_number(self.line_jitter_ang) and self.line_jitter_ang >= 0, "line_jitter_ang",
                self.line_jitter_ang, "the line jitter must be an RMS length >= 0 [Angstrom]")
        require(is_number(self.distortion_rms) and 0 <= self.distortion_rms < 1, "distortion_rms",
                self.distortion_rms, "it is a fraction in [0, 1) (0.01 = 1 % RMS magnification error)")
        require(is_number(self.max_frequency_hz) and self.max_frequency_hz > 0, "max_frequency_hz",
                self.max_frequency_hz, "the highest vibration frequency must be > 0 [Hz]")
        require(isinstance(self.n_frequencies, int) and not isinstance(self.n_frequencies, bool)
                and self.n_frequencies >= 1, "n_frequencies", self.n_frequencies,
                "the number of sinusoids must be an integer >= 1")
        require(is_number(self.flyback_s) and self.flyback_s >= 0, "flyback_s", self.flyback_s,
                "the fly-back time must be >= 0 [s]")
        require(is_number(self.settle_ang), "settle_ang", self.settle_ang,
                "the line-start offset must be a finite length [Angstrom]")
        require(is_number(self.settle_s) and (self.settle_s > 0 or (self.settle_s == 0 and self.settle_ang == 0)),
                "settle_s", self.settle_s, "the settling time must be > 0 [s] when settle_ang != 0, else >= 0")
        drift = tuple(self.drift_ang_per_s) if isinstance(self.drift_ang_per_s, (tuple, list)) else None
        require(drift is not None and len(drift) == 2 and all(is_number(v) for v in drift), "drift_ang_per_s",
                self.drift_ang_per_s, "give two finite velocities (vx, vy) [Angstrom / s]")
        object.__setattr__(self, "drift_ang_per_s", tuple(float(v) for v in drift))
        require(is_number(self.rotation_rad), "rotation_rad", self.rotation_rad,
                "the scan-rotation error must be a finite angle [rad]")


def _check_shape(shape_yx):
    require(len(shape_yx) == 2 and all(isinstance(n, numbers.Integral) and n >= 1 for n in shape_yx), "shape_yx",
            shape_yx, "give two positive integers (ny, nx)")


def _line_and_pixel_times(shape_yx, dwell_s, flyback_s):
    """(line start times (ny,), times within a line (nx,)) [s], float32."""
    ny, nx = shape_yx
    line_s = nx * dwell_s + flyback_s
    return jnp.arange(ny, dtype=jnp.float32) * line_s, jnp.arange(nx, dtype=jnp.float32) * dwell_s


def pixel_times(shape_yx, dwell_s, flyback_s=0.0) -> jax.Array:
    """t = line (nx t_dwell + t_flyback) + pixel t_dwell: time of each pixel from the frame start [s].

    shape_yx: (ny, nx) pixels (y slow, x fast); dwell_s, flyback_s [s]. Returns (ny, nx) float32.
    Source: abTEM noise.py `_pixel_times` (there counted from the end of the first line).
    """
    _check_shape(shape_yx)
    line_t, pixel_t = _line_and_pixel_times(shape_yx, dwell_s, flyback_s)
    return line_t[:, None] + pixel_t[None, :]


def magnification_error(ux, uy, pixel_ang) -> jax.Array:
    """m = (1 + d ux/dx)(1 + d uy/dy) - 1: local relative magnification error of a displacement field.

    ux, uy: (ny, nx) displacements along the fast (x, axis 1) and slow (y, axis 0) axes [Angstrom];
    pixel_ang: scan step [Angstrom]. Central differences (jnp.gradient); needs ny, nx >= 2.
    Source: abTEM noise.py `_make_displacement_field`.
    """
    gx = jnp.gradient(ux, axis=1) / pixel_ang
    gy = jnp.gradient(uy, axis=0) / pixel_ang
    return (1 + gx) * (1 + gy) - 1


def _sinusoids(key, t0_s, line_t, pixel_t, max_frequency_hz, n_frequencies) -> jax.Array:
    """u(t) = sum_k a_k sin(2 pi f_k t + phi_k), t = t0_s + line_t + pixel_t; (ny, nx) [arbitrary units].

    f_k ~ U(0, f_max], a_k ~ U[0, 1) / sqrt(f_k), phi_k ~ U[0, 2 pi) (abTEM noise.py
    `_single_axis_distortion`). sin(A + B) is split into line and pixel factors: two matrix products,
    memory O((ny + nx) n_frequencies). Phases are reduced modulo one cycle term by term, so a large
    instrument time t0_s does not cost float32 resolution within the frame.
    """
    k_f, k_a, k_p = jax.random.split(key, 3)
    f = max_frequency_hz * (1.0 - jax.random.uniform(k_f, (n_frequencies,)))
    a = jax.random.uniform(k_a, (n_frequencies,)) / jnp.sqrt(f)
    phi = 2 * jnp.pi * jax.random.uniform(k_p, (n_frequencies,))
    cycles = jnp.mod(f * t0_s, 1.0)[None, :] + jnp.mod(f[None, :] * line_t[:, None], 1.0)
    line_phase = 2 * jnp.pi * cycles + phi
    pixel_phase = 2 * jnp.pi * f[None, :] * pixel_t[:, None]
    return (jnp.matmul(a * jnp.sin(line_phase), jnp.cos(pixel_phase).T, precision=_HIGHEST)
            + jnp.matmul(a * jnp.cos(line_phase), jnp.sin(pixel_phase).T, precision=_HIGHEST))


@functools.partial(jax.jit, static_argnames="n_frequencies")
def _vibration(key, t0_s, line_t, pixel_t, pixel_ang, rms, max_frequency_hz, n_frequencies):
    """(ux, uy) [Angstrom], scaled so that RMS(magnification_error) = rms."""
    k_x, k_y = jax.random.split(key)
    ux = _sinusoids(k_x, t0_s, line_t, pixel_t, max_frequency_hz, n_frequencies)
    uy = _sinusoids(k_y, t0_s, line_t, pixel_t, max_frequency_hz, n_frequencies)
    scale = 1.0
    for _ in range(3):  # rms is linear in the scale up to the product term; a fixed point converges fast
        m = magnification_error(scale * ux, scale * uy, pixel_ang)
        scale = scale * rms / jnp.sqrt(jnp.mean(m**2))
    return scale * ux, scale * uy


def probe_offsets(key, shape_yx, pixel_ang, dwell_s, spec: ScanNoiseSpec, t0_s=0.0, *,
                  scan_rotation_rad=0.0):
    """(dx, dy): displacement of the probe from its nominal raster position, scan frame [Angstrom].

    shape_yx: (ny, nx) static; pixel_ang: scan step [Angstrom]; dwell_s [s]; t0_s: instrument time of the
    frame's first pixel [s] (drift and vibration phase use t0_s + pixel_times); scan_rotation_rad: the
    intended scan rotation theta, used only to express the sample-frame drift in the scan frame.
    Sum of: line jitter (dx, one draw per line); sinusoidal vibration on both axes (abTEM noise.py);
    settle_ang exp(-t_line / settle_s) (dx); drift -R(-theta) v (t0 + t) (the probe lands at -v t relative
    to a sample moving by +v t); rotation error (R(phi) - 1)(r - centre). Returns two (ny, nx) float32.
    Sources: abTEM noise.py; Jones, Microscopy Today (2014).
    """
    _check_shape(shape_yx)
    ny, nx = shape_yx
    k_jitter, k_vib = jax.random.split(key)
    line_t, pixel_t = _line_and_pixel_times(shape_yx, dwell_s, spec.flyback_s)
    dx = jnp.zeros(shape_yx, jnp.float32)
    dy = jnp.zeros(shape_yx, jnp.float32)
    if spec.line_jitter_ang > 0:
        dx = dx + spec.line_jitter_ang * jax.random.normal(k_jitter, (ny, 1), jnp.float32)
    if spec.distortion_rms > 0:
        require(ny >= 2 and nx >= 2, "shape_yx", shape_yx, "distortion_rms > 0 needs at least 2x2 pixels")
        ux, uy = _vibration(k_vib, t0_s, line_t, pixel_t, pixel_ang, spec.distortion_rms,
                            spec.max_frequency_hz, spec.n_frequencies)
        dx, dy = dx + ux, dy + uy
    if spec.settle_ang != 0:
        dx = dx + spec.settle_ang * jnp.exp(-pixel_t / spec.settle_s)[None, :]
    vx, vy = spec.drift_ang_per_s
    if vx != 0 or vy != 0:
        c, s = jnp.cos(scan_rotation_rad), jnp.sin(scan_rotation_rad)
        vx_scan, vy_scan = c * vx + s * vy, c * vy - s * vx
        t = line_t[:, None] + pixel_t[None, :]  # t0_s kept apart: float32 resolution within the frame
        dx, dy = dx - vx_scan * t0_s - vx_scan * t, dy - vy_scan * t0_s - vy_scan * t
    if spec.rotation_rad != 0:
        x = (jnp.arange(nx, dtype=jnp.float32) - (nx - 1) / 2)[None, :] * pixel_ang
        y = (jnp.arange(ny, dtype=jnp.float32) - (ny - 1) / 2)[:, None] * pixel_ang
        c, s = math.cos(spec.rotation_rad), math.sin(spec.rotation_rad)
        dx, dy = dx + (c - 1) * x - s * y, dy + s * x + (c - 1) * y
    return dx.astype(jnp.float32), dy.astype(jnp.float32)


def probe_positions(key, shape_yx, pixel_ang, dwell_s, spec: ScanNoiseSpec, t0_s=0.0, *,
                    center_ang=(0.0, 0.0), scan_rotation_rad=0.0):
    """(x, y): where the probe actually samples the specimen, sample frame [Angstrom], each (ny, nx).

    r = centre + R(theta) (r_nominal - r_mid + offset), r_nominal = (pixel, line) pixel_ang, r_mid the
    raster's middle; center_ang: sample position of the raster's middle [Angstrom]; other arguments as
    in `probe_offsets`. Evaluate the ideal signal at these points to scan it with the distortions.
    """
    ny, nx = shape_yx
    dx, dy = probe_offsets(key, shape_yx, pixel_ang, dwell_s, spec, t0_s, scan_rotation_rad=scan_rotation_rad)
    x = (jnp.arange(nx, dtype=jnp.float32) - (nx - 1) / 2)[None, :] * pixel_ang + dx
    y = (jnp.arange(ny, dtype=jnp.float32) - (ny - 1) / 2)[:, None] * pixel_ang + dy
    c, s = jnp.cos(scan_rotation_rad), jnp.sin(scan_rotation_rad)
    return center_ang[0] + c * x - s * y, center_ang[1] + s * x + c * y


def _sample_periodic(image, y, x) -> jax.Array:
    """Bilinear interpolation of image (..., ny, nx) at fractional pixel coordinates y, x, periodic."""
    ny, nx = image.shape[-2:]
    y0, x0 = jnp.floor(y), jnp.floor(x)
    fy, fx = y - y0, x - x0
    iy0, ix0 = y0.astype(jnp.int32) % ny, x0.astype(jnp.int32) % nx
    iy1, ix1 = (iy0 + 1) % ny, (ix0 + 1) % nx
    return ((1 - fy) * (1 - fx) * image[..., iy0, ix0] + (1 - fy) * fx * image[..., iy0, ix1]
            + fy * (1 - fx) * image[..., iy1, ix0] + fy * fx * image[..., iy1, ix1])


def distort(key, image, pixel_ang, dwell_s, spec: ScanNoiseSpec, t0_s=0.0, *, scan_rotation_rad=0.0):
    """Resample an ideal image at the distorted probe positions: out(r) = image(r + offset(r)).

    image: (..., ny, nx), sampled on the nominal raster (x fast along the last axis), periodic; leading
    axes (detectors recorded together) share one scan. pixel_ang [Angstrom], dwell_s [s]; other arguments
    as in `probe_offsets`. Bilinear, periodic boundary. Prefer sampling the signal itself at
    `probe_positions` where it can be computed there. Source: abTEM noise.py `_apply_displacement_field`.
    """
    image = jnp.asarray(image)
    if not jnp.issubdtype(image.dtype, jnp.floating):
        image = image.astype(jnp.float32)
    dx, dy = probe_offsets(key, image.shape[-2:], pixel_ang, dwell_s, spec, t0_s,
                           scan_rotation_rad=scan_rotation_rad)
    ny, nx = image.shape[-2:]
    y = jnp.arange(ny, dtype=jnp.float32)[:, None] + dy / pixel_ang
    x = jnp.arange(nx, dtype=jnp.float32)[None, :] + dx / pixel_ang
    return _sample_periodic(image, y, x).astype(image.dtype)
