"""The hydrogen-terminated Si(100)-2x1 surface (Si(100)-2x1:H) with dangling bonds, bare dimers and dimer
vacancies, for the virtual STM and hydrogen-depassivation lithography.

Geometry (shared/reference/physics.md section 3; SiQAD simanneal-sidb `constants.h`): dimer rows run along
x; dimers are a = 3.84 A apart along a row, rows b = 7.68 A apart along y; the two Si of a dimer (the two
sites that carry an H or a dangling bond, DB) are c = 2.25 A apart ACROSS the row, along y (SiQAD's model
DB-DB separation; the real Si-Si dimer bond is ~2.35-2.40 A). Dimer i of row j is centred at
((i + 1/2) a, (j + 1/2) b); its sites are at y = (j + 1/2) b -/+ c/2 (side 0, side 1).

Frame: z = 0 is the plane of the surface Si atoms (the sites); H sits SI_H_BOND = 1.48 A above its Si.
Site s of dimer d has index 2 d + s; dimer d = j nx + i. The sample is a periodic cell of
extent (nx a, ny b).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from ase import Atoms

DIMER_SPACING = 3.84  # a [Angstrom], along the row (Si a0 / sqrt 2)
ROW_SPACING = 7.68  # b [Angstrom], between rows
DB_SEPARATION = 2.25  # c [Angstrom], between the two sites of a dimer (SiQAD)
SI_H_BOND = 1.48  # [Angstrom], Si-H bond of the monohydride, taken vertical (its ~20 deg tilt is ignored)
LAYER_SPACING = 5.431 / 4  # [Angstrom], between (100) layers of bulk Si (a0 / 4)
HYDROGEN, SILICON = 1, 14


@dataclass(frozen=True, kw_only=True, eq=False)
class HSurface:
    """A Si(100)-2x1:H surface cell.

    sites: (n, 3) positions of the surface Si atoms that carry an H or a DB, two per dimer [Angstrom].
    dimer: (n,) dimer index of each site; row: (n,) dimer-row index of each site.
    extent: (Lx, Ly) sides of the periodic orthorhombic cell [Angstrom].
    occupied: (n,) bool, an H is on the site. present: (n,) bool, False for the sites of a missing dimer
        (a dimer vacancy); a site that is not present is never occupied.
    """

    sites: np.ndarray
    dimer: np.ndarray
    row: np.ndarray
    extent: tuple[float, float]
    occupied: np.ndarray
    present: np.ndarray

    def __post_init__(self):
        sites = np.asarray(self.sites, dtype=float)
        if sites.ndim != 2 or sites.shape[1] != 3:
            raise ValueError(f"sites has shape {sites.shape}; give an (n, 3) array of positions [Angstrom]")
        n = len(sites)
        fields = {"dimer": np.asarray(self.dimer), "row": np.asarray(self.row),
                  "occupied": np.asarray(self.occupied), "present": np.asarray(self.present)}
        for name, value in fields.items():
            if value.shape != (n,):
                raise ValueError(f"{name} has shape {value.shape}; give shape ({n},), one entry per site")
        for name in ("occupied", "present"):
            if fields[name].dtype != bool:
                raise ValueError(f"{name} has dtype {fields[name].dtype}; give a bool array")
        if np.any(fields["occupied"] & ~fields["present"]):
            raise ValueError("occupied has True on sites that are not present; an H needs its Si")
        extent = tuple(float(v) for v in np.ravel(self.extent))
        if len(extent) != 2 or not all(np.isfinite(extent)) or min(extent) <= 0:
            raise ValueError(f"extent={self.extent!r} is not allowed; give two positive lengths (Lx, Ly) [A]")
        object.__setattr__(self, "sites", sites)
        object.__setattr__(self, "extent", extent)
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def n_sites(self) -> int:
        """Number of sites (two per dimer, present or not)."""
        return len(self.sites)

    def with_occupancy(self, occupied) -> HSurface:
        """The same surface with a new (n,) bool H occupancy (depassivation, repassivation)."""
        return replace(self, occupied=np.asarray(occupied, dtype=bool).copy())

    def dangling_bonds(self) -> np.ndarray:
        """Indices of the DB sites: present and without H, (n_db,) int."""
        return np.flatnonzero(self.present & ~self.occupied)

    def h_positions(self) -> np.ndarray:
        """(n_h, 3) positions of the H atoms, SI_H_BOND above their sites [Angstrom]."""
        return self.sites[self.occupied] + np.array([0.0, 0.0, SI_H_BOND])

    def to_atoms(self, *, layers: int = 4, vacuum_ang: float = 6.0) -> Atoms:
        """The top `layers` (1-4) Si layers and the H as ase.Atoms, for visualisation and labels.

        Same frame as `sites` (surface Si at z = 0, deeper layers at -a0/4 steps, bulk-like positions; only
        the top layer is dimerised). The cell is orthorhombic, Lx x Ly x (depth + vacuum_ang), periodic in
        x and y. Order: top-layer Si of the present sites (in site order), deeper Si, then H.
        """
        if layers not in (1, 2, 3, 4):
            raise ValueError(f"layers={layers!r} is not allowed; give 1, 2, 3 or 4")
        top = self.sites[self.present]
        deeper = _subsurface(self)[: 2 * (layers - 1)]
        si = np.concatenate([top, *deeper]) if deeper else top
        positions = np.concatenate([si, self.h_positions()])
        numbers = [SILICON] * len(si) + [HYDROGEN] * int(self.occupied.sum())
        depth = (layers - 1) * LAYER_SPACING + SI_H_BOND
        return Atoms(numbers=numbers, positions=positions, cell=[*self.extent, depth + vacuum_ang],
                     pbc=(True, True, False))


def _subsurface(surface: HSurface) -> list[np.ndarray]:
    """Bulk-like Si of layers 2-4 under each dimer, two per layer per 2x1 cell; list of (m, 3) arrays."""
    half = DIMER_SPACING / 2
    pairs = surface.sites.reshape(-1, 2, 3)
    centre = pairs.mean(axis=1)
    x, y = centre[:, 0], centre[:, 1]
    layers = []
    for k, (dx, dy) in enumerate([(half, (-half, half)), (half, (0.0, 2 * half)), (0.0, (0.0, 2 * half))]):
        z = -(k + 1) * LAYER_SPACING
        for offset in dy:
            layers.append(np.stack([np.mod(x + dx, surface.extent[0]), np.mod(y + offset, surface.extent[1]),
                                    np.full_like(x, z)], axis=1))
    return layers


def _check_int(name: str, value, low: int, high: int) -> int:
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and low <= value <= high):
        raise ValueError(f"{name}={value!r} is not allowed; give an integer from {low} to {high}")
    return int(value)


def _check_indices(name: str, value, size: int) -> np.ndarray:
    """A sequence of distinct integers in [0, size)."""
    try:
        items = [_check_int(f"{name}[{i}]", v, 0, size - 1) for i, v in enumerate(value)]
    except TypeError:
        raise ValueError(f"{name}={value!r} is not allowed; give a sequence of integers from 0 to {size - 1}")
    if len(set(items)) != len(items):
        raise ValueError(f"{name}={value!r} is not allowed; each index may appear once")
    return np.array(items, dtype=int)


def _check_fraction(name: str, value) -> float:
    if not (isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
            and 0.0 <= value <= 1.0):
        raise ValueError(f"{name}={value!r} is not allowed; give a number from 0 to 1")
    return float(value)


def _draw(rng: np.random.Generator, name: str, fraction: float, total: int, given: np.ndarray,
          candidates: np.ndarray) -> np.ndarray:
    """`given` plus round(fraction * total) more drawn from `candidates` (those not given)."""
    extra = int(round(fraction * total))
    pool = np.setdiff1d(candidates, given)
    if extra > len(pool):
        raise ValueError(f"{name}={fraction!r} asks for {extra} more but only {len(pool)} are free; give less")
    return np.concatenate([given, rng.choice(pool, size=extra, replace=False)]).astype(int)


def si100_h(nx_dimers: int = 8, ny_rows: int = 4, *, seed: int = 0, db_sites=(), db_fraction: float = 0.0,
            bare_dimers=(), bare_fraction: float = 0.0, dimer_vacancies=(),
            vacancy_fraction: float = 0.0) -> HSurface:
    """A Si(100)-2x1:H cell of `nx_dimers` dimers along each of `ny_rows` rows, H on every site except:

    dimer_vacancies: dimer indices removed (both sites not present), plus round(vacancy_fraction * n_dimers)
        random ones; bare_dimers: dimer indices with both H missing (a "missing H pair"), plus
        round(bare_fraction * n_dimers) random ones among the remaining dimers; db_sites: site indices with
        their single H missing (a dangling bond), plus round(db_fraction * n_sites) random sites among the
        remaining, fully passivated dimers. Random choices are drawn from `seed` in that order; the same seed
        gives the same sample. nx_dimers, ny_rows: 1 to 500. Bad inputs raise ValueError naming the parameter.

    Example: si100_h(16, 8, db_sites=[37, 120], vacancy_fraction=0.02, seed=3)
    """
    nx = _check_int("nx_dimers", nx_dimers, 1, 500)
    ny = _check_int("ny_rows", ny_rows, 1, 500)
    _check_int("seed", seed, 0, 2**63 - 1)
    n_dimers, n_sites = nx * ny, 2 * nx * ny
    vacancies = _check_indices("dimer_vacancies", dimer_vacancies, n_dimers)
    bare = _check_indices("bare_dimers", bare_dimers, n_dimers)
    dbs = _check_indices("db_sites", db_sites, n_sites)
    if np.intersect1d(bare, vacancies).size:
        raise ValueError(f"bare_dimers={list(bare_dimers)!r} overlaps dimer_vacancies; a dimer is one or other")
    if np.isin(dbs // 2, np.concatenate([bare, vacancies])).any():
        raise ValueError(f"db_sites={list(db_sites)!r} has sites of bare or missing dimers; give other sites")
    fractions = [_check_fraction(name, value) for name, value in
                 (("vacancy_fraction", vacancy_fraction), ("bare_fraction", bare_fraction),
                  ("db_fraction", db_fraction))]
    rng = np.random.default_rng(int(seed))
    every_dimer = np.arange(n_dimers)
    vacancies = _draw(rng, "vacancy_fraction", fractions[0], n_dimers, vacancies,
                      np.setdiff1d(every_dimer, np.concatenate([bare, dbs // 2])))
    bare = _draw(rng, "bare_fraction", fractions[1], n_dimers, bare,
                 np.setdiff1d(every_dimer, np.concatenate([vacancies, dbs // 2])))
    blocked = np.concatenate([vacancies, bare])
    dbs = _draw(rng, "db_fraction", fractions[2], n_sites, dbs,
                np.flatnonzero(~np.isin(np.arange(n_sites) // 2, blocked)))
    dimer = np.repeat(every_dimer, 2)
    present = ~np.isin(dimer, vacancies)
    occupied = present & ~np.isin(dimer, bare)
    occupied[dbs] = False
    return HSurface(sites=_lattice(nx, ny), dimer=dimer, row=dimer // nx,
                    extent=(nx * DIMER_SPACING, ny * ROW_SPACING), occupied=occupied, present=present)


def _lattice(nx: int, ny: int) -> np.ndarray:
    """(2 nx ny, 3) site positions in index order 2 (j nx + i) + side [Angstrom]."""
    j, i, side = np.meshgrid(np.arange(ny), np.arange(nx), np.arange(2), indexing="ij")
    x = (i + 0.5) * DIMER_SPACING
    y = (j + 0.5) * ROW_SPACING + (side - 0.5) * DB_SEPARATION
    return np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)


def surface_from_atoms(atoms: Atoms) -> HSurface:
    """The HSurface of a Si(100)-2x1:H slab given as ase.Atoms (e.g. written by `HSurface.to_atoms`).

    The surface sites are the Si within 0.6 A of the topmost Si; a site is occupied when an H lies within
    1.8 A of it; dimers are mutual nearest surface neighbours closer than 2.7 A; rows are the distinct dimer
    y positions (to 1 A). Raises ValueError naming what is missing when the slab is not of that kind.
    """
    numbers, positions = atoms.numbers, atoms.positions
    extent = np.asarray(atoms.cell.lengths()[:2], float)
    silicon = np.flatnonzero(numbers == SILICON)
    if len(silicon) < 2 or not set(numbers) <= {HYDROGEN, SILICON}:
        raise ValueError("the structure is not a Si(100):H slab (it needs Si and H only, "
                         f"has {sorted(set(atoms.get_chemical_symbols()))})")
    top = silicon[positions[silicon, 2] > positions[silicon, 2].max() - 0.6]

    def lateral(a, b):
        d = a[:, None, :2] - b[None, :, :2]
        d -= extent * np.round(d / extent)
        return np.hypot(d[..., 0], d[..., 1])

    apart = lateral(positions[top], positions[top]) + np.eye(len(top)) * 1e9
    partner = np.argmin(apart, axis=1)
    if np.any(apart[np.arange(len(top)), partner] > 2.7) or np.any(partner[partner] != np.arange(len(top))):
        raise ValueError("the top Si layer is not 2x1 dimerised (every top Si needs one partner within 2.7 A)")
    first = np.flatnonzero(np.arange(len(top)) < partner)
    pairs = np.stack([first, partner[first]], axis=1)
    centres = positions[top][pairs].mean(axis=1)
    rows = np.unique(np.round(centres[:, 1]), return_inverse=True)[1]
    order = np.lexsort((centres[:, 0], rows))
    index = top[pairs[order]].ravel()
    hydrogen = positions[numbers == HYDROGEN]
    occupied = (lateral(positions[index], hydrogen).min(axis=1) < 1.8 if len(hydrogen)
                else np.zeros(len(index), bool))
    sites = positions[index] - [0.0, 0.0, positions[index, 2].mean()]
    return HSurface(sites=sites, dimer=np.repeat(np.arange(len(pairs)), 2), row=np.repeat(rows[order], 2),
                    extent=tuple(extent), occupied=occupied, present=np.ones(len(index), bool))
