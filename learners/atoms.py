"""Atom-finding kernels around the network: resampling to the model's pixel, per-image normalization,
local maxima with sub-pixel refinement, a crystal prior taken from the detections themselves, and matching
detections to ground truth (precision, recall, F1).

Images are (ny, nx) float arrays; positions are (n, 2) arrays of (row, col) in pixels, pixel centres at
integers, so a pixel (row, col) of size p [Angstrom] covers x in [col p, (col + 1) p) and its centre is at
x = (col + 0.5) p (the convention of twin.generate's "atom_col"/"atom_row" labels).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial import cKDTree

MODEL_PIXEL_ANG = 0.2  # the atom finder sees images at 0.2 A per pixel (2x2 sum-binning of 0.1 A images)


def _box_resample_axis(image: np.ndarray, factor: float, axis: int) -> np.ndarray:
    """Integrate `image` over new pixels `factor` old pixels wide along `axis` (exact box integration of the
    piecewise-constant image, so counts are conserved and an integer factor is plain sum-binning)."""
    n_old = image.shape[axis]
    n_new = max(int(np.floor(n_old / factor + 1e-6)), 1)
    cumulative = np.concatenate([np.zeros_like(np.take(image, [0], axis=axis)), np.cumsum(image, axis=axis)],
                                axis=axis)
    edges = np.minimum(np.arange(n_new + 1) * factor, n_old)
    low = np.floor(edges).astype(int)
    frac = edges - low
    high = np.minimum(low + 1, n_old)
    shape = [1] * image.ndim
    shape[axis] = -1
    values = (np.take(cumulative, low, axis=axis) * (1 - frac.reshape(shape))
              + np.take(cumulative, high, axis=axis) * frac.reshape(shape))
    return np.diff(values, axis=axis)


def resample(image, pixel_ang: float, target_ang: float = MODEL_PIXEL_ANG) -> np.ndarray:
    """(ny, nx) image with pixels of `pixel_ang` [A] -> (my, mx) image with pixels of `target_ang` [A], the
    counts of each new pixel the integral of the old image over it (2x2 sum-binning for 0.1 -> 0.2 A, so
    Poisson statistics are kept). The new grid starts at the same corner; trailing partial pixels are dropped."""
    image = np.asarray(image, np.float64)
    if image.ndim != 2:
        raise ValueError(f"image of shape {image.shape} is not allowed; give a 2-D (ny, nx) image")
    if not (np.isfinite(pixel_ang) and pixel_ang > 0):
        raise ValueError(f"pixel_ang={pixel_ang!r} is not allowed; give a pixel size > 0 in Angstrom")
    factor = target_ang / pixel_ang
    if abs(factor - 1) < 1e-6:
        return image.astype(np.float32)
    out = _box_resample_axis(_box_resample_axis(image, factor, 0), factor, 1)
    return out.astype(np.float32)


def pixels_to_model(col, row, pixel_ang: float, target_ang: float = MODEL_PIXEL_ANG):
    """Pixel coordinates (centres at integers) of an image with `pixel_ang` -> those of its resampled copy."""
    scale = pixel_ang / target_ang
    return (np.asarray(col) + 0.5) * scale - 0.5, (np.asarray(row) + 0.5) * scale - 0.5


def normalize(image) -> np.ndarray:
    """Zero mean, unit standard deviation per image (counts and PMT units then look alike)."""
    image = np.asarray(image, np.float32)
    std = float(image.std())
    return ((image - image.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def find_peaks(heatmap, *, threshold: float, min_distance_px: int = 2) -> np.ndarray:
    """(n, 2) int (row, col) of the local maxima of `heatmap` (ny, nx) above `threshold`, each the largest
    value within `min_distance_px` pixels (a (2 d + 1)^2 window); ties keep one."""
    heatmap = np.asarray(heatmap, np.float32)
    size = 2 * int(min_distance_px) + 1
    local = ndimage.maximum_filter(heatmap, size=size, mode="constant", cval=-np.inf)
    candidates = np.argwhere((heatmap == local) & (heatmap > threshold))
    if len(candidates) < 2:
        return candidates
    order = np.argsort(-heatmap[tuple(candidates.T)], kind="stable")
    kept, taken = [], np.zeros(heatmap.shape, bool)
    for row, col in candidates[order]:
        if taken[row, col]:
            continue
        kept.append((row, col))
        taken[max(row - min_distance_px, 0):row + min_distance_px + 1,
              max(col - min_distance_px, 0):col + min_distance_px + 1] = True
    return np.array(kept, int).reshape(-1, 2)


def refine_subpixel(heatmap, peaks) -> np.ndarray:
    """(n, 2) float (row, col): each integer maximum moved to the vertex of the parabola through the log of
    the heatmap at the peak and its two neighbours, per axis (exact for a Gaussian peak). Shifts are clipped
    to half a pixel; at the border or for non-positive values the integer position is kept."""
    heatmap = np.asarray(heatmap, np.float64)
    peaks = np.asarray(peaks, int).reshape(-1, 2)
    out = peaks.astype(np.float64)
    ny, nx = heatmap.shape
    for axis, size in ((0, ny), (1, nx)):
        inside = (peaks[:, axis] > 0) & (peaks[:, axis] < size - 1)
        p = peaks[inside]
        step = np.zeros(2, int)
        step[axis] = 1
        values = [heatmap[tuple((p + sign * step).T)] for sign in (-1, 0, 1)]
        good = np.all([v > 0 for v in values], axis=0)
        lo, mid, hi = (np.log(np.where(good, v, 1.0)) for v in values)
        curvature = lo - 2 * mid + hi
        shift = np.where(good & (curvature < 0), 0.5 * (lo - hi) / np.where(curvature < 0, curvature, -1.0), 0.0)
        out[np.flatnonzero(inside), axis] += np.clip(shift, -0.5, 0.5)
    return out


def centred_inside(heatmap, peaks) -> np.ndarray:
    """(n,) bool: False for a peak on the outermost pixels of `heatmap` whose column lies outside the image.

    An atom just outside the field of view shows its tail in the image, and its heatmap peaks on the border
    pixel. Per axis, the parabola through the log of the heatmap at the border pixel and the next two inward
    has its vertex beyond the image edge (half a pixel out) for such an atom, or rises outward with no vertex."""
    heatmap = np.asarray(heatmap, np.float64)
    peaks = np.asarray(peaks, int).reshape(-1, 2)
    keep = np.ones(len(peaks), bool)
    for axis, size in ((0, heatmap.shape[0]), (1, heatmap.shape[1])):
        for border, inward in ((0, 1), (size - 1, -1)):
            on = np.flatnonzero(peaks[:, axis] == border)
            if not len(on) or size < 3:
                continue
            values = []
            for step in (0, 1, 2):
                p = peaks[on].copy()
                p[:, axis] = border + inward * step
                values.append(np.log(np.maximum(heatmap[tuple(p.T)], 1e-12)))
            l0, l1, l2 = values
            a, b = (l0 - 2 * l1 + l2) / 2, (-3 * l0 + 4 * l1 - l2) / 2  # l(t) = a t^2 + b t + l0, t inward
            vertex = np.where(a < 0, -b / (2 * np.where(a < 0, a, -1.0)), np.where(b < 0, -np.inf, np.inf))
            keep[on] &= vertex >= -0.5
    return keep


def lattice_vectors(points, *, reach_ang: float = 5.0, min_share: float = 0.25, bin_ang: float = 0.05,
                    radius_ang: float = 0.35, anchors: int = 4000) -> np.ndarray:
    """(m, 2) displacements [A] between atoms of the crystal in `points` (n, 2) [A], learnt from the points.

    The displacements between all pairs closer than `reach_ang` (+ `radius_ang`) are histogrammed in bins of
    `bin_ang`. A vector is a local maximum of the smoothed counts within `radius_ang` that holds at least
    `min_share` x n pairs within `radius_ang` (n: the points, or the anchors below), refined by mean shift (the
    mean of the pairs within `radius_ang`, repeated). In a honeycomb every lattice translation holds ~n pairs
    and every bond ~n/2; in an amorphous film or a handful of points no maximum holds enough, and the result is
    empty. The set is symmetric (v and -v), without 0, and holds the vectors up to `reach_ang`. Above `anchors`
    points, only the displacements from a fixed random subset of `anchors` points to their neighbours are
    counted, which bounds time and memory."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    extent = reach_ang + radius_ang  # so that the vectors near the reach keep all their pairs
    origins = points if len(points) <= anchors else \
        points[np.random.default_rng(0).choice(len(points), anchors, replace=False)]  # fixed, unbiased subset
    neighbours = cKDTree(points).query_ball_point(origins, extent)
    d = np.concatenate([points[j] - o for o, j in zip(origins, neighbours)] + [np.zeros((0, 2))])
    d = d[np.hypot(*d.T) > 0]
    if not len(d):
        return np.zeros((0, 2))
    bins = 2 * int(np.ceil(extent / bin_ang))
    extent = bins * bin_ang / 2
    counts, _, _ = np.histogram2d(d[:, 0], d[:, 1], bins=bins, range=[[-extent, extent]] * 2)
    r = int(round(radius_ang / bin_ang))
    disc = np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r
    mass = ndimage.convolve(counts, disc.astype(np.float64), mode="constant")
    smooth = ndimage.gaussian_filter(counts, radius_ang / bin_ang / 3, mode="constant")
    peaks = smooth == ndimage.maximum_filter(smooth, footprint=disc, mode="constant")
    peaks &= mass >= min_share * len(origins)
    centres = (np.argwhere(peaks) + 0.5) * bin_ang - extent
    centres = centres[(np.hypot(*centres.T) > 2 * radius_ang) & (np.hypot(*centres.T) <= reach_ang)]
    tree = cKDTree(d)
    for _ in range(10):  # mean shift: each centre to the mean of its pairs, until it sits on the mode
        centres = np.array([d[tree.query_ball_point(c, radius_ang)].mean(axis=0) for c in centres]).reshape(-1, 2)
    return centres


def lattice_average(points, vectors, *, iterations: int = 3) -> np.ndarray:
    """(n, 2) `points` [A] each moved to the mean of itself and the positions its neighbours predict for it.

    A neighbour j within reach predicts point i at p_j + v, where v is the vector of `vectors` (from
    `lattice_vectors`) nearest to p_i - p_j, when that is closer than half the shortest vector; neighbours
    that fit no vector (another grain, an adatom, noise) predict nothing. Repeated `iterations` times (Jacobi),
    the position noise of a crystal's atoms falls about as 1/sqrt(number of fitting neighbours). It never
    adds or removes points, and leaves a perfect lattice (and points with no fitting neighbour) where they are;
    it averages real local displacements (strain, polarization) too, so leave it out to measure those."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    vectors = np.asarray(vectors, np.float64).reshape(-1, 2)
    if len(points) < 2 or not len(vectors):
        return points.copy()
    lengths = np.hypot(*vectors.T)
    gate = 0.5 * lengths.min()
    pairs = cKDTree(points).query_pairs(lengths.max() + gate, output_type="ndarray")
    if not len(pairs):
        return points.copy()
    i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    nearest = cKDTree(vectors)
    q = points.copy()
    for _ in range(iterations):
        error, k = nearest.query(q[i] - q[j])
        fits = error < gate
        total, count = q.copy(), np.ones(len(q))
        np.add.at(total, i[fits], q[j[fits]] + vectors[k[fits]])
        np.add.at(count, i[fits], 1.0)
        q = total / count[:, None]
    return q


def match(predicted, truth, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of `predicted` (n, 2) to `truth` (m, 2) positions minimizing the total distance
    among pairs closer than `tolerance` (Hungarian algorithm). Returns index arrays (i_pred, i_true)."""
    predicted, truth = np.asarray(predicted, float).reshape(-1, 2), np.asarray(truth, float).reshape(-1, 2)
    if not len(predicted) or not len(truth):
        return np.zeros(0, int), np.zeros(0, int)
    distance = np.hypot(*(predicted[:, None, :] - truth[None, :, :]).transpose(2, 0, 1))
    cost = np.where(distance < tolerance, distance, 1e6)
    rows, cols = optimize.linear_sum_assignment(cost)
    good = distance[rows, cols] < tolerance
    return rows[good], cols[good]


def f1_from_counts(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
