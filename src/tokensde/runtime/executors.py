"""Executors: map an experiment's pure, seeded ``run_unit`` over its units.

Three kinds, one interface (:func:`open_executor` -> ``Executor.run(units)``,
an iterator of ``(unit, rows)`` in order of completion):

``serial``
    In this process, one unit after another (live progress bars).
``local``
    ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method
    (safe with CUDA and threads), ``workers`` processes (default: one per CPU
    core; one on CUDA). Workers ignore SIGINT (the main process decides when to stop) and
    end when the main process is gone, however it ended (:func:`_die_with`). A
    worker that dies mid-unit breaks the pool: it is rebuilt and the unfinished
    units are resubmitted, at most ``max_retries`` times. As always with
    ``spawn``, a calling script must be importable and guard its work with
    ``if __name__ == "__main__":`` (``python - <<EOF`` scripts cannot use it).
``ray``
    One ``ray.remote`` task per unit with ``max_retries`` (a task whose worker
    process dies is retried by Ray; exceptions raised by ``run_unit`` are not
    retried), ``num_cpus = threads`` and ``num_gpus = 1`` when the device is CUDA
    (a unit asking for a GPU). With ``ray_address`` it joins that cluster
    (``ray.init(address=...)``); without, it starts a private local instance
    that listens on loopback only (:func:`init_local_ray`) and shuts it down at
    the end. At most ``workers`` tasks are in flight when given.

Bitwise identity. Every unit runs with ``torch.set_num_threads(threads)``
(``threads`` fixed per run, independent of the executor and the number of
workers; torch's CPU reductions split work by thread, so the thread count may
change the last bits), and its rows pass through their canonical JSON
(:func:`tokensde.runtime.store.normalize_rows`). Seeds are derived inside
``run_unit`` from the base seed and the unit's keys. Hence the rows of a unit do
not depend on where, when or next to what it ran.

Only the main process writes files: the runner saves each unit as it arrives.
Tasks carry the experiment and its config by pickle (process pipes, Ray's object
store): an experiment outside the registry must be importable on the workers
(e.g. through ``PYTHONPATH``). Results are never stored as pickle.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..experiments.base import Experiment, Progress
from .store import FileCheckpoint, normalize_rows, unit_provenance

__all__ = [
    "EXECUTORS",
    "ExecutorOptions",
    "Executor",
    "default_executor",
    "execute_unit",
    "init_local_ray",
    "open_executor",
]

EXECUTORS = ("serial", "local", "ray")

ProgressFactory = Callable[[dict[str, Any]], Progress | None]


def cpu_count() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_executor(device: str = "cpu", cores: int | None = None, units: int | None = None) -> str:
    """``serial`` on CUDA, on one core or for a single unit; ``local`` (one process per core) otherwise.

    Every unit runs with one torch thread under every executor (bitwise-identical
    results), so a serial run would leave all but one core idle: on 2 cores the
    phase-diagram main job takes 101 s with ``local`` against 131 s serially
    (identical tables), the pool's start-up (spawn, import torch, a few seconds)
    included. On CUDA the units share one device, which serial already keeps busy.
    """
    cores = cpu_count() if cores is None else cores
    if device.startswith("cuda") or cores < 2 or (units is not None and units < 2):
        return "serial"
    return "local"


def local_workers(options: ExecutorOptions, device: str, units: int) -> int:
    """Processes of the ``local`` executor: ``options.workers`` (default one per core; one on CUDA, where
    every worker would open its own context on the same device), never more than the units, at least one."""
    default = 1 if device.startswith("cuda") else cpu_count()
    return max(1, min(options.workers or default, units))


@dataclass(frozen=True)
class ExecutorOptions:
    """How to run the units: ``kind`` in :data:`EXECUTORS`, ``workers`` (local: processes, default one per core;
    ray: tasks in flight, default unlimited), ``threads`` (torch threads per unit; ``None``: the calling
    process's current ``torch.get_num_threads()``, resolved once per run), ``ray_address`` (join this cluster;
    ``None``: a private loopback-only local instance), ``max_retries`` (re-runs of a unit whose worker died).
    """

    kind: str = "serial"
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor: must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers: must be a positive integer, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: must be a positive integer, got {self.threads}")
        if self.ray_address is not None and self.kind != "ray":
            raise ValueError(f"ray-address: only with --executor ray, got executor {self.kind!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries: must be >= 0, got {self.max_retries}")

    def resolved(self) -> ExecutorOptions:
        """The same options with ``threads`` fixed (``None`` -> this process's torch thread count)."""
        if self.threads is not None:
            return self
        import torch

        return ExecutorOptions(self.kind, self.workers, torch.get_num_threads(), self.ray_address, self.max_retries)

    def record(self) -> dict[str, Any]:
        """For the manifest."""
        return asdict(self)


def execute_unit(
    exp: Experiment,
    cfg: Any,
    unit: dict[str, Any],
    device: str,
    threads: int | None,
    progress: Progress | None = None,
    checkpoints: Path | None = None,
) -> list[dict[str, Any]]:
    """Run one unit with ``threads`` torch threads (restored afterwards); rows in their stored form.

    For an experiment that checkpoints, ``checkpoints`` is the folder of the units'
    checkpoint files (``None``: the unit runs without one).
    """
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if exp.checkpoints:
            ck = (
                FileCheckpoint(checkpoints / f"{unit['id']}.npz", unit_provenance(exp.name, cfg, unit))
                if checkpoints is not None
                else None
            )
            rows = exp.run_unit(cfg, unit, device, progress, checkpoint=ck)  # type: ignore[call-arg]
        else:
            rows = exp.run_unit(cfg, unit, device, progress)
    finally:
        torch.set_num_threads(before)
    return normalize_rows(rows)


class Executor:
    """Runs units; ``run(units)`` yields ``(unit, rows)`` as units finish. A context manager."""

    def __init__(
        self, exp: Experiment, cfg: Any, device: str, options: ExecutorOptions, checkpoints: Path | None = None
    ) -> None:
        self.exp, self.cfg, self.device, self.options = exp, cfg, device, options
        self.checkpoints = checkpoints

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop: cancel what is pending, end the workers (finished results are the caller's)."""

    def run(
        self, units: list[dict[str, Any]], progress: ProgressFactory | None = None
    ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        raise NotImplementedError


class SerialExecutor(Executor):
    def run(
        self, units: list[dict[str, Any]], progress: ProgressFactory | None = None
    ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        for u in units:
            tick = progress(u) if progress is not None else None
            yield u, execute_unit(self.exp, self.cfg, u, self.device, self.options.threads, tick, self.checkpoints)


def _die_with(parent: int) -> None:
    """End this worker when the process ``parent`` is gone (killed with SIGKILL, say).

    On Linux the kernel does it (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); everywhere a daemon
    thread also polls ``os.getppid()`` twice a second. Without this, workers of a killed
    main process would be re-parented to init and go on computing for nobody.
    """
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="tokensde-parent-watch", daemon=True).start()


def _worker_init(parent: int | None = None) -> None:
    # Ctrl-C reaches the whole process group: the main process decides (stop, keep finished units)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with(parent)


class LocalExecutor(Executor):
    """A pool of spawned processes; a broken pool (a worker killed) is rebuilt and unfinished units resubmitted."""

    def __init__(
        self, exp: Experiment, cfg: Any, device: str, options: ExecutorOptions, checkpoints: Path | None = None
    ) -> None:
        super().__init__(exp, cfg, device, options, checkpoints)
        self.pool: cf.ProcessPoolExecutor | None = None

    def _start(self, n: int) -> cf.ProcessPoolExecutor:
        self.pool = cf.ProcessPoolExecutor(
            max_workers=n,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )
        return self.pool

    def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        procs = list(getattr(pool, "_processes", {}).values())  # no public way to end running workers (< 3.14)
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)

    def run(
        self, units: list[dict[str, Any]], progress: ProgressFactory | None = None
    ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        pending = list(units)
        retries = 0
        n = local_workers(self.options, self.device, len(units))
        while pending:
            pool = self._start(n)
            futures = {
                pool.submit(
                    execute_unit, self.exp, self.cfg, u, self.device, self.options.threads, None, self.checkpoints
                ): u
                for u in pending
            }
            broken = False
            while futures and not broken:
                # a timeout keeps the main thread responsive to SIGINT / SIGTERM
                done, _ = cf.wait(futures, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    u = futures.pop(f)
                    try:
                        rows = f.result()
                    except cf.process.BrokenProcessPool:
                        broken = True
                        futures[f] = u
                        continue
                    pending.remove(u)
                    yield u, rows
            self.close()
            if broken:
                retries += 1
                if retries > self.options.max_retries:
                    raise RuntimeError(
                        f"local executor: a worker died {retries} times; units left: "
                        + ", ".join(str(u["id"]) for u in pending)
                    )


def _loopback_node() -> None:
    """Make this process's Ray node address 127.0.0.1 (see :func:`init_local_ray`)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the variable was set


def _is_loopback_address(address: str) -> bool:
    """``127.0.0.1:6379``, ``ray://localhost:10001``, ``[::1]:6379`` -> True."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def init_local_ray(num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a private local Ray instance that listens on 127.0.0.1 only, dashboard off.

    ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough on Linux: Ray
    replaces a loopback node address by the machine's routable one unless its
    ``ENABLE_RAY_CLUSTER`` constant is off (environment variable
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read at import); with the node address on
    loopback, the GCS, raylet, object manager, workers and runtime-env agent bind
    127.0.0.1 (otherwise they bind every interface). The variable is set in
    ``os.environ`` so that processes Ray starts inherit it.
    """
    import ray

    _loopback_node()
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=True,
        logging_level=logging.WARNING,
    )


class RayExecutor(Executor):
    """One Ray task per unit (``max_retries`` on worker death, ``num_gpus=1`` on CUDA)."""

    def __init__(
        self, exp: Experiment, cfg: Any, device: str, options: ExecutorOptions, checkpoints: Path | None = None
    ) -> None:
        super().__init__(exp, cfg, device, options, checkpoints)
        self.owned = False
        self.refs: dict[Any, dict[str, Any]] = {}

    def __enter__(self) -> RayExecutor:
        import ray

        if not ray.is_initialized():
            address = self.options.ray_address
            if address is not None:
                if _is_loopback_address(address):  # a cluster on this machine's loopback: be a loopback node too
                    _loopback_node()
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                init_local_ray(num_cpus=cpu_count())
            self.owned = True
        return self

    def close(self) -> None:
        import ray

        refs, self.refs = list(self.refs), {}
        if ray.is_initialized():
            for r in refs:
                try:
                    ray.cancel(r, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone; nothing to keep
                    pass
            if self.owned:
                ray.shutdown()
                self.owned = False

    def run(
        self, units: list[dict[str, Any]], progress: ProgressFactory | None = None
    ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        import ray

        gpu = self.device.startswith("cuda")
        task = ray.remote(
            num_cpus=self.options.threads or 1,
            num_gpus=1 if gpu else 0,
            max_retries=self.options.max_retries,
            retry_exceptions=False,
        )(execute_unit)
        exp_ref, cfg_ref = ray.put(self.exp), ray.put(self.cfg)
        queue = list(units)
        limit = self.options.workers or len(units)
        while queue or self.refs:
            while queue and len(self.refs) < limit:
                u = queue.pop(0)
                ref = task.remote(exp_ref, cfg_ref, u, self.device, self.options.threads, None, self.checkpoints)
                self.refs[ref] = u
            ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=0.5)
            for r in ready:
                u = self.refs.pop(r)
                yield u, ray.get(r)


def open_executor(
    exp: Experiment, cfg: Any, device: str, options: ExecutorOptions, checkpoints: Path | None = None
) -> Executor:
    """The executor for ``options.kind`` (use as a context manager); ``checkpoints``: see :func:`execute_unit`."""
    kinds: dict[str, type[Executor]] = {"serial": SerialExecutor, "local": LocalExecutor, "ray": RayExecutor}
    return kinds[options.kind](exp, cfg, device, options, checkpoints)
