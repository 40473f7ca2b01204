"""Threads of the numerical work: torch's intra-op thread count, which the compiled CPU kernels follow.

The compiled kernels (:mod:`tokensde.kernels`) split their systems over
``torch.get_num_threads()`` threads, and every system's arithmetic is the same
whatever the number of threads, so their results do not depend on it; torch's
own reductions may (at the last bit) for tensors large enough to be split
across threads.

Examples
--------
>>> from tokensde.threads import get_threads, set_threads
>>> before = get_threads()
>>> set_threads(1)
>>> get_threads()
1
>>> set_threads(before)
"""

from __future__ import annotations

import os

import torch

__all__ = ["available_cores", "get_threads", "set_threads"]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def get_threads() -> int:
    """Torch's current intra-op thread count (the kernels follow it: :func:`set_threads`)."""
    return int(torch.get_num_threads())


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and so in the compiled kernels.

    Raises
    ------
    ValueError
        If ``n < 1``.
    """
    if int(n) < 1:
        raise ValueError(f"threads: must be a positive integer, got {n}")
    torch.set_num_threads(int(n))
