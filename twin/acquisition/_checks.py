"""Validation helpers shared by the acquisition specs."""

from __future__ import annotations

import math
import numbers


def is_number(value) -> bool:
    """True for a finite real number (bool excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def require(ok: bool, name: str, value, allowed: str) -> None:
    """Raise ValueError("name=value is not allowed; allowed") unless ok."""
    if not ok:
        raise ValueError(f"{name}={value!r} is not allowed; {allowed}")
