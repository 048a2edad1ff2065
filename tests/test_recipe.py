"""Recipes: the shipped recipes load, round-trip and hash stably; draws are deterministic, in range and
independent across parameters; every class of bad input names its key path."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import jax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.generate.recipe import (SCHEMA, Recipe, RecipeError, draw, load_recipe, parse_recipe, recipe_hash,
                                  save_recipe, stable_int)

RECIPE_DIR = Path(__file__).parents[1] / "datasets" / "recipes"
RECIPES = sorted(RECIPE_DIR.glob("*.toml"))
SHIPPED = ["graphene-dopants", "perovskite-polarization", "si-h-dangling-bonds", "tmd-defects"]
MINIMAL = {"name": "m", "seed": 0, "n_samples": 4, "tier": "fast", "instrument": "stem",
           "sample": {"family": "graphene"}}


def _raw(name: str) -> dict:
    return tomllib.loads((RECIPE_DIR / f"{name}.toml").read_text())


def test_all_shipped_recipes_load_and_have_cards():
    assert set(SHIPPED) <= {p.stem for p in RECIPES}
    for path in RECIPES:
        recipe = load_recipe(path)
        assert recipe.data["name"] == path.stem and recipe.path == path
        card = re.search(r"Data card: (datasets/cards/[\w.-]+\.md)", path.read_text())  # named in the header
        assert card, f"{path.name} names no data card"
        assert path.stem in (path.parents[2] / card.group(1)).read_text()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_round_trip_is_equal_with_the_same_hash(path, tmp_path):
    recipe = load_recipe(path)
    save_recipe(recipe, tmp_path / "copy.toml")
    again = load_recipe(tmp_path / "copy.toml")
    assert again == recipe and recipe_hash(again) == recipe_hash(recipe)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.toml"]  # no temporary left behind


def test_hash_ignores_key_order_and_comments_but_not_values():
    raw = _raw("graphene-dopants")
    shuffled = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v)
                for k, v in reversed(list(raw.items()))}
    text = (RECIPE_DIR / "graphene-dopants.toml").read_text()
    commented = tomllib.loads("# a comment\n" + text.replace("\n", "  # note\n", 3))
    reference = recipe_hash(parse_recipe(raw))
    assert recipe_hash(parse_recipe(shuffled)) == reference == recipe_hash(parse_recipe(commented))
    changed = copy.deepcopy(raw)
    changed["optics"]["semiangle_mrad"] = {"uniform": [25.0, 36.0]}
    assert recipe_hash(parse_recipe(changed)) != reference


def test_defaults_are_filled_and_ints_normalized():
    recipe = parse_recipe(MINIMAL)
    assert recipe.data["sample"]["cells"] == (12, 7)
    assert recipe.data["acquisition"]["heatmap_sigma_ang"] == 0.4
    assert recipe.data["optics"]["energy_ev"] == 60e3
    explicit = copy.deepcopy(MINIMAL)
    explicit["optics"] = {"energy_ev": 60000}
    assert recipe_hash(parse_recipe(explicit)) == recipe_hash(recipe)
    assert isinstance(recipe, Recipe) and hash(recipe) == hash(parse_recipe(explicit))


def test_recipe_is_read_only():
    recipe = parse_recipe(MINIMAL)
    with pytest.raises(TypeError):
        recipe.data["seed"] = 3
    recipe.to_dict()["sample"]["cells"][0] = 99
    assert recipe.data["sample"]["cells"][0] == 12


def _within(spec, table_or_value, drawn):
    """drawn lies in the declared distribution and in the parameter's allowed range."""
    if spec.kind.endswith("pair") and isinstance(table_or_value, (list, tuple)):
        return all(_within(spec.element(), t, d) for t, d in zip(table_or_value, drawn))
    if spec.kind in ("float", "int") and not (spec.lo <= drawn <= spec.hi):
        return False
    if not isinstance(table_or_value, dict):
        return drawn == table_or_value
    (name, args), = table_or_value.items()
    if name == "choice":
        return drawn in args
    if name == "normal":
        return True
    return args[0] <= drawn <= args[1] and (name != "randint" or isinstance(drawn, int))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 10**6))
def test_draws_respect_ranges(seed, index):
    key = jax.random.fold_in(jax.random.key(seed), index)
    for path in RECIPES:
        recipe = load_recipe(path)
        data = recipe.to_dict()
        values = draw(recipe, key)
        family = data["sample"]["family"]
        for section, drawn in values.items():
            schema = SCHEMA["sample"][family] if section == "sample" else SCHEMA[section]
            for name, value in drawn.items():
                if name != "family":
                    assert _within(schema[name], data[section][name], value), (path.stem, section, name, value)


def test_draw_is_deterministic_and_differs_across_keys():
    recipe = load_recipe(RECIPES[0])
    first = draw(recipe, jax.random.key(7))
    assert draw(recipe, jax.random.key(7)) == first
    assert draw(recipe, jax.random.PRNGKey(7)) == first
    assert draw(recipe, jax.random.key(8))["optics"] != first["optics"]
    assert draw(recipe, jax.random.key(8))["acquisition"]["drift_ang_per_s"] != first["acquisition"]["drift_ang_per_s"]


def test_adding_a_parameter_leaves_other_draws_unchanged():
    raw = _raw("graphene-dopants")
    del raw["optics"]["c12_ang"], raw["acquisition"]["line_jitter_ang"]
    fewer = draw(parse_recipe(raw), jax.random.key(3))
    raw["optics"]["c12_ang"] = {"uniform": [0.0, 5.0]}
    raw["acquisition"]["line_jitter_ang"] = {"loguniform": [0.01, 0.1]}
    more = draw(parse_recipe(raw), jax.random.key(3))
    for section in fewer:
        for name, value in fewer[section].items():
            if name not in ("c12_ang", "line_jitter_ang"):
                assert more[section][name] == value, name


def test_stable_int_is_stable():
    assert stable_int("optics.energy_ev") == stable_int("optics.energy_ev") != stable_int("optics.cs_ang")
    assert 0 <= stable_int("x") < 2**31


def _with(section: str | None, key: str, value, base=None) -> dict:
    raw = copy.deepcopy(base or MINIMAL)
    (raw.setdefault(section, {}) if section else raw)[key] = value
    return raw


def _without(section: str | None, key: str) -> dict:
    raw = copy.deepcopy(MINIMAL)
    del (raw[section] if section else raw)[key]
    return raw


STM = {"name": "s", "seed": 0, "n_samples": 1, "tier": "stm", "instrument": "stm", "sample": {"family": "si100h"}}
BAD = {
    "unknown key": (_with("optics", "semiangle", 30.0), "optics.semiangle", "semiangle_mrad"),
    "unknown top key": (_with(None, "sead", 1), "sead", "seed"),
    "wrong type": (_with("optics", "energy_ev", "60 kV"), "optics.energy_ev", "wrong type"),
    "bool as number": (_with("acquisition", "pixels", True), "acquisition.pixels", "integer"),
    "float for int": (_with("acquisition", "pixels", 256.5), "acquisition.pixels", "integer"),
    "out of range": (_with("sample", "dopant_fraction", 0.3), "sample.dopant_fraction", "[0, 0.1]"),
    "open bound": (_with("sample", "vacuum_ang", 0.0), "sample.vacuum_ang", "(0, 1000]"),
    "range end out of range": (_with("optics", "semiangle_mrad", {"uniform": [20.0, 500.0]}),
                               "optics.semiangle_mrad.uniform.1", "out of range"),
    "inverted range": (_with("optics", "semiangle_mrad", {"uniform": [35.0, 25.0]}),
                       "optics.semiangle_mrad.uniform", "inverted"),
    "inverted randint": (_with("sample", "cells", [{"randint": [9, 5]}, 7]), "sample.cells.0.randint", "inverted"),
    "loguniform at zero": (_with("acquisition", "line_jitter_ang", {"loguniform": [0.0, 0.1]}),
                           "acquisition.line_jitter_ang.loguniform", "0 < lo"),
    "open bound in a range": (_with("acquisition", "current_pa", {"loguniform": [0.0, 5.0]}),
                              "acquisition.current_pa.loguniform.0", "(0, 1e+06]"),
    "negative std": (_with("optics", "defocus_ang", {"normal": [0.0, -1.0]}), "optics.defocus_ang.normal.1",
                     ">= 0"),
    "unknown distribution": (_with("optics", "cs_ang", {"gauss": [0.0, 1.0]}), "optics.cs_ang", "loguniform"),
    "distribution of wrong kind": (_with("acquisition", "pixels", {"uniform": [128, 256]}),
                                   "acquisition.pixels", "randint"),
    "two distributions": (_with("optics", "cs_ang", {"uniform": [0, 1], "normal": [0, 1]}), "optics.cs_ang",
                          "exactly one"),
    "bad choice": (_with("acquisition", "detector", {"choice": ["haadf", "eels"]}),
                   "acquisition.detector.choice.1", "'abf'"),
    "bad species": (_with("sample", "dopant_species", ["Si", "B"]), "sample.dopant_species", "'N'"),
    "bad label": (_with(None, "labels", ["atoms", "edges"]), "labels", "'heatmap'"),
    "label of another family": (_with(None, "labels", ["polarization"]), "labels", "perovskite"),
    "distributed seed": (_with(None, "seed", {"randint": [0, 5]}), "seed", "fixed value"),
    "pair of three": (_with("acquisition", "drift_ang_per_s", [0.0, 0.0, 0.0]), "acquisition.drift_ang_per_s",
                      "pair"),
    "tier and instrument": (_with(None, "tier", "stm"), "tier", "'stm' for instrument 'stm'"),
    "family of another instrument": (_with("sample", "family", "si100h"), "sample.family", "'si100h' with"),
    "family-specific key": (_with("sample", "material", "MoS2"), "sample.material", "a tmd parameter"),
    "perovskite key in tmd": (_with("sample", "polarization_pm", 10.0, _with("sample", "family", "tmd")),
                              "sample.polarization_pm", "a perovskite parameter"),
    "stem key in stm": (_with("acquisition", "current_pa", 20.0, STM), "acquisition.current_pa", "stem parameter"),
    "optics in stm": (_with("optics", "energy_ev", 6e4, STM), "optics", "[stm]"),
    "stm section in stem": (_with("stm", "bias_v", -1.8), "stm", "[optics]"),
    "unknown family": (_with("sample", "family", "gold"), "sample.family", "'perovskite'"),
    "missing family": (_with(None, "sample", {"cells": [3, 3]}), "sample.family", "missing"),
    "section not a table": (_with(None, "acquisition", 5), "acquisition", "a table"),
}
BAD.update({f"missing {k}": (_without(None, k), k, "missing") for k in ("name", "seed", "n_samples", "tier",
                                                                        "instrument")})


@pytest.mark.parametrize("case", BAD, ids=str)
def test_bad_input_names_the_key_path(case):
    raw, path, allowed = BAD[case]
    with pytest.raises(ValueError) as error:
        parse_recipe(raw)
    message = str(error.value)
    assert isinstance(error.value, RecipeError)
    assert message.startswith(path + " ") or f" {path} " in message, message
    assert allowed in message, message


def test_toml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('name = "x"\nseed = 0\n[optics\nenergy_ev = 6e4\n')
    with pytest.raises(RecipeError, match=r"broken\.toml.*line 3"):
        load_recipe(bad)


def test_load_prefixes_the_file_name(tmp_path):
    path = tmp_path / "wrong.toml"
    path.write_text('name = "x"\nseed = 0\nn_samples = 1\ntier = "fast"\ninstrument = "stem"\n'
                    '[sample]\nfamily = "graphene"\n[optics]\nsemiangle_mrad = {uniform = [5, 2]}\n')
    with pytest.raises(RecipeError, match=r"wrong\.toml: optics\.semiangle_mrad\.uniform = \[5, 2\]: inverted"):
        load_recipe(path)
