"""Physics of a Si dopant in graphene under a parked STEM probe: lattice tables, probe profile, event kernels.

A threefold Si sits on a site of a periodic graphene patch. An electron that strikes one of its three C
neighbours can invert the Si-C bond: the C takes the Si site and the Si the C site (Susi et al., PRL 113,
115501 (2014); shared/reference/physics.md section 1). Each channel is a Poisson process whose rate is the
cross section times the electron flux density at the struck atom,

    rate_j = sigma_j [Angstrom^2] * (I / e) [1/s] * p(|r_j - r_beam|) [1/Angstrom^2],

with p the azimuthally averaged probe intensity, normalised so that int 2 pi r p(r) dr = 1.

Channels, in this order: 0-2 jump to neighbour 0-2; 3 knock-on of a C neighbour (damage); 4 Si ejection
(damage). The builders here are numpy and run once, outside jit; the kernels are jnp, for one environment.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from potentials import units
from potentials.projected import spatial_frequencies
from twin.stem import optics
from twin.stem.probe import ProbeSpec, probe_fourier

if TYPE_CHECKING:
    from twin.instrument.envs import DopantEnvParams

BARN_ANG2 = 1e-8  # 1 b = 1e-24 cm^2 = 1e-8 Angstrom^2
N_JUMP = 3
KNOCK_ON = 3  # channel index: a C neighbour of the Si knocked out
EJECTION = 4  # channel index: the Si itself ejected
N_CHANNELS = 5


def patch_extent(cells: tuple[int, int], bond_ang: float) -> tuple[float, float]:
    """(Lx, Ly) [Angstrom] of `cells` = (nx, ny) orthorhombic graphene cells (sqrt(3) d x 3 d, 4 atoms each)."""
    return cells[0] * math.sqrt(3) * bond_ang, cells[1] * 3 * bond_ang


def graphene_sites(cells: tuple[int, int], bond_ang: float) -> np.ndarray:
    """Site positions (n_sites, 2) [Angstrom] relative to the patch centre, in [-L/2, L/2); armchair along y."""
    a = math.sqrt(3) * bond_ang
    basis = np.array([[0.0, 0.0], [a / 2, bond_ang / 2], [a / 2, 1.5 * bond_ang], [0.0, 2 * bond_ang]])
    i, j = np.meshgrid(np.arange(cells[0]), np.arange(cells[1]), indexing="ij")
    origins = np.stack([i.ravel() * a, j.ravel() * 3 * bond_ang], axis=-1)
    extent = np.array(patch_extent(cells, bond_ang))
    # A quarter-bond offset keeps every site off the wrap line, so rounding never moves one across it.
    xy = (origins[:, None, :] + basis[None]).reshape(-1, 2) - extent / 2 + np.array([a / 4, bond_ang / 4])
    return xy - extent * np.floor(xy / extent + 0.5)


def minimum_image(displacement, extent):
    """Shortest periodic image of `displacement` (..., 2) [Angstrom] in a patch of `extent` (Lx, Ly)."""
    extent = jnp.asarray(extent, dtype=displacement.dtype)
    return displacement - extent * jnp.round(displacement / extent)


def neighbour_table(sites: np.ndarray, extent: tuple[float, float], bond_ang: float) -> np.ndarray:
    """Indices (n_sites, 3) of each site's three nearest neighbours, periodic; ordered by bond azimuth."""
    d = sites[None, :, :] - sites[:, None, :]
    d = d - np.asarray(extent) * np.round(d / np.asarray(extent))
    dist = np.hypot(d[..., 0], d[..., 1])
    bonded = np.abs(dist - bond_ang) < 0.1 * bond_ang
    if not np.all(bonded.sum(axis=1) == N_JUMP):
        raise ValueError("the patch is too small for three distinct neighbours per site; use cells >= (2, 2)")
    table = np.nonzero(bonded)[1].reshape(-1, N_JUMP)
    azimuth = np.arctan2(np.take_along_axis(d[..., 1], table, 1), np.take_along_axis(d[..., 0], table, 1))
    return np.take_along_axis(table, np.argsort(azimuth, axis=1), 1).astype(np.int32)


def hop_distances(neighbours: np.ndarray) -> np.ndarray:
    """Lattice hop counts (n_sites, n_sites) between all sites, breadth first on the bond graph."""
    n = neighbours.shape[0]
    graph = csr_matrix((np.ones(neighbours.size), (np.repeat(np.arange(n), N_JUMP), neighbours.ravel())), (n, n))
    return shortest_path(graph, unweighted=True, directed=False).astype(np.int32)


@functools.lru_cache(maxsize=16)
def probe_radial_profile(energy_ev: float, semiangle_mrad: float, aberrations: tuple[tuple[str, float], ...] = (),
                         r_max_ang: float = 16.0, sampling_ang: float = 0.05, extent_ang: float = 64.0):
    """Azimuthally averaged probe intensity: radii (n,) [Angstrom] and density p (n,) [1/Angstrom^2].

    The probe is twin's (`ProbeSpec`, `probe_fourier`: soft aperture, Krivanek aberrations) in vacuum at
    its entrance plane, on an (extent / sampling)^2 grid; |psi|^2 is binned in rings one pixel wide, each
    point placed at the mean radius of its pixels, and the table is renormalised so that int 2 pi r p(r) dr
    over [0, r_max] is 1 for p interpolated linearly, as `probe_density` does (the aperture tail beyond
    r_max, 0.4% at 60 keV, 30 mrad and r_max = 16 Angstrom, is dropped).
    """
    spec = ProbeSpec(energy=energy_ev, semiangle=semiangle_mrad, aberrations=dict(aberrations))
    n = 2 * round(extent_ang / sampling_ang / 2)
    dx = extent_ang / n
    k, phi = optics.polar_frequencies(*spatial_frequencies((n, n), (extent_ang, extent_ang)))
    psi_k = probe_fourier(spec, k, phi, (spec.wavelength / extent_ang,) * 2)
    intensity = np.abs(np.fft.ifft2(np.asarray(psi_k, dtype=np.complex128))) ** 2
    x = np.fft.fftfreq(n, 1 / extent_ang)
    r = np.hypot(x[:, None], x[None, :]).ravel()
    ring = np.floor(r / dx).astype(int)
    keep = ring < round(r_max_ang / dx)
    counts = np.bincount(ring[keep])
    radius = np.bincount(ring[keep], r[keep]) / counts
    density = np.bincount(ring[keep], intensity.ravel()[keep]) / counts / (intensity.sum() * dx**2)
    radius = np.concatenate([[0.0], radius[1:]])  # the centre pixel is the value at r = 0
    density = density / radial_integral(radius, density)
    radius.flags.writeable = density.flags.writeable = False
    return radius, density


def radial_integral(radius_ang: np.ndarray, density_per_ang2: np.ndarray) -> float:
    """int 2 pi r p(r) dr, exact for p linear between the table points (radius_ang increasing)."""
    a, b, pa, pb = radius_ang[:-1], radius_ang[1:], density_per_ang2[:-1], density_per_ang2[1:]
    return float(np.sum(2 * np.pi * (b - a) / 6 * (pa * (2 * a + b) + pb * (a + 2 * b))))


def probe_density(r_ang, radius_ang, density_per_ang2):
    """p(r) [1/Angstrom^2] at distances `r_ang` (any shape) by linear interpolation; 0 beyond the table."""
    return jnp.interp(r_ang, radius_ang, density_per_ang2, right=0.0)


def flux_per_s(current_pa):
    """Electrons per second, I / e, for a beam current [pA]."""
    return current_pa * 1e-12 / units.E


def event_rates(site, beam_xy_ang, params: DopantEnvParams):
    """Rates (5,) [1/s] of the channels (jump to neighbour 0, 1, 2; C knock-on; Si ejection).

    site: dopant site index (); beam_xy_ang: probe position (2,) [Angstrom]. A C neighbour is knocked out
    at sigma_ko (I/e) sum_j p(r_j - r_beam); the Si is ejected at sigma_ej (I/e) p(r_Si - r_beam).
    """
    extent = patch_extent(params.lattice_cells, params.bond_ang)
    atoms = params.site_xy_ang[jnp.concatenate([params.neighbours[site], site[None]])]
    distance = jnp.linalg.norm(minimum_image(atoms - beam_xy_ang, extent), axis=-1)
    p = probe_density(distance, params.probe_r_ang, params.probe_density_per_ang2)
    flux = flux_per_s(params.current_pa) * BARN_ANG2
    jump = params.jump_cross_section_barn * flux * p[:N_JUMP]
    knock_on = params.knockon_cross_section_barn * flux * jnp.sum(p[:N_JUMP])
    ejection = params.ejection_cross_section_barn * flux * p[N_JUMP]
    return jnp.concatenate([jump, jnp.stack([knock_on, ejection])])


def next_event(key, site, beam_xy_ang, params: DopantEnvParams):
    """Competing exponential clocks: (waiting time () [s], channel () int) of the first of the 5 events.

    Each channel i draws t_i ~ Exp(rate_i) and the earliest wins (kinetic Monte Carlo); a channel with zero
    rate never fires, and if all rates are zero the waiting time is inf.
    """
    rates = event_rates(site, beam_xy_ang, params)
    clocks = jax.random.exponential(key, (N_CHANNELS,), dtype=rates.dtype)
    waits = jnp.where(rates > 0, clocks / jnp.where(rates > 0, rates, 1.0), jnp.inf)
    channel = jnp.argmin(waits)
    return waits[channel], channel


def dwell(key, site, beam_xy_ang, params: DopantEnvParams):
    """Park the probe for params.dwell_s; returns (site (), jumps (), damaged ()).

    Events follow one another (lax.while_loop) until the dwell is used up, damage occurs, or
    params.max_events events have happened; each jump re-evaluates the rates around the new Si site.
    """

    def running(carry):
        _, remaining, _, _, damaged, events = carry
        return (remaining > 0) & ~damaged & (events < params.max_events)

    def advance(carry):
        key, remaining, site, jumps, damaged, events = carry
        key, sub = jax.random.split(key)
        wait, channel = next_event(sub, site, beam_xy_ang, params)
        fires = wait < remaining
        jumped = fires & (channel < N_JUMP)
        site = jnp.where(jumped, params.neighbours[site, jnp.minimum(channel, N_JUMP - 1)], site)
        remaining = jnp.where(fires, remaining - wait, 0.0)
        return key, remaining, site, jumps + jumped, damaged | (fires & (channel >= N_JUMP)), events + fires

    carry = (key, jnp.asarray(params.dwell_s, jnp.float32), jnp.asarray(site, jnp.int32), jnp.int32(0),
             jnp.bool_(False), jnp.int32(0))
    _, _, site, jumps, damaged, _ = jax.lax.while_loop(running, advance, carry)
    return site, jumps, damaged
