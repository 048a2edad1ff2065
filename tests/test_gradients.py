"""Gradients of a scalar image loss through the whole simulation, against central finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from twin.stem import AnnularDetector, GridScan, PotentialSpec, ProbeSpec
from twin.stem.detectors import CenterOfMassDetector
from twin.stem.simulate import make_stem_function, simulate
from twin.structures import graphene

ATOMS = graphene((1, 1))
ATOMS.numbers[1] = 14
KWARGS = dict(probe=ProbeSpec(energy=80e3, semiangle=25, aberrations={"defocus": 15.0, "C30": 1e4}),
              potential=PotentialSpec(sampling=0.12, slice_thickness=1.0),
              scan=GridScan(step=0.8),
              detectors=[AnnularDetector(name="BF", inner=0, outer=20),
                         AnnularDetector(name="HAADF", inner=50, outer=100), CenterOfMassDetector()])


@pytest.fixture(scope="module")
def problem():
    with jax.enable_x64(True):
        f, params = make_stem_function(ATOMS, precision="float64", **KWARGS)
        weights = {name: jax.random.normal(jax.random.key(i), out.shape, jnp.float64)
                   for i, (name, out) in enumerate(f(params).items())}

        def loss(p):
            out = f(p)
            return sum(jnp.sum(weights[n] * out[n]) * (1e3 if n == "HAADF" else 1.0) for n in out)

        yield jax.jit(loss), params


def central_difference(loss, params, direction, eps):
    plus = jax.tree.map(lambda p, d: p + eps * d, params, direction)
    minus = jax.tree.map(lambda p, d: p - eps * d, params, direction)
    return (loss(plus) - loss(minus)) / (2 * eps)


def random_direction(params, select, key):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return jax.tree.unflatten(tree, [jax.random.normal(k, jnp.shape(x), jnp.float64) * select(path)
                                     for k, x, path in zip(keys, leaves, paths)])


@pytest.mark.parametrize("group, eps", [("positions", 1e-4), ("aberrations", 1e-2), ("slice_thickness", 1e-4)])
def test_gradient_matches_central_differences(problem, group, eps):
    loss, params = problem
    with jax.enable_x64(True):
        scale = {"positions": 1.0, "aberrations": 1.0, "slice_thickness": 1.0}[group]

        def select(path):
            if group not in path:
                return 0.0
            return 1e-3 if "phi" in path else scale  # angles [rad] vary less than lengths [Angstrom]

        direction = random_direction(params, select, jax.random.key(7))
        grads = jax.grad(loss)(params)
        analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
        numeric = central_difference(loss, params, direction, eps)
        # Richardson extrapolation removes the O(eps^2) error of the central difference.
        numeric = (4 * central_difference(loss, params, direction, eps / 2) - numeric) / 3
    assert float(abs(analytic)) > 1e-6
    assert float(abs(analytic - numeric) / abs(analytic)) <= 1e-5, (float(analytic), float(numeric))


def test_function_values_equal_simulate(problem):
    f, params = make_stem_function(ATOMS, precision="float64", **KWARGS)
    with jax.enable_x64(True):
        out = jax.jit(f)(params)
    reference = simulate(ATOMS, precision="float64", **KWARGS)
    for name in out:
        np.testing.assert_allclose(np.asarray(out[name]), reference[name].values, rtol=1e-10, atol=1e-13)
