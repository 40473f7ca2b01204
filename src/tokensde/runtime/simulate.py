"""An ad-hoc simulation of model A into a directory: the library behind ``tokensde simulate``.

:func:`simulate_run` checks the output directory and the memory estimate before anything
is written, holds the directory's lock, integrates with :func:`tokensde.solvers.simulate`
from uniform tokens, computes the blocked metrics (:func:`tokensde.metrics.summary`) and
writes, atomically::

    OUT/manifest.json      config, seed, versions, device, times (as a run's)
    OUT/final_states.npz   ``x``: the final states, ``(systems, n, d)``
    OUT/summary.json       timings, peak memory, config and metrics (also returned)

It prints nothing: the command line parses and validates the arguments, calls it and
prints the summary line.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..files import atomic_write
from .memory import check_fits, peak_rss_bytes, simulate_memory
from .store import RunStore

__all__ = ["MODELS", "simulate_run"]

#: the models ``simulate_run`` knows
MODELS = ("value-noise",)


def simulate_run(
    out: Path,
    *,
    n: int,
    d: int,
    beta: float,
    steps: int,
    dt: float,
    model: str = "value-noise",
    sigma: float = 1.0,
    systems: int = 1,
    seed: int = 0,
    solver: str = "euler",
    route: str = "auto",
    dtype: str = "float32",
    device: str = "cpu",
    force: bool = False,
) -> dict[str, Any]:
    """Simulate ``systems`` independent systems of ``n`` uniform tokens in dimension ``d`` for ``steps`` steps.

    The arguments are those of ``tokensde simulate`` (validated by the caller; the command
    line checks their ranges). ``out`` must be new, empty or an earlier simulation of the
    same config (``force``: a non-empty directory that holds no tokensde output), and the
    memory estimate must fit the device: both raise :class:`~tokensde.errors.UsageError`
    before anything is written. Returns the summary written to ``summary.json``.
    """
    if model not in MODELS:
        raise UsageError(f"model: must be one of {', '.join(MODELS)}, got {model!r}")
    config: dict[str, Any] = {
        "model": model,
        "n": n,
        "d": d,
        "beta": beta,
        "sigma": sigma,
        "steps": steps,
        "dt": dt,
        "systems": systems,
        "seed": seed,
        "solver": solver,
        "route": route,
        "dtype": dtype,
    }
    out = Path(out)
    store = RunStore(out)
    store.inspect("simulate", config, force)
    need = simulate_memory(n, d, systems, steps, route, solver, dtype, device)
    check_fits(need, device, "simulate", "reduce --systems, --n or --d")
    with store.session("simulate", config, device, force=force, extra={"command": "simulate"}):
        return _simulate(config, device, out)


def _simulate(config: dict[str, Any], dev: str, out: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from .. import metrics
    from ..models import ValueNoise
    from ..noise import derive_seed
    from ..solvers import simulate
    from ..sphere import uniform

    c = config
    tdtype = getattr(torch, c["dtype"])
    g = torch.Generator().manual_seed(derive_seed(c["seed"], "simulate", "x0"))
    x0 = uniform((c["systems"], c["n"]), c["d"], g, torch.float64).to(tdtype).to(dev)
    m = ValueNoise(beta=c["beta"], sigma=c["sigma"], route=c["route"])
    cuda = x0.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(x0.device)
    t0 = time.time()
    res = simulate(m, x0, c["dt"], c["steps"], seed=c["seed"], key=("simulate",), solver=c["solver"])
    x = res.x
    if cuda:
        torch.cuda.synchronize(x.device)
    elapsed = time.time() - t0
    summary: dict[str, Any] = {
        "elapsed_s": elapsed,
        "seconds_per_step": elapsed / c["steps"],
        "config": dict(config),
    }
    t1 = time.time()
    # blocked metrics: exact for every n, never an n x n matrix (tokensde.metrics)
    s = metrics.summary(x, c["beta"])
    summary["metrics"] = {k: np.asarray(v, dtype=float).tolist() for k, v in s.items()}
    summary["metrics"]["norm_error_max"] = float((torch.linalg.vector_norm(x, dim=-1) - 1).abs().max())
    summary["metrics_s"] = time.time() - t1
    # peak resident memory of this process so far (simulation and metrics)
    summary["peak_rss_bytes"] = peak_rss_bytes()
    if cuda:
        summary["cuda_max_memory_allocated_bytes"] = int(torch.cuda.max_memory_allocated(x.device))
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x.cpu().numpy())
    atomic_write(out / "final_states.npz", buf.getvalue())
    atomic_write(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary
