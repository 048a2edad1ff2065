"""STEM images against abTEM run live (see cases.py and docs/validation.md)."""

import functools

import jax
import numpy as np
import pytest

from potentials.projected import PotentialSpec, projected_potential_slices
from tests.golden.cases import CASES, differences, run_abtem, run_twin


@functools.cache
def reference(name):
    return run_abtem(next(c for c in CASES if c.name == name))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_images_agree_with_abtem_given_its_potential_filter(case):
    """Everything but the potential's pixel filter is the same computation: agreement to ~1e-6."""
    ours = run_twin(case, abtem_filter=True)
    for name in case.detectors:
        max_diff, rel_l2 = differences(ours[name].values, reference(case.name)[name])
        assert max_diff <= 1e-5 and rel_l2 <= 1e-4, (name, max_diff, rel_l2)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_images_with_the_exact_potential_agree_with_abtem(case):
    """Our default, unfiltered potential: abTEM's filter raises high-angle scattering by up to ~1%."""
    ours = run_twin(case)
    for name in case.detectors:
        max_diff, rel_l2 = differences(ours[name].values, reference(case.name)[name])
        assert max_diff <= 2e-3 and rel_l2 <= 1.5e-2, (name, max_diff, rel_l2)


@pytest.mark.parametrize("parametrization", ["lobato", "kirkland"])
def test_potential_is_abtems_without_its_filter(parametrization):
    """On-pixel atoms: abTEM's potential equals ours divided by sin(|k|d) / (|k|d), to float64 precision."""
    import abtem

    case = CASES[2]
    abtem.config.set({"precision": "float64"})
    try:
        ref = abtem.Potential(case.atoms, gpts=(88, 88), slice_thickness=case.slice_thickness,
                              parametrization=parametrization).build().compute(progress_bar=False).array
    finally:
        abtem.config.set({"precision": "float32"})
    spec = PotentialSpec(sampling=2 * 3.905 / 88 * (1 + 1e-9), slice_thickness=case.slice_thickness,
                         parametrization=parametrization, abtem_filter=True)
    with jax.enable_x64(True):
        ours = np.asarray(projected_potential_slices(case.atoms.positions, case.atoms.numbers,
                                                     case.atoms.cell.lengths(), spec, np.float64))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref.transpose(0, 2, 1), atol=1e-6 * np.abs(ref).max())
