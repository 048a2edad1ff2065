"""Golden comparisons with abTEM, run live: the same structure, probe, grid, slices, scan and detectors.

Atoms sit on pixel centres and mid-slice so that abTEM's interpolation of atoms onto the grid is exact;
see docs/validation.md for what differs otherwise. abTEM arrays are indexed (x, y); ours (y, x).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.build import bulk

from potentials.projected import PotentialSpec
from twin.stem.detectors import AnnularDetector
from twin.stem.probe import ProbeSpec
from twin.stem.scan import GridScan
from twin.stem.simulate import simulate
from twin.structures import graphene


def srtio3(cells_xy: int, cells_z: int) -> Atoms:
    a = 3.905
    atoms = Atoms("SrTiO3", scaled_positions=[(0, 0, 0), (.5, .5, .5), (.5, .5, 0), (.5, 0, .5), (0, .5, .5)],
                  cell=[a, a, a], pbc=True)
    atoms = atoms.repeat((cells_xy, cells_xy, cells_z))
    atoms.positions[:, 2] += a / 4  # planes mid-slice for slices of a / 2
    return atoms


def gold(cells_xy: int, cells_z: int) -> Atoms:
    atoms = bulk("Au", "fcc", a=4.078, cubic=True).repeat((cells_xy, cells_xy, cells_z))
    atoms.positions[:, 2] += 4.078 / 4
    return atoms


@dataclass(frozen=True)
class Case:
    name: str
    atoms: Atoms
    gpts: tuple[int, int]  # (x, y)
    slice_thickness: float
    energy: float
    semiangle: float
    aberrations: dict
    detectors: dict  # name -> (inner, outer) [mrad]
    step: float
    region: tuple | None = None
    parametrization: str = "lobato"
    extra: dict = field(default_factory=dict)


CASES = [
    Case("graphene-60kV", graphene((1, 1)), (24, 42), 2.0, 60e3, 30.0,
         {"C10": -20.0, "C12": 10.0, "phi12": 0.3, "C30": 1e4}, {"BF": (0, 30), "HAADF": (60, 140)}, 0.25),
    Case("graphene-kirkland-100kV", graphene((2, 1)), (48, 42), 2.0, 100e3, 25.0,
         {"C10": 15.0, "C21": 200.0, "phi21": 1.0}, {"ABF": (12.5, 25), "ADF": (40, 110)}, 0.3,
         parametrization="kirkland"),
    Case("SrTiO3-200kV-31A", srtio3(2, 8), (172, 172), 3.905 / 2, 200e3, 20.0,
         {"C10": -30.0, "C23": 500.0, "phi23": 0.5, "C30": -2e4}, {"ABF": (10, 20), "HAADF": (70, 180)}, 0.4,
         region=(0.0, 0.0, 3.905, 3.905)),
    Case("Au-300kV-24A", gold(2, 6), (252, 252), 4.078 / 2, 300e3, 25.0,
         {"C10": 40.0, "C50": 5e6, "C34": 1e4, "phi34": 0.2}, {"ADF": (30, 80), "HAADF": (80, 200)}, 0.5,
         region=(0.0, 0.0, 4.078, 4.078)),
]


def run_abtem(case: Case, precision: str = "float32", configurations=None) -> dict[str, np.ndarray]:
    """abTEM's images of the case; `configurations`: a list of displaced Atoms to average over instead."""
    import abtem

    abtem.config.set({"precision": precision, "device": "cpu"})
    extent = case.atoms.cell.lengths()[:2]
    atoms = case.atoms if configurations is None else abtem.AtomsEnsemble(configurations)
    potential = abtem.Potential(atoms, gpts=case.gpts, slice_thickness=case.slice_thickness,
                                parametrization=case.parametrization)
    probe = abtem.Probe(energy=case.energy, semiangle_cutoff=case.semiangle, **case.aberrations)
    x0, y0, x1, y1 = case.region or (0.0, 0.0, *extent)
    scan = abtem.GridScan(start=(x0, y0), end=(x1, y1), sampling=case.step, endpoint=False)
    detectors = [abtem.AnnularDetector(inner, outer) for inner, outer in case.detectors.values()]
    measurements = probe.multislice(potential, scan=scan, detectors=detectors)
    if not isinstance(measurements, list):
        measurements = [measurements]
    return {name: m.compute(progress_bar=False).array.T for name, m in zip(case.detectors, measurements)}


def run_twin(case: Case, precision: str = "float32", abtem_filter: bool = False, phonons=None):
    extent = case.atoms.cell.lengths()[:2]
    sampling = max(extent[0] / case.gpts[0], extent[1] / case.gpts[1])
    return simulate(case.atoms, probe=ProbeSpec(energy=case.energy, semiangle=case.semiangle,
                                                aberrations=case.aberrations),
                    potential=PotentialSpec(sampling=sampling * (1 + 1e-9), slice_thickness=case.slice_thickness,
                                            parametrization=case.parametrization, abtem_filter=abtem_filter),
                    scan=GridScan(step=case.step, region=case.region),
                    detectors=[AnnularDetector(name=n, inner=i, outer=o) for n, (i, o) in case.detectors.items()],
                    precision=precision, phonons=phonons)


def differences(ours, reference) -> tuple[float, float]:
    """(max |dI| [fraction of the incident intensity], relative L2 difference)."""
    return float(np.abs(ours - reference).max()), float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))
