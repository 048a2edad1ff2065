"""The atom finder (learners/segment.py, learners/atoms.py, learners/cli_atoms.py): kernels against analytic
cases, learner plumbing on tiny models, the built-in model's accuracy on a held-out recipe and on images
simulated by abTEM, and the CLI's errors."""

from __future__ import annotations

import csv
import functools
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from typer.testing import CliRunner

from hypothesis import given, settings
from hypothesis import strategies as st

from learners.atoms import (centred_inside, find_peaks, lattice_average, lattice_vectors, match, normalize,
                            pixels_to_model, refine_subpixel, resample)
from learners.segment import (AtomFinder, load_atomfinder, locate, make_loss, make_optimizer, predict_maps,
                              prepare_sample, score_image, score_samples, targets, train_atomfinder)
from learners.train import init_state, load_model, make_train_step, save_model

HELDOUT = "datasets/recipes/graphene-atomfinder-heldout.toml"
TOLERANCE_ANG = 0.25 * 1.42  # a quarter of graphene's nearest-neighbour distance


# ---------------------------------------------------------------------------------------------------------
# Kernels


def test_resample_by_two_is_two_by_two_sum_binning():
    image = np.arange(6 * 8, dtype=np.float32).reshape(6, 8) ** 1.5
    binned = image.reshape(3, 2, 4, 2).sum(axis=(1, 3))
    np.testing.assert_allclose(resample(image, 0.1, 0.2), binned, rtol=1e-6)


@pytest.mark.parametrize("pixel", [0.0781, 0.117, 0.29])
def test_resample_conserves_counts_over_whole_new_pixels(pixel):
    rng = np.random.default_rng(0)
    image = rng.poisson(3.0, (90, 70)).astype(np.float32)
    out = resample(image, pixel, 0.2)
    covered_y, covered_x = out.shape[0] * 0.2 / pixel, out.shape[1] * 0.2 / pixel
    assert covered_y <= 90 + 1e-6 and covered_x <= 70 + 1e-6
    whole = image[:int(covered_y), :int(covered_x)].sum()  # the partial last old pixel is within one row/column
    assert whole <= out.sum() + 1e-3 <= image.sum() + 1e-3


def test_model_coordinates_follow_the_resampling():
    """A single bright pixel resampled by 2 lands in the model pixel that contains it."""
    image = np.zeros((40, 40), np.float32)
    image[13, 26] = 1.0
    small = resample(image, 0.1, 0.2)
    col, row = pixels_to_model(26, 13, 0.1, 0.2)
    assert np.unravel_index(small.argmax(), small.shape) == (6, 13)
    assert (row, col) == (6.25, 12.75)  # pixel 13 of 0.1 A spans 1.3-1.4 A: model pixel 6 (1.2-1.4 A)


def _gaussians(shape, centres, sigma):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    return sum(np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2)) for r, c in centres)


def test_subpixel_refinement_recovers_gaussian_centres():
    centres = [(10.3, 12.8), (25.61, 30.07), (40.5, 9.49)]
    heatmap = _gaussians((52, 48), centres, 1.5)
    peaks = find_peaks(heatmap, threshold=0.5)
    assert len(peaks) == 3
    refined = refine_subpixel(heatmap, peaks)
    order = np.argsort(refined[:, 0])
    np.testing.assert_allclose(refined[order], centres, atol=0.02)


@settings(max_examples=40, deadline=None)
@given(centre=st.floats(-2.0, 3.0).filter(lambda c: abs(c + 0.5) > 0.05), along=st.floats(8.0, 24.0),
       side=st.sampled_from(["top", "bottom", "left", "right"]))
def test_border_peaks_are_kept_only_for_atoms_centred_inside(centre, along, side):
    """A Gaussian column `centre` pixels in from one border (negative: outside; the image edge is at -0.5)."""
    heatmap = _gaussians((32, 32), [(centre, along)], 1.5)
    heatmap = {"top": heatmap, "bottom": heatmap[::-1], "left": heatmap.T, "right": heatmap.T[:, ::-1]}[side]
    peaks = find_peaks(heatmap, threshold=0.1)
    assert len(peaks) == 1
    assert bool(centred_inside(heatmap, peaks)[0]) == (centre > -0.5)


def test_training_targets_keep_the_tails_of_atoms_in_the_cut_frame():
    """prepare_sample cuts a 1 A frame (5 model pixels) after drawing the targets of every labelled atom."""
    rows, cols = np.array([8.0, 30.0, 58.0]), np.array([40.0, 8.0, 20.0])  # all three in the frame, at 0.1 A
    image = _gaussians((64, 64), zip(rows, cols), 3.0)
    sample = prepare_sample(image, 0.1, cols, rows, [0, 0, 0])
    heatmap, classes = targets((32, 32), *pixels_to_model(cols, rows, 0.1), [0, 0, 0], sigma_px=1.5, radius_px=2.0)
    np.testing.assert_array_equal(sample["heatmap"], heatmap[5:-5, 5:-5])
    np.testing.assert_array_equal(sample["classes"], classes[5:-5, 5:-5])
    assert sample["x"].shape == (22, 22) and sample["heatmap"][0].max() > 0.5


def test_find_peaks_keeps_one_of_a_plateau_and_ignores_weak_maxima():
    heatmap = np.zeros((20, 20))
    heatmap[5, 5] = heatmap[5, 6] = 1.0
    heatmap[15, 15] = 0.3
    np.testing.assert_array_equal(find_peaks(heatmap, threshold=0.5), [[5, 5]])


def test_matching_is_one_to_one_within_the_tolerance():
    truth = np.array([[0.0, 0.0], [1.42, 0.0], [5.0, 5.0]])
    predicted = np.array([[0.1, 0.0], [0.2, 0.1], [1.5, 0.1], [9.0, 9.0]])
    i_pred, i_true = match(predicted, truth, 0.355)
    assert sorted(zip(i_pred.tolist(), i_true.tolist())) == [(0, 0), (2, 1)]
    found = {"x_ang": predicted[:, 0], "y_ang": predicted[:, 1], "species": np.array(["C"] * 4, dtype=object)}
    scores = score_image(found, truth[:, 0], truth[:, 1], np.array(["C"] * 3, dtype=object), tolerance_ang=0.355)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 2, 1)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_scores_leave_out_only_atoms_and_detections_at_the_edge():
    """10 x 10 A field, radius 0.355 A. Truth: one interior atom found, one interior atom missed, one atom
    centred 0.1 A inside the edge and found. Detections also: one of an atom centred just outside (at the
    edge, unmatched), one interior false positive."""
    truth = np.array([[5.0, 5.0], [3.0, 7.0], [0.1, 4.0]])
    found = {"x_ang": np.array([5.05, 0.12, 9.9, 7.0]), "y_ang": np.array([5.0, 4.02, 2.0, 2.0]),
             "species": np.array(["C", "C", "C", "C"], dtype=object)}
    species = np.array(["C", "Si", "C"], dtype=object)  # the missed interior atom is a dopant
    whole = score_image(found, truth[:, 0], truth[:, 1], species, tolerance_ang=0.355)
    interior = score_image(found, truth[:, 0], truth[:, 1], species, tolerance_ang=0.355, field_ang=(10.0, 10.0))
    assert (whole["tp"], whole["fp"], whole["fn"]) == (2, 2, 1)
    assert (interior["tp"], interior["fp"], interior["fn"]) == (1, 1, 1)
    assert interior["species_correct"] == 1
    assert (whole["dopants"], whole["dopants_right"]) == (1, 0)


def test_normalize_is_invariant_to_units():
    rng = np.random.default_rng(1)
    counts = rng.poisson(0.3, (32, 32)).astype(np.float32)
    np.testing.assert_allclose(normalize(counts), normalize(37.5 * counts + 4.0), atol=1e-5)


def _turn(angle):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _honeycomb(angle, origin, bond=1.42, field=30.0):
    """Sites (n, 2) [A] of a honeycomb of `bond` turned by `angle` about `origin`, inside a square `field`."""
    a1, a2 = bond * np.sqrt(3) * np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    m = np.arange(-40, 41)
    cells = (m[:, None, None] * a1 + m[None, :, None] * a2).reshape(-1, 1, 2)
    sites = (cells + np.array([[0.0, 0.0], (a1 + a2) / 3])).reshape(-1, 2) @ _turn(angle).T + origin
    return sites[np.all((sites >= 0) & (sites <= field), axis=1)]


def _difference_set(angle, reach, bond=1.42):
    """The displacements (m, 2) [A] between honeycomb sites shorter than `reach`, from one cell of each
    sublattice to every site around it (analytic, independent of `lattice_vectors`)."""
    sites = _honeycomb(angle, np.zeros(2) + 40.0, bond, 80.0)
    centre = sites[np.argmin(np.hypot(*(sites - 40.0).T))]
    other = sites[np.argsort(np.hypot(*(sites - 40.0).T))[1]]  # a nearest neighbour: the other sublattice
    d = np.concatenate([sites - centre, sites - other])
    return np.unique(np.round(d[(np.hypot(*d.T) > 0.1) & (np.hypot(*d.T) < reach)], 6), axis=0)


@settings(max_examples=15, deadline=None)
@given(angle=st.floats(0.0, np.pi), ox=st.floats(0.0, 3.0), oy=st.floats(0.0, 3.0), seed=st.integers(0, 2**16))
def test_lattice_vectors_are_the_honeycombs_displacements(angle, ox, oy, seed):
    """From noisy sites (0.1 A RMS per axis), every honeycomb displacement up to 4.7 A (bonds, translations,
    and the rest: 36 of them) is found within 0.06 A, and nothing else up to the 5 A reach."""
    rng = np.random.default_rng(seed)
    sites = _honeycomb(angle, np.array([ox, oy]))
    found = lattice_vectors(sites + rng.normal(0, 0.1, sites.shape))
    truth = _difference_set(angle, 5.2)
    error = np.hypot(*(found[:, None] - truth[None]).transpose(2, 0, 1))
    assert np.all(error.min(axis=1) < 0.06), found[error.min(axis=1) >= 0.06]
    inner = np.hypot(*truth.T) < 4.7
    assert np.sum(inner) == 36 and np.all(error.min(axis=0)[inner] < 0.06)


@settings(max_examples=15, deadline=None)
@given(angle=st.floats(0.0, np.pi), ox=st.floats(0.0, 3.0), oy=st.floats(0.0, 3.0), seed=st.integers(0, 2**16))
def test_lattice_average_cuts_position_noise_and_keeps_a_perfect_lattice(angle, ox, oy, seed):
    """Honeycomb sites with 0.15 A RMS noise per axis, 2 % of them missing: the RMS error of the sites 5 A or
    more inside the field falls at least 3-fold (~30 fitting neighbours each; measured 7-15-fold); no point is
    added or lost; a perfect lattice is a fixed point. Sites whose own error exceeds 0.5 A (beyond 3 sigma, as
    far from their site as from the hexagon centre beside it) are left out of the RMS: they can be pulled
    to the wrong place."""
    rng = np.random.default_rng(seed)
    sites = _honeycomb(angle, np.array([ox, oy]))
    sites = sites[rng.random(len(sites)) > 0.02]
    noisy = sites + rng.normal(0, 0.15, sites.shape)
    averaged = lattice_average(noisy, lattice_vectors(noisy))
    inside = np.all((sites >= 5) & (sites <= 25), axis=1) & (np.hypot(*(noisy - sites).T) < 0.5)
    rms = [np.sqrt(np.mean(np.sum((p[inside] - sites[inside]) ** 2, axis=1))) for p in (noisy, averaged)]
    assert averaged.shape == noisy.shape and rms[1] < rms[0] / 3, rms
    np.testing.assert_allclose(lattice_average(sites, _difference_set(angle, 5.0)), sites, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(angle=st.floats(-np.pi, np.pi), shift=st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
       seed=st.integers(0, 2**16))
def test_lattice_average_turns_and_moves_with_the_points(angle, shift, seed):
    rng = np.random.default_rng(seed)
    points = _honeycomb(0.3, np.zeros(2)) + rng.normal(0, 0.12, (1, 2))
    points = points + rng.normal(0, 0.12, points.shape)
    vectors = lattice_vectors(points)
    moved = lattice_average(points @ _turn(angle).T + shift, vectors @ _turn(angle).T)
    np.testing.assert_allclose(moved, lattice_average(points, vectors) @ _turn(angle).T + shift, atol=1e-6)


def test_lattice_vectors_from_a_subset_of_anchors_match_those_from_all_points():
    """Above `anchors` points only the displacements from a fixed random subset of them are counted (bounded
    time and memory on large images): 150 of ~350 noisy honeycomb sites give the same 42 vectors within 0.06 A."""
    rng = np.random.default_rng(5)
    sites = _honeycomb(0.7, np.array([1.0, 2.0]))
    noisy = sites + rng.normal(0, 0.1, sites.shape)
    full, sparse = lattice_vectors(noisy), lattice_vectors(noisy, anchors=150)
    assert len(sites) > 300 and len(full) == len(sparse) == 42
    error = np.hypot(*(sparse[:, None] - full[None]).transpose(2, 0, 1))
    assert np.all(error.min(axis=1) < 0.06), error.min(axis=1)


def test_points_without_a_crystal_give_no_vectors_and_stay_put():
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 30, (300, 2))  # an amorphous film: as dense as graphene, no order
    assert lattice_vectors(points).shape == (0, 2)
    np.testing.assert_array_equal(lattice_average(points, lattice_vectors(points)), points)
    assert lattice_vectors(points[:1]).shape == (0, 2)


# ---------------------------------------------------------------------------------------------------------
# Learner plumbing on tiny models and synthetic lattices


def _lattice_sample(offset):
    """A 0.1 A image of Gaussian columns on a 1.42 A square lattice; every 5th column is brighter (class 1)."""
    rows, cols = np.meshgrid(np.arange(2, 62, 14.2), np.arange(2, 62, 14.2), indexing="ij")
    rows, cols = rows.ravel() + offset, cols.ravel() + offset
    classes = (np.arange(len(rows)) % 5 == 0).astype(int)
    image = sum((1 + 2 * k) * _gaussians((64, 64), [(r, c)], 3.0) for r, c, k in zip(rows, cols, classes))
    return prepare_sample(image, 0.1, cols, rows, classes)


TINY = {"members": 2, "depth": 1, "width": 4, "batch_size": 2, "crop_px": 16, "steps_per_epoch": 2, "jit": False}
TABLE = {"classes": ["dim", "bright"], "species": ["C", "Si"]}


def _params(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


@functools.cache
def tiny_run(seed):
    samples = [_lattice_sample(0.0), _lattice_sample(3.3)]
    return train_atomfinder(samples, TABLE, key=jax.random.key(seed), epochs=1, **TINY)


def test_training_is_deterministic_for_a_fixed_key():
    """Un-jitted steps (compiling twice would dominate the run time; jit == no-jit is tested below)."""
    first, _, h1 = tiny_run(3)
    samples = [_lattice_sample(0.0), _lattice_sample(3.3)]
    second, _, h2 = train_atomfinder(samples, TABLE, key=jax.random.key(3), epochs=1, **TINY)
    assert h1 == h2
    for a, b in zip(_params(first), _params(second)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    initial = AtomFinder(n_classes=2, members=2, depth=1, width=4, rngs=nnx.Rngs(0))
    assert len(_params(first)) == len(_params(initial))


def test_members_differ_and_output_has_the_documented_shape():
    model = AtomFinder(n_classes=2, members=2, depth=1, width=4, rngs=nnx.Rngs(0))
    out = model(np.zeros((3, 16, 24, 1), np.float32) + np.linspace(0, 1, 24, dtype=np.float32)[:, None])
    assert out.shape == (2, 3, 16, 24, 4)
    assert not np.allclose(out[0], out[1])


@pytest.mark.parametrize("turns, flip", [(1, False), (2, True), (3, False), (0, True)])
def test_maps_turn_and_flip_with_the_image(turns, flip):
    """The dihedral average makes an untrained (so unsymmetric) network's maps equivariant on a 0.2 A image."""
    model = AtomFinder(n_classes=2, members=2, depth=2, width=4, rngs=nnx.Rngs(1))
    image = np.asarray(jax.random.poisson(jax.random.key(2), 3.0, (40, 52)), np.float32)
    view = np.rot90(image, turns)
    view = view[:, ::-1] if flip else view
    heat, probs = predict_maps(model, image, 0.2)
    heat_view, probs_view = predict_maps(model, np.ascontiguousarray(view), 0.2)
    expected_heat, expected_probs = np.rot90(heat, turns, axes=(1, 2)), np.rot90(probs, turns, axes=(1, 2))
    if flip:
        expected_heat, expected_probs = expected_heat[:, :, ::-1], expected_probs[:, :, ::-1]
    np.testing.assert_allclose(heat_view, expected_heat, atol=1e-5)
    np.testing.assert_allclose(probs_view, expected_probs, atol=1e-5)
    assert np.ptp(heat) > 1e-3


def test_train_step_jit_equals_no_jit():
    """One plain gradient step (SGD, so that round-off is not amplified the way Adam's first step is)."""
    import optax

    model = AtomFinder(n_classes=2, members=1, depth=1, width=4, rngs=nnx.Rngs(1))
    graphdef, params = nnx.split(model, nnx.Param)
    sample = _lattice_sample(1.0)
    batch = {"x": sample["x"][None, :16, :16, None], "heatmap": sample["heatmap"][None, :16, :16],
             "classes": sample["classes"][None, :16, :16]}
    optimizer = optax.sgd(1e-2)
    loss = make_loss(graphdef, np.ones(3, np.float32))
    (jitted, m_jit), (plain, m_plain) = (
        make_train_step(loss, optimizer, jit=jit)(init_state(params, optimizer), batch, jax.random.key(0))
        for jit in (True, False))
    for a, b in zip(jax.tree.leaves(jitted.params), jax.tree.leaves(plain.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert float(m_jit["loss"]) == pytest.approx(float(m_plain["loss"]), rel=1e-5)
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(jitted.params), jax.tree.leaves(params)))
    assert moved > 1e-5


def test_save_load_round_trip_gives_the_same_atoms(tmp_path):
    model, metadata, _ = tiny_run(3)
    path = tmp_path / "tiny.twin"
    save_model(path, model, builder="atomfinder", arguments=metadata["arguments"], metadata=metadata)
    loaded, meta2 = load_atomfinder(path)
    assert meta2["classes"] == TABLE["classes"] and meta2["pixel_ang"] == 0.2
    image = np.random.default_rng(0).poisson(2.0, (50, 70)).astype(np.float32)
    a, b = locate(model, metadata, image, 0.1, threshold=0.05), locate(loaded, meta2, image, 0.1, threshold=0.05)
    assert len(a["x_ang"]) > 0
    for name in ("x_ang", "y_ang", "confidence", "class_index"):
        np.testing.assert_array_equal(a[name], b[name])
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))


def test_locate_rejects_images_of_the_wrong_rank_and_non_models(tmp_path):
    model = AtomFinder(n_classes=2, members=1, depth=1, width=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="2-D"):
        locate(model, {**TABLE}, np.zeros((2, 32, 32)), 0.1)
    with pytest.raises(ValueError, match="pixel_ang"):
        locate(model, {**TABLE}, np.zeros((32, 32)), -0.1)
    junk = tmp_path / "junk.twin"
    junk.write_text("not a model")
    with pytest.raises(ValueError, match="not a twin model file"):
        load_atomfinder(junk)


# ---------------------------------------------------------------------------------------------------------
# The built-in model


@functools.cache
def builtin():
    return load_atomfinder("builtin")


@functools.cache
def heldout_samples(n=8, dose=None):
    """The first `n` samples of the held-out recipe; with `dose` [e/A^2], a 25 A field, 2 us dwell and the
    probe current that gives that dose (scripts/eval_atomfinder.py), every other parameter drawn as written."""
    from twin.generate.recipe import load_recipe
    from twin.generate.sample import generate_sample

    recipe = load_recipe(HELDOUT)
    if dose is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
        from eval_atomfinder import dose_recipe

        recipe = dose_recipe(recipe, dose)
    return tuple(generate_sample(recipe, i) for i in range(n))


def test_builtin_model_is_small_and_an_ensemble():
    from learners.segment import builtin_path

    model, metadata = builtin()
    assert builtin_path().stat().st_size < 5e6
    assert len(model.members) >= 3 and metadata["pixel_ang"] == 0.2
    assert load_model(builtin_path(), builder="atomfinder")[1]["classes"] == metadata["classes"]


@functools.cache
def heldout_scores(dose=None):
    model, metadata = builtin()
    return score_samples(model, metadata, heldout_samples(dose=dose), tolerance_ang=TOLERANCE_ANG)


def test_builtin_model_on_a_heldout_recipe_at_its_default_dose():
    """Held-out recipe (other seed, cell, ranges and dopant mix than the training recipe), fast tier, 8 images,
    match radius a quarter of the C-C distance, with the lattice average (the built-in default). Measured on
    2026-11-30: F1 0.946 over the whole field, 0.960 without the atoms centred within the match radius of the
    edge (0.924 / 0.940 without the lattice average); species accuracy 0.988. The issue's target is F1 >= 0.98;
    it is not met at these doses (1e4-1e5 e/A^2, 3-70 detected electrons per C atom; docs/validation.md), so
    this guards the measured figures."""
    scores = heldout_scores()
    assert scores["n_images"] == 8 and scores["tp"] > 1200, scores
    assert scores["f1"] >= 0.93 and scores["interior"]["f1"] >= 0.945, scores
    assert scores["species_accuracy"] >= 0.95, scores


def test_builtin_model_reaches_the_target_at_1e5_electrons_per_square_angstrom():
    """The same 8 held-out structures and optics at 1e5 e/A^2 (30-70 detected electrons per C atom): F1 >= 0.98
    without the atoms centred within the match radius of the edge (measured 0.998; 0.980 over the whole
    field, where atoms centred just outside the edge, unlabelled, are found)."""
    scores = heldout_scores(1e5)
    assert scores["interior"]["f1"] >= 0.98, scores
    assert scores["interior"]["species_accuracy"] >= 0.95, scores


def _abtem_haadf(atoms, step, dose_e_per_ang2, key):
    """HAADF image (ny, nx) of `atoms` by abTEM's multislice, scanned from (0, 0) in `step` [A], in detected
    electrons at `dose_e_per_ang2` with Poisson noise and a 0.4 A (FWHM) Gaussian source."""
    import abtem
    from scipy import ndimage

    abtem.config.set({"precision": "float32", "device": "cpu"})
    potential = abtem.Potential(atoms, sampling=0.08, slice_thickness=2.0, parametrization="lobato")
    probe = abtem.Probe(energy=60e3, semiangle_cutoff=30.0, C10=0.0)
    scan = abtem.GridScan(start=(0, 0), end=tuple(atoms.cell.lengths()[:2]), sampling=step, endpoint=False)
    measurement = probe.multislice(potential, scan=scan, detectors=abtem.AnnularDetector(90, 200))
    fraction = measurement.compute(progress_bar=False).array.T  # abTEM is (x, y); ours (y, x)
    fraction = ndimage.gaussian_filter(fraction, 0.4 / 2.355 / step, mode="wrap")
    electrons = dose_e_per_ang2 * step**2
    return np.asarray(jax.random.poisson(key, fraction * electrons), np.float32)


def test_builtin_model_on_abtem_images_of_graphene_with_a_dopant_and_a_vacancy():
    """Cross-simulator check: abTEM (not twin) makes the image; F1 >= 0.95 and the Si dopant is found as Si."""
    from twin.structures import graphene_with_defects

    atoms = graphene_with_defects((6, 4))  # 14.8 x 17.0 A, one Si, one vacancy
    step = 0.2
    image = _abtem_haadf(atoms, step, 4e4, jax.random.key(7))
    model, metadata = builtin()
    found = locate(model, metadata, image, step)
    # scan position i is at x = i step, i.e. pixel centre (i + 0.5) p in locate's frame; periodic copies of
    # the atoms fall in view at the far edges, so score atoms and detections at least 1 A inside the field
    extent = np.array([image.shape[1], image.shape[0]]) * step
    xy = atoms.positions[:, :2] + step / 2
    xy = np.concatenate([xy + np.array([dx, dy]) * atoms.cell.lengths()[:2] for dx in (-1, 0, 1) for dy in (-1, 0, 1)])
    numbers = np.tile(atoms.numbers, 9)
    inside = lambda p: np.all((p > 1.0) & (p < extent - 1.0), axis=1)  # noqa: E731
    keep = inside(xy)
    species = np.where(numbers[keep] == 14, "Si", "C").astype(object)
    detected = inside(np.column_stack([found["x_ang"], found["y_ang"]]))
    trimmed = {name: np.asarray(value)[detected] for name, value in found.items()}
    scores = score_image(trimmed, xy[keep, 0], xy[keep, 1], species, tolerance_ang=TOLERANCE_ANG)
    assert scores["tp"] + scores["fn"] > 50
    assert scores["f1"] >= 0.95, scores
    assert list(trimmed["species"]).count("Si") >= 1 and scores["species_correct"] >= 0.95 * scores["tp"], scores


# ---------------------------------------------------------------------------------------------------------
# Command line


def _run(*args):
    from learners.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_locate_command_writes_the_documented_csv(tmp_path):
    sample = heldout_samples()[0]
    np.save(tmp_path / "image.npy", sample["image"])
    pixel = sample["parameters"]["acquisition.fov_ang"] / sample["parameters"]["acquisition.pixels"]
    out = tmp_path / "atoms.csv"
    result = _run("locate", tmp_path / "image.npy", "--pixel-size", pixel, "--out", out)
    assert result.exit_code == 0, result.output
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["x_ang", "y_ang", "class", "confidence"]
    model, metadata = builtin()
    table = np.array([[float(r[0]), float(r[1])] for r in rows[1:]])
    assert {r[2] for r in rows[1:]} <= set(metadata["classes"])
    assert all(0.0 <= float(r[3]) <= 1.0 for r in rows[1:])
    found = locate(model, metadata, sample["image"], pixel)
    assert len(table) == len(found["x_ang"]) > 100
    np.testing.assert_allclose(table, np.column_stack([found["x_ang"], found["y_ang"]]), atol=1e-4)
    assert [r[2] for r in rows[1:]] == list(found["class"])
    assert metadata["lattice"]  # the built-in model averages with the lattice; --no-lattice keeps raw positions
    raw = locate(model, metadata, sample["image"], pixel, lattice=False)
    result = _run("locate", tmp_path / "image.npy", "--pixel-size", pixel, "--out", out, "--no-lattice")
    assert result.exit_code == 0, result.output
    with open(out) as f:
        table = np.array([[float(r[0]), float(r[1])] for r in list(csv.reader(f))[1:]])
    np.testing.assert_allclose(table, np.column_stack([raw["x_ang"], raw["y_ang"]]), atol=1e-4)
    assert np.max(np.hypot(raw["x_ang"] - found["x_ang"], raw["y_ang"] - found["y_ang"])) > 0.02


def test_locate_command_errors_name_the_parameter_and_write_nothing(tmp_path):
    out = tmp_path / "atoms.csv"
    np.save(tmp_path / "cube.npy", np.zeros((4, 3, 32, 32), np.float32))
    result = _run("locate", tmp_path / "cube.npy", "--pixel-size", 0.1, "--out", out)
    assert result.exit_code == 2 and "rank 4" in result.output and not out.exists()

    np.save(tmp_path / "plain.npy", np.ones((64, 64), np.float32))
    result = _run("locate", tmp_path / "plain.npy", "--out", out)
    assert result.exit_code == 2 and "--pixel-size" in result.output and not out.exists()

    result = _run("locate", tmp_path / "plain.npy", "--pixel-size", -0.1, "--out", out)
    assert result.exit_code == 2 and "--pixel-size -0.1" in result.output and not out.exists()

    (tmp_path / "fake.twin").write_bytes(b"\x00\x01 not msgpack")
    result = _run("locate", tmp_path / "plain.npy", "--pixel-size", 0.1, "--model", tmp_path / "fake.twin",
                  "--out", out)
    assert result.exit_code == 2 and "not a twin model file" in result.output and not out.exists()


def test_fit_atomfinder_command_trains_and_refuses_what_is_not_a_dataset(tmp_path):
    from twin.generate.engine import generate
    from twin.generate.recipe import load_recipe

    data = tmp_path / "data"
    generate(load_recipe(HELDOUT), data, n_samples=2, shard_size=2, workers=0)
    model = tmp_path / "m.twin"
    result = _run("fit", "atomfinder", "--data", data, "--out", model, "--epochs", 1, "--steps", 2, "--batch", 2,
                  "--crop", 32, "--members", 1, "--width", 4, "--depth", 1)
    assert result.exit_code == 0, result.output
    network, metadata = load_atomfinder(model)
    assert metadata["classes"][0] == "C" and len(network.members) == 1

    result = _run("fit", "atomfinder", "--data", tmp_path, "--out", tmp_path / "n.twin")
    assert result.exit_code == 2 and "not a twin dataset" in result.output and not (tmp_path / "n.twin").exists()
    result = _run("fit", "atomfinder", "--data", data, "--out", tmp_path / "n.twin", "--width", 6)
    assert result.exit_code == 2 and "--width 6" in result.output
