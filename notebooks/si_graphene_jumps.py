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
# # Walking a Si dopant through graphene with the beam
#
# At 60 kV an electron that strikes a C neighbour of a threefold Si can make the two swap (bond inversion;
# Susi et al., PRL 113, 115501 (2014)). Parking the probe beside the chosen neighbour makes the Si hop onto
# it. Here the virtual STEM walks a dopant three sites along +x: image, find the Si, park the beam 0.85 bond
# lengths toward the neighbour that points most along +x, dwell in 1 s steps until an image shows that the
# Si has moved, and count the dose each hop took. The sample physics is `twin.dynamics.SiInGraphene`
# (cross sections in docs/validation.md).

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage

from twin.instrument import Limits, SafeInstrument, VirtualSTEM
from twin.structures import graphene

sheet = graphene((12, 7))  # 29.5 x 29.8 A; one Si placed 4 A left of the centre
centre = sheet.cell.lengths()[:2] / 2 - (4.0, 0.0)
sheet.numbers[np.argmin(np.hypot(*(sheet.positions[:, :2] - centre).T))] = 14
raw = VirtualSTEM(sheet, seed=4, controls={"beam_current_pa": 30.0, "beam_energy_ev": 60e3})
stem = SafeInstrument(raw, Limits(dwell_s=(1e-7, 2.0)))
truth = raw.truth()["atoms"]
start = truth.positions[truth.numbers == 14][0, :2]
print("Si starts at", np.round(start, 2), "A;", raw.dynamics)

# %% [markdown]
# Imaging: 10 A, 48 x 48 pixels, 20 us per pixel (3.7e3 electrons per pixel). The dopant is the brightest
# spot of the smoothed HAADF image.


# %%
def locate(centre):
    image = stem.acquire_image(10.0, tuple(centre), (48, 48), 2e-5, channels=["haadf"])
    smooth = ndimage.gaussian_filter(image["haadf"].values.astype(float), 1.5)
    row, col = np.unravel_index(np.argmax(smooth), smooth.shape)
    return image, np.array([float(image.x[col]), float(image.y[row])])


def carbon_neighbours(position):
    atoms = raw.truth()["atoms"]  # the lattice geometry; a real experiment would fit it from an overview
    d = atoms.positions[:, :2] - position
    near = (np.hypot(*d.T) > 0.5) & (np.hypot(*d.T) < 1.6) & (atoms.numbers == 6)
    return atoms.positions[near, :2]


images, hops = [], []
image, si = locate(start)
images.append(image)
while len(hops) < 3:
    neighbours = carbon_neighbours(si)
    target = neighbours[np.argmax(neighbours[:, 0] - si[0])]
    spot = si + 0.85 * (target - si)
    electrons_before, dwells = stem.dose().attrs["total_electrons"], 0
    while True:
        stem.dwell(*spot, 1.0)
        dwells += 1
        image, found = locate(si)
        if np.hypot(*(found - si)) > 0.9:
            break
    electrons = stem.dose().attrs["total_electrons"] - electrons_before
    hops.append({"from": si, "to": found, "dwells": dwells, "electrons": electrons})
    images.append(image)
    si = found
for i, hop in enumerate(hops):
    print(f"hop {i + 1}: {np.round(hop['from'], 2)} -> {np.round(hop['to'], 2)} A after {hop['dwells']} s "
          f"parked, {hop['electrons']:.3g} electrons")

# %% [markdown]
# ## What really happened: the event log (ground truth)

# %%
for e in raw.truth()["events"]:
    print(f"t = {e['time_s']:7.2f} s  {e['kind']:12s} at ({e['x_ang']:.2f}, {e['y_ang']:.2f}) A, "
          f"{e['electrons']:.3g} electrons into the session")
final = raw.truth()["atoms"].positions[raw.truth()["atoms"].numbers == 14][0, :2]
print("Si now at", np.round(final, 2), "A: moved", np.round(final - start, 2), "A")

# %% [markdown]
# ## The image sequence and the dose per hop

# %%
fig, axes = plt.subplots(1, len(images) + 1, figsize=(4 * (len(images) + 1), 4))
for i, (ax, image) in enumerate(zip(axes, images)):
    image["haadf"].plot(ax=ax, cmap="gray", add_colorbar=False)
    ax.plot(*start, "+", color="tab:orange", ms=12)
    ax.set_title("start" if i == 0 else f"after hop {i}")
    ax.set_aspect("equal")
axes[-1].bar(range(1, len(hops) + 1), [h["electrons"] for h in hops])
axes[-1].set_xlabel("hop")
axes[-1].set_ylabel("electrons delivered (parked + imaging)")
fig.tight_layout()
