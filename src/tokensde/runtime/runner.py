"""Drive an experiment: plan -> units (resumable, any executor) -> table -> verdict -> figures.

Interruption. While units run, SIGINT and SIGTERM raise :class:`Interrupted` in the
main process (never in the middle of writing a unit file: the signal waits for
the write to end); the executor then cancels what is pending and ends its
workers, and every unit finished so far is already on disk. Re-running the same
command resumes.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..experiments.base import Experiment
from ..experiments.verdict import settle
from ..report import build_report, paper_style
from ..report.html import check_report_target
from .executors import ExecutorOptions, open_executor
from .store import RunStore, unit_provenance

__all__ = ["Interrupted", "run_experiment"]


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``signum`` is the signal, ``finished`` the units on disk, ``total`` all."""

    def __init__(self, signum: int, finished: int = 0, total: int = 0) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.finished, self.total = signum, finished, total

    @property
    def exit_code(self) -> int:
        """``128 + signum``: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class _Signals:
    """SIGINT/SIGTERM -> :class:`Interrupted`, deferred while a unit file is being written."""

    def __init__(self) -> None:
        self.critical = False
        self.pending: int | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.critical:
            self.pending = signum
        else:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self.handler)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
            if self.pending is not None:
                signum, self.pending = self.pending, None
                raise Interrupted(signum)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_experiment(
    exp: Experiment,
    cfg: Any,
    out: Path,
    device: str = "cpu",
    show_progress: bool = True,
    executor: ExecutorOptions | None = None,
    warn: Callable[[str], None] = _warn,
    force: bool = False,
) -> dict[str, Any]:
    """Run every unit not already finished in ``out``, then summarise; returns the verdict.

    ``executor`` defaults to serial execution with this process's current thread count per
    unit. Its ``workers`` and ``threads`` (``"auto"``: :func:`~tokensde.runtime.executors.auto_threads`)
    are fixed once, for the units that still have to run (not those a resumed run already has), and
    recorded in the manifest (``execution``: resolved ``workers`` and ``threads``, and
    ``threads_requested``). Before anything is written, ``out`` is checked (see
    :class:`~tokensde.runtime.store.RunStore`; ``force`` writes into a non-empty directory
    that is not a run) and the run's memory estimate is compared with what the device
    has free (:mod:`tokensde.runtime.memory`); both raise
    :class:`~tokensde.errors.UsageError`. The directory stays locked while the run
    writes it. Raises :class:`Interrupted` on SIGINT/SIGTERM (finished units kept).
    """
    from .memory import check_fits, estimate_run

    options = executor or ExecutorOptions()
    store = RunStore(out)
    config = cfg.model_dump(mode="json")
    store.inspect(exp.name, config, force)
    check_report_target(out / "report.html", force)  # refused now rather than after the compute
    units = exp.plan(cfg)
    workers = estimate_workers(options, device, len(units))
    need = estimate_run(exp, cfg, units, device, workers)
    check_fits(need["bytes"], device, need["what"], need["hint"])
    with store.session(exp.name, config, device, force=force) as manifest:
        return _run(exp, cfg, units, store, manifest, device, show_progress, options, warn, force)


def estimate_workers(options: ExecutorOptions, device: str, units: int) -> int:
    """How many units run at once on this machine under ``options`` (Ray tasks on a cluster count as one)."""
    from .executors import cpu_count, local_workers

    if options.kind == "local":  # as resolved for all the units: at least the workers of a resumed run
        return local_workers(options, device, units)
    if options.kind == "ray" and options.ray_address is None:
        return max(1, min(options.workers or cpu_count(), units))
    return 1


def _run(
    exp: Experiment,
    cfg: Any,
    units: list[dict[str, Any]],
    store: RunStore,
    manifest: dict[str, Any],
    device: str,
    show_progress: bool,
    options: ExecutorOptions,
    warn: Callable[[str], None],
    force: bool,
) -> dict[str, Any]:
    out = store.root
    t0 = time.time()
    origin = {u["id"]: unit_provenance(exp.name, cfg, u) for u in units}
    costs = {u["id"]: exp.unit_cost(cfg, u) for u in units}
    results: dict[str, list[dict[str, Any]]] = {}
    todo = []
    for u in units:
        got, problem = store.check_unit(u["id"], origin[u["id"]])
        if problem is not None:
            warn(f"warning: unit file {store.unit_path(u['id'])} {problem}; recomputing the unit")
        if got is None:
            todo.append(u)
        else:
            results[u["id"]] = got
    # threads and workers fixed once, for the units that will run; recorded before any of them runs
    options = options.resolved(len(todo), device)
    store.record_execution(manifest, options.record())
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    signals = _Signals()
    try:
        with signals.installed():
            with Progress(*columns, disable=not show_progress, transient=False) as bar:
                total = bar.add_task(
                    f"{exp.name} ({options.kind}, {options.threads} thread{'' if options.threads == 1 else 's'})",
                    total=sum(costs.values()),
                    completed=int(sum(costs.values()) - sum(costs[u["id"]] for u in todo)),
                )
                tasks: dict[str, TaskID] = {}
                shown: dict[str, float] = {}  # progress shown per unit, at most its cost
                delivered: set[str] = set()

                def progress(u: dict[str, Any]) -> Callable[[float], None]:
                    uid = u["id"]
                    if uid not in tasks:  # asked again when a local worker died and the unit is rerun
                        tasks[uid] = bar.add_task(f"  {uid}", total=costs[uid])
                        shown[uid] = 0.0
                    task = tasks[uid]

                    def tick(active: float) -> None:
                        step = min(float(active), costs[uid] - shown[uid])
                        if uid in delivered or step <= 0:
                            return  # a late message, or past the unit's cost (a rerun adds to its first try)
                        shown[uid] += step
                        bar.advance(task, step)
                        bar.advance(total, step)

                    return tick

                # installed again once the executor is up: ray.init replaces the SIGTERM handler
                # longest first: with several workers the largest units do not end up alone at the end
                order = sorted(todo, key=lambda u: -costs[u["id"]])
                with open_executor(exp, cfg, device, options, store.checkpoint_dir()) as ex, signals.installed():
                    for u, rows in ex.run(order, progress):
                        with signals.deferred():
                            results[u["id"]] = store.save_unit(u["id"], rows, origin[u["id"]])
                        uid = u["id"]
                        delivered.add(uid)
                        if uid in tasks:
                            bar.update(tasks[uid], completed=costs[uid])
                        bar.advance(total, costs[uid] - shown.get(uid, 0.0))
            # rows in plan order, whatever the order of completion
            rows = [r for u in units for r in results[u["id"]]]
            table = exp.summarize(cfg, rows)
            store.write_table(table)
            for name, extra in exp.tables(cfg, table).items():
                store.write_table(extra, name)
            verdict = settle(exp.verdict(cfg, table))
            store.write_json("verdict.json", verdict)
            with paper_style():
                figures = store.write_figures(exp.figures(cfg, table))
            traj = exp.trajectory(cfg, device)
            if traj is not None:
                store.write_trajectory(traj)
            store.finish(manifest, elapsed_s=time.time() - t0, units_resumed=len(units) - len(todo), figures=figures)
            build_report(out, force=force)
    except Interrupted as e:
        e.finished, e.total = len(results), len(units)
        raise
    return verdict
