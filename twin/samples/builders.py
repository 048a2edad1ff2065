"""Sample builders: ase.Atoms in orthorhombic cells periodic in x and y, the beam along z."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import make_supercell, mx2

from twin.samples.bi_si import bi_si110
from twin.structures import graphene


def _check_count(name: str, value, low: int, high: int) -> int:
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and low <= value <= high):
        raise ValueError(f"{name}={value!r} is not allowed; give an integer from {low} to {high}")
    return int(value)


def graphene_si(seed: int = 0, *, repeat: tuple[int, int] = (12, 7), n_si: int = 1, vacuum: float = 2.0) -> Atoms:
    """A graphene sheet (`repeat` orthorhombic 2.46 x 4.26 A cells) with `n_si` substitutional Si at random
    sites at least 5 A apart, drawn from `seed`. The Si stay in plane (the 3-fold configuration)."""
    for i, n in enumerate(repeat):
        _check_count(f"repeat[{i}]", n, 1, 200)
    atoms = graphene(tuple(repeat), vacuum)
    n_si = _check_count("n_si", n_si, 0, len(atoms) // 30 + 1)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for i in rng.permutation(len(atoms)):
        if len(chosen) == n_si:
            break
        d = atoms.get_distances(i, chosen, mic=True) if chosen else np.array([np.inf])
        if d.min() >= 5.0:
            chosen.append(int(i))
    atoms.numbers[chosen] = 14
    return atoms


def mos2(seed: int = 0, *, repeat: tuple[int, int] = (10, 6), vacancy_fraction: float = 0.0,
         vacuum: float = 2.0) -> Atoms:
    """A 2H-MoS2 monolayer (a = 3.16 A) in orthorhombic a x a*sqrt(3) cells, with a random fraction of S
    removed (sulfur vacancies) drawn from `seed`."""
    if not (0.0 <= vacancy_fraction <= 0.5):
        raise ValueError(f"vacancy_fraction={vacancy_fraction!r} is not allowed; give a number from 0 to 0.5")
    cell = make_supercell(mx2("MoS2", kind="2H", a=3.16, thickness=3.19), [[1, 0, 0], [1, 2, 0], [0, 0, 1]])
    cell.cell[2, 2] = 3.19 + 2 * vacuum
    cell.positions[:, 2] += vacuum + 3.19 / 2 - cell.positions[:, 2].mean()
    cell.wrap()
    atoms = cell.repeat((*repeat, 1))
    sulfur = np.flatnonzero(atoms.numbers == 16)
    rng = np.random.default_rng(seed)
    gone = rng.choice(sulfur, size=int(round(vacancy_fraction * len(sulfur))), replace=False)
    del atoms[sorted(gone.tolist())]
    return atoms


def srtio3(seed: int = 0, *, repeat: tuple[int, int] = (8, 8), thickness_cells: int = 10) -> Atoms:
    """SrTiO3 viewed along [001] (cubic, a = 3.905 A), `thickness_cells` unit cells thick. `seed` is unused
    (the crystal has no random part) and accepted for a uniform builder signature."""
    thickness_cells = _check_count("thickness_cells", thickness_cells, 1, 200)
    a = 3.905
    basis = [("Sr", (0, 0, 0)), ("Ti", (0.5, 0.5, 0.5)), ("O", (0.5, 0.5, 0)), ("O", (0.5, 0, 0.5)),
             ("O", (0, 0.5, 0.5))]
    unit = Atoms([s for s, _ in basis], scaled_positions=[p for _, p in basis], cell=[a, a, a], pbc=True)
    return unit.repeat((*repeat, thickness_cells))


SAMPLES = {"graphene-si": graphene_si, "mos2": mos2, "srtio3": srtio3, "bi-si": bi_si110}


def named_sample(name: str, seed: int = 0) -> Atoms:
    """The sample `name` (one of SAMPLES) built with its defaults from `seed`."""
    if name not in SAMPLES:
        raise ValueError(f"sample={name!r} does not exist; allowed: {', '.join(SAMPLES)}")
    return SAMPLES[name](seed)
