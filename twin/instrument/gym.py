"""Gymnasium adapter for the Si-dopant steering environment (`twin.instrument.envs`).

Importing this module registers "twin/DopantSteering-v0" (absolute beam positions [Angstrom]) and
"twin/DopantSteeringRelative-v0" (beam offsets from the dopant [C-C bonds]).

Example:
    import gymnasium
    import twin.instrument.gym  # noqa: F401 (registers the ids)
    env = gymnasium.make("twin/DopantSteeringRelative-v0", current_pa=50.0)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

import gymnasium
import jax
import numpy as np
from gymnasium import spaces

from twin.instrument import envs

ENV_IDS = {"twin/DopantSteering-v0": "absolute", "twin/DopantSteeringRelative-v0": "relative"}
RENDER_PX_PER_ANG = 8  # pixels per Angstrom in rgb_array frames

_reset = jax.jit(envs.reset)
_step = jax.jit(envs.step)


class DopantSteeringEnv(gymnasium.Env):
    """Steer a Si dopant to a target site of a graphene patch by parking the STEM probe near its C neighbours.

    render_mode: None or "rgb_array" (an (ny, nx, 3) uint8 frame: C grey, Si orange, target green ring,
    beam blue cross). Every other keyword is a field of `envs.DopantEnvParams` (see `envs.make_params`),
    e.g. action_mode="relative", current_pa=50.0, max_steps=200. Observation, action, reward and the end
    of an episode are as in `twin.instrument.envs`; the episode truncates itself (no TimeLimit needed).

    Randomness: reset draws a JAX key from `self.np_random` (seeded by reset(seed=...)), and each step
    splits it, so the same seed and actions give the same trajectory.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **fields):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} does not exist; allowed: None, 'rgb_array'")
        self.render_mode = render_mode
        self.params = envs.make_params(**fields)
        self.action_space = spaces.Box(*envs.action_bounds(self.params), dtype=np.float32)
        self.observation_space = spaces.Box(*envs.observation_bounds(self.params), dtype=np.float32)
        self.state: envs.EnvState | None = None
        self._key = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """(obs (6,) float32, info); options are not used and must be None or empty."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"options {sorted(options)} are not supported")
        key = jax.random.key(int(self.np_random.integers(2**32)))
        key, self._key = jax.random.split(key)
        obs, self.state = _reset(key, self.params)
        return np.array(obs, dtype=np.float32), self._info(self.state)

    def step(self, action):
        """(obs (6,) float32, reward, terminated, truncated, info) for one dwell of the beam at `action`."""
        if self.state is None:
            raise gymnasium.error.ResetNeeded("call reset before step")
        self._key, key = jax.random.split(self._key)
        action = np.asarray(action, dtype=np.float32)
        obs, self.state, reward, _, out = _step(key, self.state, action, self.params)
        info = self._info(self.state) | {"jumps": int(out["jumps"]), "reached": bool(out["reached"])}
        return (np.array(obs, dtype=np.float32), float(reward), bool(out["terminated"]), bool(out["truncated"]),
                info)

    @staticmethod
    def _info(state: envs.EnvState) -> dict:
        return {"dopant_site": int(state.dopant_site), "target_site": int(state.target_site),
                "time_s": float(state.time_s), "dose_e_per_ang2": float(state.dose_e_per_ang2),
                "damaged": bool(state.damaged)}

    def render(self):
        """An (ny, nx, 3) uint8 frame of the patch for render_mode "rgb_array"; None otherwise."""
        if self.render_mode != "rgb_array" or self.state is None:
            return None
        return render_frame(self.state, self.params)


def render_frame(state: envs.EnvState, params: envs.DopantEnvParams) -> np.ndarray:
    """(ny, nx, 3) uint8 picture of the patch, y up: atoms, dopant, target and beam (RENDER_PX_PER_ANG)."""
    lx, ly = params.extent_ang
    nx, ny = round(lx * RENDER_PX_PER_ANG), round(ly * RENDER_PX_PER_ANG)
    x = (np.arange(nx) + 0.5) / RENDER_PX_PER_ANG - lx / 2
    y = (np.arange(ny)[::-1] + 0.5) / RENDER_PX_PER_ANG - ly / 2
    extent = np.array([lx, ly])

    def distance(point):
        d = np.stack(np.meshgrid(x, y), axis=-1) - np.asarray(point)
        d = d - extent * np.round(d / extent)
        return np.hypot(d[..., 0], d[..., 1])

    sites = np.asarray(params.site_xy_ang)
    frame = np.full((ny, nx, 3), 20, dtype=np.uint8)
    for xy in sites:
        frame[distance(xy) < 0.25] = 150
    target = distance(sites[int(state.target_site)])
    frame[(target > 0.45) & (target < 0.6)] = (60, 200, 80)
    frame[distance(sites[int(state.dopant_site)]) < 0.4] = (240, 140, 30)
    beam = np.asarray(state.beam_xy_ang) - np.stack(np.meshgrid(x, y), axis=-1)
    beam = beam - extent * np.round(beam / extent)
    cross = (np.abs(beam) < 0.5 / RENDER_PX_PER_ANG + 0.04).any(axis=-1) & (np.abs(beam) < 0.5).all(axis=-1)
    frame[cross] = (70, 130, 255)
    return frame


def register_envs() -> None:
    """Register ENV_IDS with Gymnasium; calling it again does nothing."""
    for env_id, action_mode in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="twin.instrument.gym:DopantSteeringEnv",
                               kwargs={"action_mode": action_mode}, nondeterministic=False)


register_envs()
