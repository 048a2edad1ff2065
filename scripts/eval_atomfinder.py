"""Scores of an atom finder on the held-out recipe against the electron dose.

    python scripts/eval_atomfinder.py                          # built-in model, 8 images per dose
    python scripts/eval_atomfinder.py --model my.twin --n 16 --doses 2e3 1e4 1e5

Row "recipe": graphene-atomfinder-heldout.toml as written (doses ~1e4-1e5 e/A^2 drawn per image). Other
rows: the same recipe with a 25 A field (0.098 A pixels), 2 us dwell and the probe current set for the
dose; the structures and every other parameter are drawn as in the recipe (each parameter has its own
key, so the images differ only in dose). A detection matches a true atom within --tolerance [A] (one to
one); species accuracy is over the matched atoms; dopant recall counts non-C atoms found as their element.
"interior": the same without the atoms centred within the match radius of the image edge (see
learners.segment.score_image).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ELEMENTARY_CHARGE = 1.602176634e-19  # [C], CODATA 2018 (exact)


def dose_recipe(recipe, dose: float, fov_ang: float = 25.0, dwell_s: float = 2e-6):
    """`recipe` with a fixed field, dwell and the current [pA] that gives `dose` [e/A^2]."""
    from twin.generate.recipe import parse_recipe

    table = recipe.to_dict()
    pixel = fov_ang / table["acquisition"]["pixels"]
    current_pa = dose * ELEMENTARY_CHARGE * pixel**2 / dwell_s * 1e12
    table["acquisition"].update(fov_ang=fov_ang, dwell_s=dwell_s, current_pa=current_pa)
    return parse_recipe(table)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--recipe", default=ROOT / "datasets/recipes/graphene-atomfinder-heldout.toml", type=Path)
    parser.add_argument("--n", type=int, default=8, help="images per row")
    parser.add_argument("--doses", type=float, nargs="+", default=[1e3, 3e3, 1e4, 3e4, 1e5])
    parser.add_argument("--tolerance", type=float, default=0.25 * 1.42, help="match radius [A]")
    args = parser.parse_args()

    from learners.segment import load_atomfinder, score_samples
    from twin.generate.recipe import load_recipe
    from twin.generate.sample import generate_sample

    model, metadata = load_atomfinder(args.model)
    recipe = load_recipe(args.recipe)
    rows = [("recipe", recipe)] + [(f"{dose:.0e}", dose_recipe(recipe, dose)) for dose in args.doses]
    print(f"model {args.model}; recipe {recipe.name}; {args.n} images per row; match radius {args.tolerance:.3f} A")
    print("| dose [e/A^2] | F1 | precision | recall | F1 interior | precision interior | species accuracy "
          "| dopant recall | atoms | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, variant in rows:
        start = time.perf_counter()
        s = score_samples(model, metadata, (generate_sample(variant, i) for i in range(args.n)),
                          tolerance_ang=args.tolerance)
        print(f"| {name} | {s['f1']:.4f} | {s['precision']:.4f} | {s['recall']:.4f} | {s['interior']['f1']:.4f} | "
              f"{s['interior']['precision']:.4f} | {s['species_accuracy']:.4f} | "
              f"{s['dopant_recall']:.2f} ({s['dopants']}) | {s['tp'] + s['fn']} | {time.perf_counter() - start:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
