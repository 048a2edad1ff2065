# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # From a recipe to located atoms
#
# The whole loop of the learners on one laptop: generate a labelled graphene set from a recipe, train a
# small atom finder on it (a U-Net that predicts a heatmap of atomic columns and the class of each
# column; Ziatdinov et al., ACS Nano 11, 12742 (2017)), and locate the atoms of an image it has never seen,
# drawn from a held-out recipe with another seed and other parameter ranges. The built-in model
# (`twin locate IMAGE --model builtin`) was trained the same way, only longer (`make pretrained`).

# %%
import time
from pathlib import Path
from tempfile import mkdtemp

import jax
import matplotlib.pyplot as plt
import numpy as np

import learners
from learners.segment import load_atomfinder, locate, read_training_set, score_samples, train_atomfinder
from twin.generate.engine import generate
from twin.generate.recipe import load_recipe, parse_recipe
from twin.generate.sample import generate_sample

RECIPES = Path(learners.__file__).parents[1] / "datasets" / "recipes"  # the checkout's recipes

# %% [markdown]
# ## 1. Generate
# The training recipe (`graphene-atomfinder.toml`, fast tier) made small for a laptop: 12 images of
# 128 x 128 pixels over 12-15 A, at a 10x higher beam current (~1e5-1e6 e/A^2) so that two minutes of training
# learn something. Sample i is a pure function of the recipe and i, on any number of workers.

# %%
BRIGHT = {"current_pa": {"loguniform": [80.0, 400.0]}}
content = load_recipe(RECIPES / "graphene-atomfinder.toml").to_dict()
content["n_samples"] = 12
content["sample"]["cells"] = [7, 4]
content["acquisition"].update({"pixels": 128, "fov_ang": {"uniform": [12.0, 15.0]}, **BRIGHT})
recipe = parse_recipe(content)
data = Path(mkdtemp()) / "graphene"
start = time.perf_counter()
generate(recipe, data, shard_size=4, workers=0)
print(f"12 labelled images in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## 2. Train
# One U-Net (depth 3, width 8) on random 48 x 48 crops at the model's 0.2 A pixels (the training images lose
# a 1 A frame, see `prepare_sample`), with rotations by 90 degrees and flips; loss = heatmap mean squared
# error + class cross-entropy. The run is a pure function of the key.

# %%
samples, classes = read_training_set(data)
start = time.perf_counter()
model, metadata, history = train_atomfinder(samples, classes, key=jax.random.PRNGKey(0), epochs=6,
                                            steps_per_epoch=20, batch_size=8, crop_px=48, members=1)
print(f"trained in {time.perf_counter() - start:.0f} s; classes {metadata['classes']}")
print("loss per epoch:", np.round([h["loss"] for h in history], 3))
assert history[-1]["loss"] < history[0]["loss"]

# %% [markdown]
# ## 3. Locate
# An image of the held-out recipe (another seed, other ranges; the same bright beam), located by the model
# trained above and by the built-in one. A detection is right when it lies within 0.355 A (a quarter of the
# C-C bond) of a true column, one to one.

# %%
content = load_recipe(RECIPES / "graphene-atomfinder-heldout.toml").to_dict()
content["acquisition"].update(BRIGHT)
held_out = generate_sample(parse_recipe(content), 0)
pixel = held_out["parameters"]["acquisition.fov_ang"] / held_out["parameters"]["acquisition.pixels"]
builtin, builtin_metadata = load_atomfinder("builtin")
for name, (m, meta) in {"trained here": (model, metadata), "built-in": (builtin, builtin_metadata)}.items():
    scores = score_samples(m, meta, [held_out])
    print(f"{name:>12}: F1 {scores['f1']:.3f}, species accuracy {scores['species_accuracy']:.3f} "
          f"({scores['tp']} found, {scores['fp']} false, {scores['fn']} missed)")
found = locate(builtin, builtin_metadata, held_out["image"], pixel)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
axes[0].imshow(held_out["image"], cmap="gray")
axes[0].set_title(f"held-out image, {pixel:.3f} A pixels")
axes[1].imshow(held_out["image"], cmap="gray")
for name in np.unique(found["class"]):
    chosen = found["class"] == name
    axes[1].scatter(found["col"][chosen], found["row"][chosen], s=8, label=f"{name} ({chosen.sum()})")
axes[1].legend(loc="upper right", fontsize=8)
axes[1].set_title("atoms located by the built-in model")
for ax in axes:
    ax.set_axis_off()
