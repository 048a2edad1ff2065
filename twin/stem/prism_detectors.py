"""What PRISM detects at interpolation 1 without an FFT per probe position (Ophus 2017).

With c_k(r0) the probe's plane-wave coefficients and S~_k(q) the S-matrix's diffraction amplitudes, the
exit wave is psi~(q; r0) = sum_k c_k(r0) S~_k(q). A detector that sums |psi~|^2 against weights w(q) (an
annular or segmented mask; alpha_x, alpha_y or 1 for the centre of mass) records the quadratic form
Re(c^H M_w c), M_w = S~^H diag(w) S~; a 4D pattern is |c S~|^2 on its pixels, one GEMM per batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from twin.stem.detectors import CenterOfMassDetector, KGrid, PixelatedDetector
from twin.stem.job import values_per_position


@jax.jit
def diffraction_patterns(pattern_matrix, coefficients):
    """|psi~(q; r0)|^2 = |sum_k c_k(r0) S~_k(q)|^2 on chosen pixels q (f = 1, Ophus 2017): (b, n_q).

    pattern_matrix (n_beams, n_q): the S-matrix's Fourier amplitudes S~_k(q) at those pixels; coefficients
    (b, n_beams). One (b, n_beams) x (n_beams, n_q) product per batch of probes, no FFT.
    """
    return jnp.abs(coefficients @ pattern_matrix) ** 2


def pattern_columns(smatrix_k, detector: PixelatedDetector, grid: KGrid):
    """(S~ at the pattern's pixels (n_beams, n_ky n_kx), (n_ky, n_kx)): the pattern's rows of the S-matrix.

    smatrix_k (n_beams, ny, nx) in FFT order; the pixels are `detector.indices(grid)`, centred order.
    """
    iy, ix = detector.indices(grid)
    return smatrix_k[:, iy[:, None], ix[None, :]].reshape(len(smatrix_k), -1), (len(iy), len(ix))


def form_masks(detector, grid: KGrid):
    """Masks (n, ny, nx) whose quadratic forms give `detector`'s output at f = 1; None for 4D patterns.

    An integrating detector's own masks; for the centre of mass (alpha_x, alpha_y, 1) [mrad], because
    sum_q alpha(q) |psi~(q)|^2 = Re(c^H M_alpha c) and the CoM is sum alpha I / sum I over the whole grid.
    """
    if hasattr(detector, "masks"):
        return detector.masks(grid)
    if isinstance(detector, CenterOfMassDetector):
        ay, ax = grid.angles
        ones = np.ones(grid.shape)
        return np.stack([ones * ax[None, :], ones * ay[:, None], ones])
    return None


def detection_sizes(detectors, grid: KGrid) -> tuple[int, int]:
    """(quadratic forms, pattern pixels) the detectors need per probe position at f = 1."""
    forms = sum(3 if isinstance(d, CenterOfMassDetector) else values_per_position(d, grid)
                for d in detectors if not isinstance(d, PixelatedDetector))
    pixels = sum(values_per_position(d, grid) for d in detectors if isinstance(d, PixelatedDetector))
    return forms, pixels


def from_forms(detector, values):
    """The detector's output (b, ...) from its quadratic-form values (b, n)."""
    if isinstance(detector, CenterOfMassDetector):
        return values[:, :2] / values[:, 2:]
    return np.asarray(detector.from_masks(values))
