"""One call from an ideal signal to a recorded frame: dose, detector chain, artifacts."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from twin.acquisition.artifacts import ArtifactSpec, add_artifacts
from twin.acquisition.detectors import AbstractDetector, detect
from twin.acquisition.dose import electrons_per_pixel


def acquire(key, signal, *, current_pa, dwell_s, detector: AbstractDetector,
            artifacts: ArtifactSpec | None = None) -> jax.Array:
    """Record an ideal signal: detect(signal, N = I t / e), then artifacts; float32 [detector units].

    signal: ideal fraction of the beam reaching the detector, any shape (0..1), already sampled at the
    distorted probe positions (`twin.acquisition.scan.probe_positions`, or `distort` for an image) and
    blurred by the source (`source_blur`): distortions act on positions BEFORE sampling, noise after.
    current_pa [pA]; dwell_s [s]; detector, artifacts: specs (static under jit). The key is split into a
    detector key and an artifact key. Example:
        acquire(key, haadf, current_pa=30.0, dwell_s=4e-6, detector=PMTDetector(gain=10.0, enf=1.3))
    Source: Lobato et al., npj Comput. Mater. (2024), arXiv:2303.17025; physics.md section 5.
    """
    k_detect, k_artifacts = jax.random.split(key)
    # float32 inputs: the same rounding of I t / e inside and outside jit, hence the same draws
    electrons = electrons_per_pixel(jnp.asarray(current_pa, jnp.float32), jnp.asarray(dwell_s, jnp.float32))
    out = detect(k_detect, signal, electrons, detector)
    if artifacts is not None:
        out = add_artifacts(k_artifacts, out, artifacts)
    return out
