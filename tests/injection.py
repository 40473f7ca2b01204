"""Shared by the fail-injection tests: run an experiment small through its pure pieces, and name failed checks."""

from __future__ import annotations

from typing import Any

import pandas as pd

from tokensde.experiments import REGISTRY


def run(name: str, config: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``(table, verdict)`` of experiment ``name`` at ``config`` on the CPU (plan, run_unit, summarize, verdict)."""
    exp = REGISTRY[name]
    cfg = exp.Config(**config)
    rows = [r for u in exp.plan(cfg) for r in exp.run_unit(cfg, u, "cpu")]
    table = exp.summarize(cfg, rows)
    return table, exp.verdict(cfg, table)


def failed(v: dict[str, Any]) -> set[str]:
    """Names of the checks of verdict ``v`` that failed."""
    return {c["name"] for c in v["checks"] if not c["passed"]}
