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
# # An automated acquisition loop on the virtual STEM
#
# A policy written against `twin.instrument.Instrument` runs unchanged on the virtual microscope, on a
# remote one (`twin serve` + `connect`) and on hardware adapters. Here: take an overview image of graphene
# with Si dopants, find the dopants (the brightest spots), dwell beside each, and look at where the dose
# went. The instrument sits behind the safety envelope, so a command that would exceed a dose budget is
# refused, not clamped.

# %%
import matplotlib.pyplot as plt
import numpy as np

from twin.acquisition import PMTDetector, ScanNoiseSpec
from twin.instrument import Refused
from twin.instrument.safety import Limits, SafeInstrument
from twin.instrument.virtual_stem import VirtualSTEM
from twin.samples import graphene_si

sample = graphene_si(seed=2, repeat=(14, 8), n_si=3)
stem = SafeInstrument(
    VirtualSTEM(sample, seed=2, controls={"beam_current_pa": 30.0},
                scan_noise=ScanNoiseSpec(line_jitter_ang=0.03, drift_ang_per_s=(0.05, 0.02)),
                detector=PMTDetector(gain=2.0, enf=1.3, readout_sigma=0.5)),
    Limits(max_dose_e_per_ang2=5e8, dwell_s=(1e-7, 1.0)))
info = stem.describe()
print(info["sample"], info["bounds_ang"], info["channels"])

# %% [markdown]
# ## Overview
# 30 pA, 8 us per 0.125 A pixel: about 1.0e5 e/A^2 (physics.md, section 5).

# %%
x0, y0, x1, y1 = info["bounds_ang"]
centre = ((x0 + x1) / 2, (y0 + y1) / 2)
overview = stem.acquire_image(34.0, centre, (272, 272), 8e-6, channels=["haadf", "adf"])
print(f"dose {overview.attrs['dose_e_per_ang2']:.3g} e/A^2, frame {overview.attrs['frame_time_s']:.2f} s")

# %% [markdown]
# ## Pick points: spots of a smoothed ADF image brighter than half its peak, at least 4 A apart

# %%
from scipy import ndimage

smooth = ndimage.gaussian_filter(overview["adf"].values.astype(float), 3)
peaks = []
for flat in np.argsort(smooth.ravel())[::-1]:
    row, col = np.unravel_index(flat, smooth.shape)
    point = np.array([float(overview.x[col]), float(overview.y[row])])
    if smooth[row, col] < smooth.mean() + 0.5 * (smooth.max() - smooth.mean()):
        break
    if all(np.hypot(*(point - p)) > 4.0 for p in peaks):
        peaks.append(point)
truth = sample.positions[sample.numbers == 14, :2]
for p in peaks:
    print("picked", np.round(p, 2), "nearest Si", np.round(np.min(np.hypot(*(truth - p).T)), 2), "A away")

# %% [markdown]
# ## Dwell beside each dopant, then ask for too much

# %%
spots = [stem.dwell(p[0] + 1.2, p[1], 0.5) for p in peaks]
print([int(s["haadf"].values.item()) for s in spots])
try:
    stem.dwell(peaks[0][0] + 1.2, peaks[0][1], 1.0)
except Refused as error:
    print("refused:", error)

# %% [markdown]
# ## Where the dose went

# %%
dose = stem.dose()
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
overview["adf"].plot(ax=axes[0], cmap="gray", add_colorbar=False)
axes[0].plot(*np.array(peaks).T, "o", mfc="none", mec="tab:orange", ms=14)
axes[0].set_title("ADF overview and picked points")
np.log10(dose["dose"] + 1).plot(ax=axes[1], cmap="magma", cbar_kwargs={"label": "log10(1 + dose [e/A^2])"})
axes[1].set_title(f"dose map: {dose.attrs['total_electrons']:.3g} electrons")
for ax in axes:
    ax.set_aspect("equal")
fig.tight_layout()
print("state:", {k: stem.get_state()[k] for k in ("probe_ang", "blanked", "time_s")})
