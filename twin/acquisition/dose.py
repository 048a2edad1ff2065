"""Electron dose of a STEM scan: electrons per pixel and per unit area.

Shared/reference/physics.md section 5: D = I t_dwell / (e dx^2). Works on Python floats and on (traced)
arrays alike, so it can sit inside a jitted acquisition.
"""

from __future__ import annotations

from potentials.units import E

PICOAMPERE = 1e-12  # [A] per [pA]


def electrons_per_pixel(current_pa, dwell_s):
    """N = I t / e: electrons incident on one pixel.

    current_pa: probe current [pA]; dwell_s: dwell time per pixel [s]; scalars or broadcastable arrays.
    Returns electrons per pixel (same broadcast shape). Example: 30 pA for 4 us gives 749 electrons
    (physics.md section 5, table).
    """
    return current_pa * (PICOAMPERE / E) * dwell_s


def dose_per_area(current_pa, dwell_s, pixel_ang):
    """D = I t / (e dx^2): areal dose [electrons / Angstrom^2].

    current_pa [pA], dwell_s [s], pixel_ang: pixel size (scan step) dx [Angstrom]; broadcastable.
    Example: 30 pA, 4 us, 4 nm / 512 pixels gives 1.2e5 e/A^2 (physics.md section 5, table).
    """
    return electrons_per_pixel(current_pa, dwell_s) / pixel_ang**2
