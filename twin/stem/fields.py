"""Signal fields: an ideal STEM channel as a function of probe position over the periodic cell.

A STEM image carries no spatial frequency above 2 alpha / lambda (it is a correlation of the probe's
aperture with itself), so each channel is computed once on a cell grid at that Nyquist step and evaluated
at any probe position afterwards: the virtual instrument scans at any pixel size, rotation and distortion
without simulating again. Evaluation oversamples the Fourier series by FFT and interpolates cubic splines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from potentials.projected import spatial_frequencies
from twin.stem.detectors import preset
from twin.stem.fast import incoherent_fourier, nyquist_shape
from twin.stem.probe import ProbeSpec

CHANNELS = {"haadf": "HAADF", "adf": "ADF", "abf": "ABF", "bf": "BF"}
DARK_FIELD = ("haadf", "adf")
FIDELITIES = ("fast", "prism", "multislice")
MAX_ANGLE = 200.0  # outer angle of the dark-field detectors [mrad]
FINE_STEP = 0.05  # pixel of the oversampled grid the splines interpolate [Angstrom]


def channel_angles(channel: str, semiangle: float) -> tuple[float, float]:
    """(inner, outer) [mrad] of `channel` for a probe of `semiangle` [mrad]."""
    detector = preset(CHANNELS[channel], semiangle, MAX_ANGLE)
    return detector.inner, detector.outer


@dataclass(frozen=True)
class SignalField:
    """One channel over the cell: Fourier coefficients (ny, nx) of I(r) = sum c_k exp(2 pi i k.r)."""

    coefficients: np.ndarray
    extent: tuple[float, float]

    def __post_init__(self):
        ny, nx = self.coefficients.shape
        factors = [max(1, math.ceil(side / n / FINE_STEP)) for side, n in ((self.extent[1], ny), (self.extent[0], nx))]
        fine = _zero_pad(self.coefficients, (ny * factors[0], nx * factors[1]))
        image = np.real(np.fft.ifft2(fine)) * fine.size
        object.__setattr__(self, "_splines", ndimage.spline_filter(image, order=3, mode="grid-wrap"))

    def blurred(self, sigma_ang: float) -> SignalField:
        """This field seen through a Gaussian source of standard deviation sigma_ang [Angstrom]."""
        ky, kx = spatial_frequencies(self.coefficients.shape, self.extent)
        envelope = np.exp(-2 * np.pi**2 * sigma_ang**2 * (ky[:, None] ** 2 + kx[None, :] ** 2))
        return SignalField(self.coefficients * envelope, self.extent)

    def __call__(self, x, y) -> np.ndarray:
        """The signal at probe positions x, y [Angstrom] (any equal shapes), periodic in the cell."""
        splines = self._splines
        rows = np.mod(np.asarray(y) / self.extent[1], 1.0) * splines.shape[0]
        cols = np.mod(np.asarray(x) / self.extent[0], 1.0) * splines.shape[1]
        values = ndimage.map_coordinates(splines, [rows.ravel(), cols.ravel()], order=3, mode="grid-wrap",
                                         prefilter=False)
        return values.reshape(np.shape(x))


def _zero_pad(coefficients: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Coefficients (FFT order) placed in a larger FFT-order grid; Nyquist rows and columns split evenly."""
    centred = np.fft.fftshift(coefficients)
    ny, nx = coefficients.shape
    out = np.zeros(shape, complex)
    y0, x0 = shape[0] // 2 - ny // 2, shape[1] // 2 - nx // 2
    out[y0:y0 + ny, x0:x0 + nx] = centred
    return np.fft.ifftshift(out)


def compute_field(atoms, probe: ProbeSpec, channel: str, fidelity: str, *, interpolation: int = 1) -> SignalField:
    """The ideal signal of `channel` [fraction of the beam] over the cell of `atoms` at the given fidelity:
    "fast" (incoherent imaging, dark field only), "prism" (S-matrix) or "multislice"."""
    extent = tuple(float(v) for v in atoms.cell.lengths()[:2])
    inner, outer = channel_angles(channel, probe.semiangle)
    shape = nyquist_shape(probe, extent)
    if fidelity == "fast":
        return SignalField(incoherent_fourier(atoms, probe, inner, outer, shape), extent)
    from twin.stem import AnnularDetector, GridScan, PotentialSpec, simulate

    sampling = min(0.05, probe.wavelength / (3 * MAX_ANGLE * 1.05e-3))
    step = min(extent[0] / shape[1], extent[1] / shape[0])
    ds = simulate(atoms, probe=probe, potential=PotentialSpec(sampling=sampling, slice_thickness=1.0),
                  scan=GridScan(step=step), detectors=[AnnularDetector(name=channel, inner=inner, outer=outer)],
                  method="auto" if fidelity == "multislice" else fidelity, interpolation=interpolation)
    image = ds[channel].values.astype(float)
    return SignalField(np.fft.fft2(image) / image.size, extent)
