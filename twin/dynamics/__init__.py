"""Beam-induced sample dynamics: a kinetic Monte Carlo engine and the physics of each sample family."""

from twin.dynamics.engine import AbstractDynamics as AbstractDynamics
from twin.dynamics.engine import Channel as Channel
from twin.dynamics.engine import Exposure as Exposure
from twin.dynamics.engine import advance as advance
from twin.dynamics.models import MODELS as MODELS
from twin.dynamics.models import make_dynamics as make_dynamics
