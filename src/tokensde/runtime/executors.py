"""Executors: map an experiment's pure, seeded ``run_unit`` over its units.

Three kinds, one interface (:func:`open_executor` -> ``Executor.run(units)``,
an iterator of ``(unit, rows)`` in order of completion):

``serial``
    In this process, one unit after another (live progress bars).
``local``
    ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method
    (safe with CUDA and threads), ``workers`` processes (default: one per CPU
    core, never more than the units to run; one on CUDA). Workers report their
    units' progress to the main process (a pipe read between results), so the
    bars move as under ``serial``. Workers ignore SIGINT (the main process decides when to stop) and
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

Threads. Every unit runs with :func:`tokensde.threads.set_threads` ``(threads)``
(torch's threads and the compiled kernels' threads together; the previous count
is restored afterwards). ``threads`` is fixed once per run
(:meth:`ExecutorOptions.resolved`): an integer as given, or ``"auto"`` (the
command line's default), which shares the cores among the units that run at
once: ``serial`` -> every core; ``local`` -> ``max(1, cores // workers)`` with
the default ``workers = min(cores, units to run)``, i.e. ``max(1, cores //
units)`` (1 unit on 2 cores: 1 worker x 2 threads; 13 units: 2 workers x 1
thread); ``ray`` -> 1 thread per task.

Bitwise identity. A unit's rows pass through their canonical JSON
(:func:`tokensde.runtime.store.normalize_rows`) and its seeds are derived inside
``run_unit`` from the base seed and the unit's keys. Hence, for a given thread
count, the rows of a unit do not depend on where, when or next to what it ran.
The compiled kernels give the same results whatever the thread count; torch's
CPU reductions split work by thread, so a different count may change the last
bits. ``"auto"`` may pick different counts under different executors, core
counts, or when resuming with fewer units left: give an integer ``threads`` when
tables must be byte-identical across those (the manifest records the count of
every start and resume).

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import threads as _threads
from ..experiments.base import Experiment, Progress
from .store import FileCheckpoint, normalize_rows, unit_provenance

__all__ = [
    "EXECUTORS",
    "ExecutorOptions",
    "Executor",
    "auto_threads",
    "default_executor",
    "execute_unit",
    "init_local_ray",
    "open_executor",
    "parse_threads",
]

EXECUTORS = ("serial", "local", "ray")

#: the most threads (and workers) the command line accepts
MAX_COUNT = 4096

ProgressFactory = Callable[[dict[str, Any]], Progress | None]


def cpu_count() -> int:
    """CPU cores this process may use (affinity-aware): :func:`tokensde.threads.available_cores`."""
    return _threads.available_cores()


def default_executor(device: str = "cpu", cores: int | None = None, units: int | None = None) -> str:
    """``serial`` on CUDA, on one core or for a single unit; ``local`` (one process per core) otherwise.

    With ``threads="auto"`` a unit running alone gets every core's threads (serial),
    and several units share the cores among spawned processes (local). Units are
    independent and most of their work is not split across threads, so processes
    use the cores better than threads inside one unit: on 2 cores the phase-diagram
    main job took 101 s with ``local`` against 131 s serially (one thread per unit;
    identical tables), the pool's start-up (spawn, import torch, a few seconds)
    included. On CUDA the units share one device, which serial already keeps busy.
    """
    cores = cpu_count() if cores is None else cores
    if device.startswith("cuda") or cores < 2 or (units is not None and units < 2):
        return "serial"
    return "local"


def local_workers(options: ExecutorOptions, device: str, units: int, cores: int | None = None) -> int:
    """Processes of the ``local`` executor: ``options.workers`` (default one per core; one on CUDA, where
    every worker would open its own context on the same device), never more than the units, at least one."""
    default = 1 if device.startswith("cuda") else (cpu_count() if cores is None else cores)
    return max(1, min(options.workers or default, units))


def auto_threads(kind: str, cores: int, workers: int) -> int:
    """Threads per unit that ``threads="auto"`` gives: the ``cores`` shared among the units running at once.

    ``serial``: every core; ``local``: ``max(1, cores // workers)`` (``workers`` already capped at the
    units to run, so ``workers x threads <= cores`` whenever ``workers <= cores``); ``ray``: 1 per task.

    >>> auto_threads("local", 2, 1), auto_threads("local", 2, 2), auto_threads("local", 16, 3)
    (2, 1, 5)
    >>> auto_threads("serial", 8, 1), auto_threads("ray", 8, 4)
    (8, 1)
    """
    if kind == "ray":
        return 1
    if kind == "serial":
        return max(1, cores)
    return max(1, cores // max(1, workers))


def parse_threads(raw: Any) -> int | str:
    """``"auto"`` or an integer in ``[1, MAX_COUNT]`` (an int or its decimal string); ``ValueError`` otherwise.

    >>> parse_threads("auto"), parse_threads("3"), parse_threads(2)
    ('auto', 3, 2)
    """
    if raw == "auto":
        return "auto"
    if isinstance(raw, bool):
        raise ValueError(f"threads: must be auto or an integer in [1, {MAX_COUNT}], got {raw!r}")
    try:
        n = int(raw) if isinstance(raw, (int, str)) else None
    except ValueError:
        n = None
    if n is None or not 1 <= n <= MAX_COUNT:
        raise ValueError(f"threads: must be auto or an integer in [1, {MAX_COUNT}], got {raw!r}")
    return n


@dataclass(frozen=True)
class ExecutorOptions:
    """How to run the units.

    ``kind`` in :data:`EXECUTORS`; ``workers`` (local: processes, default one per core but never more than the
    units to run; ray: tasks in flight, default unlimited); ``threads`` per unit (torch and the compiled
    kernels, :func:`tokensde.threads.set_threads`): an integer, ``"auto"`` (:func:`auto_threads`: the cores
    shared among the units running at once; the command line's default) or ``None`` (the calling process's
    current count; the default of this class); ``ray_address`` (join this cluster; ``None``: a private
    loopback-only local instance); ``max_retries`` (re-runs of a unit whose worker died).
    ``threads_requested`` is set by :meth:`resolved` (what ``threads`` was before it was fixed).
    """

    kind: str = "serial"
    workers: int | None = None
    threads: int | str | None = None
    ray_address: str | None = None
    max_retries: int = 3
    threads_requested: int | str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor: must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise ValueError(f"workers: must be a positive integer, got {self.workers}")
        if self.threads is not None and self.threads != "auto":
            if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1:
                raise ValueError(f"threads: must be auto or a positive integer, got {self.threads!r}")
        if self.ray_address is not None and self.kind != "ray":
            raise ValueError(f"ray-address: only with --executor ray, got executor {self.kind!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries: must be >= 0, got {self.max_retries}")

    def resolved(self, units: int = 1, device: str = "cpu", cores: int | None = None) -> ExecutorOptions:
        """These options with ``workers`` and ``threads`` fixed for a run of ``units`` units (those still to run).

        ``workers``: local -> :func:`local_workers`; serial -> 1; ray -> the tasks in flight (``workers``, at
        most ``units``). ``threads``: an integer stays; ``"auto"`` -> :func:`auto_threads` on ``cores``
        (default :func:`tokensde.threads.available_cores`); ``None`` -> this process's current count.
        ``threads_requested`` keeps what was asked (``None`` for ``None``).

        >>> o = ExecutorOptions("local", threads="auto").resolved(units=1, cores=2)
        >>> o.workers, o.threads, o.threads_requested
        (1, 2, 'auto')
        >>> o = ExecutorOptions("local", threads="auto").resolved(units=13, cores=2)
        >>> o.workers, o.threads
        (2, 1)
        """
        units = max(1, int(units))
        cores = cpu_count() if cores is None else max(1, int(cores))
        if self.kind == "local":
            workers: int | None = local_workers(self, device, units, cores)
        elif self.kind == "serial":
            workers = 1
        else:
            workers = min(self.workers, units) if self.workers is not None else None
        if self.threads == "auto":
            threads = auto_threads(self.kind, cores, workers or 1)
        elif self.threads is None:
            threads = _threads.get_threads()
        else:
            threads = int(self.threads)
        requested = self.threads_requested if self.threads_requested is not None else self.threads
        return replace(self, workers=workers, threads=threads, threads_requested=requested)

    def record(self) -> dict[str, Any]:
        """For the manifest: kind, workers, threads (as resolved), threads_requested, ray_address, max_retries."""
        return {
            "kind": self.kind,
            "workers": self.workers,
            "threads": self.threads,
            "threads_requested": self.threads_requested,
            "ray_address": self.ray_address,
            "max_retries": self.max_retries,
        }


def execute_unit(
    exp: Experiment,
    cfg: Any,
    unit: dict[str, Any],
    device: str,
    threads: int | None,
    progress: Progress | None = None,
    checkpoints: Path | None = None,
) -> list[dict[str, Any]]:
    """Run one unit with ``threads`` threads (:func:`tokensde.threads.set_threads`, the previous count restored
    afterwards; ``None``: as they are); rows in their stored form.

    For an experiment that checkpoints, ``checkpoints`` is the folder of the units'
    checkpoint files (``None``: the unit runs without one).
    """
    before = _threads.get_threads()
    if threads is not None:
        _threads.set_threads(threads)
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
        if threads is not None:
            _threads.set_threads(before)
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

    def threads_for(self, units: int) -> int | None:
        """Threads per unit: ``options.threads``, with ``"auto"`` resolved for ``units`` units (the runner
        passes options already resolved; this covers executors opened directly)."""
        if self.options.threads == "auto":
            return int(self.options.resolved(units, self.device).threads)  # type: ignore[arg-type]
        return self.options.threads  # type: ignore[return-value]

    def run(
        self, units: list[dict[str, Any]], progress: ProgressFactory | None = None
    ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        raise NotImplementedError


class SerialExecutor(Executor):
    def run(
        self, units: list[dict[str, Any]], progress: ProgressFactory | None = None
    ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        threads = self.threads_for(len(units))
        for u in units:
            tick = progress(u) if progress is not None else None
            yield u, execute_unit(self.exp, self.cfg, u, self.device, threads, tick, self.checkpoints)


def _die_with(parent: int) -> None:
    """End this worker when the process ``parent`` is gone (killed with SIGKILL, say).

    On Linux the kernel does it (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); everywhere a daemon
    thread also polls ``os.getppid()`` twice a second. Without this, workers of a killed
    main process would be re-parented to init and go on computing for nobody.
    """
    import threading

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


#: in a local worker: where its units' progress goes (set by :func:`_worker_init`)
_TICKS: Any = None

#: seconds between two progress messages of one unit (a unit may tick every step)
TICK_EVERY = 0.2


def _worker_init(parent: int | None = None, ticks: Any = None) -> None:
    global _TICKS
    # Ctrl-C reaches the whole process group: the main process decides (stop, keep finished units)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _TICKS = ticks
    if parent is not None:
        _die_with(parent)


class _Ticks:
    """A unit's progress in a worker: amounts summed and sent as ``(unit id, amount)`` at most every
    :data:`TICK_EVERY` seconds, the rest at the end (:meth:`flush`)."""

    def __init__(self, queue: Any, uid: str) -> None:
        self.queue, self.uid = queue, uid
        self.pending = 0.0
        self.last = time.monotonic()

    def __call__(self, amount: float) -> None:
        self.pending += float(amount)
        now = time.monotonic()
        if now - self.last >= TICK_EVERY:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self.pending:
            # SimpleQueue.put writes to the pipe before it returns: the main process can read every
            # message of a unit once it has the unit's result (sent afterwards through the pool)
            self.queue.put((self.uid, self.pending))
            self.pending = 0.0
        self.last = time.monotonic() if now is None else now


def _execute_in_worker(
    exp: Experiment,
    cfg: Any,
    unit: dict[str, Any],
    device: str,
    threads: int | None,
    report: bool,
    checkpoints: Path | None = None,
) -> list[dict[str, Any]]:
    """:func:`execute_unit` in a local worker, its progress sent to the main process when ``report``."""
    tick = _Ticks(_TICKS, str(unit["id"])) if report and _TICKS is not None else None
    try:
        return execute_unit(exp, cfg, unit, device, threads, tick, checkpoints)
    finally:
        if tick is not None:
            tick.flush()


class LocalExecutor(Executor):
    """A pool of spawned processes; a broken pool (a worker killed) is rebuilt and unfinished units resubmitted.

    Workers send their units' progress through a pipe (one per pool: a worker killed while writing
    cannot block the next pool's), which the main process reads between results.
    """

    def __init__(
        self, exp: Experiment, cfg: Any, device: str, options: ExecutorOptions, checkpoints: Path | None = None
    ) -> None:
        super().__init__(exp, cfg, device, options, checkpoints)
        self.pool: cf.ProcessPoolExecutor | None = None
        self.ticks: Any = None

    def _start(self, n: int) -> cf.ProcessPoolExecutor:
        ctx = multiprocessing.get_context("spawn")
        self.ticks = ctx.SimpleQueue()
        self.pool = cf.ProcessPoolExecutor(
            max_workers=n,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(os.getpid(), self.ticks),
        )
        return self.pool

    def _drain(self, running: dict[str, dict[str, Any]], bars: dict[str, Progress | None], progress: Any) -> None:
        """Pass the progress messages waiting in the pipe to the units' bars (those of ``running`` units)."""
        q = self.ticks
        if q is None:
            return
        while not q.empty():
            uid, amount = q.get()
            u = running.get(uid)
            if u is None or progress is None:
                continue  # a unit already delivered (or no bars)
            if uid not in bars:
                bars[uid] = progress(u)
            tick = bars[uid]
            if tick is not None:
                tick(amount)

    def close(self) -> None:
        pool, self.pool = self.pool, None
        ticks, self.ticks = self.ticks, None
        if ticks is not None:
            ticks.close()
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
        threads = self.threads_for(len(units))
        report = progress is not None
        running = {str(u["id"]): u for u in units}
        bars: dict[str, Progress | None] = {}
        while pending:
            pool = self._start(n)
            futures = {
                pool.submit(
                    _execute_in_worker, self.exp, self.cfg, u, self.device, threads, report, self.checkpoints
                ): u
                for u in pending
            }
            broken = False
            while futures and not broken:
                # a timeout keeps the main thread responsive to SIGINT / SIGTERM (and the bars moving)
                done, _ = cf.wait(futures, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                self._drain(running, bars, progress)  # a finished unit's last messages came before its result
                for f in done:
                    u = futures.pop(f)
                    try:
                        rows = f.result()
                    except cf.process.BrokenProcessPool:
                        broken = True
                        futures[f] = u
                        continue
                    pending.remove(u)
                    running.pop(str(u["id"]), None)
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
        threads = self.threads_for(len(units))
        task = ray.remote(
            num_cpus=threads or 1,
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
                ref = task.remote(exp_ref, cfg_ref, u, self.device, threads, None, self.checkpoints)
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
