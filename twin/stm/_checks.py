"""Validation helpers shared by the STM specs.

Traced values (a spec rebuilt inside `jax.grad` with `dataclasses.replace`, to differentiate with respect to
one of its numbers) are not checked: a tracer has no concrete value.
"""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np


def is_traced(value) -> bool:
    """True for a JAX tracer (a value inside jit / grad)."""
    return isinstance(value, jax.core.Tracer)


def require(ok: bool, name: str, value, allowed: str) -> None:
    """Raise ValueError("name=value is not allowed; allowed") unless ok."""
    if not ok:
        raise ValueError(f"{name}={value!r} is not allowed; {allowed}")


def check_number(name: str, value, low: float = -math.inf, high: float = math.inf, *,
                 open_low: bool = False, unit: str = "") -> None:
    """Require a finite real number (bool excluded) in [low, high] ((low, high] when open_low)."""
    if is_traced(value):
        return
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.shape(value) == ():
        value = np.asarray(value).item()  # a concrete 0-d array (numerical differentiation) counts as a number
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if open_low else low <= value) and value <= high
    bracket = "(" if open_low else "["
    require(ok, name, value, f"give a number in {bracket}{low}, {high}]{' ' + unit if unit else ''}")


def check_vector(name: str, value, length: int, *, unit: str = "") -> tuple[float, ...]:
    """Require `length` finite real numbers; return them as a tuple of floats (tracers kept)."""
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    require(len(items) == length, name, value, f"give {length} numbers{' [' + unit + ']' if unit else ''}")
    for i, v in enumerate(items):
        check_number(f"{name}[{i}]", v, unit=unit)
    return tuple(v if is_traced(v) else float(v) for v in items)
