"""Drive an experiment: plan -> units (resumable) -> table -> verdict -> figures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..experiments.base import Experiment
from ..report import build_report, paper_style
from .store import RunStore

__all__ = ["run_experiment"]


def run_experiment(
    exp: Experiment, cfg: Any, out: Path, device: str = "cpu", show_progress: bool = True
) -> dict[str, Any]:
    """Run every unit not already finished in ``out``, then summarise; returns the verdict."""
    store = RunStore(out)
    manifest = store.start(exp.name, cfg.model_dump(), device)
    t0 = time.time()
    units = exp.plan(cfg)
    costs = {u["id"]: exp.unit_cost(cfg, u) for u in units}
    rows: list[dict[str, Any]] = []
    todo = []
    for u in units:
        got = store.load_unit(u["id"])
        if got is None:
            todo.append(u)
        else:
            rows.extend(got)
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not show_progress, transient=False) as bar:
        total = bar.add_task(
            f"{exp.name}",
            total=sum(costs.values()),
            completed=int(sum(costs.values()) - sum(costs[u["id"]] for u in todo)),
        )
        for u in todo:
            task = bar.add_task(f"  {u['id']}", total=costs[u["id"]])

            def tick(active: float, task: TaskID = task) -> None:
                bar.advance(task, active)
                bar.advance(total, active)

            got = exp.run_unit(cfg, u, device, tick)
            store.save_unit(u["id"], got)
            rows.extend(got)
            bar.update(task, completed=costs[u["id"]])
    table = exp.summarize(cfg, rows)
    store.write_table(table)
    verdict = exp.verdict(cfg, table)
    store.write_json("verdict.json", verdict)
    with paper_style():
        figures = store.write_figures(exp.figures(cfg, table))
    traj = exp.trajectory(cfg, device)
    if traj is not None:
        store.write_trajectory(traj)
    store.finish(manifest, elapsed_s=time.time() - t0, units_resumed=len(units) - len(todo), figures=figures)
    build_report(out)
    return verdict
