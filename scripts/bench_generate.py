"""Benchmark: labelled training images from graphene-dopants.toml, twin per tier against plain abTEM, one run.

twin side: `generate_sample(recipe, i)` (the whole labelled sample: structure, STEM field, noise, labels) for
each tier (fast, prism, multislice; the tier changed with `parse_recipe` of a modified `recipe.to_dict()`).
Sample 0 is timed cold (JAX compilation included); then samples 1..N are timed warm and reported as images/s.
Each twin call is split into its parts by timing wrappers: the scan (`twin.stem.simulate`), the rest of
`compute_field` (Fourier interpolation set-up), field evaluation, the detector noise and the labels.

abTEM side, a plain abTEM 1.0.11 script making the same images: the same parameters (`draw`), structures
(`make_sample` with the same seed) and optics as generate_sample; `Potential` on twin's grid (sampling
min(0.05 A, lambda / (3 x 200 mrad x 1.05)), 1 A slices, lobato, infinite projection); `Probe` with the
same energy, semiangle and aberrations (the Krivanek dict, abTEM's defocus = -C10); `GridScan` of the whole
cell at twin's Nyquist step lambda / (4 alpha); `AnnularDetector` with twin's HAADF angles; then, as abTEM
recommends, `measurement.interpolate(sampling=pixel)` (Fourier), `.gaussian_filter(source size)` and a cubic
spline read-out of the 256 x 256 nominal pixels. Both codes scan at the Nyquist step and interpolate.
abTEM runs on the first `--abtem-n` samples (1..N); its images/s comes from what was timed.

Agreement (sample 1): twin's multislice clean image / electrons per pixel (the ideal fraction) against
abTEM's image, and abTEM's raw scan read out through twin's own SignalField (the physics alone).

Run with: .venv/bin/python scripts/bench_generate.py [--n N] [--abtem-n M] [--tiers fast,prism,multislice]
The issue's job: .venv/bin/python scripts/bench_generate.py --n 64 --abtem-n 64 (hours on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
from scipy import ndimage  # noqa: E402

import twin.generate.sample as sample_module  # noqa: E402
import twin.stem  # noqa: E402
from potentials.projected import grid_shape  # noqa: E402
from twin import acquisition  # noqa: E402
from twin.generate.recipe import draw, load_recipe, parse_recipe  # noqa: E402
from twin.generate.sample import _grid, _probe, generate_sample, sample_key  # noqa: E402
from twin.samples.families import make_sample  # noqa: E402
from twin.stem.fast import nyquist_shape  # noqa: E402
from twin.stem.fields import MAX_ANGLE, SignalField, channel_angles  # noqa: E402
from twin.stem.scan import GridScan  # noqa: E402

RECIPE = ROOT / "datasets" / "recipes" / "graphene-dopants.toml"
TIERS = ("fast", "prism", "multislice")
PARTS = defaultdict(float)


def timed_part(name: str, function):
    """`function` wrapped to add its wall time [s] to PARTS[name]."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            PARTS[name] += time.perf_counter() - start
    return wrapper


def install_timers() -> None:
    """Split generate_sample's time: scan, compute_field (all), field evaluation, noise, labels."""
    twin.stem.simulate = timed_part("scan (simulate)", twin.stem.simulate)
    sample_module.compute_field = timed_part("compute_field (scan included)", sample_module.compute_field)
    SignalField.__call__ = timed_part("field evaluation", SignalField.__call__)
    sample_module.acquisition.detect = timed_part("detector noise", acquisition.detect)
    sample_module._labels = timed_part("labels", sample_module._labels)


def with_tier(recipe, tier: str):
    data = recipe.to_dict()
    data["tier"] = tier
    return parse_recipe(data)


def job(recipe, index: int) -> dict:
    """What generate_sample computes for sample `index`: atoms, probe, detector angles, grids and dose."""
    key = sample_key(recipe.seed, index)
    params = draw(recipe, jax.random.fold_in(key, 0))
    seed = int(jax.random.randint(jax.random.fold_in(key, 1), (), 0, 2**31 - 1))
    labelled = make_sample(params["sample"]["family"],
                           {k: v for k, v in params["sample"].items() if k != "family"}, seed)
    optics, acq = params["optics"], params["acquisition"]
    probe = _probe(optics)
    extent = tuple(float(v) for v in labelled.atoms.cell.lengths()[:2])
    shape = nyquist_shape(probe, extent)
    step = min(extent[0] / shape[1], extent[1] / shape[0])
    xs, ys = GridScan(step=step).coordinates(extent)
    sampling = min(0.05, probe.wavelength / (3 * MAX_ANGLE * 1.05e-3))
    fov, n = float(acq["fov_ang"]), int(acq["pixels"])
    return dict(atoms=labelled.atoms, probe=probe, angles=channel_angles(acq.get("detector", "haadf"),
                probe.semiangle), extent=extent, gpts=grid_shape(extent, sampling)[::-1], sampling=sampling,
                scan_gpts=(len(xs), len(ys)), step=step, source=float(optics.get("source_size_ang", 0.0)),
                fov=fov, n=n, rotation=float(acq.get("scan_rotation_rad", 0.0)),
                electrons=float(acquisition.electrons_per_pixel(float(acq["current_pa"]), float(acq["dwell_s"]))))


def abtem_image(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """Plain abTEM: the image (n, n) [fraction of the beam] at the nominal pixels, and the raw scan (ny, nx)."""
    import abtem

    inner, outer = spec["angles"]
    potential = abtem.Potential(spec["atoms"], gpts=spec["gpts"], slice_thickness=1.0, parametrization="lobato",
                                projection="infinite")
    probe = abtem.Probe(energy=spec["probe"].energy, semiangle_cutoff=spec["probe"].semiangle,
                        **spec["probe"].aberrations)
    scan = abtem.GridScan(start=(0.0, 0.0), end=spec["extent"], gpts=spec["scan_gpts"], endpoint=False)
    measurement = probe.scan(potential, scan=scan, detectors=abtem.AnnularDetector(inner=inner, outer=outer))
    raw = measurement.compute(progress_bar=False)
    fine = raw.interpolate(sampling=spec["fov"] / spec["n"]).gaussian_filter(spec["source"])
    array = np.asarray(fine.array).T  # abTEM is (x, y)
    x, y = _grid(spec["fov"], spec["n"], (spec["extent"][0] / 2, spec["extent"][1] / 2), spec["rotation"])
    rows, cols = y / spec["extent"][1] * array.shape[0], x / spec["extent"][0] * array.shape[1]
    image = ndimage.map_coordinates(array, [rows, cols], order=3, mode="grid-wrap")
    return image, np.asarray(raw.array).T


def through_twin_field(raw: np.ndarray, spec: dict) -> np.ndarray:
    """abTEM's raw scan (ny, nx) read out at the nominal pixels by twin's SignalField, with the same blur."""
    field = SignalField(np.fft.fft2(raw) / raw.size, spec["extent"])
    if spec["source"] > 0:
        field = field.blurred(spec["source"])
    return field(*_grid(spec["fov"], spec["n"], (spec["extent"][0] / 2, spec["extent"][1] / 2), spec["rotation"]))


def compare(ours: np.ndarray, reference: np.ndarray) -> str:
    correlation = float(np.corrcoef(ours.ravel(), reference.ravel())[0, 1])
    l2 = float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))
    return f"correlation {correlation:.5f}, relative L2 {l2:.2e}, max |dI| {np.abs(ours - reference).max():.2e}"


def time_twin(recipe, tier: str, n: int) -> dict:
    """Cold sample 0, then samples 1..n warm; the warm parts' shares and the clean image of sample 1."""
    tiered = with_tier(recipe, tier)
    start = time.perf_counter()
    generate_sample(tiered, 0)
    cold = time.perf_counter() - start
    PARTS.clear()
    warm, first = [], None
    for i in range(1, n + 1):
        start = time.perf_counter()
        out = generate_sample(tiered, i)
        warm.append(time.perf_counter() - start)
        first = out["clean"] if first is None else first
        print(f"  {tier} sample {i}: {warm[-1]:.2f} s", flush=True)
    return dict(cold=cold, warm=warm, parts=dict(PARTS), clean=first)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1, help="warm twin samples per tier after sample 0 [default 1]")
    parser.add_argument("--abtem-n", type=int, default=1, help="samples abTEM makes, from 1 [default 1; 0: none]")
    parser.add_argument("--tiers", default=",".join(TIERS), help="comma-separated tiers [default: all three]")
    args = parser.parse_args(argv)
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    if not tiers or not set(tiers) <= set(TIERS) or args.n < 1 or args.abtem_n < 0:
        parser.error("--tiers from fast,prism,multislice; --n >= 1; --abtem-n >= 0")

    import abtem

    abtem.config.set({"precision": "float32", "device": "cpu", "diagnostics.progress_bar": False})
    recipe = load_recipe(RECIPE)
    print(f"twin generate_sample vs abTEM {abtem.__version__} (float32, cpu, fft={abtem.config.get('fft')}); "
          f"jax {jax.__version__}; {os.cpu_count()} CPUs; recipe {RECIPE.name}")
    for i in range(1, max(args.n, args.abtem_n) + 1):
        s = job(recipe, i)
        print(f"  sample {i}: {len(s['atoms'])} atoms, {s['probe'].energy / 1e3:g} kV, {s['probe'].semiangle:.1f} "
              f"mrad, HAADF {s['angles'][0]:.1f}-{s['angles'][1]:.0f} mrad, grid {s['gpts']} at {s['sampling']:.3f} "
              f"A, scan {s['scan_gpts']} at {s['step']:.3f} A, {s['n']} px over {s['fov']:.1f} A")
    install_timers()
    results = {tier: time_twin(recipe, tier, args.n) for tier in tiers}

    abtem_times, agreement = [], None
    for i in range(1, args.abtem_n + 1):
        spec = job(recipe, i)
        start = time.perf_counter()
        image, raw = abtem_image(spec)
        abtem_times.append(time.perf_counter() - start)
        print(f"  abTEM sample {i}: {abtem_times[-1]:.2f} s", flush=True)
        if i == 1 and "multislice" in results:
            ours = results["multislice"]["clean"] / spec["electrons"]
            agreement = (compare(ours, image), compare(ours, through_twin_field(raw, spec)))

    abtem_rate = len(abtem_times) / sum(abtem_times) if abtem_times else float("nan")
    print("\n| code, tier | images/s (warm) | s/image (warm) | first sample [s] | twin / abTEM |")
    print("|---|---|---|---|---|")
    for tier, r in results.items():
        rate = len(r["warm"]) / sum(r["warm"])
        print(f"| twin {tier} | {rate:.4g} | {1 / rate:.2f} | {r['cold']:.2f} | {rate / abtem_rate:.2f} |")
    if abtem_times:
        print(f"| abTEM {abtem.__version__} multislice | {abtem_rate:.4g} | {1 / abtem_rate:.2f} | "
              f"{abtem_times[0]:.2f} | 1 |")
    if "multislice" in results and abtem_times:
        ratio = len(results["multislice"]["warm"]) / sum(results["multislice"]["warm"]) / abtem_rate
        print(f"\ntwin multislice / abTEM = {ratio:.2f} (target >= 5: {'met' if ratio >= 5 else 'not met'}); "
              f"{len(results['multislice']['warm'])} twin and {len(abtem_times)} abTEM images timed")
    for tier, r in results.items():
        total = sum(r["warm"])
        parts = ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in r["parts"].items())
        print(f"twin {tier}, warm samples ({total:.2f} s): {parts}")
    if agreement:
        print(f"agreement, sample 1, twin multislice clean / electrons vs abTEM image: {agreement[0]}")
        print(f"  vs abTEM's scan read out by twin's SignalField (same interpolation): {agreement[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
