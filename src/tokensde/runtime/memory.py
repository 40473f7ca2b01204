r"""Memory estimates, checked against the memory available before a run allocates (or writes) anything.

A run's peak is estimated from its config alone: every experiment's
:meth:`~tokensde.experiments.base.Experiment.unit_memory` gives the peak bytes one
unit allocates beyond the interpreter and torch (its state, noise buffers, kernels,
recorded trajectories, networks), an upper estimate within a factor of about 2,
read off what its ``run_unit`` allocates. Units run concurrently, one per worker,
so a run with ``w`` workers needs at most the ``w`` largest units at once plus,
for spawned workers, each process's own interpreter and torch
(:data:`WORKER_BASELINE_BYTES`). :func:`check_fits` compares that with
:func:`available_bytes` and refuses, in one line, a run that needs more than
:data:`FRACTION` of it::

    est = estimate_run(exp, cfg, units, device, workers)
    check_fits(est["bytes"], device, est["what"], est["hint"])

The ``simulate`` command's peak is :func:`simulate_memory`.

Environment: ``TOKENSDE_MEMORY_CHECK=0`` (or ``false``, ``no``, ``off``) turns
:func:`check_fits` off, for users who know better (swap, memory that will be
freed before the run reaches its peak, an estimate that is too pessimistic for
their case).

The pieces the experiments' estimates are built from (one per kind of allocation
of the library: noise streams, model steps, the blocked metrics, attention
weights) are in the pure module :mod:`tokensde.sizes`, so that experiments never
import the runtime. Nothing here allocates; the module reads ``/proc``, the cgroup
files and ``torch.cuda`` only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..sizes import itemsize, metrics_bytes, stream_bytes, uniform_bytes, value_noise_step_bytes

__all__ = [
    "CUDA_CONTEXT_BYTES",
    "FRACTION",
    "MEMORY_CHECK_ENV",
    "MemoryEstimateError",
    "WORKER_BASELINE_BYTES",
    "available_bytes",
    "check_enabled",
    "check_fits",
    "estimate_run",
    "format_bytes",
    "simulate_memory",
]

MEMORY_CHECK_ENV = "TOKENSDE_MEMORY_CHECK"
"""Environment variable: ``0``, ``false``, ``no`` or ``off`` disables :func:`check_fits`."""

FRACTION = 0.9
"""A run may use at most this fraction of the available memory."""

WORKER_BASELINE_BYTES = 384 * 2**20
"""Resident memory of one spawned worker before its unit allocates anything.

Measured (torch 2.13 CPU, Python 3.11, Linux): a ``spawn`` child that imports
``torch``, ``tokensde``, the experiment catalogue and the executors and runs one
small attention call and one QR has a peak RSS (``ru_maxrss``) of 369 MiB after
the imports and 377 MiB after the two calls, the same in three children;
rounded up to 384 MiB.
"""

CUDA_CONTEXT_BYTES = 512 * 2**20
"""GPU memory of one process's CUDA context (a worker on a CUDA device).

Not measured here (no GPU was available); a context with lazily loaded kernels
takes about 300 to 600 MiB on recent GPUs.
"""

_DISABLED = ("0", "false", "no", "off")
_UNLIMITED = 2**60  # cgroup v1 reports "no limit" as a page-rounded 2^63 - 1


class MemoryEstimateError(UsageError):
    """A run would need more memory than is available (one line: the estimate, what is available, what to change)."""


# --------------------------------------------------------------------------- sizes
def format_bytes(b: float) -> str:
    """``4.0 TB``, ``21.3 GB``, ``512 B``: decimal units, three significant digits."""
    b = float(b)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if abs(b) < 1000.0 or unit == "EB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000.0
    raise AssertionError  # unreachable


# --------------------------------------------------------------------------- available memory
def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _meminfo_available() -> int | None:
    text = _read(Path("/proc/meminfo"))
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) >= 2 and parts[1].isdigit() else None
    return None


def _inactive_file(stat: str | None, key: str) -> int:
    """Reclaimable page cache charged to the cgroup (``inactive_file``), 0 when unknown."""
    for line in (stat or "").splitlines():
        k, _, v = line.partition(" ")
        if k == key and v.strip().isdigit():
            return int(v)
    return 0


def _cgroup_dirs(controller: str) -> list[Path]:
    """Where this process's cgroup may be: its own path under the mount, then the mount's root (a container's view)."""
    root = Path("/sys/fs/cgroup") if controller == "" else Path("/sys/fs/cgroup") / controller
    dirs = []
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and (parts[1] == controller if controller else parts[0] == "0" and parts[1] == ""):
            rel = parts[2].lstrip("/")
            if rel:
                dirs.append(root / rel)
    dirs.append(root)
    return dirs


def _cgroup_room() -> int | None:
    """The cgroup's limit minus its usage (less the reclaimable page cache), or ``None`` without a limit."""
    versions = (
        ("", "memory.max", "memory.current", "inactive_file"),  # v2
        ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),  # v1
    )
    for controller, limit_name, usage_name, cache_key in versions:
        for d in _cgroup_dirs(controller):
            limit, usage = _read(d / limit_name), _read(d / usage_name)
            if limit is None or usage is None:
                continue
            if not limit.isdigit() or not usage.isdigit() or int(limit) >= _UNLIMITED:
                return None
            used = int(usage) - _inactive_file(_read(d / "memory.stat"), cache_key)
            return max(0, int(limit) - max(used, 0))
    return None


def available_bytes(device: str) -> int | None:
    """Memory a run on ``device`` can still allocate, in bytes; ``None`` if unknown.

    CPU: the smaller of ``MemAvailable`` (``/proc/meminfo``) and the cgroup's limit
    minus its usage (v2 ``memory.max`` / ``memory.current``, v1
    ``memory.limit_in_bytes`` / ``memory.usage_in_bytes``; page cache the kernel
    can reclaim, ``inactive_file``, is not counted as used), when there is a limit;
    without ``/proc/meminfo``, ``SC_AVPHYS_PAGES * SC_PAGE_SIZE``. CUDA: the free
    memory of the device (``torch.cuda.mem_get_info``). Other devices: ``None``.
    """
    if device.startswith("cuda"):
        try:
            import torch

            if not torch.cuda.is_available():
                return None
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:  # noqa: BLE001 - no driver, a bad index: unknown, not an error here
            return None
    if device != "cpu":
        return None
    found = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    if not found:
        try:
            found = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            return None
    return int(min(found))


# --------------------------------------------------------------------------- the check
def peak_rss_bytes() -> int:
    """Peak resident memory of this process's address space.

    ``VmHWM`` from ``/proc/self/status`` on Linux: ``ru_maxrss`` is kept across ``exec``,
    so a child started by a large process would report its parent's peak. Elsewhere
    ``ru_maxrss`` (bytes on macOS, KiB on other systems).
    """
    text = _read(Path("/proc/self/status"))
    for line in (text or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def check_enabled() -> bool:
    """Whether :func:`check_fits` checks (``TOKENSDE_MEMORY_CHECK`` is not ``0``/``false``/``no``/``off``)."""
    return os.environ.get(MEMORY_CHECK_ENV, "1").strip().lower() not in _DISABLED


def check_fits(
    estimate_bytes: int,
    device: str,
    what: str,
    hint: str = "reduce the sizes in the config (runs, systems, n, d, ...), or use fewer --workers",
) -> None:
    """Raise :class:`MemoryEstimateError` when ``estimate_bytes`` exceeds :data:`FRACTION` of what ``device`` has.

    The message is one line, ``memory: {what} needs about 4.0 TB but 21.3 GB is
    available on cpu; {hint}``. Nothing is checked when the available memory is
    unknown or ``TOKENSDE_MEMORY_CHECK=0``.
    """
    if not check_enabled():
        return
    avail = available_bytes(device)
    if avail is None or estimate_bytes <= FRACTION * avail:
        return
    raise MemoryEstimateError(
        f"memory: {what} needs about {format_bytes(estimate_bytes)} but {format_bytes(avail)} is available "
        f"on {device}; {hint} (or set {MEMORY_CHECK_ENV}=0 to run anyway)"
    )


def estimate_run(exp: Any, cfg: Any, units: Sequence[dict[str, Any]], device: str, workers: int) -> dict[str, Any]:
    """Peak memory of running ``units`` of ``exp`` on ``device`` with ``workers`` concurrent workers.

    ``bytes`` is the sum of the ``w`` largest :meth:`unit_memory` values,
    ``w = min(workers, len(units))`` (one unit per worker at a time), plus, when
    ``w > 1``, each spawned worker's own baseline (:data:`WORKER_BASELINE_BYTES`;
    on a CUDA device the CUDA context of each, :data:`CUDA_CONTEXT_BYTES`).
    Returns ``{"bytes", "largest_unit", "workers": w, "what", "hint"}``; ``what``
    and ``hint`` are the two texts :func:`check_fits` puts into its message.
    """
    sizes = sorted((max(0, int(exp.unit_memory(cfg, u, device))) for u in units), reverse=True)
    w = max(1, min(int(workers or 1), len(sizes)))
    baseline = (CUDA_CONTEXT_BYTES if device.startswith("cuda") else WORKER_BASELINE_BYTES) if w > 1 else 0
    largest = sizes[0] if sizes else 0
    total = sum(sizes[:w]) + w * baseline
    what = f"this run (largest unit {format_bytes(largest)} x {w} worker{'s' if w != 1 else ''})"
    hint = "reduce the sizes in the config (runs, systems, n, d, ...)" + (", or use fewer --workers" if w > 1 else "")
    return {"bytes": int(total), "largest_unit": int(largest), "workers": w, "what": what, "hint": hint}


def simulate_memory(
    n: int, d: int, systems: int, steps: int, route: str, solver: str, dtype: str, device: str = "cpu"
) -> int:
    """Peak bytes of the ``simulate`` command (upper estimate within a factor of about 2).

    What it allocates (:func:`tokensde.runtime.simulate.simulate_run`: :func:`tokensde.solvers.simulate`
    with one chunk of all systems, :class:`~tokensde.models.value_noise.ValueNoise`): the
    initial tokens (drawn in float64, then cast), the noise stream (``SLAB`` steps of
    ``(d, d)`` normals per system for the matrix route and the stack,
    ``(min(n, d), d)`` for the kernel route), the state, its final concatenated
    copy and one step's temporaries; then the metrics (:func:`metrics_bytes`) and
    the saved states (``x.cpu().numpy()``, the compressed NPZ buffer and its
    copy). ``steps`` does not change the peak (nothing is recorded).
    """
    item = itemsize(dtype)
    bnd = systems * n * d * item
    stack = solver == "stack"
    kernel = not stack and (route == "kernel" or (route == "auto" and n < d))
    shape = (min(n, d), d) if kernel else (d, d)
    draw = uniform_bytes(systems * n, d, item)
    sim = bnd + stream_bytes(systems, shape, item) + 2 * bnd
    sim += value_noise_step_bytes(systems, n, d, item, device, kernel, stack=stack)
    post = 2 * bnd + max(metrics_bytes(systems, n, d, item), 3 * bnd)
    return int(max(draw, sim, post))
