"""One labelled sample of a recipe: a pure function of (recipe, index).

Sample i uses key = fold_in(PRNGKey(recipe seed), i): its parameters are drawn from fold_in(key, 0), the
structure from a seed drawn from fold_in(key, 1), the noise from fold_in(key, 2). It does not depend on
which worker makes it or on what was made before.

Output (numpy, float32 unless said): "image" (y, x) counts (STEM) or height [Angstrom] (STM); "clean" (y, x)
the noise-free signal at the nominal pixel positions; "mask" (y, x) int16, 1 + class of the nearest atom (or
vacancy, classes after the atom classes) within `mask_radius_ang`, 0 elsewhere; "heatmap" (y, x) sum of
Gaussians of heatmap_sigma_ang on every atom in view; per atom in view "atom_x", "atom_y" [Angstrom, sample
frame], "atom_col", "atom_row" [pixels of the scan frame, fractional; the frame is turned by scan_rotation_rad
about the cell centre, so the lattice turns in the image], "atom_z" (atomic number), "atom_class", one per
projected column (STEM) or top-layer site (STM); "polarization"
(n_cells, 4) for perovskites; "db_occupancy" (n_sites,) for Si(100)-H; and "parameters" (a flat dict).
"""

from __future__ import annotations

import jax
import numpy as np

from twin import acquisition
from twin.stem.fields import compute_field
from twin.stem.probe import ProbeSpec

MASK_RADIUS_ANG = 0.5
COLUMN_TOLERANCE_ANG = 0.1  # atoms of one element closer than this in projection form one labelled column


def sample_key(seed: int, index: int):
    return jax.random.fold_in(jax.random.PRNGKey(seed), index)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"optics": {"energy_ev": 6e4}} -> {"optics.energy_ev": 6e4}."""
    out = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def generate_sample(recipe, index: int) -> dict:
    """Sample `index` of `recipe` (a twin.generate.recipe.Recipe): arrays and labels, see the module docstring."""
    from twin.generate.recipe import draw
    from twin.samples.families import make_sample

    key = sample_key(recipe.seed, index)
    params = draw(recipe, jax.random.fold_in(key, 0))
    structure_seed = int(jax.random.randint(jax.random.fold_in(key, 1), (), 0, 2**31 - 1))
    labelled = make_sample(params["sample"]["family"], {k: v for k, v in params["sample"].items() if k != "family"},
                           structure_seed)
    acq = params["acquisition"]
    fov, n = float(acq["fov_ang"]), int(acq["pixels"])
    extent = labelled.atoms.cell.lengths()[:2]
    centre = (extent[0] / 2, extent[1] / 2)
    if recipe.instrument == "stm":
        image, clean = _stm_images(labelled, params, fov, n, centre, jax.random.fold_in(key, 2))
    else:
        image, clean = _stem_images(labelled, params, fov, n, centre, jax.random.fold_in(key, 2), recipe.tier)
    out = {"image": image.astype(np.float32), "clean": clean.astype(np.float32),
           "parameters": flatten(params), "classes": [*labelled.classes, *labelled.vacancy_class_names]}
    rotation = 0.0 if recipe.instrument == "stm" else float(acq.get("scan_rotation_rad", 0.0))  # STM scans along x
    out.update(_labels(labelled, fov, n, centre, rotation, float(acq.get("heatmap_sigma_ang", 0.4))))
    return out


def _probe(optics: dict) -> ProbeSpec:
    aberrations = {"C10": -float(optics.get("defocus_ang", 0.0)), "C30": float(optics.get("cs_ang", 0.0)),
                   "C12": float(optics.get("c12_ang", 0.0)), "phi12": float(optics.get("phi12_rad", 0.0))}
    return ProbeSpec(energy=float(optics["energy_ev"]), semiangle=float(optics["semiangle_mrad"]),
                     aberrations=aberrations)


def _grid(fov: float, n: int, centre, rotation: float, dx=0.0, dy=0.0) -> tuple[np.ndarray, np.ndarray]:
    """Sample-frame positions (x, y) [Angstrom] of the n x n pixels of a scan frame of `fov` about `centre`,
    rotated by `rotation` [rad], with the probe displaced by (dx, dy) in the scan frame."""
    u = (np.arange(n) + 0.5) / n * fov - fov / 2
    fu, fv = np.meshgrid(u, u)
    fu, fv = fu + dx, fv + dy
    c, s = np.cos(rotation), np.sin(rotation)
    return centre[0] + c * fu - s * fv, centre[1] + s * fu + c * fv


def _stem_images(labelled, params, fov, n, centre, key, tier):
    optics, acq = params["optics"], params["acquisition"]
    field = compute_field(labelled.atoms, _probe(optics), acq.get("detector", "haadf"), tier)
    if optics.get("source_size_ang", 0.0) > 0:
        field = field.blurred(float(optics["source_size_ang"]))
    rotation = float(acq.get("scan_rotation_rad", 0.0))
    noise = acquisition.ScanNoiseSpec(line_jitter_ang=float(acq.get("line_jitter_ang", 0.0)),
                                      distortion_rms=float(acq.get("distortion_rms", 0.0)),
                                      drift_ang_per_s=tuple(float(v) for v in acq.get("drift_ang_per_s", (0, 0))))
    k_scan, k_detect = jax.random.split(key)
    dx, dy = (np.asarray(v, float) for v in acquisition.probe_offsets(k_scan, (n, n), fov / n, float(acq["dwell_s"]),
                                                                       noise, scan_rotation_rad=rotation))
    ideal = field(*_grid(fov, n, centre, rotation, dx, dy))
    electrons = acquisition.electrons_per_pixel(float(acq["current_pa"]), float(acq["dwell_s"]))
    detector = acquisition.PMTDetector(enf=float(acq.get("pmt_enf", 1.2))) \
        if acq.get("detector_model", "counting") == "pmt" else acquisition.CountingDetector()
    image = np.asarray(acquisition.detect(k_detect, ideal.astype(np.float32), electrons, detector))
    return image, field(*_grid(fov, n, centre, rotation)) * electrons


def _stm_images(labelled, params, fov, n, centre, key):
    from twin import stm

    settings, acq = params["stm"], params["acquisition"]
    options = dict(fov_ang=fov, center_ang=centre, shape_yx=(n, n), bias_v=float(settings["bias_v"]),
                   setpoint_pa=float(settings["setpoint_pa"]), dwell_s=float(acq["dwell_s"]),
                   tip=stm.TipSpec(kind=settings.get("tip", "sharp")),
                   work_function_ev=float(settings.get("work_function_ev", 4.5)))
    noisy = stm.scan(key, labelled.surface, **options)
    clean = stm.scan(key, labelled.surface, noise=stm.StmNoiseSpec.noiseless(), **options)
    return np.asarray(noisy["height_ang"]), np.asarray(clean["height_ang"])


def _labelled_atoms(labelled) -> np.ndarray:
    """Indices of the atoms that get labels: one per projected column (the beam sees columns), and for a
    scanning-probe surface only the top-layer sites the tip sees."""
    atoms = labelled.atoms
    if labelled.surface is not None:
        top = [labelled.classes.index(c) for c in ("Si_H", "dangling_bond", "bare_dimer_site")]
        return np.flatnonzero(np.isin(labelled.atom_class, top))
    columns = np.round(atoms.positions[:, :2] / COLUMN_TOLERANCE_ANG).astype(np.int64)
    _, first = np.unique(np.column_stack([columns, atoms.numbers]), axis=0, return_index=True)
    return np.sort(first)


def _labels(labelled, fov, n, centre, rotation, sigma) -> dict:
    atoms = labelled.atoms
    pixel = fov / n
    extent = atoms.cell.lengths()[:2]
    keep = _labelled_atoms(labelled)
    xy = atoms.positions[keep, :2]
    points = [(xy, atoms.numbers[keep], np.asarray(labelled.atom_class)[keep])]
    if len(labelled.vacancies):
        offset = len(labelled.classes)
        points.append((np.asarray(labelled.vacancies)[:, :2], np.zeros(len(labelled.vacancies), int),
                       np.asarray(labelled.vacancy_classes) + offset))
    xy_all, z_all, class_all = (np.concatenate(a) for a in zip(*points))
    xy_all = centre + np.mod(xy_all - centre + extent / 2, extent) - extent / 2  # nearest periodic image
    reach = np.ceil(fov / np.sqrt(2) / extent).astype(int)  # images that a rotated frame can reach
    shifts = [(i * extent[0], j * extent[1]) for i in range(-reach[0], reach[0] + 1)
              for j in range(-reach[1], reach[1] + 1)]
    xy_all = np.concatenate([xy_all + shift for shift in shifts])
    z_all, class_all = np.tile(z_all, len(shifts)), np.tile(class_all, len(shifts))
    c, s = np.cos(rotation), np.sin(rotation)
    d = xy_all - centre
    col = (c * d[:, 0] + s * d[:, 1] + fov / 2) / pixel - 0.5  # scan-frame pixel coordinates
    row = (-s * d[:, 0] + c * d[:, 1] + fov / 2) / pixel - 0.5
    inside = (col >= -0.5) & (col < n - 0.5) & (row >= -0.5) & (row < n - 0.5)
    gx, gy = _grid(fov, n, centre, rotation)
    mask = np.zeros((n, n), np.int16)
    heatmap = np.zeros((n, n), np.float32)
    best = np.full((n, n), MASK_RADIUS_ANG)
    for (px, py), cls, z in zip(xy_all[inside], class_all[inside], z_all[inside]):
        d = np.hypot(gx - px, gy - py)
        closer = d < best
        mask[closer], best[closer] = cls + 1, d[closer]
        if z:
            heatmap += np.exp(-0.5 * (d / sigma) ** 2).astype(np.float32)
    out = {"mask": mask, "heatmap": heatmap, "atom_x": xy_all[inside, 0], "atom_y": xy_all[inside, 1],
           "atom_col": col[inside], "atom_row": row[inside], "atom_z": z_all[inside], "atom_class": class_all[inside]}
    if labelled.polarization is not None:
        out["polarization"] = np.asarray(labelled.polarization, np.float32)
    if labelled.surface is not None:
        out["db_occupancy"] = np.asarray(labelled.surface.occupied)
    return out
