"""ABO3 perovskite viewed along [001] with an in-plane polarization field and ferroelectric domain walls.

Geometry: cubic, a = LATTICE_ANG = 3.905 A (SrTiO3) for every A/B choice; unit cell (i, j, k) holds A at
(i, j, k) a, B at (i + 1/2, j + 1/2, k + 1/2) a and O at (i + 1/2, j + 1/2, k) a, (i + 1/2, j, k + 1/2) a,
(i, j + 1/2, k + 1/2) a. Along the beam (z) the A columns sit at the cell corners, the B-O columns at the
cell centres and pure O columns at the edge centres.

Polarization: an in-plane field P(x) [pm] that depends on x only. The A cations stay on the lattice (the
reference frame); every B is displaced by P(x_B) and every O by -O_FRACTION P(x_O) (an off-centring of the
B cation against its O cage, the O shifting oppositely by a quarter as much; a soft-mode-like pattern, not
a fitted phonon eigenvector). The label of a cell is the B displacement relative to the centre of its four
A neighbours, read back from the atom positions and averaged over the column (projected along the beam).

Domain walls (the cell is periodic, so every wall has a partner at x_w + L/2, L the cell length along x):
  g(x) = tanh(t / w) tanh((L/2 - t) / w) tanh((L - t) / w),  t = (x - x_w) mod L,
is +1 in the domain x_w < x < x_w + L/2, -1 in the other, and equals tanh((x - x_w) / w) near the wall at
x_w to within 2 exp(-L / w) (the Landau-Ginzburg 180-degree wall profile, Chandra & Littlewood,
Top. Appl. Phys. 105, 69 (2007), eq. 12, with w the half-width).
  "none": P = (0, P0);  "180": P = (0, P0 g(x));
  "90":  P = P0 (sin theta, cos theta), theta = (pi / 4)(1 + g(x)): |P| = P0 everywhere, rotating from +y
         (far left of the wall) to +x (far right) over the same tanh profile. The wall normal is x, so this
         wall carries bound charge (real 90-degree walls lie on {110}); it is a labelled test pattern.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

LATTICE_ANG = 3.905  # cubic lattice constant [Angstrom] (SrTiO3), used for every A/B choice
O_FRACTION = 0.25  # O displacement, opposite to the local P, as a fraction of the B displacement
PM_PER_ANG = 100.0
CLASSES = ("A", "B", "O")


def double_wall(x, *, wall_x: float, width: float, length: float) -> np.ndarray:
    """The periodic two-wall profile g(x) in [-1, 1] (module docstring); x, wall_x, width, length [A]."""
    t = np.mod(np.asarray(x, float) - wall_x, length)
    return np.tanh(t / width) * np.tanh((length / 2 - t) / width) * np.tanh((length - t) / width)


def polarization_field(x, *, p0_pm: float, domain_wall: str, wall_x: float, width: float,
                       length: float) -> np.ndarray:
    """In-plane P at positions x [A], (len(x), 2) [pm] as (Px, Py); profiles in the module docstring."""
    x = np.asarray(x, float)
    if domain_wall == "none":
        return np.stack([np.zeros_like(x), np.full_like(x, p0_pm)], axis=1)
    g = double_wall(x, wall_x=wall_x, width=width, length=length)
    if domain_wall == "180":
        return np.stack([np.zeros_like(x), p0_pm * g], axis=1)
    theta = np.pi / 4 * (1 + g)
    return p0_pm * np.stack([np.sin(theta), np.cos(theta)], axis=1)


def build_perovskite(*, a_site: str, b_site: str, cells: tuple[int, int], thickness_cells: int,
                     polarization_pm: float, domain_wall: str, wall_position: float,
                     wall_width_cells: float) -> tuple[Atoms, np.ndarray, np.ndarray]:
    """The displaced ABO3 slab, its (n_atoms,) class ids into CLASSES and the (nx ny, 4) polarization label.

    Parameters are validated by twin.samples.families. Atoms: order A, B, O (three per cell), the cell
    nx a x ny a x thickness_cells a, periodic. Label rows (x, y, px, py): cell centre [A] and the B
    displacement [pm]; row j nx + i is cell (i, j). Deterministic (no random part).
    """
    a = LATTICE_ANG
    nx, ny = cells
    nz = thickness_cells
    extent = np.array([nx * a, ny * a])
    k, j, i = (v.ravel().astype(float) for v in np.indices((nz, ny, nx)))
    basis = {"A": [(0, 0, 0)], "B": [(0.5, 0.5, 0.5)], "O": [(0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]}

    def field(x):
        return polarization_field(x, p0_pm=polarization_pm, domain_wall=domain_wall,
                                  wall_x=wall_position * extent[0], width=wall_width_cells * a,
                                  length=extent[0]) / PM_PER_ANG

    blocks, numbers, classes = [], [], []
    for c, (name, offsets) in enumerate(basis.items()):
        symbol = {"A": a_site, "B": b_site, "O": "O"}[name]
        for ox, oy, oz in offsets:
            pos = np.stack([(i + ox) * a, (j + oy) * a, (k + oz) * a], axis=1)
            scale = {"A": 0.0, "B": 1.0, "O": -O_FRACTION}[name]
            pos[:, :2] += scale * field(pos[:, 0])
            blocks.append(pos)
            numbers += [symbol] * len(pos)
            classes.append(np.full(len(pos), c))
    atoms = Atoms(numbers, positions=np.concatenate(blocks), cell=[*extent, nz * a], pbc=True)
    atoms.wrap()
    n = nx * ny * nz
    label = _b_displacement(atoms.positions[:n, :2], atoms.positions[n:2 * n, :2], (nz, ny, nx), extent)
    centres = np.stack([(i[: nx * ny] + 0.5) * a, (j[: nx * ny] + 0.5) * a], axis=1)
    return atoms, np.concatenate(classes), np.concatenate([centres, label * PM_PER_ANG], axis=1)


def _b_displacement(a_xy: np.ndarray, b_xy: np.ndarray, shape: tuple[int, int, int],
                    extent: np.ndarray) -> np.ndarray:
    """(ny nx, 2) B displacement [A] from the centre of its four A neighbours, averaged along z.

    a_xy, b_xy: (nz ny nx, 2) positions in cell order; A of cell (i, j) is its lower-left corner."""
    a_grid, b_grid = a_xy.reshape(*shape, 2), b_xy.reshape(*shape, 2)
    deltas = []
    for di, dj in ((0, 0), (1, 0), (0, 1), (1, 1)):
        corner = np.roll(a_grid, shift=(-dj, -di), axis=(1, 2))
        d = corner - b_grid
        deltas.append(d - extent * np.round(d / extent))
    return -np.mean(deltas, axis=0).mean(axis=0).reshape(-1, 2)
