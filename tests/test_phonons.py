import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.data import atomic_masses
from hypothesis import given, strategies as st
from scipy import stats

from potentials import units
from potentials.phonons import (
    DEBYE_TEMPERATURES_K,
    KITTEL_DEBYE_TEMPERATURES_K,
    FrozenPhonons,
    debye_function,
    debye_mean_square_displacement,
    debye_sigma,
    gaussian_displacements,
)

HBAR = units.HPLANCK / (2 * math.pi)
M2_TO_A2 = 1e20
# False-alarm probability of each statistical test below (Bonferroni-split over the checks it makes).
ALPHA = 1e-7


def high_temperature_limit(mass_amu, theta, t):
    """3 hbar^2 T / (M k_B theta^2) [Angstrom^2]: classical k_B T / (M omega^2) averaged over Debye modes."""
    return 3 * HBAR**2 * t / (mass_amu * units.AMU * units.KB * theta**2) * M2_TO_A2


def zero_point_limit(mass_amu, theta):
    """3 hbar^2 / (4 M k_B theta) [Angstrom^2]."""
    return 3 * HBAR**2 / (4 * mass_amu * units.AMU * units.KB * theta) * M2_TO_A2


def assert_two_significant(value, expected):
    assert float(f"{value:.2g}") == expected, f"{value:.5g} does not round to {expected}"


# ---- Debye model ----------------------------------------------------------------------------------------

def test_debye_values_of_reference_physics_md():
    """physics.md section 1, [C] values: C at 300 K with theta = 1287 K and 1000 K (and B = 8 pi^2 <u^2>)."""
    carbon = float(atomic_masses[6])
    assert_two_significant(debye_mean_square_displacement(carbon, 1287.0, 300.0), 0.0032)
    u2 = debye_mean_square_displacement(carbon, 1000.0, 300.0)
    assert_two_significant(u2, 0.0047)
    assert_two_significant(8 * math.pi**2 * u2, 0.37)
    # Graphene carbon is the default, and its rms displacement is the square root of 0.0032.
    assert_two_significant(debye_sigma("C", 300.0) ** 2, 0.0032)


def test_debye_silicon_at_645_k():
    """physics.md says "0.0043 A^2 is also the value for Si at theta = 645 K"; its own formula gives 0.00420.

    With M = 28.0855 u (28.0 u changes the fourth digit only) the Debye <u_x^2> is 0.004196 A^2, which
    rounds to 0.0042; 0.0043 needs theta ~ 635 K. We test the value the formula gives.
    """
    u2 = debye_mean_square_displacement(float(atomic_masses[14]), 645.0, 300.0)
    assert_two_significant(u2, 0.0042)
    assert 0.0043 * 0.97 < u2 < 0.0043  # within 3% of the quoted figure
    assert debye_sigma("Si", 300.0) == pytest.approx(math.sqrt(u2), rel=1e-12)


def test_debye_function_series_and_asymptote():
    """Phi(x) = 1 - x/4 + x^2/36 - x^4/3600 + ... near 0 and pi^2 / (6 x) for large x."""
    for x in (1e-3, 0.05, 0.2):
        assert debye_function(x) == pytest.approx(1 - x / 4 + x**2 / 36 - x**4 / 3600, rel=1e-9)
    assert debye_function(0.0) == 1.0
    for x in (80.0, 1e3, 1e5):
        assert debye_function(x) == pytest.approx(math.pi**2 / (6 * x), rel=1e-12)


@given(mass=st.floats(1.0, 240.0), theta=st.floats(30.0, 2500.0))
def test_debye_high_temperature_limit(mass, theta):
    """T >> theta: <u^2> -> 3 hbar^2 T / (M k_B theta^2); the next term is (theta / T)^2 / 36."""
    t = 1e3 * theta
    assert debye_mean_square_displacement(mass, theta, t) == pytest.approx(
        high_temperature_limit(mass, theta, t), rel=1e-6)


@given(mass=st.floats(1.0, 240.0), theta=st.floats(30.0, 2500.0))
def test_debye_zero_point_limit(mass, theta):
    """T -> 0: <u^2> -> 3 hbar^2 / (4 M k_B theta); the next term is (2 pi^2 / 3) (T / theta)^2."""
    assert debye_mean_square_displacement(mass, theta, 1e-3 * theta) == pytest.approx(
        zero_point_limit(mass, theta), rel=1e-5)


@given(mass=st.floats(1.0, 240.0), theta=st.floats(30.0, 2500.0), t=st.floats(1.0, 3000.0))
def test_debye_between_its_limits_and_monotonic(mass, theta, t):
    """(t/2) coth(t/2) lies in [max(1, t/2), 1 + t/2], so <u^2> lies between max and sum of the limits."""
    u2 = debye_mean_square_displacement(mass, theta, t)
    classical, zero_point = high_temperature_limit(mass, theta, t), zero_point_limit(mass, theta)
    assert max(classical, zero_point) * (1 - 1e-9) <= u2 <= (classical + zero_point) * (1 + 1e-9)
    assert debye_mean_square_displacement(mass, theta, t * 1.1) > u2
    assert debye_mean_square_displacement(mass, theta * 1.1, t) < u2
    assert debye_mean_square_displacement(mass * 1.1, theta, t) < u2


def test_debye_table():
    """Every element from the book; graphene carbon replaces diamond; spot values of Kittel's table."""
    assert {k: v for k, v in DEBYE_TEMPERATURES_K.items() if k != "C"} == {
        k: v for k, v in KITTEL_DEBYE_TEMPERATURES_K.items() if k != "C"}
    assert DEBYE_TEMPERATURES_K["C"] == 1287.0 and KITTEL_DEBYE_TEMPERATURES_K["C"] == 2230.0
    assert (KITTEL_DEBYE_TEMPERATURES_K["Si"], KITTEL_DEBYE_TEMPERATURES_K["Au"],
            KITTEL_DEBYE_TEMPERATURES_K["Bi"]) == (645.0, 165.0, 119.0)
    assert len(DEBYE_TEMPERATURES_K) >= 60


def test_default_sigmas_are_debye_at_the_temperature():
    spec = FrozenPhonons(n_configurations=1, temperature=150.0)
    table = spec.sigma_table([14, 6, 79])
    expected = [debye_sigma(s, 150.0) for s in ("Si", "C", "Au")]
    np.testing.assert_allclose(table, np.repeat(np.array(expected)[:, None], 3, axis=1), rtol=1e-12)
    assert debye_sigma("C", 300.0, theta_k=2230.0) < debye_sigma("C", 300.0)  # diamond is stiffer


# ---- sigma tables -----------------------------------------------------------------------------------------

def test_sigma_table_float_mapping_and_defaults():
    numbers = [6, 14, 6, 42]
    np.testing.assert_array_equal(FrozenPhonons(n_configurations=1, sigmas=0.07).sigma_table(numbers),
                                  np.full((4, 3), 0.07))
    table = FrozenPhonons(n_configurations=1, sigmas={"Si": (0.1, 0.2, 0.0), "Mo": 0.05}).sigma_table(numbers)
    assert table.shape == (4, 3) and table.dtype == np.float64
    np.testing.assert_array_equal(table[1], [0.1, 0.2, 0.0])
    np.testing.assert_array_equal(table[3], [0.05] * 3)
    np.testing.assert_allclose(table[[0, 2]], debye_sigma("C", 300.0))  # C is missing: Debye default


def test_per_direction_sigmas_are_honoured():
    spec = FrozenPhonons(n_configurations=64, seed=5, sigmas={"C": (0.1, 0.02, 0.0), "Si": (0.0, 0.0, 0.3)})
    u = np.asarray(spec.displacements([6, 14, 6]))
    np.testing.assert_array_equal(u[:, [0, 2], 2], 0.0)
    np.testing.assert_array_equal(u[:, 1, :2], 0.0)
    assert np.all(u[:, [0, 2], :2] != 0) and np.all(u[:, 1, 2] != 0)
    assert np.std(u[:, [0, 2], 0]) > 2 * np.std(u[:, [0, 2], 1])


def test_one_configuration_with_zero_sigmas_is_static():
    for sigmas in (0.0, {"C": 0.0, "Si": (0.0, 0.0, 0.0)}):
        u = FrozenPhonons(n_configurations=1, sigmas=sigmas).displacements([6, 14, 6])
        assert u.shape == (1, 3, 3)
        np.testing.assert_array_equal(np.asarray(u), 0.0)


# ---- sample statistics ------------------------------------------------------------------------------------

N_SAMPLES = 4000


@given(seed=st.integers(0, 2**32 - 1),
       sigma=st.tuples(st.floats(0.01, 0.3), st.floats(0.01, 0.3), st.floats(0.01, 0.3)))
def test_sample_statistics(seed, sigma):
    """Each (atom, direction) series is N(0, sigma^2), independent of every other series.

    With the mean known (0), sum(u^2) / sigma^2 is chi-square with n degrees of freedom; the sample mean is
    N(0, sigma^2 / n); and the correlation of two independent series is ~N(0, 1 / n).
    """
    spec = FrozenPhonons(n_configurations=N_SAMPLES, seed=seed, sigmas={"Si": sigma, "C": sigma[::-1]})
    numbers = [14, 6]
    u = np.asarray(spec.displacements(numbers), dtype=np.float64).reshape(N_SAMPLES, -1)  # (n, atoms * 3)
    s = spec.sigma_table(numbers).reshape(-1)
    n_series = u.shape[1]

    low, high = stats.chi2.ppf([ALPHA / (2 * n_series), 1 - ALPHA / (2 * n_series)], N_SAMPLES)
    chi_square = np.sum(u**2, axis=0) / s**2
    assert np.all((chi_square > low) & (chi_square < high)), (chi_square, low, high)

    z_mean = stats.norm.isf(ALPHA / (2 * n_series))
    assert np.all(np.abs(u.mean(axis=0)) < z_mean * s / math.sqrt(N_SAMPLES))

    n_pairs = n_series * (n_series - 1) // 2
    correlation = np.corrcoef(u, rowvar=False)[np.triu_indices(n_series, 1)]
    assert np.all(np.abs(correlation) < stats.norm.isf(ALPHA / (2 * n_pairs)) / math.sqrt(N_SAMPLES))
    lag_one = [np.corrcoef(u[1:, j], u[:-1, j])[0, 1] for j in range(n_series)]  # configurations independent
    assert np.all(np.abs(lag_one) < stats.norm.isf(ALPHA / (2 * n_series)) / math.sqrt(N_SAMPLES))


# ---- reproducibility ----------------------------------------------------------------------------------------

@given(seed=st.integers(0, 2**32 - 2), n=st.integers(1, 6))
def test_reproducible_and_rebuildable(seed, n):
    numbers = [6, 6, 14]
    spec = FrozenPhonons(n_configurations=n, seed=seed, sigmas=0.1)
    u = np.asarray(spec.displacements(numbers))
    assert u.shape == (n, 3, 3)
    again = FrozenPhonons(n_configurations=n, seed=seed, sigmas=0.1)
    np.testing.assert_array_equal(u, np.asarray(again.displacements(numbers)))
    for i in range(n):
        np.testing.assert_array_equal(u[i], np.asarray(spec.configuration(numbers, i)))
    # Configuration i from the documented key and the kernel (bitwise only within one compiled function).
    key = jax.random.fold_in(jax.random.key(seed), n - 1)
    np.testing.assert_allclose(u[n - 1], gaussian_displacements(key, jnp.full((3, 3), 0.1)), rtol=1e-6)
    more = FrozenPhonons(n_configurations=n + 3, seed=seed, sigmas=0.1)
    np.testing.assert_array_equal(np.asarray(more.displacements(numbers))[:n], u)  # independent of n
    other = FrozenPhonons(n_configurations=n, seed=seed + 1, sigmas=0.1)
    other = np.asarray(other.displacements(numbers))
    assert not np.any(other == u)
    if n > 1:
        assert not np.any(u[0] == u[1])


def test_kernel_jit_matches_eager_and_keeps_dtype(x64):
    key = jax.random.fold_in(jax.random.key(3), 2)
    spec = FrozenPhonons(n_configurations=2, sigmas={"Si": (0.1, 0.2, 0.3)})
    sigma = jnp.asarray(spec.sigma_table([14, 6]))
    np.testing.assert_allclose(jax.jit(gaussian_displacements)(key, sigma), gaussian_displacements(key, sigma),
                               rtol=1e-14)
    assert spec.displacements([6]).dtype == jnp.float64
    assert spec.configuration([6], 1, dtype=jnp.float32).dtype == jnp.float32
    assert spec.displacements([6], dtype=np.dtype("float32")).dtype == jnp.float32


def test_hashable_and_equal_with_mapping_sigmas():
    a = FrozenPhonons(n_configurations=2, sigmas={"Si": 0.1, "C": (0.1, 0.1, 0.0)})
    b = FrozenPhonons(n_configurations=2, sigmas={"C": (0.1, 0.1, 0.0), "Si": 0.1})
    assert a == b and hash(a) == hash(b)
    assert a != FrozenPhonons(n_configurations=2, seed=1, sigmas={"Si": 0.1, "C": (0.1, 0.1, 0.0)})
    assert hash(FrozenPhonons(n_configurations=3)) == hash(FrozenPhonons(n_configurations=3))


# ---- validation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    ({"n_configurations": 0}, ["n_configurations", "0", ">= 1"]),
    ({"n_configurations": -3}, ["n_configurations", "-3"]),
    ({"n_configurations": 2.0}, ["n_configurations", "2.0"]),
    ({"n_configurations": 1, "seed": -1}, ["seed", "-1"]),
    ({"n_configurations": 1, "temperature": 0.0}, ["temperature", "0.0", "> 0"]),
    ({"n_configurations": 1, "temperature": -10.0}, ["temperature", "-10.0"]),
    ({"n_configurations": 1, "temperature": math.nan}, ["temperature", "nan"]),
    ({"n_configurations": 1, "temperature": math.inf}, ["temperature", "inf"]),
    ({"n_configurations": 1, "sigmas": -0.1}, ["sigmas", "-0.1", ">= 0"]),
    ({"n_configurations": 1, "sigmas": math.nan}, ["sigmas", "nan", "finite"]),
    ({"n_configurations": 1, "sigmas": {"Si": -0.2}}, ["Si", "-0.2"]),
    ({"n_configurations": 1, "sigmas": {"C": (0.1, -0.05, 0.1)}}, ["C", "-0.05"]),
    ({"n_configurations": 1, "sigmas": {"C": (0.1, math.inf, 0.1)}}, ["C", "inf"]),
    ({"n_configurations": 1, "sigmas": {"C": (0.1, 0.1)}}, ["C", "(sx, sy, sz)"]),
    ({"n_configurations": 1, "sigmas": {"Qq": 0.1}}, ["Qq", "chemical symbol"]),
    ({"n_configurations": 1, "sigmas": {14: 0.1}}, ["14", "chemical symbol"]),
])
def test_bad_input_is_refused_with_field_and_value(kwargs, words):
    with pytest.raises(ValueError) as error:
        FrozenPhonons(**kwargs)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_element_without_debye_temperature_asks_for_sigmas():
    with pytest.raises(ValueError, match=re.escape("'H'")) as error:
        FrozenPhonons(n_configurations=2).displacements([14, 1])
    assert "sigmas" in str(error.value)
    table = FrozenPhonons(n_configurations=2, sigmas={"H": 0.12}).sigma_table([14, 1])  # the remedy works
    np.testing.assert_array_equal(table[1], 0.12)


def test_other_bad_calls():
    spec = FrozenPhonons(n_configurations=3, sigmas=0.1)
    with pytest.raises(ValueError, match=r"i=3 .*\[0, 3\)"):
        spec.configuration([6], 3)
    with pytest.raises(ValueError, match="number=0"):
        spec.sigma_table([6, 0])
    with pytest.raises(ValueError, match="theta_k=0.0"):
        debye_mean_square_displacement(12.0, 0.0, 300.0)
    with pytest.raises(ValueError, match="'Zz'"):
        debye_sigma("Zz")
