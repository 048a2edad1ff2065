"""Which dynamics a sample gets: by name, or "auto" from what the sample is."""

from __future__ import annotations

from twin.dynamics.bi_si import BiInSi
from twin.dynamics.engine import AbstractDynamics
from twin.dynamics.si_graphene import SiInGraphene

MODELS = {"si-graphene": SiInGraphene, "bi-si": BiInSi}
SAMPLE_DYNAMICS = {"graphene-si": "si-graphene", "bi-si": "bi-si"}


def make_dynamics(choice, atoms, sample_name: str | None = None) -> AbstractDynamics | None:
    """The dynamics for `atoms`: choice is "auto" (the sample's own physics, or none if it has none), "none"
    or None (a static sample), a name in MODELS, or an AbstractDynamics. A named model that does not describe
    the sample is a ValueError naming both."""
    if choice is None or choice == "none":
        return None
    if isinstance(choice, AbstractDynamics):
        model = choice
    elif choice == "auto":
        name = SAMPLE_DYNAMICS.get(sample_name or "")
        if name is None and set(atoms.numbers) == {6, 14}:
            name = "si-graphene"
        if name is None and set(atoms.numbers) == {14, 83}:
            name = "bi-si"
        if name is None:
            return None
        model = MODELS[name]()
    elif choice in MODELS:
        model = MODELS[choice]()
    else:
        raise ValueError(f"dynamics={choice!r} is not allowed; allowed: auto, none, {', '.join(MODELS)}")
    try:
        model.check(atoms)
    except ValueError as e:
        raise ValueError(f"dynamics={model.name!r} cannot evolve sample {sample_name or 'custom'!r}: {e}") from None
    return model
