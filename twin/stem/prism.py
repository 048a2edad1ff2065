"""PRISM: STEM by a scattering matrix of plane waves (Ophus, Adv. Struct. Chem. Imaging 3, 13 (2017)).

Multislice is linear in the incident wave, so a probe at r0, sum_k c_k(r0) exp(2 pi i k.r), leaves the
sample as the same sum of the exit waves S_k of the plane waves in the probe aperture (the S-matrix):

    psi(r; r0) = sum_k c_k(r0) S_k(r),      c_k(r0) = A(k) exp(-i chi(k)) exp(-2 pi i k.r0)          (Ophus 2017)

with A the aperture and chi the aberration phase, normalised so that sum_k |c_k|^2 = 1. With the
interpolation factor f only every f-th k-point of each axis is a beam, so each probe repeats with the
period extent / f, and the sum is done only in a window of (ny / f, nx / f) pixels around r0.
At f = 1 the answer equals plain multislice exactly. Detectors that integrate intensity over a mask, and
the centre of mass, are quadratic forms in c at f = 1: I_d(r0) = Re(c^H M_d c), M_d = S~^H diag(mask_d) S~,
S~ the S-matrix in Fourier space; 4D patterns are |c S~|^2 (`twin.stem.prism_detectors`). Neither needs an
FFT per probe position. At f > 1 every detector sees the window's exit wave on the window's k-grid.

Fourier arrays are (ny, nx) in FFT order; positions are (x, y) [Angstrom]; extent is (x, y) [Angstrom].
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from potentials.projected import spatial_frequencies
from twin.stem import optics
from twin.stem.detectors import KGrid, PixelatedDetector
from twin.stem.job import WAVE_COPIES, available_memory
from twin.stem.prism_detectors import detection_sizes, diffraction_patterns, form_masks, from_forms, pattern_columns
from twin.stem.multislice import multislice
from twin.stem.probe import ProbeSpec, probe_fourier

MAX_BEAM_BATCH = 32
MAX_POSITION_BATCH = 256


def check_interpolation(shape: tuple[int, int], interpolation: int):
    """Raise a ValueError unless `interpolation` is a positive integer dividing both of `shape` (ny, nx)."""
    if not (isinstance(interpolation, (int, np.integer)) and interpolation >= 1):
        raise ValueError(f"interpolation={interpolation!r} is not allowed; it must be a positive integer")
    if shape[0] % interpolation or shape[1] % interpolation:
        raise ValueError(f"interpolation={interpolation} does not divide the grid of {shape[0]}x{shape[1]} "
                         "pixels (ny x nx); choose a factor of both, or a sampling that makes it one")


def window_grid(shape: tuple[int, int], extent: tuple[float, float], interpolation: int):
    """The probe window: its shape (ny / f, nx / f), extent (x / f, y / f) [Angstrom] and (ky, kx) [1/Angstrom]."""
    check_interpolation(shape, interpolation)
    window = (shape[0] // interpolation, shape[1] // interpolation)
    window_extent = (extent[0] / interpolation, extent[1] / interpolation)
    return window, window_extent, spatial_frequencies(window, window_extent)


def _window_probe(probe: ProbeSpec, shape, extent, interpolation, dtype):
    """Aperture and normalised probe A exp(-i chi) on the window grid, (ny / f, nx / f) each."""
    window, window_extent, (ky, kx) = window_grid(shape, extent, interpolation)
    k, phi = optics.polar_frequencies(ky, kx)
    angular_sampling = (probe.wavelength / window_extent[1], probe.wavelength / window_extent[0])

    def evaluate(k, phi):  # jitted whole: one compilation instead of one per elementwise operation
        aperture = optics.soft_aperture(k * probe.wavelength, phi, probe.semiangle * 1e-3, angular_sampling)
        return aperture, probe_fourier(probe, k, phi, angular_sampling, dtype)

    return jax.jit(evaluate)(k, phi)


def plane_wave_beams(probe: ProbeSpec, shape: tuple[int, int], extent: tuple[float, float], interpolation: int,
                     dtype=jnp.complex64):
    """The S-matrix's plane waves and the probe's coefficients on them: (indices (n_beams, 2) int, amplitudes
    (n_beams,) complex). See `plane_wave_indices` and `beam_amplitudes`."""
    aperture, window_probe = _window_probe(probe, shape, extent, interpolation, dtype)
    iy, ix = np.nonzero(np.asarray(aperture) > 0)
    my = np.fft.fftfreq(aperture.shape[0], 1 / aperture.shape[0]).astype(int)[iy]
    mx = np.fft.fftfreq(aperture.shape[1], 1 / aperture.shape[1]).astype(int)[ix]
    return np.stack([my, mx], -1) * interpolation, window_probe[iy, ix]


def plane_wave_indices(probe: ProbeSpec, shape: tuple[int, int], extent: tuple[float, float],
                       interpolation: int) -> np.ndarray:
    """Signed FFT frequencies (my, mx) of the S-matrix's plane waves, (n_beams, 2) int; k = (my / y, mx / x).

    The beams are every f-th k-point of each axis whose angle lies inside the probe aperture, soft edge
    included (aperture > 0). The aperture is evaluated on the window grid, whose pixel is f times the
    cell's, as abTEM 1.0 does (`SMatrix.wave_vectors`); the grid index of a beam is m mod (ny, nx).
    """
    return plane_wave_beams(probe, shape, extent, interpolation)[0]


def beam_amplitudes(probe: ProbeSpec, shape, extent, interpolation: int, dtype=jnp.complex64):
    """The probe's own coefficients A(k) exp(-i chi(k)) at the beams of `plane_wave_indices`, (n_beams,).

    Normalised so that sum_k |.|^2 = 1 (a probe of unit intensity). Aperture edge and aberrations as
    `twin.stem.probe.probe_fourier` on the window grid.
    """
    return plane_wave_beams(probe, shape, extent, interpolation, dtype)[1]


@partial(jax.jit, static_argnames=("extent", "dtype"))
def prism_coefficients(amplitudes, indices, positions, extent, dtype=jnp.float32):
    """c_k(r0) = amplitudes_k exp(-2 pi i k.r0) (Ophus 2017): (n_positions, n_beams) complex.

    amplitudes (n_beams,); indices (n_beams, 2) signed frequencies (my, mx); positions (n_positions, 2)
    (x, y) [Angstrom]; extent (x, y) [Angstrom]. Turns are reduced modulo 1 before the exponential.
    """
    frac = jnp.asarray(positions, dtype=dtype) / jnp.asarray(extent, dtype=dtype)
    m = jnp.asarray(indices, dtype=dtype)
    turns = jnp.mod(frac[:, 1:2] * m[None, :, 0], 1.0) + jnp.mod(frac[:, 0:1] * m[None, :, 1], 1.0)
    return amplitudes[None, :] * jnp.exp(-2j * np.pi * turns)


@partial(jax.jit, static_argnames=("batch_size",))
def build_smatrix(indices, transmissions, propagator, batch_size: int = 8):
    """The S-matrix in Fourier space: exit waves of unit plane waves, (n_beams, ny, nx).

    indices: (n_beams, 2) signed frequencies (my, mx) from `plane_wave_indices`; transmissions
    (n_slices, ny, nx) and propagator (ny, nx) as for `twin.stem.multislice.multislice`. Each incident
    wave is a single Fourier coefficient 1 at (my mod ny, mx mod nx), sum |.|^2 = 1. Beams run through
    the multislice `batch_size` at a time (jax.lax.map).
    """
    shape = propagator.shape

    def exit_wave(index):
        wave = jnp.zeros(shape, transmissions.dtype).at[index[0] % shape[0], index[1] % shape[1]].set(1.0)
        return multislice(wave, transmissions, propagator)

    return jax.lax.map(exit_wave, jnp.asarray(indices), batch_size=batch_size)


def window_corners(positions, shape: tuple[int, int], extent: tuple[float, float], interpolation: int) -> np.ndarray:
    """First pixel (iy, ix) of each probe's window, (n_positions, 2) int: rint(r0 / d - window // 2).

    The window of (ny / f, nx / f) pixels is centred on the pixel nearest r0 (ties to even, as abTEM's
    `minimum_crop`); it wraps around the periodic cell.
    """
    window, _, _ = window_grid(shape, extent, interpolation)
    pixels = np.asarray(positions, dtype=np.float64)[:, ::-1] / (extent[1] / shape[0], extent[0] / shape[1])
    return np.rint(pixels - np.asarray(window) // 2).astype(np.int32)


def window_regions(corners, shape: tuple[int, int], window: tuple[int, int], tile: tuple[int, int] | None = None):
    """Regions of the cell that hold the windows of nearby probes, so that the beam sum is one GEMM per batch.

    corners (n, 2) from `window_corners`; shape (ny, nx); window (wy, wx); tile (ty, tx) [pixels], default
    a quarter window: corners are grouped in tiles of this size, and a tile's region of
    (wy + ty - 1, wx + tx - 1) pixels holds the windows of all its probes. Along an axis where that reaches
    the cell size the region is the whole axis (corner 0) and windows wrap inside it. Returns (region
    (Ry, Rx), region_corners (n, 2), offsets (n, 2)): each window starts `offsets` into its tile's region,
    which starts at `region_corners`.
    """
    shape, window = np.asarray(shape), np.asarray(window)
    tile = np.maximum(window // 4, 1) if tile is None else np.asarray(tile)
    whole = window + tile - 1 >= shape
    region = np.where(whole, shape, window + tile - 1)
    wrapped = np.mod(corners, shape)
    region_corners = np.where(whole, 0, wrapped // tile * tile)
    return tuple(int(v) for v in region), region_corners.astype(np.int32), (wrapped - region_corners).astype(np.int32)


@partial(jax.jit, static_argnames=("region", "window"))
def window_exit_waves(smatrix_r, coefficients, region_corner, offsets, region: tuple[int, int],
                      window: tuple[int, int]):
    """Fourier coefficients of psi(r; r0) = sum_k c_k S_k(r) in each probe's window (Ophus 2017).

    smatrix_r: (n_beams, ny, nx) real-space S-matrix, ifft2 of `build_smatrix`; coefficients (b, n_beams);
    region_corner (2,) and offsets (b, 2) from `window_regions` (one region for the batch); region (Ry, Rx);
    window (wy, wx). The beams are summed over the region (one (b, n_beams) x (n_beams, Ry Rx) product),
    then each window is cut out and Fourier transformed. Returns (b, wy, wx) in FFT order on the window's
    k-grid, scaled by (ny nx) / (wy wx) = f^2 so that a probe in vacuum has sum |.|^2 = sum_k |c_k|^2.
    """
    n_beams, ny, nx = smatrix_r.shape
    rows = (region_corner[0] + jnp.arange(region[0])) % ny
    cols = (region_corner[1] + jnp.arange(region[1])) % nx
    crop = smatrix_r[:, rows[:, None], cols[None, :]].reshape(n_beams, -1)
    psi = (coefficients @ crop).reshape(-1, *region)

    def cut(wave, offset):
        return wave[((offset[0] + jnp.arange(window[0])) % region[0])[:, None],
                    ((offset[1] + jnp.arange(window[1])) % region[1])[None, :]]

    return jnp.fft.fft2(jax.vmap(cut)(psi, offsets)) * (ny * nx / (window[0] * window[1]))


def prism_exit_waves(smatrix_r, coefficients, positions, extent: tuple[float, float], interpolation: int):
    """Exit waves of probes at `positions` from the S-matrix, in Fourier space on the window's k-grid.

    smatrix_r: (n_beams, ny, nx) real-space S-matrix (jnp.fft.ifft2 of `build_smatrix`'s output);
    coefficients: (b, n_beams) from `prism_coefficients`; positions (b, 2) (x, y) [Angstrom]; extent (x, y)
    [Angstrom]. Returns (waves (b, ny / f, nx / f), (ky (ny / f,), kx (nx / f,)) [1/Angstrom]); the
    window's reciprocal sampling is f / extent. At f = 1 the window is the whole cell and the waves equal
    multislice's up to a phase ramp (their origin is the window corner). The beams are summed over the
    smallest region that holds all the windows; keep the positions of one call close together.
    """
    shape = smatrix_r.shape[1:]
    window, _, frequencies = window_grid(shape, extent, interpolation)
    corners = window_corners(positions, shape, extent, interpolation)
    offsets = corners - corners.min(0)
    region = tuple(min(n, w + int(o.max())) for n, w, o in zip(shape, window, offsets.T))
    waves = window_exit_waves(smatrix_r, coefficients, jnp.asarray(np.mod(corners.min(0), shape)),
                              jnp.asarray(np.mod(offsets, shape)), region, window)
    return waves, frequencies


@jax.jit
def detector_forms(smatrix_k, masks):
    """M_d = S~^H diag(mask_d) S~ [M_kl = sum_q conj(S~_k(q)) mask_d(q) S~_l(q)]: (n_detectors, n_beams, n_beams).

    smatrix_k: (n_beams, ny, nx) from `build_smatrix`; masks (n_detectors, ny, nx) real, FFT order (or both
    flattened over the same chosen pixels, (n_beams, n_q) and (n_detectors, n_q)).
    """
    s = smatrix_k.reshape(smatrix_k.shape[0], -1)
    return jax.lax.map(lambda mask: (jnp.conj(s) * mask.reshape(-1)) @ s.T, masks)


@jax.jit
def quadratic_intensities(forms, coefficients):
    """I_d(r0) = Re(c(r0)^H M_d c(r0)): (b, n_detectors).

    forms (n_detectors, n_beams, n_beams) from `detector_forms`; coefficients (b, n_beams).
    """
    return jnp.einsum("bk,dkl,bl->bd", jnp.conj(coefficients), forms, coefficients).real


def annular_prism_intensities(smatrix_k, masks, coefficients):
    """Intensity on each mask at every probe position as a quadratic form in c, no FFT per position (f = 1).

    I_d(r0) = sum_q mask_d(q) |sum_k c_k(r0) S~_k(q)|^2 = Re(c^H M_d c) with M_d from `detector_forms`.
    smatrix_k (n_beams, ny, nx); masks (n_detectors, ny, nx); coefficients (n_positions, n_beams).
    Returns (n_positions, n_detectors), fractions of the incident intensity when sum_k |c_k|^2 = 1.
    """
    return quadratic_intensities(detector_forms(smatrix_k, masks), coefficients)


@partial(jax.jit, static_argnames=("region", "window", "detectors", "grid"))
def _window_detect(smatrix_r, coefficients, region_corner, offsets, region, window, detectors, grid):
    intensity = jnp.abs(window_exit_waves(smatrix_r, coefficients, region_corner, offsets, region, window)) ** 2
    return tuple(d.detect(intensity, grid) for d in detectors)


def _region_pixels(shape, interpolation) -> int:
    window = (shape[0] // interpolation, shape[1] // interpolation)
    region, _, _ = window_regions(np.zeros((1, 2), int), shape, window)
    return region[0] * region[1]


def prism_memory_estimate(shape: tuple[int, int], n_slices: int, n_beams: int, interpolation: int, *,
                          beam_batch: int, position_batch: int, n_detectors: int, pattern_pixels: int = 0,
                          dtype=jnp.float32) -> int:
    """Peak bytes of `prism_detect`: transmissions, propagator and the S-matrix in Fourier and real space,
    plus the larger of the two stages that follow each other: the beam batch in multislice, or the
    detection (at f = 1 the `n_detectors` quadratic forms and the S-matrix's columns at the `pattern_pixels`
    of 4D patterns; else a batch of probes summed over a region (`window_regions`) and their windows with
    FFT scratch), with a batch of patterns."""
    real = np.dtype(dtype).itemsize
    pixels = shape[0] * shape[1]
    window = pixels // interpolation**2
    region = _region_pixels(shape, interpolation)
    fixed = 2 * real * pixels * (n_slices + 1 + 2 * n_beams)
    build = 2 * real * pixels * beam_batch * WAVE_COPIES
    patterns = 4 * real * position_batch * pattern_pixels
    quadratic = (real * n_detectors * pixels + 2 * real * (pixels * n_beams + n_detectors * n_beams**2)
                 + 2 * real * n_beams * pattern_pixels)
    explicit = real * n_detectors * window + 2 * real * (region * (n_beams + position_batch)
                                                         + position_batch * window * WAVE_COPIES)
    return fixed + max(build, patterns + max(quadratic, explicit))


def _batches(shape, n_slices, n_beams, n_positions, interpolation, sizes, dtype, budget):
    """(beam_batch, position_batch): the largest powers of two (capped) whose estimate fits `budget`."""
    beam, position = min(MAX_BEAM_BATCH, n_beams), min(MAX_POSITION_BATCH, n_positions)

    def estimate(b, p):
        return prism_memory_estimate(shape, n_slices, n_beams, interpolation, beam_batch=b, position_batch=p,
                                     n_detectors=sizes[0], pattern_pixels=sizes[1], dtype=dtype)

    while beam > 1 and estimate(beam, 1) > budget:
        beam //= 2
    while position > 1 and estimate(1, position) > budget:
        position //= 2
    if estimate(beam, position) > budget:
        raise MemoryError(f"PRISM needs an estimated {estimate(beam, position) / 2**20:.1f} MiB ({n_beams} beams, "
                          f"{n_slices} slices of {shape[0]}x{shape[1]} pixels) but {budget / 2**20:.1f} MiB is "
                          "available; use a larger interpolation, a coarser sampling or thicker slices")
    return beam, math.ceil(n_positions / math.ceil(n_positions / position))


def _padded(indices: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([indices, np.repeat(indices[-1:], size - len(indices))])


def _windowed_detect(smatrix_r, amplitudes, indices, positions, extent, interpolation, detectors, grid, batch,
                     dtype):
    """Yield (chosen, outputs) by explicit windows, batches of probes grouped by tile (`window_regions`)."""
    shape = smatrix_r.shape[1:]
    window, _, _ = window_grid(shape, extent, interpolation)
    corners = window_corners(positions, shape, extent, interpolation)
    region, region_corners, offsets = window_regions(corners, shape, window)
    keys = region_corners[:, 0].astype(np.int64) * shape[1] + region_corners[:, 1]
    order = np.argsort(keys, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(keys[order])) + 1)
    batch = min(batch, max(len(g) for g in groups))
    for group in groups:
        for start in range(0, len(group), batch):
            chosen = group[start:start + batch]
            padded = _padded(chosen, batch)
            c = prism_coefficients(amplitudes, indices, positions[padded], tuple(extent), dtype)
            outputs = _window_detect(smatrix_r, c, jnp.asarray(region_corners[chosen[0]]),
                                     jnp.asarray(offsets[padded]), region, window, detectors, grid)
            yield chosen, tuple(np.asarray(o)[: len(chosen)] for o in outputs)


def _exact_detect(smatrix_k, band, amplitudes, indices, positions, extent, detectors, grid, batch, dtype):
    """Yield (chosen, outputs) at f = 1: quadratic forms (annular, segmented, CoM) and GEMMs (4D patterns).

    band: flat indices of the pixels where the S-matrix can be non-zero (the propagator's support, its last
    factor); the forms sum over those only, which is exact and about 3x fewer terms with antialiasing.
    """
    masks = [form_masks(d, grid) for d in detectors]
    stacked = [m for m in masks if m is not None]
    forms = None
    if stacked:
        flat = smatrix_k.reshape(len(smatrix_k), -1)[:, band]
        forms = detector_forms(flat, jnp.asarray(np.concatenate(stacked).reshape(-1, grid.shape[0] * grid.shape[1])
                                                 [:, band], dtype=dtype))
    columns = {d: pattern_columns(smatrix_k, d, grid) for d in detectors if isinstance(d, PixelatedDetector)}
    for start in range(0, len(positions), batch):
        chosen = np.arange(start, min(start + batch, len(positions)))
        c = prism_coefficients(amplitudes, indices, positions[_padded(chosen, batch)], tuple(extent), dtype)
        values = None if forms is None else np.asarray(quadratic_intensities(forms, c))[: len(chosen)]
        outputs, first = [], 0
        for d, m in zip(detectors, masks):
            if m is None:
                matrix, pattern = columns[d]
                outputs.append(np.asarray(diffraction_patterns(matrix, c))[: len(chosen)].reshape(-1, *pattern))
            else:
                outputs.append(from_forms(d, values[:, first:first + len(m)]))
                first += len(m)
        yield chosen, tuple(outputs)


def prism_detect(probe: ProbeSpec, transmissions, propagator, shape: tuple[int, int], extent: tuple[float, float],
                 positions, detectors, *, interpolation: int = 1, dtype=jnp.float32,
                 quadratic_form: bool | None = None, memory_limit: int | None = None):
    """Detector outputs of a probe at many positions by PRISM (Ophus 2017), batch by batch.

    Arguments as `prism_scan`; detectors: any of twin.stem.detectors (annular, segmented, centre of mass,
    pixelated). Builds the S-matrix now (errors are raised here) and returns an iterator of (chosen (b,) int,
    ascending indices into `positions`; outputs: one numpy array (b, ...) per detector, as its `detect`
    gives on `detection_grid`). At f = 1 (quadratic_form, the default there) integrating detectors and the
    centre of mass are quadratic forms in c and 4D patterns |c S~|^2 are one GEMM per batch, no FFT per
    position; at f > 1 each probe's exit wave is cut from its window and detected on the window's k-grid,
    as abTEM's `SMatrix.reduce` does.
    """
    if quadratic_form is None:
        quadratic_form = interpolation == 1
    check_interpolation(shape, interpolation)
    if quadratic_form and interpolation != 1:
        raise ValueError(f"quadratic_form=True needs interpolation=1, got interpolation={interpolation}")
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    detectors = tuple(detectors)
    indices, amplitudes = plane_wave_beams(probe, shape, extent, interpolation, jnp.result_type(dtype, jnp.complex64))
    grid = detection_grid(probe, shape, extent, interpolation)
    if memory_limit is None:
        memory_limit = available_memory()
    beam_batch, position_batch = _batches(shape, transmissions.shape[0], len(indices), len(positions),
                                          interpolation, detection_sizes(detectors, grid), dtype, memory_limit)
    smatrix_k = build_smatrix(jnp.asarray(indices), transmissions, propagator, batch_size=beam_batch)
    if quadratic_form:
        band = jnp.asarray(np.flatnonzero(np.asarray(propagator).ravel() != 0))
        return _exact_detect(smatrix_k, band, amplitudes, indices, positions, extent, detectors, grid, position_batch,
                             dtype)
    return _windowed_detect(jnp.fft.ifft2(smatrix_k), amplitudes, indices, positions, extent, interpolation,
                            detectors, grid, position_batch, dtype)


def detection_grid(probe: ProbeSpec, shape: tuple[int, int], extent: tuple[float, float], interpolation: int):
    """The k-grid PRISM detects on: the window's, (ny / f, nx / f) pixels over extent / f (the cell's at f = 1)."""
    window, window_extent, _ = window_grid(shape, extent, interpolation)
    return KGrid(tuple(window), tuple(window_extent), probe.wavelength)


def prism_scan(probe: ProbeSpec, transmissions, propagator, shape: tuple[int, int], extent: tuple[float, float],
               positions, detectors, *, interpolation: int = 1, dtype=jnp.float32,
               quadratic_form: bool | None = None, memory_limit: int | None = None) -> np.ndarray:
    """Detector signals of a probe at many positions by PRISM (Ophus 2017), in memory.

    probe: the probe; transmissions (n_slices, ny, nx) and propagator (ny, nx) as for
    `twin.stem.multislice.multislice` (complex, matching `dtype`); shape (ny, nx); extent (x, y)
    [Angstrom]; positions (n, 2) (x, y) [Angstrom]; detectors: see `prism_detect`; interpolation f divides
    ny and nx; dtype: jnp.float32 or jnp.float64 (the latter under jax.enable_x64). quadratic_form: detect
    through quadratic forms and GEMMs (default at f = 1; not possible at f > 1). memory_limit [bytes]:
    default the memory available now. Returns (n, n_values): each detector's output per position flattened,
    in order (one value per annular detector, rings x segments per segmented one, (x, y) [mrad] for the
    centre of mass, ky x kx for a pattern); intensities in fractions of the incident intensity; at f = 1
    equal to multislice's.

    Example:
        prism_scan(ProbeSpec(energy=80e3, semiangle=25), t, p, (96, 84), (8.5, 9.8), positions,
                   [AnnularDetector(name="HAADF", inner=70, outer=200)], interpolation=2)
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    out = None
    for chosen, outputs in prism_detect(probe, transmissions, propagator, shape, extent, positions, detectors,
                                        interpolation=interpolation, dtype=dtype, quadratic_form=quadratic_form,
                                        memory_limit=memory_limit):
        values = np.concatenate([o.reshape(len(chosen), -1) for o in outputs], 1)
        if out is None:
            out = np.zeros((len(positions), values.shape[1]))
        out[chosen] = values
    return out
