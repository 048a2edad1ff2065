"""Si(100)-2x1:H sample builder and STM image formation (twin/samples/si100_h.py, twin/stm)."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from twin.samples.si100_h import HSurface, si100_h
from twin.stm import (FeedbackSpec, LdosSpec, StmNoiseSpec, TipSpec, TunnellingSpec, constant_height_image,
                      creep_ang, current_at, db_charges, feedback_init, height_for_current, kappa, preamp_noise_pa,
                      preamp_rms_pa, run_loop, scan, scan_grid, tunnelling_current, z_noise_ang)

NOISELESS = StmNoiseSpec.noiseless()
SCAN_KWARGS = {"fov_ang": (20.0, 10.0), "center_ang": (15.0, 15.0), "shape_yx": (5, 8), "bias_v": -1.8,
               "setpoint_pa": 50.0, "dwell_s": 1e-4}


def _single_db(nx=16, ny=8):
    """A cell with one DB near its centre; returns (surface, DB position)."""
    site = 2 * ((ny // 2) * nx + nx // 2)
    surface = si100_h(nx, ny, db_sites=[site])
    return surface, surface.sites[site]


def _profile(surface, centre, bias_v, tip=TipSpec(), half_ang=25.0, n=201, direction=(1.0, 0.0)):
    """Ideal constant-current height profile (50 pA) through `centre`; returns (offsets, heights)."""
    s = np.linspace(-half_ang, half_ang, n)
    xy = centre[:2] + s[:, None] * np.asarray(direction)
    return s, height_for_current(surface, xy, bias_v, 50.0, tip=tip)


def _fwhm(s, h):
    """Full width at half maximum of a single peak h(s) above its minimum at the ends [same unit as s]."""
    h = h - h[[0, -1]].mean()
    above = s[h >= h.max() / 2]
    return above.max() - above.min()


# --- sample builder ---------------------------------------------------------------------------------------


def test_geometry_matches_siqad_lattice():
    s = si100_h(5, 3)
    assert s.n_sites == 30 and s.extent == pytest.approx((5 * 3.84, 3 * 7.68))
    pairs = s.sites.reshape(-1, 2, 3)
    np.testing.assert_allclose(pairs[:, 1] - pairs[:, 0], np.tile([0.0, 2.25, 0.0], (15, 1)), atol=1e-12)
    centres = pairs.mean(axis=1).reshape(3, 5, 3)
    np.testing.assert_allclose(np.diff(centres[..., 0], axis=1), 3.84, atol=1e-12)  # along a row (x)
    np.testing.assert_allclose(np.diff(centres[..., 1], axis=0), 7.68, atol=1e-12)  # between rows (y)
    np.testing.assert_array_equal(s.row, np.repeat(np.arange(3), 10))
    np.testing.assert_array_equal(s.dimer, np.repeat(np.arange(15), 2))
    assert s.occupied.all() and s.present.all() and s.dangling_bonds().size == 0
    np.testing.assert_allclose(s.h_positions()[:, 2], 1.48)


def test_to_atoms_has_layers_h_and_periodic_cell():
    s = si100_h(4, 2, db_sites=[0], dimer_vacancies=[3])
    atoms = s.to_atoms()
    assert atoms.get_chemical_symbols().count("H") == 16 - 2 - 1
    assert atoms.get_chemical_symbols().count("Si") == 14 + 3 * 16
    np.testing.assert_allclose(atoms.cell.lengths()[:2], s.extent)
    assert tuple(atoms.pbc) == (True, True, False)
    z = np.sort(np.unique(np.round(atoms.positions[atoms.numbers == 14, 2], 3)))
    np.testing.assert_allclose(z, [-4.073, -2.716, -1.358, 0.0], atol=1e-3)
    distances = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
    assert distances.min() == pytest.approx(1.48)  # Si-H, nothing closer


def test_counts_of_defects():
    s = si100_h(10, 6, seed=4, db_sites=[0, 7], db_fraction=0.05, bare_dimers=[10], bare_fraction=0.05,
                dimer_vacancies=[20, 21], vacancy_fraction=0.05)
    n_vac, n_bare, n_single = 2 + 3, 1 + 3, 2 + 6
    assert (~s.present).sum() == 2 * n_vac
    bare = [d for d in range(60) if not s.occupied[2 * d] and not s.occupied[2 * d + 1] and s.present[2 * d]]
    assert len(bare) == n_bare and 10 in bare
    assert s.dangling_bonds().size == 2 * n_bare + n_single
    assert not s.occupied[[0, 7]].any() and not s.present[[40, 41, 42, 43]].any()
    assert s.with_occupancy(np.ones(120, bool) & s.present).dangling_bonds().size == 0


def test_same_seed_same_sample():
    a, b, c = (si100_h(8, 4, seed=k, db_fraction=0.1, vacancy_fraction=0.05) for k in (1, 1, 2))
    np.testing.assert_array_equal(a.occupied, b.occupied)
    np.testing.assert_array_equal(a.present, b.present)
    assert not (np.array_equal(a.occupied, c.occupied) and np.array_equal(a.present, c.present))


@pytest.mark.parametrize("kwargs, name", [
    ({"nx_dimers": 0}, "nx_dimers"), ({"ny_rows": 2.5}, "ny_rows"), ({"seed": -1}, "seed"),
    ({"db_sites": [64]}, "db_sites"), ({"db_sites": [3, 3]}, "db_sites"), ({"db_fraction": 1.5}, "db_fraction"),
    ({"bare_dimers": [1], "dimer_vacancies": [1]}, "bare_dimers"),
    ({"db_sites": [2], "dimer_vacancies": [1]}, "db_sites"),
    ({"bare_fraction": -0.1}, "bare_fraction"), ({"vacancy_fraction": 0.6, "bare_fraction": 0.6}, "bare_fraction"),
    ({"dimer_vacancies": 3}, "dimer_vacancies"),
])
def test_bad_builder_inputs(kwargs, name):
    with pytest.raises(ValueError, match=name):
        si100_h(**{"nx_dimers": 8, "ny_rows": 4, **kwargs})


def test_hsurface_validates_shapes():
    s = si100_h(2, 2)
    with pytest.raises(ValueError, match="occupied"):
        s.with_occupancy(np.ones(3, bool))
    with pytest.raises(ValueError, match="extent"):
        dataclasses.replace(s, extent=(0.0, 1.0))
    assert isinstance(s.with_occupancy(s.occupied), HSurface)


# --- tunnelling kernel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("phi, expected, decade_ang, per_ang",
                         [(4.0, 1.025, 1.12, 7.8), (4.5, 1.087, 1.06, 8.8), (5.0, 1.146, 1.00, 9.9)])
def test_kappa_table(phi, expected, decade_ang, per_ang):
    """physics.md section 4 table: kappa, the distance for a factor 10 and the factor per Angstrom."""
    k = float(kappa(phi))
    assert k == pytest.approx(expected, abs=1e-3)
    assert math.log(10) / (2 * k) == pytest.approx(decade_ang, abs=0.01)
    assert math.exp(2 * k) == pytest.approx(per_ang, abs=0.05)


_FLAT = si100_h(4, 2)


@jax.jit
def _log_current_flat(r, phi):
    spec = dataclasses.replace(TunnellingSpec(), work_function_ev=phi)
    return jnp.log(tunnelling_current(r, _FLAT.sites, _FLAT.occupied, _FLAT.present, 1.4, spec,
                                      extent_ang=_FLAT.extent))


@given(phi=st.floats(3.0, 6.0), x=st.floats(0.0, 15.36), y=st.floats(0.0, 15.36), z=st.floats(4.0, 12.0),
       dz=st.floats(0.1, 2.0))
def test_current_decays_as_exp_minus_two_kappa_z_over_the_passivated_surface(phi, x, y, z, dz):
    drop = _log_current_flat(jnp.array([x, y, z]), phi) - _log_current_flat(jnp.array([x, y, z + dz]), phi)
    assert float(drop) == pytest.approx(2 * float(kappa(phi)) * dz, rel=1e-4)


@pytest.mark.parametrize("phi", [4.0, 4.5, 5.0])
def test_log_current_slope_is_minus_two_kappa(x64, phi):
    """d ln I / dz = -2 kappa over the flat passivated surface and straight above a lone DB (physics.md 4)."""
    surface, db = _single_db()
    spec = TunnellingSpec(work_function_ev=phi)

    def log_i(r):
        return jnp.log(tunnelling_current(r, surface.sites, surface.occupied, surface.present, -1.8, spec,
                                          extent_ang=surface.extent))

    points = np.array([[x, y, z] for x, y in [db[:2], (3.0, 3.0), (20.1, 45.7), (55.0, 10.0)] for z in (6, 8, 10)])
    slope = jax.jit(jax.vmap(jax.grad(log_i)))(jnp.asarray(points))[:, 2]
    np.testing.assert_allclose(slope, -2 * float(kappa(phi)), rtol=0.01)


def test_jit_equals_no_jit():
    surface, db = _single_db(8, 4)
    points = jnp.asarray(np.stack(np.meshgrid(np.linspace(0, 30, 7), np.linspace(0, 30, 5), [7.0, 8.5]), -1))
    spec = TunnellingSpec(tip=TipSpec(kind="blunt"))

    def f(r):
        return tunnelling_current(r, surface.sites, surface.occupied, surface.present, 1.4, spec,
                                  extent_ang=surface.extent)
    np.testing.assert_allclose(jax.jit(f)(points), f(points), rtol=2e-5)
    assert f(points).shape == points.shape[:-1]


def test_gradients_against_finite_differences(x64):
    surface, db = _single_db(8, 4)
    tip_xy = jnp.asarray(db[:2]) + jnp.array([1.3, -0.8])
    sites = jnp.asarray(surface.sites)
    dbi = int(surface.dangling_bonds()[0])

    def current(z, phi, db_xy, kind="sharp"):
        spec = dataclasses.replace(TunnellingSpec(tip=TipSpec(kind=kind)), work_function_ev=phi)
        moved = sites.at[dbi, :2].set(db_xy)
        r = jnp.concatenate([tip_xy, jnp.atleast_1d(z)])
        return jnp.log(tunnelling_current(r, moved, surface.occupied, surface.present, 1.4, spec,
                                          extent_ang=surface.extent))

    args = (jnp.asarray(7.2), jnp.asarray(4.3), jnp.asarray(db[:2]))
    for kind in ("sharp", "blunt"):
        check_grads(jax.jit(functools.partial(current, kind=kind)), args, order=1, modes=["rev"], atol=1e-5,
                    rtol=1e-5)


# --- contrast ---------------------------------------------------------------------------------------------


def test_filled_state_db_is_a_protrusion_of_one_to_two_angstrom():
    surface, db = _single_db()
    s, h = _profile(surface, db, -1.8)
    apparent = h.max() - h[[0, -1]].mean()
    assert 1.0 <= apparent <= 2.0
    assert abs(s[np.argmax(h)]) < 0.3


def test_empty_state_db_has_bright_centre_and_dark_halo():
    surface, db = _single_db()
    s, h = _profile(surface, db, 1.4)
    relative = h - h[[0, -1]].mean()
    assert relative[np.abs(s) < 1.0].max() > 0.3  # bright centre
    halo = relative[(np.abs(s) > 4.0) & (np.abs(s) < 12.0)]
    assert halo.max() < 0.0 and halo.min() < -0.15  # dark ring below the passivated background


def test_double_tip_ghost_at_the_offset():
    surface, db = _single_db()
    offset = np.array([8.0, 4.0])
    tip = TipSpec(kind="double", double_offset_ang=tuple(offset), double_ratio=0.5)
    s, h = _profile(surface, db, -1.8, tip=tip, half_ang=20.0, direction=offset / np.linalg.norm(offset))
    floor = h[[0, -1]].mean()
    peaks = [i for i in range(1, len(h) - 1) if h[i] > h[i - 1] and h[i] >= h[i + 1] and h[i] > floor + 0.3]
    positions = sorted(s[peaks])
    assert len(peaks) == 2
    assert positions[1] == pytest.approx(0.0, abs=0.3)
    assert positions[0] == pytest.approx(-np.linalg.norm(offset), abs=0.5)  # ghost at DB - offset


def test_blunt_tip_broadens_the_db():
    surface, db = _single_db()
    sharp = _fwhm(*_profile(surface, db, -1.8))
    blunt = _fwhm(*_profile(surface, db, -1.8, tip=TipSpec(kind="blunt")))
    assert blunt > 1.3 * sharp


def test_dimer_vacancy_is_a_depression():
    surface = si100_h(8, 4, dimer_vacancies=[2 * 8 + 4])
    centre = surface.sites[2 * (2 * 8 + 4): 2 * (2 * 8 + 4) + 2].mean(axis=0)
    s, h = _profile(surface, centre, -1.8, half_ang=10.0)
    assert h[100] - h[[0, -1]].mean() < -0.2


def test_db_charges_follow_siqad_rules():
    isolated = si100_h(8, 4, db_sites=[0])
    assert db_charges(isolated.sites, isolated.occupied, isolated.present).sum() == -1
    pair = si100_h(8, 4, db_sites=[0, 2])  # neighbours along the row, 3.84 A: one electron between them
    assert db_charges(pair.sites, pair.occupied, pair.present).sum() == -1
    far = si100_h(8, 4, db_sites=[0, 40])
    assert db_charges(far.sites, far.occupied, far.present).sum() == -2
    bare = si100_h(8, 4, bare_dimers=[5])
    assert db_charges(bare.sites, bare.occupied, bare.present).sum() == 0


# --- feedback ---------------------------------------------------------------------------------------------


def _ldos_step_run(feedback: FeedbackSpec, work_function_ev=4.5):
    """The tip jumps between two lattice-equivalent points; the LDOS on the second is scaled by 1.1."""
    surface = si100_h(8, 4)
    spec = TunnellingSpec(work_function_ev=work_function_ev)
    x0, y0 = surface.sites[16, 0], surface.sites[16, 1] + 1.0
    n_each = int(8 * feedback.integral_time_s * feedback.loop_rate_hz)

    def current_fn(k, z):
        right = k >= n_each
        r = jnp.stack([x0 + jnp.where(right, 4 * 3.84, 0.0), y0, z])
        current = tunnelling_current(r, surface.sites, surface.occupied, surface.present, -1.8, spec,
                                     extent_ang=surface.extent)
        return current * jnp.where(right, 1.1, 1.0)

    z0 = height_for_current(surface, [[x0, y0]], -1.8, 50.0, work_function_ev=work_function_ev)[0]
    zeros = jnp.zeros(2 * n_each)
    _, traces = run_loop(current_fn, feedback_init(z0, 50.0), 50.0, feedback,
                         gain_per_ang=2 * kappa(work_function_ev), dt_s=1 / feedback.loop_rate_hz,
                         current_noise_pa=zeros, gap_offset_ang=zeros)
    return n_each, {k: np.asarray(v) for k, v in traces.items()}


@pytest.mark.parametrize("phi", [4.5, 5.0])
def test_ldos_step_gives_analytic_apparent_height(phi):
    n_each, traces = _ldos_step_run(FeedbackSpec(), phi)
    dz = traces["z_ang"][-1] - traces["z_ang"][n_each - 1]
    assert dz == pytest.approx(math.log(1.1) / (2 * float(kappa(phi))), rel=0.02)  # 0.0438 A at 4.5 eV


@pytest.mark.parametrize("feedback", [FeedbackSpec(), FeedbackSpec(integral_time_s=3e-4, bandwidth_hz=3000.0)])
def test_error_settles_in_about_three_integral_times(feedback):
    n_each, traces = _ldos_step_run(feedback)
    error = np.abs(traces["error"][n_each:])
    outside = np.flatnonzero(error > 0.05 * error.max())
    factor = (outside[-1] + 1) / feedback.loop_rate_hz / feedback.integral_time_s
    assert 2.0 <= factor <= 4.0  # measured 3.3 for both


def test_constant_current_scan_reproduces_ideal_topograph():
    surface, db = _single_db()
    out = scan(jax.random.key(0), surface, fov_ang=(30.0, 1.0), center_ang=tuple(db[:2]), shape_yx=(1, 60),
               bias_v=-1.8, setpoint_pa=50.0, dwell_s=5e-3, noise=NOISELESS)
    ideal = height_for_current(surface, np.stack([out["x_ang"], np.full(60, out["y_ang"][0])], -1), -1.8, 50.0)
    assert np.abs(out["height_ang"][0] - ideal).max() < 0.1  # slow scan: the loop follows
    assert np.abs(out["error"]).max() < 0.1
    assert out["height_ang"].max() - out["height_ang"][0, 0] > 1.0


# --- noise, drift, creep ----------------------------------------------------------------------------------


def test_noise_is_deterministic_per_key_and_has_the_spec_rms():
    spec = StmNoiseSpec(preamp_noise_fa_per_rthz=20.0, z_noise_pm=3.0)
    a = preamp_noise_pa(jax.random.key(1), 200_000, 2e-5, 1000.0, spec)
    np.testing.assert_array_equal(a, preamp_noise_pa(jax.random.key(1), 200_000, 2e-5, 1000.0, spec))
    assert not np.array_equal(a, preamp_noise_pa(jax.random.key(2), 200_000, 2e-5, 1000.0, spec))
    assert preamp_rms_pa(1000.0, spec) == pytest.approx(20e-3 * math.sqrt(1000.0))
    assert float(jnp.std(a)) == pytest.approx(preamp_rms_pa(1000.0, spec), rel=0.05)
    z = z_noise_ang(jax.random.key(3), 200_000, 1e-4, spec)
    assert float(jnp.std(z)) == pytest.approx(0.03, rel=0.1)


def test_scan_current_noise_matches_spec():
    spec = StmNoiseSpec(preamp_noise_fa_per_rthz=50.0, z_noise_pm=0.0, drift_ang_per_s=(0, 0, 0), creep_gamma=0.0)
    feedback = FeedbackSpec()
    kwargs = dict(fov_ang=10.0, center_ang=(3.0, 3.0), shape_yx=(64, 64), bias_v=-1.8, setpoint_pa=50.0,
                  mode="constant-height", dwell_s=1 / feedback.loop_rate_hz, noise=spec)
    surface = si100_h(8, 4)
    height = height_for_current(surface, [[3.0, 3.0]], -1.8, 50.0)[0]
    a = scan(jax.random.key(5), surface, height_ang=height, **kwargs)
    b = scan(jax.random.key(5), surface, height_ang=height, **kwargs)
    np.testing.assert_array_equal(a["current_pa"], b["current_pa"])
    ideal = scan(jax.random.key(5), surface, height_ang=height, **{**kwargs, "noise": NOISELESS})
    residual = a["current_pa"] - ideal["current_pa"]
    assert residual.std() == pytest.approx(preamp_rms_pa(feedback.bandwidth_hz, spec), rel=0.1)


def test_drift_measured_back_by_cross_correlation():
    surface = si100_h(12, 6, db_sites=[30, 57, 95, 110])
    velocity = np.array([0.02, -0.01])
    noise = StmNoiseSpec(preamp_noise_fa_per_rthz=0.0, z_noise_pm=0.0, drift_ang_per_s=(*velocity, 0.0),
                         creep_gamma=0.0)
    kwargs = dict(fov_ang=32.0, center_ang=(23.0, 23.0), shape_yx=(64, 64), bias_v=-1.8, setpoint_pa=50.0,
                  mode="constant-height", height_ang=8.0, dwell_s=2e-5, noise=noise)
    first = scan(jax.random.key(0), surface, t0_s=10.0, **kwargs)["current_pa"]
    second = scan(jax.random.key(0), surface, t0_s=210.0, **kwargs)["current_pa"]
    shift_px = _shift(first, second)
    measured = -shift_px * 0.5  # a feature seen at commanded r - v t: images move by -v dt
    np.testing.assert_allclose(measured[::-1] / 200.0, velocity, rtol=0.1)


def _shift(a, b):
    """Sub-pixel (dy, dx) shift of b relative to a from the peak of their circular cross-correlation."""
    a, b = a - a.mean(), b - b.mean()
    xc = np.real(np.fft.ifft2(np.conj(np.fft.fft2(a)) * np.fft.fft2(b)))
    peak = np.unravel_index(np.argmax(xc), xc.shape)
    out = []
    for axis, p in enumerate(peak):
        idx = [list(peak), list(peak), list(peak)]
        for j, d in enumerate((-1, 0, 1)):
            idx[j][axis] = (p + d) % xc.shape[axis]
        lo, mid, hi = (xc[tuple(i)] for i in idx)
        frac = 0.5 * (lo - hi) / (lo - 2 * mid + hi)
        n = xc.shape[axis]
        out.append(((p + n // 2) % n - n // 2) + frac)
    return np.array(out)


def test_creep_follows_the_log_law_and_moves_the_tip():
    spec = StmNoiseSpec(creep_gamma=0.015, creep_t0_s=1.0, drift_ang_per_s=(0, 0, 0))
    times = np.array([1.0, 10.0, 100.0, 1000.0])
    creep = np.asarray(creep_ang(times + 5.0, (200.0, -100.0), 5.0, spec))
    np.testing.assert_allclose(creep[:, 0], 200.0 * 0.015 * np.log10(times), atol=1e-4)
    np.testing.assert_allclose(np.diff(creep[:, 1]), -100.0 * 0.015, atol=1e-4)  # the same step per decade
    out = scan(jax.random.key(0), si100_h(8, 4, db_sites=[20]), **SCAN_KWARGS, noise=spec, t0_s=100.0,
               last_move_ang=(200.0, 0.0), last_move_time_s=0.0)
    commanded = np.meshgrid(out["x_ang"], out["y_ang"])[0]
    expected = 200.0 * 0.015 * np.log10(out["time_s"] + 0.5e-4)
    np.testing.assert_allclose(out["tip_x_ang"] - commanded, expected, atol=1e-4)


# --- specs and entry points -------------------------------------------------------------------------------


@pytest.mark.parametrize("build, name", [
    (lambda: TipSpec(kind="round"), "kind"), (lambda: TipSpec(radius_ang=-1.0), "radius_ang"),
    (lambda: TipSpec(kind="double", double_ratio=2.0), "double_ratio"),
    (lambda: TipSpec(double_offset_ang=(1.0,)), "double_offset_ang"),
    (lambda: LdosSpec(softness_v=0.0), "softness_v"),
    (lambda: TunnellingSpec(work_function_ev=0.2), "work_function"),
    (lambda: FeedbackSpec(integral_time_s=0.0), "integral_time_s"),
    (lambda: FeedbackSpec(bandwidth_hz=1e5, loop_rate_hz=1e5), "loop_rate_hz"),
    (lambda: FeedbackSpec(z_limits_ang=(5.0, 1.0)), "z_limits_ang"),
    (lambda: StmNoiseSpec(z_noise_pm=-1.0), "z_noise_pm"), (lambda: StmNoiseSpec(creep_gamma=0.5), "creep_gamma"),
    (lambda: StmNoiseSpec(drift_ang_per_s=(1.0, 2.0)), "drift_ang_per_s"),
])
def test_specs_refuse_bad_values(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_scan_outputs_and_argument_checks():
    surface = si100_h(8, 4, db_sites=[20])
    kwargs = SCAN_KWARGS
    out = scan(jax.random.key(0), surface, **kwargs)
    for name in ("height_ang", "current_pa", "error", "tip_x_ang", "tip_y_ang", "tip_z_ang", "time_s"):
        assert out[name].shape == (5, 8), name
    x, y = scan_grid((20.0, 10.0), (15.0, 15.0), (5, 8))
    np.testing.assert_allclose(out["x_ang"], x)
    np.testing.assert_allclose(np.diff(x), 2.5)
    np.testing.assert_allclose(y, [11.0, 13.0, 15.0, 17.0, 19.0])
    assert out["t_end_s"] == pytest.approx(40 * 1e-4)
    assert np.isfinite(out["error"]).all() and (out["current_pa"] > 0).all()
    with pytest.raises(ValueError, match="height_ang"):
        scan(jax.random.key(0), surface, mode="constant-height", **kwargs)
    with pytest.raises(ValueError, match="mode"):
        scan(jax.random.key(0), surface, mode="spectroscopy", **kwargs)
    with pytest.raises(ValueError, match="setpoint_pa"):
        scan(jax.random.key(0), surface, **{**kwargs, "setpoint_pa": -1.0})
    with pytest.raises(ValueError, match="shape_yx"):
        scan(jax.random.key(0), surface, **{**kwargs, "shape_yx": (0, 4)})


def test_calibration_and_current_at():
    surface = si100_h(8, 4)
    h = height_for_current(surface, [[5.0, 5.0], [17.0, 11.0]], -1.8, 50.0)
    assert np.all((h > 1.48 + 5.0) & (h < 1.48 + 7.0))  # 50 pA at -1.8 V with the apex 5-7 A above the H
    current = current_at(surface, np.array([[5.0, 5.0, h[0]], [17.0, 11.0, h[1]]]), -1.8)
    np.testing.assert_allclose(current, 50.0, rtol=1e-4)
    image = constant_height_image(surface, fov_ang=(4.0, 2.0), center_ang=(5.0, 5.0), shape_yx=(1, 2), bias_v=-1.8,
                                  height_ang=h[0])
    np.testing.assert_allclose(image, current_at(surface, [[[4.0, 5.0, h[0]], [6.0, 5.0, h[0]]]], -1.8), rtol=1e-5)
