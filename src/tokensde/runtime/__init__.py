"""Execution shell: executors (serial, local processes, Ray), run store with resume, progress."""

from .executors import EXECUTORS, ExecutorOptions, default_executor
from .runner import Interrupted, run_experiment
from .store import RunStore

__all__ = ["EXECUTORS", "ExecutorOptions", "Interrupted", "RunStore", "default_executor", "run_experiment"]
