"""Machine description, the fp32 matmul ceiling, and a monitor of CPU used by other processes."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CpuMonitor", "cores", "machine_info", "matmul_gflops", "wait_until_quiet"]


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str) -> dict[str, object]:
    import torchsde

    env_keys = (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
    )
    info: dict[str, object] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cores": cores(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "numpy": np.__version__,
        "torchsde": getattr(torchsde, "__version__", "unknown"),
        "device": device,
        "cuda_available": torch.cuda.is_available(),
        "env": {k: os.environ[k] for k in env_keys if k in os.environ},
        "loadavg_at_start": list(os.getloadavg()),
    }
    if device.startswith("cuda"):
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
    return info


def matmul_gflops(device: str, size: int = 2048, repeats: int = 5) -> float:
    """Median fp32 GFLOP/s of ``size x size @ size x size`` (one untimed warm-up)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    times = []
    for k in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if k:
            times.append(time.perf_counter() - t0)
    return 2.0 * size**3 / statistics.median(times) / 1e9


def _busy_jiffies() -> int:
    """CPU time (clock ticks) spent by all processes on the machine, from ``/proc/stat``."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal


def _own_seconds() -> float:
    """CPU seconds of this process and its reaped children (compile workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class CpuMonitor:
    """Average number of cores used by *other* processes during a timed section.

    Timings on a 2-core machine are meaningless while something else runs; a
    value above ~0.2 core means the measurement was contended.
    """

    _t: float = 0.0
    _busy: int = 0
    _own: float = 0.0

    def start(self) -> None:
        self._t, self._busy, self._own = time.perf_counter(), _busy_jiffies(), _own_seconds()

    def stop(self) -> float:
        wall = time.perf_counter() - self._t
        busy = (_busy_jiffies() - self._busy) / os.sysconf("SC_CLK_TCK")
        own = _own_seconds() - self._own
        return max(0.0, (busy - own) / wall) if wall > 0 else 0.0


def wait_until_quiet(threshold: float, max_wait: float, probe: float = 0.3) -> tuple[float, float]:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` cores over ``probe`` s.

    Returns ``(seconds waited, last foreign load measured)``.
    """
    monitor = CpuMonitor()
    t0 = time.perf_counter()
    while True:
        monitor.start()
        time.sleep(probe)
        load = monitor.stop()
        waited = time.perf_counter() - t0
        if load < threshold or waited >= max_wait:
            return waited, load
