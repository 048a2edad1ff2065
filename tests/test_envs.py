"""Si-dopant steering environment: Gymnasium API, determinism, jit/vmap, and the knock-on physics
(shared/reference/physics.md section 1, test 4; putting-dune calibration)."""

import dataclasses
import math
import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from twin.instrument import dopant_env, envs
from twin.instrument.gym import ENV_IDS, DopantSteeringEnv, register_envs

N_KEYS = 4096


@pytest.fixture(scope="module")
def params():
    return envs.make_params()


def centre_site(params):
    return int(np.argmin(np.linalg.norm(np.asarray(params.site_xy_ang), axis=1)))


def parked_beam(params, site, fraction, neighbour=0):
    """Beam [Angstrom] `fraction` of the way from the Si at `site` toward its neighbour `neighbour`."""
    xy = np.asarray(params.site_xy_ang)
    return xy[site] + fraction * (xy[int(params.neighbours[site, neighbour])] - xy[site])


def test_probe_table_integrates_to_one_and_calibrates_peak_rate(params):
    r = np.linspace(0.0, params.probe_r_max_ang, 40001)
    p = np.asarray(dopant_env.probe_density(r, params.probe_r_ang, params.probe_density_per_ang2))
    assert abs(np.trapezoid(2 * np.pi * r * p, r) - 1.0) < 1e-4
    # Peak jump rate (beam on the C) = putting-dune's ln2 / 3 s^-1 at the default 30 pA.
    peak = params.jump_cross_section_barn * 1e-8 * dopant_env.flux_per_s(params.current_pa) * p[0]
    assert peak == pytest.approx(math.log(2) / 3, rel=0.01)


@pytest.mark.parametrize("env_id", list(ENV_IDS))
def test_check_env(env_id):
    register_envs()  # idempotent
    env = gymnasium.make(env_id)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*symmetric and normalized space.*")
        check_env(env.unwrapped)
    assert env.unwrapped.params.action_mode == ENV_IDS[env_id]
    frame = gymnasium.make(env_id, render_mode="rgb_array")
    frame.reset(seed=0)
    image = frame.render()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def run_episode(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    trajectory = [obs]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        trajectory.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return trajectory


def test_same_seed_same_trajectory():
    env = DopantSteeringEnv(action_mode="relative")
    actions = np.random.default_rng(0).uniform(-1.2, 1.2, (30, 2)).astype(np.float32)
    first, second = run_episode(env, 7, actions), run_episode(env, 7, actions)
    np.testing.assert_equal(first, second)
    assert not np.array_equal(run_episode(env, 8, actions)[0], first[0])


def test_jit_equals_eager_and_vmap_over_keys(params):
    keys = jax.random.split(jax.random.key(0), 16)
    action = jnp.asarray(parked_beam(params, centre_site(params), 1.0), jnp.float32)

    def episode_step(key):
        obs, state = envs.reset(key, params)
        return envs.step(jax.random.fold_in(key, 1), state, action, params)

    batched = jax.jit(jax.vmap(episode_step))(keys)
    assert batched[0].shape == (16, 6) and batched[2].shape == (16,)
    assert len(set(np.asarray(batched[1].target_site))) > 1  # the keys draw different episodes
    for eager, jitted in zip(jax.tree.leaves(episode_step(keys[5])), jax.tree.leaves(batched)):
        np.testing.assert_allclose(eager, jitted[5], rtol=1e-6)


@jax.jit
def first_move(keys, beam, params):
    """For each key (n,), a 100-step episode with the beam parked at `beam` (2,) [Angstrom]: the step (1-based)
    at whose end the dopant first left its start site (0: never) and the site it went to."""

    def episode(key):
        _, state = envs.reset(key, params)

        def body(state, key):
            _, new, *_ = envs.step(key, state, beam, params)
            return new, new.dopant_site

        _, sites = jax.lax.scan(body, state, jax.random.split(key, 100))
        moved = sites != state.dopant_site
        return jnp.where(moved.any(), jnp.argmax(moved) + 1, 0), sites[jnp.argmax(moved)]

    return jax.vmap(episode)(keys)


@pytest.mark.parametrize("fraction", [0.6, 0.85])
def test_parked_beam_waiting_time_and_direction(params, fraction):
    site = centre_site(params)
    beam = jnp.asarray(parked_beam(params, site, fraction), jnp.float32)
    keys = jax.random.split(jax.random.key(1), N_KEYS)
    waits, channels = jax.jit(jax.vmap(dopant_env.next_event, in_axes=(0, None, None, None)))(
        keys, jnp.int32(site), beam, params)
    counts = np.bincount(np.asarray(channels), minlength=dopant_env.N_CHANNELS)
    rates = np.asarray(dopant_env.event_rates(jnp.int32(site), beam, params))
    assert 1.0 < float(jnp.mean(waits)) < 20.0  # physics.md test 4 (all channels; jumps dominate)
    assert float(jnp.mean(waits)) == pytest.approx(1 / rates.sum(), rel=0.05)
    assert (counts[1] + counts[2]) / counts[0] < 0.1

    # The same through the environment: 1.5 s dwells, first jump over many vmapped episodes, no damage.
    quiet = dataclasses.replace(params, start_site=site, goal_site=int(np.argmax(params.hops[site])),
                                knockon_cross_section_barn=0.0, ejection_cross_section_barn=0.0)
    steps, landed = (np.asarray(a) for a in first_move(keys[:1024], beam, quiet))
    assert (steps > 0).mean() > 0.99
    mean_wait = (steps[steps > 0] - 0.5).mean() * params.dwell_s
    assert 1.0 < mean_wait < 20.0
    assert mean_wait == pytest.approx(1 / rates[:3].sum(), rel=0.1)
    toward = int(params.neighbours[site, 0])
    assert (landed[steps > 0] != toward).sum() / (landed[steps > 0] == toward).sum() < 0.1


def test_far_beam_never_moves_dopant(params):
    site = centre_site(params)
    xy = np.asarray(params.site_xy_ang)
    beam = envs.wrap(jnp.asarray(xy[site] + np.array([6.0, 3.0]), jnp.float32), params)
    distance = np.linalg.norm(np.asarray(dopant_env.minimum_image(jnp.asarray(xy) - beam, params.extent_ang)), axis=1)
    assert distance[site] > 5.0 and distance[np.asarray(params.neighbours[site])].min() > 5.0
    fixed = dataclasses.replace(params, start_site=site, goal_site=int(np.argmax(params.hops[site])))
    steps, _ = first_move(jax.random.split(jax.random.key(2), 1024), beam, fixed)
    assert (np.asarray(steps) > 0).mean() < 0.02  # expected 0.7% in these 150 s (probe tail at 5.3-7.6 A)


def greedy_action(info, params):
    """Relative action toward the C neighbour that is fewest hops (then nearest) from the target."""
    site, target = info["dopant_site"], info["target_site"]
    xy, neighbours = np.asarray(params.site_xy_ang), np.asarray(params.neighbours[site])
    offsets = np.asarray(dopant_env.minimum_image(jnp.asarray(xy[neighbours] - xy[site]), params.extent_ang))
    to_target = np.asarray(dopant_env.minimum_image(jnp.asarray(xy[target] - xy[neighbours]), params.extent_ang))
    score = np.asarray(params.hops)[neighbours, target] + 1e-3 * np.linalg.norm(to_target, axis=1)
    return (offsets[np.argmin(score)] / params.bond_ang).astype(np.float32)


def test_greedy_policy_reaches_target():
    env = gymnasium.make("twin/DopantSteeringRelative-v0", goal_hops=3)
    outcomes = []
    for seed in range(20):
        _, info = env.reset(seed=seed)
        terminated = truncated = False
        while not (terminated or truncated):
            _, reward, terminated, truncated, info = env.step(greedy_action(info, env.unwrapped.params))
        outcomes.append("reached" if reward > 0.5 else "damaged" if info["damaged"] else "truncated")
    assert outcomes.count("reached") >= 12, outcomes


def test_truncation_on_max_steps_and_dose_budget(params):
    corner = envs.half_extent(params)  # > 8 Angstrom from every start site: nothing happens
    per_step = float(envs.dose_per_step(params))
    for changes, last in (({"max_steps": 3}, 3), ({"dose_budget_e_per_ang2": 4.5 * per_step}, 5)):
        env = DopantSteeringEnv(**changes)
        env.reset(seed=0)
        for i in range(1, last + 1):
            _, reward, terminated, truncated, info = env.step(corner)
            assert not terminated and truncated == (i == last)
            assert reward == pytest.approx(-params.dose_penalty_per_e_per_ang2 * per_step, rel=1e-5)
        assert info["time_s"] == pytest.approx(last * params.dwell_s)
        assert info["dose_e_per_ang2"] == pytest.approx(last * per_step, rel=1e-5)


def test_damage_terminates_with_penalty(params):
    site = centre_site(params)
    env = DopantSteeringEnv(start_site=site, knockon_cross_section_barn=1e3)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(parked_beam(params, site, 1.0).astype(np.float32))
    assert terminated and info["damaged"] and not truncated
    assert reward == pytest.approx(-1.0, abs=0.02)
