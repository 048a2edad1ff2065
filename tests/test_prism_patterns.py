"""PRISM for the centre of mass and 4D-STEM patterns: exact at f = 1 (against twin's multislice), the same
as abTEM's SMatrix at f = 1 and f = 2 (run live), `auto` on a thick crystal, streaming, memory and errors."""

import functools

import numpy as np
import pytest

from potentials.projected import PotentialSpec
from tests.golden.cases import CASES, differences, gold
from tests.golden.test_abtem_detectors import common_window
from twin.stem import GridScan, ProbeSpec, simulate
from twin.stem.detectors import AnnularDetector, CenterOfMassDetector, PixelatedDetector, SegmentedDetector
from twin.stem.simulate import simulate_to_file
from twin.structures import graphene

ATOMS = graphene((2, 1))
PROBE = ProbeSpec(energy=80e3, semiangle=25.0, aberrations={"C10": 10.0, "C12": 8.0, "phi12": 0.3, "C30": 5e3})
POTENTIAL = PotentialSpec(sampling=0.089, slice_thickness=2.0)  # a 48 x 56 grid: interpolation 2 and 4 divide it
DETECTORS = [CenterOfMassDetector(), PixelatedDetector(max_angle=60),
             AnnularDetector(name="HAADF", inner=60, outer=120), SegmentedDetector(name="dpc", inner=5, outer=25)]
TOLERANCE = {"float64": (1e-10, 1e-10), "float32": (1e-4, 1e-3)}  # max |d|, relative L2


def run(method, precision="float32", scan=GridScan(step=0.5), **kwargs):
    return simulate(ATOMS, probe=PROBE, potential=POTENTIAL, scan=scan, detectors=DETECTORS, precision=precision,
                    method=method, **kwargs)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_prism_com_and_patterns_equal_multislice_at_interpolation_1(precision):
    prism, multislice = run("prism", precision), run("multislice", precision)
    assert prism.attrs["method"] == "prism" and multislice.attrs["method"] == "multislice"
    assert prism["diffraction"].dims == ("y", "x", "ky", "kx")
    np.testing.assert_array_equal(prism["kx"].values, multislice["kx"].values)
    for name in ("com", "diffraction", "HAADF", "dpc"):
        max_diff, rel_l2 = differences(prism[name].values, multislice[name].values)
        assert max_diff <= TOLERANCE[precision][0] and rel_l2 <= TOLERANCE[precision][1], (name, max_diff, rel_l2)
    assert np.abs(prism["com"].values).max() > 0.1  # [mrad]: a signal well above the tolerance


@functools.cache
def abtem_patterns(interpolation: int):
    """abTEM's SMatrix patterns (whole window grid, y x ky kx, centred) and CoM [mrad] on CASES[0]."""
    import abtem

    case = CASES[0]
    abtem.config.set({"precision": "float32", "device": "cpu"})
    potential = abtem.Potential(case.atoms, gpts=case.gpts, slice_thickness=case.slice_thickness)
    s_matrix = abtem.SMatrix(potential=potential, energy=case.energy, semiangle_cutoff=case.semiangle,
                             interpolation=interpolation, downsample=False)
    ctf = abtem.CTF(semiangle_cutoff=case.semiangle, energy=case.energy, aberration_coefficients=case.aberrations)
    scan = abtem.GridScan(start=(0, 0), end=tuple(case.atoms.cell.lengths()[:2]), sampling=case.step, endpoint=False)
    patterns = s_matrix.scan(scan=scan, detectors=[abtem.PixelatedDetector(max_angle=None)], ctf=ctf, lazy=False)
    com = patterns.center_of_mass(units="mrad").array.T
    return patterns.array.transpose(1, 0, 3, 2), np.stack([com.real, com.imag], -1)


@pytest.mark.parametrize("interpolation", [1, 2])
def test_prism_com_and_patterns_agree_with_abtem_smatrix(interpolation):
    """At f = 2 both codes detect each probe's window on its own k-grid, twice as coarse as the cell's."""
    case = CASES[0]
    extent = case.atoms.cell.lengths()[:2]
    sampling = max(extent[0] / case.gpts[0], extent[1] / case.gpts[1]) * (1 + 1e-9)
    ours = simulate(case.atoms, probe=ProbeSpec(energy=case.energy, semiangle=case.semiangle,
                                                aberrations=case.aberrations),
                    potential=PotentialSpec(sampling=sampling, slice_thickness=case.slice_thickness, abtem_filter=True),
                    scan=GridScan(step=case.step), detectors=[PixelatedDetector(), CenterOfMassDetector()],
                    method="prism", interpolation=interpolation)
    patterns, com = abtem_patterns(interpolation)
    ky = ours["ky"].values
    np.testing.assert_allclose(np.diff(ky), interpolation * ours.attrs["wavelength_ang"] / extent[1] * 1e3)
    reference, pattern = common_window(patterns, ours["diffraction"].values)
    assert pattern.shape == ours["diffraction"].shape  # every angle of ours is compared
    max_diff, rel_l2 = differences(pattern, reference)
    assert max_diff <= 1e-5 and rel_l2 <= 1e-5, (max_diff, rel_l2)
    assert np.abs(ours["com"].values - com).max() <= 1e-4 * np.abs(com).max()


def test_auto_takes_prism_for_a_thick_crystal_with_com_and_the_answer_is_unchanged():
    atoms = gold(1, 8)  # Au [001], 33 Angstrom thick, 16 slices
    kwargs = dict(probe=ProbeSpec(energy=200e3, semiangle=20.0, aberrations={"C10": -20.0}),
                  potential=PotentialSpec(sampling=0.12, slice_thickness=4.078 / 2), scan=GridScan(step=0.35),
                  detectors=[CenterOfMassDetector(), PixelatedDetector(max_angle=40)])
    auto = simulate(atoms, **kwargs)
    multislice = simulate(atoms, method="multislice", **kwargs)
    assert auto.attrs["method"] == "prism"
    for name in ("com", "diffraction"):
        max_diff, rel_l2 = differences(auto[name].values, multislice[name].values)
        assert max_diff <= 1e-4 and rel_l2 <= 1e-3, (name, max_diff, rel_l2)
    few = simulate(atoms, **{**kwargs, "scan": GridScan(step=2.0)})  # 4 positions: no gain
    assert few.attrs["method"] == "multislice"


def test_interpolated_patterns_stream_to_disk_as_they_are_held_in_memory(tmp_path):
    """At f = 2 the batches are tiles of positions, not runs of the scan: the file must still be in order."""
    import xarray as xr

    memory = run("prism", interpolation=2)
    path = simulate_to_file(ATOMS, tmp_path / "out.nc", probe=PROBE, potential=POTENTIAL, scan=GridScan(step=0.5),
                            detectors=DETECTORS, method="prism", interpolation=2)
    disk = xr.load_dataset(path, engine="h5netcdf")
    assert disk["diffraction"].shape == memory["diffraction"].shape
    for name in ("com", "diffraction", "HAADF", "dpc"):
        np.testing.assert_allclose(disk[name].values, memory[name].values, rtol=1e-6, atol=1e-9)
    assert np.abs(memory["diffraction"].values).max() > 0.01


def test_quadratic_forms_and_gemm_equal_explicit_windows_and_a_small_budget_changes_nothing():
    """At f = 1 the forms (CoM) and the GEMM (patterns) against each probe's exit wave Fourier transformed."""
    from twin.stem import prism
    from tests.test_prism import prepare, scan_positions

    transmissions, propagator, shape, extent = prepare(ATOMS, PROBE, POTENTIAL)
    positions, _ = scan_positions(GridScan(step=0.5), ATOMS, PROBE, POTENTIAL)
    detectors = [PixelatedDetector(max_angle=60), CenterOfMassDetector()]
    args = (PROBE, transmissions, propagator, shape, extent, positions, detectors)
    n_beams = len(prism.plane_wave_indices(PROBE, shape, extent, 1))
    pixels = prism.detection_sizes(detectors, prism.detection_grid(PROBE, shape, extent, 1))[1]
    budget = prism.prism_memory_estimate(shape, len(transmissions), n_beams, 1, beam_batch=2, position_batch=4,
                                         n_detectors=3, pattern_pixels=pixels)
    assert budget > prism.prism_memory_estimate(shape, len(transmissions), n_beams, 1, beam_batch=2,
                                                position_batch=4, n_detectors=3)
    default = prism.prism_scan(*args)  # float32: patterns up to 0.05, CoM [mrad] up to 0.5
    np.testing.assert_allclose(prism.prism_scan(*args, memory_limit=budget), default, atol=1e-5)
    np.testing.assert_allclose(prism.prism_scan(*args, quadratic_form=False), default, atol=1e-5)
    with pytest.raises(MemoryError, match="MiB"):
        prism.prism_scan(*args, memory_limit=100_000)


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "prism", "interpolation": 3}, r"interpolation=3 does not divide the grid of 48x56"),
    ({"method": "auto", "interpolation": 2}, "needs method='prism'"),
    ({"method": "prism", "window": 3.0}, "window=3.0"),
])
def test_bad_input_gives_one_clear_error_and_writes_nothing(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_to_file(ATOMS, tmp_path / "out.nc", probe=PROBE, potential=POTENTIAL, scan=GridScan(step=0.5),
                         detectors=DETECTORS, **kwargs)
    assert list(tmp_path.iterdir()) == []
