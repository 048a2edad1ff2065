"""Frozen-phonon averages against abTEM fed the same displaced configurations."""

import dataclasses

import numpy as np
import pytest

from potentials.phonons import FrozenPhonons
from tests.golden.cases import CASES, differences, run_abtem, run_twin


@dataclasses.dataclass(frozen=True)
class OnPixelPhonons:
    """FrozenPhonons displacements rounded to whole pixels in x and y (where abTEM's interpolation of
    atoms onto the grid is exact) and to zero in z (atoms stay mid-slice)."""

    phonons: FrozenPhonons
    pixel: tuple

    @property
    def n_configurations(self):
        return self.phonons.n_configurations

    @property
    def seed(self):
        return self.phonons.seed

    def displacements(self, numbers):
        d = np.asarray(self.phonons.displacements(numbers), dtype=np.float64)
        d[..., :2] = np.round(d[..., :2] / self.pixel) * self.pixel
        d[..., 2] = 0.0
        return d


@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=lambda c: c.name)
def test_phonon_average_agrees_with_abtem_for_the_same_configurations(case):
    extent = case.atoms.cell.lengths()[:2]
    pixel = np.array([extent[0] / case.gpts[0], extent[1] / case.gpts[1]])
    phonons = OnPixelPhonons(FrozenPhonons(n_configurations=3, seed=5, sigmas=0.1), pixel)
    configurations = []
    for shift in phonons.displacements(case.atoms.numbers):
        atoms = case.atoms.copy()
        atoms.positions += shift
        configurations.append(atoms)
    assert np.abs(configurations[0].positions - case.atoms.positions).max() > 0.05

    reference = run_abtem(case, configurations=configurations)
    ours = run_twin(case, abtem_filter=True, phonons=phonons)
    static = run_twin(case, abtem_filter=True)
    for name in case.detectors:
        max_diff, rel_l2 = differences(ours[name].values, reference[name])
        assert max_diff <= 1e-4 and rel_l2 <= 1e-3, (name, max_diff, rel_l2)
        assert differences(static[name].values, reference[name])[1] > 10 * rel_l2  # the phonons matter
