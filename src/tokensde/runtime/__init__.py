"""Execution shell: run store, serial execution with resume, progress."""

from .runner import run_experiment
from .store import RunStore

__all__ = ["RunStore", "run_experiment"]
