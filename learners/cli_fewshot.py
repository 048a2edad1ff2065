"""Learner commands: see learners/cli.py."""

from learners.cli import app, fit_app  # noqa: F401
