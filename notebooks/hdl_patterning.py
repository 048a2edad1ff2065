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
# # Writing a dangling-bond pattern on Si(100)-2x1:H, finding the errors, repairing them
#
# Hydrogen depassivation lithography with the virtual STM, after Achal et al., Nat. Commun. 9, 2778 (2018):
# image in filled states, remove single H atoms with short pulses (2.5 V, feedback off, tip 1.6 A closer),
# image again, compare with the intended pattern, and correct the errors: a missing dangling bond (DB) is
# pulsed again, an unwanted one (a native DB or a neighbour desorbed by mistake) is capped with the H on an
# H-terminated tip (repassivation; Pavlicek et al., Huff et al. 2017). Physics: `twin.stm` (images) and
# `twin.dynamics.hdl` (desorption, repassivation), both documented in docs/validation.md.

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage

from twin.instrument import Limits, SafeInstrument
from twin.instrument.virtual_stm import VirtualSTM

raw = VirtualSTM(seed=5, nx_dimers=12, ny_rows=6, db_fraction=0.03)
stm = SafeInstrument(raw, Limits(controls={"bias_v": (-2.5, 2.5)}, pulse_bias_v=(0.0, 3.0),
                                 pulse_duration_s=(1e-4, 0.1)))
surface = raw.truth()["surface"]
sites = surface.sites[:, :2]
print(f"{surface.n_sites} sites, {len(surface.dangling_bonds())} native dangling bonds; cell {surface.extent} A")

# %% [markdown]
# The pattern: ten DBs, on one side of every other dimer of rows 1 and 3 (7.68 A apart along the rows).

# %%
pattern = np.array([2 * (row * 12 + d) for row in (1, 3) for d in range(1, 11, 2)])
extent = np.array(surface.extent)
fov, centre = 0.98 * extent.min(), tuple(extent / 2)


def image():
    return stm.acquire_image(fov, centre, (96, 96), 1e-3, channels=["height"])


def find_dbs(ds, threshold_ang=0.7, margin=3):
    """Sites under the protrusions of a filled-state image: local maxima above the median by threshold_ang,
    away from the image border (where the feedback is still settling after the fly-back)."""
    z = ds["height"].values - np.median(ds["height"].values)
    peaks = (z == ndimage.maximum_filter(z, size=5)) & (z > threshold_ang)
    peaks[:margin], peaks[-margin:], peaks[:, :margin], peaks[:, -margin:] = False, False, False, False
    rows, cols = np.nonzero(peaks)
    points = np.stack([ds.x.values[cols], ds.y.values[rows]], axis=1)
    return {int(np.argmin(np.hypot(*(sites - p).T))) for p in points}


before = image()
print("DBs seen before writing:", sorted(find_dbs(before)), "(truth:", sorted(surface.dangling_bonds()), ")")

# %% [markdown]
# ## Write: pulse over each site until the current steps (the H is gone), at most five pulses per site


# %%
def write(site):
    stm.park_probe(*sites[site])
    for attempt in range(1, 6):
        result = stm.pulse(2.5, 0.01, -1.6)
        if abs(np.log(result["current_end_pa"] / result["current_start_pa"])) > 0.1:
            return attempt
    return None


attempts = {int(site): write(site) for site in pattern}
print("pulses per site:", attempts)
written = image()
seen = find_dbs(written)
missing, extra = set(pattern) - seen, seen - set(pattern)
print("missing:", sorted(missing), "unwanted:", sorted(extra))

# %% [markdown]
# ## Repair: pulse the missing ones again, cap the unwanted ones with the tip's H; image; repeat
# Two DBs on neighbouring dimers merge into one protrusion at this resolution, so a round may reveal one more.


# %%
def cap(site):
    stm.park_probe(*sites[site])
    for _ in range(5):
        if not raw.get_state()["tip_has_h"]:
            raw.terminate_tip()
        stm.repassivate()
        if raw.truth()["surface"].occupied[site]:
            return


repaired = written
for round_ in range(1, 5):
    if not (missing or extra):
        break
    for site in sorted(missing):
        write(site)
    for site in sorted(extra):
        cap(site)
    repaired = image()
    seen = find_dbs(repaired)
    missing, extra = set(pattern) - seen, seen - set(pattern)
    print(f"round {round_}: missing {sorted(missing)}, unwanted {sorted(extra)}")
low, high = sites[pattern].min(0) - 4.0, sites[pattern].max(0) + 4.0
inside = np.all((sites >= low) & (sites <= high), axis=1)
truth = set(raw.truth()["surface"].dangling_bonds().tolist())
print("DBs in the pattern's region (ground truth) are exactly the pattern:",
      {s for s in truth if inside[s]} == set(pattern), "; DBs elsewhere:", sorted(s for s in truth if not inside[s]))
print(f"{sum(e['kind'] == 'desorption' for e in raw.truth()['events'])} desorptions, "
      f"{sum(e['kind'] == 'repassivation' for e in raw.truth()['events'])} repassivations")

# %% [markdown]
# ## Before, after writing, after repair

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 5))
for ax, ds, title in zip(axes, (before, written, repaired), ("before", "after writing", "after repair")):
    ds["height"].plot(ax=ax, cmap="afmhot", add_colorbar=False)
    ax.plot(*sites[pattern].T, "o", mfc="none", mec="tab:cyan", ms=9)
    ax.set_title(f"{title}: filled states, -1.8 V, 50 pA")
    ax.set_aspect("equal")
fig.tight_layout()
