"""Reinforcement-learning environment for steering a Si dopant through graphene with the STEM probe.

Pure JAX, in the style of gymnax: `reset(key, params) -> (obs, state)` and
`step(key, state, action, params) -> (obs, state, reward, done, info)`, both jit-able and vmap-able,
with all configuration in a `DopantEnvParams` pytree built once by `make_params`. The physics (bond
inversion when the probe strikes a C neighbour, damage channels, the probe's radial profile) lives in
`twin.instrument.dopant_env`; the Gymnasium adapter in `twin.instrument.gym`.

Observation (6,) float32 [Angstrom], relative to the patch centre, each coordinate in [-L/2, L/2]:
    (dopant x, dopant y, target x, target y, beam x, beam y).
Action (2,) float32: action_mode "absolute", the beam position [Angstrom] within [-L/2, L/2]^2;
    "relative", the offset of the beam from the dopant's current site [C-C bonds] within [-2, 2]^2.
    Actions outside the box are clipped; relative positions wrap around the periodic patch.
Reward: +1 when the dopant ends a step on the target site, -1 on damage (C knock-on or Si ejection),
    minus dose_penalty_per_e_per_ang2 times the step's dose (I t / (e A), A the patch area).
Termination: target reached or damage. Truncation: max_steps steps (time = steps x dwell_s) or the
    cumulative dose reaching dose_budget_e_per_ang2. Stepping a finished episode is not defined; reset it.

Example:
    params = make_params(current_pa=30.0, action_mode="relative")
    obs, state = reset(jax.random.key(0), params)
    obs, state, reward, done, info = jax.jit(step)(jax.random.key(1), state, jnp.array([1.0, 0.0]), params)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from twin.instrument import dopant_env

ACTION_MODES = ("absolute", "relative")
RELATIVE_ACTION_BONDS = 2.0  # half-width of the relative action box [C-C bonds]
TABLE_FIELDS = ("probe_r_ang", "probe_density_per_ang2", "site_xy_ang", "neighbours", "hops", "start_mask")
_POSITIVE = ("beam_energy_ev", "semiangle_mrad", "bond_ang", "probe_r_max_ang", "max_events", "current_pa",
             "dwell_s", "jump_cross_section_barn", "max_steps", "dose_budget_e_per_ang2", "goal_hops")
_NON_NEGATIVE = ("knockon_cross_section_barn", "ejection_cross_section_barn", "dose_penalty_per_e_per_ang2")


def _static(default):
    return field(default=default, metadata={"static": True})


@jax.tree_util.register_dataclass
@dataclass(frozen=True, kw_only=True)
class DopantEnvParams:
    """Configuration and tables of the dopant-steering environment; build with `make_params`.

    Static (they shape the tables or the trace; changing one recompiles):
    beam_energy_ev [eV], semiangle_mrad [mrad], aberrations (Krivanek name, value) pairs [Angstrom, rad]:
        the probe; lattice_cells (nx, ny) orthorhombic cells (4 atoms, sqrt(3) d x 3 d each) of a periodic
        patch, bond_ang d [Angstrom]; action_mode "absolute" | "relative"; probe_r_max_ang [Angstrom] the
        probe table's range; max_events, the most events in one dwell.
    Dynamic (may be traced or vmapped, e.g. for domain randomisation):
    current_pa [pA]; dwell_s [s] per step; jump_cross_section_barn, knockon_cross_section_barn,
        ejection_cross_section_barn [b]; max_steps; dose_budget_e_per_ang2 [e/Angstrom^2];
        dose_penalty_per_e_per_ang2 [1/(e/Angstrom^2)]; start_site, goal_site (-1: drawn at reset; the
        start uniformly among sites within min(L)/4 of the centre, the goal among sites goal_hops hops away).
    Tables (filled by make_params): probe_r_ang (n_r,), probe_density_per_ang2 (n_r,) [1/Angstrom^2],
        site_xy_ang (n_sites, 2), neighbours (n_sites, 3), hops (n_sites, n_sites), start_mask (n_sites,).

    Defaults and their sources: docs/validation.md, "RL environment (Si dopant steering)".
    """

    beam_energy_ev: float = _static(60e3)
    semiangle_mrad: float = _static(30.0)
    aberrations: tuple[tuple[str, float], ...] = _static(())
    lattice_cells: tuple[int, int] = _static((8, 4))
    bond_ang: float = _static(1.42)
    action_mode: str = _static("absolute")
    probe_r_max_ang: float = _static(16.0)
    max_events: int = _static(16)
    current_pa: Any = 30.0
    dwell_s: Any = 1.5
    jump_cross_section_barn: Any = 0.102
    knockon_cross_section_barn: Any = 0.01
    ejection_cross_section_barn: Any = 0.001
    max_steps: Any = 100
    dose_budget_e_per_ang2: Any = 1e8
    dose_penalty_per_e_per_ang2: Any = 1e-8
    start_site: Any = -1
    goal_site: Any = -1
    goal_hops: Any = 3
    probe_r_ang: Any = field(default=None, repr=False)
    probe_density_per_ang2: Any = field(default=None, repr=False)
    site_xy_ang: Any = field(default=None, repr=False)
    neighbours: Any = field(default=None, repr=False)
    hops: Any = field(default=None, repr=False)
    start_mask: Any = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.aberrations, tuple):
            object.__setattr__(self, "aberrations", tuple(sorted(dict(self.aberrations).items())))
        object.__setattr__(self, "lattice_cells", tuple(self.lattice_cells))
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode={self.action_mode!r} does not exist; allowed: {', '.join(ACTION_MODES)}")
        if len(self.lattice_cells) != 2 or min(self.lattice_cells) < 2:
            raise ValueError(f"lattice_cells={self.lattice_cells!r} is not allowed; it needs (nx, ny) >= (2, 2)")

    @property
    def extent_ang(self) -> tuple[float, float]:
        """(Lx, Ly) [Angstrom] of the periodic patch."""
        return dopant_env.patch_extent(self.lattice_cells, self.bond_ang)


class EnvState(NamedTuple):
    """dopant_site, target_site: site indices () int32; beam_xy_ang (2,) [Angstrom] relative to the centre;
    time_s () [s] beam time so far; dose_e_per_ang2 () [e/Angstrom^2] patch dose so far; step () int32;
    damaged () bool."""

    dopant_site: jax.Array
    target_site: jax.Array
    beam_xy_ang: jax.Array
    time_s: jax.Array
    dose_e_per_ang2: jax.Array
    step: jax.Array
    damaged: jax.Array


def make_params(**fields) -> DopantEnvParams:
    """DopantEnvParams with the given fields (names and defaults as there) and its tables computed.

    The probe table takes about a second and is cached per (energy, semiangle, aberrations, r_max).
    Example: make_params(current_pa=50.0, aberrations={"C10": 20.0}, action_mode="relative")
    """
    if given := set(fields) & set(TABLE_FIELDS):
        raise TypeError(f"{sorted(given)} are computed by make_params and cannot be given")
    params = DopantEnvParams(**fields)
    for name in _POSITIVE + _NON_NEGATIVE:  # here, not in __post_init__, so that in_axes trees can be built
        value = getattr(params, name)
        if not (value > 0 or (name in _NON_NEGATIVE and value == 0)):
            kind = "non-negative" if name in _NON_NEGATIVE else "positive"
            raise ValueError(f"{name}={value!r} is not allowed; it must be {kind}")
    radius, density = dopant_env.probe_radial_profile(
        params.beam_energy_ev, params.semiangle_mrad, params.aberrations, params.probe_r_max_ang)
    sites = dopant_env.graphene_sites(params.lattice_cells, params.bond_ang)
    neighbours = dopant_env.neighbour_table(sites, params.extent_ang, params.bond_ang)
    hops = dopant_env.hop_distances(neighbours)
    start_mask = np.hypot(sites[:, 0], sites[:, 1]) <= min(params.extent_ang) / 4
    for name in ("start_site", "goal_site"):
        if not -1 <= getattr(params, name) < len(sites):
            raise ValueError(f"{name}={getattr(params, name)!r} is not a site index in [0, {len(sites)}) or -1")
    if not np.all(np.any(hops == params.goal_hops, axis=1)):
        raise ValueError(f"goal_hops={params.goal_hops!r} exceeds the patch; the farthest site is {hops.max()} hops")
    tables = dict(probe_r_ang=radius, probe_density_per_ang2=density, site_xy_ang=sites, neighbours=neighbours,
                  hops=hops, start_mask=start_mask)
    return dataclasses.replace(params, **{name: jnp.asarray(value, dtype=jnp.float32 if value.dtype.kind == "f"
                                                            else None) for name, value in tables.items()})


def half_extent(params: DopantEnvParams) -> np.ndarray:
    """(Lx / 2, Ly / 2) [Angstrom] as float32: the bounds of every position in observations and actions."""
    return np.asarray(params.extent_ang, dtype=np.float32) / np.float32(2)


def observation_bounds(params: DopantEnvParams) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (6,) float32 [Angstrom]."""
    high = np.tile(half_extent(params), 3)
    return -high, high


def action_bounds(params: DopantEnvParams) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (2,) float32: [Angstrom] for "absolute", [C-C bonds] for "relative"."""
    high = half_extent(params) if params.action_mode == "absolute" else np.full(2, RELATIVE_ACTION_BONDS, np.float32)
    return -high, high


def wrap(xy_ang, params: DopantEnvParams):
    """Positions (..., 2) [Angstrom] folded into the patch, [-L/2, L/2)."""
    extent = jnp.asarray(params.extent_ang, dtype=jnp.float32)
    return xy_ang - extent * jnp.floor(xy_ang / extent + 0.5)


def dose_per_step(params: DopantEnvParams):
    """Patch-averaged dose of one dwell, I t / (e Lx Ly) [e/Angstrom^2]."""
    lx, ly = params.extent_ang
    return dopant_env.flux_per_s(params.current_pa) * params.dwell_s / (lx * ly)


def observe(state: EnvState, params: DopantEnvParams):
    """Observation (6,) float32 [Angstrom]: dopant, target and beam (x, y) relative to the patch centre."""
    xy = params.site_xy_ang
    obs = jnp.concatenate([xy[state.dopant_site], xy[state.target_site], state.beam_xy_ang]).astype(jnp.float32)
    low, high = observation_bounds(params)
    return jnp.clip(obs, low, high)


def action_to_beam(action, state: EnvState, params: DopantEnvParams):
    """Beam position (2,) float32 [Angstrom] for an action (2,), clipped to the action box (module docstring)."""
    low, high = action_bounds(params)
    action = jnp.clip(jnp.asarray(action, dtype=jnp.float32), low, high)
    if params.action_mode == "absolute":
        return action
    return wrap(params.site_xy_ang[state.dopant_site] + params.bond_ang * action, params)


def reset(key, params: DopantEnvParams):
    """Start an episode: (obs (6,), EnvState). The beam starts on the dopant, at time 0 and dose 0."""
    key_start, key_goal = jax.random.split(key)
    drawn_start = jax.random.categorical(key_start, jnp.where(params.start_mask, 0.0, -jnp.inf))
    start = jnp.where(params.start_site >= 0, params.start_site, drawn_start).astype(jnp.int32)
    drawn_goal = jax.random.categorical(key_goal, jnp.where(params.hops[start] == params.goal_hops, 0.0, -jnp.inf))
    goal = jnp.where(params.goal_site >= 0, params.goal_site, drawn_goal).astype(jnp.int32)
    state = EnvState(dopant_site=start, target_site=goal, beam_xy_ang=params.site_xy_ang[start],
                     time_s=jnp.float32(0.0), dose_e_per_ang2=jnp.float32(0.0), step=jnp.int32(0),
                     damaged=jnp.bool_(False))
    return observe(state, params), state


def step(key, state: EnvState, action, params: DopantEnvParams):
    """Park the beam for one dwell: (obs (6,), EnvState, reward (), done (), info).

    info: terminated, truncated, reached (dopant on target, undamaged), damaged () bool; jumps () int32
    in this dwell; dose_e_per_ang2 () this step's dose.
    """
    beam = action_to_beam(action, state, params)
    site, jumps, damaged = dopant_env.dwell(key, state.dopant_site, beam, params)
    dose = jnp.asarray(dose_per_step(params), jnp.float32)
    state = EnvState(dopant_site=site, target_site=state.target_site, beam_xy_ang=beam,
                     time_s=state.time_s + jnp.float32(params.dwell_s), dose_e_per_ang2=state.dose_e_per_ang2 + dose,
                     step=state.step + 1, damaged=damaged)
    reached = (site == state.target_site) & ~damaged
    terminated = reached | damaged
    out_of_time = state.step >= params.max_steps
    out_of_dose = state.dose_e_per_ang2 >= params.dose_budget_e_per_ang2
    truncated = ~terminated & (out_of_time | out_of_dose)
    reward = reached.astype(jnp.float32) - damaged.astype(jnp.float32) - params.dose_penalty_per_e_per_ang2 * dose
    info = dict(terminated=terminated, truncated=truncated, reached=reached, damaged=damaged, jumps=jumps,
                dose_e_per_ang2=dose)
    return observe(state, params), state, reward.astype(jnp.float32), terminated | truncated, info
