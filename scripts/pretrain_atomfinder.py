"""Train the built-in atom finder, learners/pretrained/atomfinder.twin, from the project's own recipe.

    python scripts/pretrain_atomfinder.py                     # what `make pretrained` runs
    python scripts/pretrain_atomfinder.py --data /tmp/af/train --steps 1500

Generates (or completes, or reuses) datasets/recipes/graphene-atomfinder.toml at the fast tier in --data,
trains a 3-member ensemble of small U-Nets on random 64-pixel crops at 0.2 A per pixel, prints the loss per
epoch and the detection scores on the first --holdout images of graphene-atomfinder-heldout.toml, and
writes the model atomically. `make pretrained` (two runs) takes ~40 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.2, 0.25, 0.3, 0.4, 0.5)  # detection thresholds of the heatmap tried on the validation images


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=ROOT / "datasets/recipes/graphene-atomfinder.toml", type=Path)
    parser.add_argument("--data", default=ROOT / "build/graphene-atomfinder", type=Path)
    parser.add_argument("--n", type=int, default=448, help="training images (fast tier, ~2 s each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, help="start from this atom-finder file (fine-tuning)")
    parser.add_argument("--validation", type=int, default=4, help="training-recipe images after --n that choose "
                        "the detection threshold (0: keep 0.5)")
    parser.add_argument("--holdout", type=int, default=4, help="held-out images scored at the end (0: none)")
    parser.add_argument("--lattice", action="store_true", help="the model averages positions with the image's own "
                        "lattice by default (learners.segment.locate); the threshold is chosen with it")
    parser.add_argument("--out", default=ROOT / "learners/pretrained/atomfinder.twin", type=Path)
    args = parser.parse_args()

    import jax

    from learners.segment import load_atomfinder, read_training_set, train_atomfinder
    from learners.train import save_model
    from twin.generate.engine import generate
    from twin.generate.recipe import load_recipe

    start = time.perf_counter()
    recipe = load_recipe(args.recipe)
    generate(recipe, args.data, n_samples=args.n, workers=args.workers, resume=(args.data / "manifest.json").is_file())
    generated = time.perf_counter()
    samples, table = read_training_set(args.data)
    print(f"data: {len(samples)} images in {generated - start:.0f} s; classes {table}", flush=True)

    def report(epoch, means):
        print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
              + f" ({time.perf_counter() - generated:.0f} s)", flush=True)

    model, metadata, history = train_atomfinder(
        samples, table, key=jax.random.key(args.seed), epochs=args.epochs, steps_per_epoch=args.steps,
        batch_size=args.batch, crop_px=args.crop, members=args.members, depth=args.depth, width=args.width,
        learning_rate=args.lr, on_epoch=report, init=load_atomfinder(args.init)[0] if args.init else None)
    trained = time.perf_counter()
    metadata["lattice"] = args.lattice
    if args.validation:  # the detection threshold: best F1 on unseen samples of the training recipe
        from learners.segment import score_samples
        from twin.generate.sample import generate_sample

        validation = [generate_sample(recipe, args.n + i) for i in range(args.validation)]
        f1 = {t: score_samples(model, {**metadata, "threshold": t}, validation)["f1"] for t in THRESHOLDS}
        metadata["threshold"] = max(f1, key=f1.get)
        metadata["training"]["validation_f1"] = f1
        print(f"validation F1 by threshold: {f1}", flush=True)
    metadata["training"].update({"recipe": recipe.name, "seed": args.seed, "init": str(args.init), "train_seconds": round(trained - generated),
                                 "final": history[-1] if history else {}})
    if args.holdout:
        from learners.segment import score_samples
        from twin.generate.sample import generate_sample

        heldout = load_recipe(ROOT / "datasets/recipes/graphene-atomfinder-heldout.toml")
        samples = (generate_sample(heldout, i) for i in range(args.holdout))
        metadata["training"]["heldout"] = score_samples(model, metadata, samples)
        print("held-out:", json.dumps(metadata["training"]["heldout"]), flush=True)
    save_model(args.out, model, builder="atomfinder", arguments=metadata["arguments"], metadata=metadata)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); data {generated - start:.0f} s, training "
          f"{trained - generated:.0f} s, total {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
