"""Slices of the projected electrostatic potential of a periodic cell of atoms.

The potential is built in Fourier space from exact structure factors, so it does not depend on where
atoms sit relative to pixels (no interpolation onto the grid):

    V_s(r) = 1 / (dx dy) * IFFT[ K sum_a F_a,s(k) exp(-2 pi i k . r_a) ]          [V Angstrom]

with K = h^2 / (2 pi m0 e) and F_a,s the scattering factor of atom a projected into slice s: the full
projection for the slice that holds the atom ("infinite", as abTEM's default), or the closed-form integral
over the slice's z-range ("finite", see `slab_scattering_factor`). Kirkland (2010), Sec. 5.4 and 6.4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from potentials import parametrizations as par

PROJECTIONS = ("infinite", "finite")
# Finite projection: atom-slice pairs whose share of the atom's k=0 projection is below this are skipped.
FINITE_TOLERANCE = 1e-6


@dataclass(frozen=True, kw_only=True)
class PotentialSpec:
    """How to slice and sample the potential.

    sampling: largest allowed pixel size [Angstrom]; the grid has ceil(cell / sampling) pixels per axis.
    slice_thickness: largest allowed slice thickness [Angstrom]; the cell height is cut into
        ceil(height / slice_thickness) equal slices.
    parametrization: "lobato" (default) or "kirkland".
    projection: "infinite" (each atom wholly in the slice that holds its centre) or "finite".
    abtem_filter: divide the potential by sin(|k| d) / (|k| d), d the pixel size and k [1/Angstrom], as
        abTEM 1.0 does to its interpolated deltas. Not physics: it raises the potential up to ~2% near the
        band limit. It exists only to show, in the golden tests, that everything else agrees with abTEM.
    """

    sampling: float
    slice_thickness: float
    parametrization: str = "lobato"
    projection: str = "infinite"
    abtem_filter: bool = False

    def __post_init__(self):
        for name in ("sampling", "slice_thickness"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} is not allowed; it must be a positive length [Angstrom]")
        if self.parametrization not in par.PARAMETRIZATIONS:
            raise ValueError(f"parametrization={self.parametrization!r} is not known; "
                             f"allowed: {', '.join(par.PARAMETRIZATIONS)}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection={self.projection!r} is not known; allowed: {', '.join(PROJECTIONS)}")


def grid_shape(extent: tuple[float, float], sampling: float) -> tuple[int, int]:
    """Pixels (ny, nx) for a cell `extent` = (x, y) [Angstrom] at pixel size <= `sampling` [Angstrom]."""
    return tuple(int(math.ceil(extent[i] / sampling - 1e-9)) for i in (1, 0))


def slice_edges(height: float, slice_thickness: float) -> np.ndarray:
    """Edges (n_slices + 1,) [Angstrom] of equal slices no thicker than `slice_thickness`."""
    n = max(1, int(math.ceil(height / slice_thickness - 1e-9)))
    return np.linspace(0.0, height, n + 1)


def spatial_frequencies(shape: tuple[int, int], extent: tuple[float, float]):
    """(ky, kx) [1/Angstrom] of an (ny, nx) grid over `extent` = (x, y), in FFT order, numpy float64."""
    return (np.fft.fftfreq(shape[0], extent[1] / shape[0]), np.fft.fftfreq(shape[1], extent[0] / shape[1]))


def phase_factors(frac, n: int, dtype=jnp.float32):
    """exp(-2 pi i m frac) for the FFT-order integers m of an n-point axis: (len(frac), n).

    frac: positions as fractions of the cell side; the argument is reduced modulo 1 before the
    exponential, so large cells keep float32 accuracy."""
    m = jnp.asarray(np.fft.fftfreq(n, 1.0 / n), dtype=dtype)
    turns = jnp.mod(frac[:, None] * m[None, :], 1.0)
    return jnp.exp(-2j * np.pi * turns)


def _structure_factor(positions, extent, shape, dtype, weights=None):
    """sum_a w_a exp(-2 pi i k . r_a) on the (ny, nx) FFT grid; positions (n_atoms, 2) [Angstrom]."""
    frac = jnp.asarray(positions, dtype=dtype) / jnp.asarray(extent, dtype=dtype)
    ex = phase_factors(frac[:, 0], shape[1], dtype)
    ey = phase_factors(frac[:, 1], shape[0], dtype)
    if weights is None:
        return ey.T @ ex
    return jnp.einsum("ayx,ay,ax->yx", weights, ey, ex)


def _finite_pairs(terms: par.Terms, z: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mask (n_slices, n_atoms) of the atom-slice pairs that carry more than FINITE_TOLERANCE."""
    share = np.asarray(par.slab_scattering_factor(terms, 0.0, edges[:-1, None] - z, edges[1:, None] - z))
    return np.abs(share) > FINITE_TOLERANCE * float(par.scattering_factor(terms, 0.0))


def _abtem_sinc(ky, kx, sampling):
    """sin(x) / x with x = |(ky dy, kx dx)|, 1 at k = 0: abtem.integrals.sinc without its pixel area."""
    x = np.hypot(ky[:, None] * sampling[0], kx[None, :] * sampling[1])
    return np.where(x == 0, 1.0, np.sin(x) / np.where(x == 0, 1.0, x))


def slice_plan(positions, numbers, cell_lengths, spec: PotentialSpec) -> tuple:
    """Which atoms of which element feed which slice: per slice, a tuple of (atomic number, atom indices).

    Computed from concrete positions (n_atoms, 3) [Angstrom], once, outside any tracing; the potential is
    then differentiable in the positions with this assignment held fixed. An atom on a slice boundary
    belongs to the slice below it (the one it starts), as in abTEM.
    """
    cell_lengths = np.asarray(cell_lengths, dtype=np.float64)
    numbers = np.asarray(numbers)
    edges = slice_edges(float(cell_lengths[2]), spec.slice_thickness)
    z = np.mod(np.asarray(positions, dtype=np.float64)[:, 2], cell_lengths[2])
    slice_of_atom = np.clip(np.searchsorted(edges, z + 1e-12, side="right") - 1, 0, len(edges) - 2)
    plan = []
    for s in range(len(edges) - 1):
        entries = []
        for number in np.unique(numbers):
            species = numbers == number
            if spec.projection == "infinite":
                chosen = np.flatnonzero(species & (slice_of_atom == s))
            else:
                chosen = np.flatnonzero(species & _finite_pairs(par.terms(spec.parametrization, int(number)),
                                                               z, edges)[s])
            if len(chosen):
                entries.append((int(number), chosen))
        plan.append(tuple(entries))
    return tuple(plan)


def projected_potential_slices(positions, numbers, cell_lengths, spec: PotentialSpec, dtype=jnp.float32,
                               plan=None):
    """Projected potential slices of the atoms in an orthorhombic periodic cell.

    positions: (n_atoms, 3) [Angstrom], wrapped into the cell here; numbers: (n_atoms,) atomic numbers;
    cell_lengths: (3,) cell side lengths [Angstrom]; plan: from `slice_plan` (computed here when None;
    give it to differentiate with respect to traced positions). Returns (n_slices, ny, nx) [V Angstrom].
    """
    cell_lengths = np.asarray(cell_lengths, dtype=np.float64)
    if plan is None:
        plan = slice_plan(positions, numbers, cell_lengths, spec)
    extent = (float(cell_lengths[0]), float(cell_lengths[1]))
    shape = grid_shape(extent, spec.sampling)
    edges = slice_edges(float(cell_lengths[2]), spec.slice_thickness)
    positions = jnp.mod(jnp.asarray(positions, dtype=dtype), jnp.asarray(cell_lengths, dtype=dtype))
    ky, kx = spatial_frequencies(shape, extent)
    g2 = jnp.asarray(ky[:, None] ** 2 + kx[None, :] ** 2, dtype=dtype)
    pixel_area = extent[0] / shape[1] * extent[1] / shape[0]
    scale = par.PROJECTED_POTENTIAL_CONSTANT / pixel_area
    if spec.abtem_filter:
        scale = scale / _abtem_sinc(ky, kx, (extent[1] / shape[0], extent[0] / shape[1]))

    slices = []
    for s, entries in enumerate(plan):
        fourier = jnp.zeros(shape, dtype=jnp.result_type(dtype, jnp.complex64))
        for number, chosen in entries:
            terms = par.terms(spec.parametrization, number)
            if spec.projection == "infinite":
                form = par.scattering_factor(terms, g2)
                fourier += form * _structure_factor(positions[chosen, :2], extent, shape, dtype)
                continue
            for batch in np.array_split(chosen, max(1, len(chosen) // 8)):
                dz = positions[batch, 2][:, None, None]
                form = par.slab_scattering_factor(terms, g2, edges[s] - dz, edges[s + 1] - dz)
                fourier += _structure_factor(positions[batch, :2], extent, shape, dtype, form)
        slices.append(jnp.fft.ifft2(fourier * scale).real)
    return jnp.stack(slices).astype(dtype)
