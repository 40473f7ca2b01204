"""Execution shell: executors (serial, local processes, Ray), run store with resume, progress.

Examples
--------
A small phase diagram (one cell, ten pairs) into a fresh run directory; the run
itself takes about 5 s (figures and report included), so it is skipped as a doctest:

>>> from tokensde.experiments import REGISTRY
>>> from tokensde.runtime import run_experiment
>>> exp = REGISTRY["phase-diagram"]
>>> cfg = exp.Config(d=[3], beta=[1.0], runs=10, T=1.0, T_max=1.0)
>>> exp.name, cfg.d, cfg.runs
('phase-diagram', [3], 10)
>>> import tempfile, pathlib  # doctest: +SKIP
>>> out = pathlib.Path(tempfile.mkdtemp()) / "run"  # doctest: +SKIP
>>> verdict = run_experiment(exp, cfg, out, show_progress=False)  # doctest: +SKIP
>>> sorted(verdict)  # doctest: +SKIP
['checks', 'notes', 'verdict']
>>> "report.html" in {p.name for p in out.iterdir()}  # doctest: +SKIP
True
"""

from .executors import EXECUTORS, ExecutorOptions, default_executor
from .runner import Interrupted, run_experiment
from .store import RunStore

__all__ = ["EXECUTORS", "ExecutorOptions", "Interrupted", "RunStore", "default_executor", "run_experiment"]
