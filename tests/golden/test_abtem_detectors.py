"""Segmented (DPC), centre-of-mass and 4D-STEM outputs against abTEM run live, on the golden cases."""

import abtem
import numpy as np
import pytest

from potentials.projected import PotentialSpec
from tests.golden.cases import CASES
from twin.stem import GridScan, ProbeSpec, simulate
from twin.stem.detectors import CenterOfMassDetector, PixelatedDetector, SegmentedDetector


def common_window(a, b):
    """The angles two centred patterns (..., ny, nx) share: both cropped to them, zero angle on zero angle."""
    out_a, out_b = a, b
    for axis in (-2, -1):
        na, nb = a.shape[axis], b.shape[axis]
        low, high = min(na // 2, nb // 2), min((na - 1) // 2, (nb - 1) // 2)
        out_a = np.take(out_a, np.arange(na // 2 - low, na // 2 + high + 1), axis=axis)
        out_b = np.take(out_b, np.arange(nb // 2 - low, nb // 2 + high + 1), axis=axis)
    return out_a, out_b


@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=lambda c: c.name)
def test_segmented_com_and_4d_agree_with_abtem(case):
    abtem.config.set({"precision": "float32"})
    atoms, extent = case.atoms, case.atoms.cell.lengths()[:2]
    x0, y0, x1, y1 = case.region or (0.0, 0.0, *extent)
    potential = abtem.Potential(atoms, gpts=case.gpts, slice_thickness=case.slice_thickness)
    probe = abtem.Probe(energy=case.energy, semiangle_cutoff=case.semiangle, **case.aberrations)
    scan = abtem.GridScan(start=(x0, y0), end=(x1, y1), sampling=case.step, endpoint=False)
    segmented, patterns = probe.multislice(potential, scan=scan, detectors=[
        abtem.SegmentedDetector(inner=5, outer=40, nbins_radial=2, nbins_azimuthal=4, rotation=0.3),
        abtem.PixelatedDetector(max_angle="cutoff")])
    segmented = segmented.compute(progress_bar=False).array.transpose(1, 0, 2, 3)
    patterns = patterns.compute(progress_bar=False)
    com = patterns.center_of_mass(units="mrad").array.T
    patterns = patterns.array.transpose(1, 0, 3, 2)

    sampling = max(extent[0] / case.gpts[0], extent[1] / case.gpts[1]) * (1 + 1e-9)
    ours = simulate(atoms, probe=ProbeSpec(energy=case.energy, semiangle=case.semiangle, aberrations=case.aberrations),
                    potential=PotentialSpec(sampling=sampling, slice_thickness=case.slice_thickness, abtem_filter=True),
                    scan=GridScan(step=case.step, region=case.region),
                    detectors=[SegmentedDetector(name="dpc", inner=5, outer=40, rings=2, segments=4, rotation=0.3),
                               PixelatedDetector(), CenterOfMassDetector()])
    assert np.abs(ours["dpc"].values - segmented).max() <= 1e-5
    reference, pattern = common_window(patterns, ours["diffraction"].values)
    assert min(reference.shape[-2:]) >= min(patterns.shape[-2:]) - 1
    assert np.abs(pattern - reference).max() <= 1e-6
    com_ours = ours["com"].values
    scale = np.abs(com).max()
    assert np.abs(com_ours[..., 0] - com.real).max() <= 1e-4 * scale
    assert np.abs(com_ours[..., 1] - com.imag).max() <= 1e-4 * scale
