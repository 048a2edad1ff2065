"""Training-data recipes: a declarative TOML schema, its validation, a canonical hash and the parameter draw.

A recipe names a sample family and its parameters, the optics (STEM) or the tunnelling conditions (STM),
the acquisition, the fidelity tier, the labels, the number of samples and the seed. Each parameter is a
fixed value or a distribution table: ``{uniform = [lo, hi]}``, ``{loguniform = [lo, hi]}``,
``{normal = [mean, std]}`` (clipped to the parameter's allowed range), ``{choice = [a, b, ...]}`` or
``{randint = [lo, hi]}`` (inclusive). A pair parameter (``cells``, ``drift_ang_per_s``) is a ``choice`` of
pairs or a list of two elements, each fixed or distributed. Omitted optional keys take the defaults in
``SCHEMA`` (each listed beside its key); ``labels`` defaults to atoms, mask, heatmap, clean, parameters.
Parameter ``section.name`` is drawn with ``jax.random.fold_in(key, stable_int("section.name"))`` (element
``i`` of a pair as ``"section.name.i"``), so adding a parameter never changes the draws of the others and
``draw`` is a pure function of (recipe, key).
Example: ``recipe = load_recipe("datasets/recipes/graphene-dopants.toml")``, then
``draw(recipe, jax.random.fold_in(jax.random.key(recipe.data["seed"]), 17))["optics"]["semiangle_mrad"]`` [mrad].
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import jax
import numpy as np
import tomli_w

__all__ = ["SCHEMA", "Recipe", "RecipeError", "draw", "load_recipe", "parse_recipe", "recipe_hash",
           "save_recipe", "stable_int"]

REQUIRED = object()
DISTRIBUTIONS = ("uniform", "loguniform", "normal", "choice", "randint")
LABELS = ("atoms", "mask", "heatmap", "clean", "parameters", "polarization", "db_occupancy")
FAMILIES = ("graphene", "tmd", "perovskite", "si100h")


class RecipeError(ValueError):
    """A recipe that does not follow the schema; the message names the key path, the value and what is allowed."""


@dataclass(frozen=True)
class Param:
    """One parameter: kind in float | int | bool | str | strlist | intpair | floatpair; lo/hi bounds
    (open when lo_open/hi_open); choices for str and strlist items; default (REQUIRED if none)."""

    kind: str
    default: Any = REQUIRED
    lo: float = -math.inf
    hi: float = math.inf
    choices: tuple = ()
    lo_open: bool = False
    hi_open: bool = False
    fixed_only: bool = False

    def describe(self) -> str:
        if self.kind in ("str", "strlist"):
            head = "one of" if self.kind == "str" else "a list of distinct items from"
            return f"{head} {', '.join(map(repr, self.choices))}"
        if self.kind == "bool":
            return "true or false"
        if self.kind.endswith("pair"):
            return f"a pair [x, y] of {self.element().describe()}"
        noun = "an integer" if self.kind == "int" else "a number"
        return f"{noun} in {'(['[not self.lo_open]}{self.lo:g}, {self.hi:g}{')]'[not self.hi_open]}"

    def element(self) -> Param:
        kind = "int" if self.kind == "intpair" else "float"
        return Param(kind, lo=self.lo, hi=self.hi, lo_open=self.lo_open, hi_open=self.hi_open)

    def clip(self, value: float) -> float:
        lo = np.nextafter(self.lo, math.inf) if self.lo_open else self.lo
        hi = np.nextafter(self.hi, -math.inf) if self.hi_open else self.hi
        return float(min(max(value, lo), hi))


_FRACTION = dict(lo=0.0, hi=1.0)
CELLS_HI = 256
# SCHEMA[section][key] -> Param; sample keys are per family under SCHEMA["sample"][family].
SCHEMA: dict[str, Any] = {
    "top": {
        "name": Param("str"), "description": Param("str", default=""),
        "seed": Param("int", lo=0, hi=2**32 - 1, fixed_only=True),
        "n_samples": Param("int", lo=1, hi=10**9, fixed_only=True),
        "tier": Param("str", choices=("fast", "prism", "multislice", "stm"), fixed_only=True),
        "labels": Param("strlist", default=["atoms", "mask", "heatmap", "clean", "parameters"], choices=LABELS,
                    fixed_only=True),
        "instrument": Param("str", choices=("stem", "stm"), fixed_only=True),
    },
    "sample": {
        "graphene": {
            "cells": Param("intpair", default=[12, 7], lo=1, hi=CELLS_HI),
            "dopant_fraction": Param("float", default=0.0, lo=0.0, hi=0.1),
            "dopant_species": Param("strlist", default=["Si"], choices=("Si", "N", "P")),
            "vacancy_fraction": Param("float", default=0.0, lo=0.0, hi=0.05),
            "hole_radius_ang": Param("float", default=0.0, lo=0.0, hi=1e3),
            "edge": Param("bool", default=False),
            "vacuum_ang": Param("float", default=2.0, lo=0.0, hi=1e3, lo_open=True),
        },
        "tmd": {
            "material": Param("str", default="MoS2", choices=("MoS2", "WS2")),
            "cells": Param("intpair", default=[10, 6], lo=1, hi=CELLS_HI),
            "chalcogen_vacancy_fraction": Param("float", default=0.0, lo=0.0, hi=0.2),
            "metal_vacancy_fraction": Param("float", default=0.0, lo=0.0, hi=0.05),
            "antisite_fraction": Param("float", default=0.0, lo=0.0, hi=0.05),
        },
        "perovskite": {
            "a_site": Param("str", default="Sr", choices=("Sr", "Ba", "Pb", "Bi")),
            "b_site": Param("str", default="Ti", choices=("Ti", "Fe", "Zr")),
            "cells": Param("intpair", default=[8, 8], lo=1, hi=CELLS_HI),
            "thickness_cells": Param("int", default=10, lo=1, hi=1000),
            "polarization_pm": Param("float", default=0.0, lo=0.0, hi=40.0),
            "domain_wall": Param("str", default="none", choices=("none", "180", "90")),
            "wall_position": Param("float", default=0.5, **_FRACTION),
            "wall_width_cells": Param("float", default=1.0, lo=0.0, hi=1e3, lo_open=True),
        },
        "si100h": {
            "nx_dimers": Param("int", default=16, lo=1, hi=1024),
            "ny_rows": Param("int", default=8, lo=1, hi=1024),
            "db_fraction": Param("float", default=0.02, **_FRACTION),
            "bare_fraction": Param("float", default=0.0, **_FRACTION),
            "vacancy_fraction": Param("float", default=0.0, **_FRACTION),
        },
    },
    "optics": {
        "energy_ev": Param("float", default=60e3, lo=1e3, hi=1e6),
        "semiangle_mrad": Param("float", default=30.0, lo=0.0, hi=200.0, lo_open=True),
        "defocus_ang": Param("float", default=0.0, lo=-1e5, hi=1e5),
        "cs_ang": Param("float", default=0.0, lo=-1e8, hi=1e8),
        "c12_ang": Param("float", default=0.0, lo=0.0, hi=1e4),
        "phi12_rad": Param("float", default=0.0, lo=-2 * math.pi, hi=2 * math.pi),
        "source_size_ang": Param("float", default=0.0, lo=0.0, hi=10.0),
    },
    "stm": {
        "bias_v": Param("float", default=-1.8, lo=-10.0, hi=10.0),
        "setpoint_pa": Param("float", default=50.0, lo=0.0, hi=1e6, lo_open=True),
        "tip": Param("str", default="sharp", choices=("sharp", "blunt", "double")),
        "work_function_ev": Param("float", default=4.5, lo=0.0, hi=10.0, lo_open=True),
    },
    "acquisition": {
        "fov_ang": Param("float", default=25.0, lo=0.0, hi=1e4, lo_open=True),
        "pixels": Param("int", default=256, lo=8, hi=8192),
        "dwell_s": Param("float", default=2e-6, lo=0.0, hi=10.0, lo_open=True),
        "current_pa": Param("float", default=20.0, lo=0.0, hi=1e6, lo_open=True),
        "detector": Param("str", default="haadf", choices=("haadf", "adf", "bf", "abf")),
        "detector_model": Param("str", default="counting", choices=("counting", "pmt")),
        "pmt_enf": Param("float", default=1.0, lo=1.0, hi=10.0),
        "line_jitter_ang": Param("float", default=0.0, lo=0.0, hi=100.0),
        "drift_ang_per_s": Param("floatpair", default=[0.0, 0.0], lo=-1e4, hi=1e4),
        "distortion_rms": Param("float", default=0.0, lo=0.0, hi=0.5),
        "scan_rotation_rad": Param("float", default=0.0, lo=-2 * math.pi, hi=2 * math.pi),
        "heatmap_sigma_ang": Param("float", default=0.4, lo=0.0, hi=100.0, lo_open=True),
    },
}
STEM_ONLY_ACQUISITION = ("current_pa", "detector", "detector_model", "pmt_enf")


def _fail(path: str, value, problem: str, allowed: str):
    raise RecipeError(f"{path} = {value!r}: {problem}; allowed: {allowed}")


def _fixed(path: str, spec: Param, value):
    """Check one fixed value against spec; return it normalized (floats as float, lists as list)."""
    kind = spec.kind
    types = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}.get(kind, (list,))
    if (not isinstance(value, types) or (isinstance(value, bool) and kind != "bool")
            or (kind in ("float", "int") and not math.isfinite(value))):
        _fail(path, value, f"wrong type ({type(value).__name__})", spec.describe())
    if kind in ("float", "int"):
        lo, hi = spec.lo, spec.hi
        if value < lo or value > hi or (spec.lo_open and value == lo) or (spec.hi_open and value == hi):
            _fail(path, value, "out of range", spec.describe())
        return float(value) if kind == "float" else int(value)
    if kind == "str" and spec.choices and value not in spec.choices:
        _fail(path, value, "not an allowed value", spec.describe())
    if kind in ("str", "bool"):
        return value
    if kind == "strlist":
        bad = [v for v in value if not isinstance(v, str) or v not in spec.choices]
        if not value or bad or len(set(value)) != len(value):
            _fail(path, value, "empty, repeated or unknown items", spec.describe())
        return list(value)
    if len(value) != 2:
        _fail(path, value, f"{len(value)} elements", spec.describe())
    return [_fixed(f"{path}.{i}", spec.element(), v) for i, v in enumerate(value)]


def _distribution(path: str, spec: Param, table: dict) -> dict:
    """Check a one-entry distribution table against spec; return it normalized."""
    numeric = {"float": ("uniform", "loguniform", "normal", "choice"), "int": ("randint", "choice")}
    allowed = numeric.get(spec.kind, ("choice",))
    if len(table) != 1:
        _fail(path, table, "a distribution table holds exactly one entry", ", ".join(DISTRIBUTIONS))
    (name, args), = table.items()
    if name not in DISTRIBUTIONS:
        _fail(path, table, f"unknown distribution {name!r}", ", ".join(DISTRIBUTIONS))
    if name not in allowed:
        _fail(path, table, f"{name!r} does not apply to {spec.describe()}", ", ".join(allowed))
    where = f"{path}.{name}"
    if not isinstance(args, list) or not args:
        _fail(where, args, "wrong arguments", "a non-empty list")
    if name == "choice":
        return {name: [_fixed(f"{where}.{i}", spec, v) for i, v in enumerate(args)]}
    if len(args) != 2:
        _fail(where, args, f"{len(args)} arguments", "[lo, hi]" if name != "normal" else "[mean, std]")
    if name == "normal":
        mean, std = _fixed(f"{where}.0", spec, args[0]), args[1]
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 <= std < math.inf:
            _fail(f"{where}.1", std, "invalid standard deviation", "a number >= 0")
        return {name: [mean, float(std)]}
    lo, hi = (_fixed(f"{where}.{i}", spec, v) for i, v in enumerate(args))
    if lo > hi:
        _fail(where, args, "inverted range (lo > hi)", f"[lo, hi] with lo <= hi, each {spec.describe()}")
    if name == "loguniform" and lo <= 0:
        _fail(where, args, "loguniform needs lo > 0", "0 < lo <= hi")
    return {name: [lo, hi]}


def _value(path: str, spec: Param, value):
    """A fixed value or a distribution table; pairs may also hold a distribution per element."""
    if isinstance(value, dict):
        if spec.fixed_only:
            _fail(path, value, "this key takes a fixed value", spec.describe())
        return _distribution(path, spec, value)
    if spec.kind.endswith("pair") and isinstance(value, list) and len(value) == 2:
        return [_value(f"{path}.{i}", spec.element(), v) for i, v in enumerate(value)]
    return _fixed(path, spec, value)


def _section(path: str, schema: dict, given, foreign: dict | None = None) -> dict:
    """Validate one table: unknown keys, missing required keys, each value; fill the defaults."""
    if not isinstance(given, dict):
        _fail(path, given, f"wrong type ({type(given).__name__})", "a table")
    out = {}
    for key, value in given.items():
        where = f"{path}.{key}".lstrip(".")
        if key not in schema:
            owner = [fam for fam, keys in (foreign or {}).items() if key in keys]
            problem = f"a {owner[0]} parameter, not allowed here" if owner else "unknown key"
            _fail(where, value, problem, ", ".join(schema))
        out[key] = _value(where, schema[key], value)
    for key, spec in schema.items():
        if key not in out:
            if spec.default is REQUIRED:
                _fail(f"{path}.{key}".lstrip("."), None, "missing required key", spec.describe())
            out[key] = json.loads(json.dumps(spec.default))
    return out


def _validate(mapping: Mapping) -> dict:
    mapping = dict(mapping)
    sections = ("sample", "optics", "stm", "acquisition")
    for key, value in mapping.items():
        if key not in SCHEMA["top"] and key not in sections:
            _fail(key, value, "unknown key", ", ".join([*SCHEMA["top"], *sections]))
    top = _section("", SCHEMA["top"], {k: v for k, v in mapping.items() if k not in sections})
    stm = top["instrument"] == "stm"
    if (top["tier"] == "stm") != stm:
        _fail("tier", top["tier"], f"does not match instrument {top['instrument']!r}",
              "'stm' for instrument 'stm'; 'fast', 'prism' or 'multislice' for 'stem'")
    sample = mapping.get("sample", {})
    if not isinstance(sample, dict):
        _fail("sample", sample, f"wrong type ({type(sample).__name__})", "a table")
    if "family" not in sample:
        _fail("sample.family", None, "missing required key", f"one of {', '.join(map(repr, FAMILIES))}")
    family = _fixed("sample.family", Param("str", choices=FAMILIES), sample["family"])
    if (family == "si100h") != stm:
        _fail("sample.family", family, f"not imaged by instrument {top['instrument']!r}",
              "'si100h' with instrument 'stm'; 'graphene', 'tmd' or 'perovskite' with 'stem'")
    families = SCHEMA["sample"]
    others = {f: keys for f, keys in families.items() if f != family}
    body = _section("sample", families[family], {k: v for k, v in sample.items() if k != "family"}, others)
    out = {**top, "sample": {"family": family, **body}}
    optics, absent = ("stm", "optics") if stm else ("optics", "stm")
    if absent in mapping:
        _fail(absent, mapping[absent], f"not a section of an {top['instrument']!r} recipe",
              f"[{optics}] and [acquisition]")
    out[optics] = _section(optics, SCHEMA[optics], mapping.get(optics, {}))
    acquisition = {k: v for k, v in SCHEMA["acquisition"].items() if not (stm and k in STEM_ONLY_ACQUISITION)}
    out["acquisition"] = _section("acquisition", acquisition, mapping.get("acquisition", {}),
                                  {"stem": STEM_ONLY_ACQUISITION} if stm else None)
    for label, needs in (("polarization", "perovskite"), ("db_occupancy", "si100h")):
        if label in top["labels"] and family != needs:
            _fail("labels", top["labels"], f"label {label!r} needs family {needs!r}",
                  f"labels of family {family!r}")
    return out


def _freeze(x):
    if isinstance(x, dict):
        return MappingProxyType({k: _freeze(v) for k, v in x.items()})
    return tuple(_freeze(v) for v in x) if isinstance(x, list) else x


def _thaw(x):
    if isinstance(x, Mapping):
        return {k: _thaw(v) for k, v in x.items()}
    return [_thaw(v) for v in x] if isinstance(x, (tuple, list)) else x


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: data is the read-only nested content with every default filled;
    path is the file it came from (None if parsed from a mapping; ignored by ==)."""

    data: Mapping[str, Any]
    path: Path | None = field(default=None, compare=False)

    name = property(lambda self: self.data["name"], doc="the recipe's name")
    seed = property(lambda self: self.data["seed"], doc="root seed: sample i uses fold_in(PRNGKey(seed), i)")
    n_samples = property(lambda self: self.data["n_samples"], doc="number of samples")
    tier = property(lambda self: self.data["tier"], doc="fast | prism | multislice | stm")
    instrument = property(lambda self: self.data["instrument"], doc="stem | stm")

    def to_dict(self) -> dict:
        """A mutable deep copy of the content (plain dicts and lists)."""
        return _thaw(self.data)

    def __hash__(self) -> int:
        return hash(recipe_hash(self))


def parse_recipe(mapping: Mapping, path: str | os.PathLike | None = None) -> Recipe:
    """Validate a nested mapping (as read from TOML) and return a Recipe; RecipeError names the bad key."""
    return Recipe(_freeze(_validate(_thaw(mapping))), None if path is None else Path(path))


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a TOML recipe; syntax errors name the file and the line."""
    path = Path(path)
    try:
        mapping = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{path}: TOML syntax error: {error}") from error
    try:
        return parse_recipe(mapping, path)
    except RecipeError as error:
        raise RecipeError(f"{path}: {error}") from None


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the recipe (defaults filled) as TOML, atomically: a temporary file, then a rename."""
    from twin.io import atomic_path

    with atomic_path(path) as temporary:
        temporary.write_text(tomli_w.dumps(recipe.to_dict()), encoding="utf-8")


def recipe_hash(recipe: Recipe) -> str:
    """sha256 (hex) of the canonical JSON of the validated content: independent of key order and comments."""
    text = json.dumps(recipe.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def stable_int(name: str) -> int:
    """A 31-bit integer from sha256(name), the same in every process and Python version."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _draw_one(key, path: str, spec: Param, value):
    if spec.kind.endswith("pair") and isinstance(value, list):
        return [_draw_one(key, f"{path}.{i}", spec.element(), v) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    (name, args), = value.items()
    sub = jax.random.fold_in(key, stable_int(path))
    if name == "choice":
        return args[int(jax.random.randint(sub, (), 0, len(args)))]
    if name == "randint":
        return int(jax.random.randint(sub, (), args[0], args[1] + 1))
    if name == "normal":
        return spec.clip(args[0] + args[1] * float(jax.random.normal(sub, ())))
    u = float(jax.random.uniform(sub, ()))
    if name == "loguniform":
        lo, hi = math.log(args[0]), math.log(args[1])
        return float(min(max(math.exp(lo + u * (hi - lo)), args[0]), args[1]))
    return float(min(max(args[0] + u * (args[1] - args[0]), args[0]), args[1]))


def draw(recipe: Recipe, key: jax.Array) -> dict:
    """Concrete parameter values for one sample: {"sample": {...}, "optics" | "stm": {...}, "acquisition": {...}}.

    key: a jax.random key (typed or raw); each distributed parameter `section.name` is drawn with
    fold_in(key, stable_int("section.name")). Units are those in the key names (Angstrom, eV, mrad, s, pA).
    """
    data = recipe.to_dict()
    family = data["sample"]["family"]
    out = {}
    for section in [name for name in ("sample", "optics", "stm", "acquisition") if name in data]:
        schema = SCHEMA["sample"][family] if section == "sample" else SCHEMA[section]
        out[section] = {name: value if name == "family" else
                        _draw_one(key, f"{section}.{name}", schema[name], value)
                        for name, value in data[section].items()}
    return out
