"""Large-n section: model A at n = 4096, 65536 (CPU) and 100000 (GPU), one fresh child process per configuration.

The parent (``run.py``) calls :func:`run_large`, which starts this file as a script for every
configuration. The child integrates one untimed warm-up step, then ``steps + 1`` steps in one
integration with an observe hook after each (the engine then takes them one at a time; each interval
timed with the device synchronised; the first, which also holds the engine's one-off check of the model,
is dropped), optionally computes ``tokensde.metrics.summary`` of the final state (blocked, no ``n x n``
matrix), and prints one JSON line: seconds per step, the process's peak resident memory (``VmHWM``, its
own address space: the peak belongs to this configuration only: imports, simulation and metrics) and, on
CUDA, ``torch.cuda.max_memory_allocated`` of the timed steps and of the whole process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# --------------------------------------------------------------------------- child
def child(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one large-n configuration (child process of run.py)")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--d", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--dt", type=float, required=True)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--metrics", action="store_true", help="also time tokensde.metrics.summary of the final state")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    try:
        import tokensde  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        sys.path.insert(0, str(ROOT / "src"))
    from tokensde import metrics
    from tokensde.engine import BrownianPath, Hooks, integrate
    from tokensde.models.value_noise import ValueNoise
    from tokensde.runtime.memory import peak_rss_bytes
    from tokensde.solvers import simulate
    from tokensde.sphere import uniform

    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(args.seed)
    x0 = uniform((1, args.n), args.d, generator=g).to(args.device)  # float32, as Problem.initial_state
    model = ValueNoise(beta=args.beta)

    sync()
    t0 = time.perf_counter()
    x = simulate(model, x0, args.dt, 1, seed=args.seed, key=("large-n", "warm-up")).x
    sync()
    warmup = time.perf_counter() - t0

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    # an observe hook after every step: the engine then takes the steps one at a time and calls it in between
    # (a progress callback would not do: within a slab the steps run back to back and progress follows them)
    marks = [time.perf_counter()]

    def tick(_k: int, _states: Any) -> None:
        sync()
        marks.append(time.perf_counter())

    # one step more than timed: the first interval also holds the engine's one-off check of the model's
    # contract (an evaluation of the coefficients), so it is dropped
    path = BrownianPath.for_model(model, x, args.seed, ("large-n",))
    x = integrate(model, x, path, args.dt, args.steps + 1, hooks=Hooks(observe=tick)).x
    per_step = [b - a for a, b in zip(marks[1:], marks[2:], strict=False)]
    out: dict[str, Any] = {
        "n": args.n,
        "d": args.d,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "warmup_seconds": warmup,
        "step_seconds": per_step,
        "seconds_per_step": statistics.median(per_step),
        "off_sphere": float((torch.linalg.vector_norm(x, dim=-1) - 1).abs().max()),
    }
    if cuda:
        out["cuda_max_memory_allocated_steps"] = int(torch.cuda.max_memory_allocated())
        out["cuda_device"] = torch.cuda.get_device_name()
    if args.metrics:
        sync()
        t0 = time.perf_counter()
        s = metrics.summary(x, args.beta)
        sync()
        out["metrics_seconds"] = time.perf_counter() - t0
        out["metrics"] = {k: float(v[0]) for k, v in s.items()}
    if cuda:
        out["cuda_max_memory_allocated_process"] = int(torch.cuda.max_memory_allocated())
    out["peak_rss_bytes"] = peak_rss_bytes()  # VmHWM: ru_maxrss would carry the parent's peak across exec
    print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- parent
def run_large(
    problem: Any,
    device: str,
    threads: int,
    seed: int,
    with_metrics: bool,
    monitor: Any,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    """Run one configuration in a fresh child process; returns its JSON plus ``foreign_cores`` and ``wall_seconds``."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--n={problem.n}",
        f"--d={problem.d}",
        f"--steps={problem.steps}",
        f"--dt={problem.dt}",
        f"--beta={problem.beta}",
        f"--device={device}",
        f"--threads={threads}",
        f"--seed={seed}",
        *(["--metrics"] if with_metrics else []),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    monitor.start()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "foreign_cores": monitor.stop()}
    wall = time.perf_counter() - t0
    foreign = monitor.stop()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"child exited with {proc.returncode}: " + " | ".join(tail), "foreign_cores": foreign}
    res = json.loads(lines[-1])
    res["foreign_cores"] = foreign
    res["wall_seconds"] = wall
    return res


def goal_text(n: int, peak_rss_bytes: Any, goal_n: int, goal_bytes: int) -> str:
    """Column "goal": whether the ``n = goal_n`` process peaked below ``goal_bytes``; ``—`` on other rows."""
    if n != goal_n or peak_rss_bytes is None:
        return "—"
    gb = peak_rss_bytes / 1e9
    return f"yes, {gb:.2f} GB" if peak_rss_bytes < goal_bytes else f"NO, {gb:.2f} GB"


def gflops(problem: Any, res: dict[str, Any]) -> float | None:
    s = res.get("seconds_per_step")
    return problem.flops_per_system_step() * problem.systems / s / 1e9 if s else None


def mib(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v / 2**20:.0f}"


if __name__ == "__main__":
    raise SystemExit(child())
