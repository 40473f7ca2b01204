"""Benchmark tokensde against naive NumPy and torchsde on model A (problems P1, P2), tokensde at large n,
and whole commands as users run them.

Usage::

    python benchmarks/run.py [--quick] [--out FILE.json] [--rounds N] [--device cpu|cuda] [--only NAME ...]
        [--no-main-job]

Every implementation runs once per round, rounds interleaved (the order rotates
from round to round); the table shows medians over rounds. The large-n section
(``--only large-n`` selects it alone) runs each configuration once in a fresh
child process. The command section (``--only command``) times whole processes:
one phase-diagram cell cold and warm against a naive NumPy process, and the main
job cold. See ``benchmarks/README.md`` for the columns.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
try:  # use the installed package if there is one, else the source tree
    import tokensde  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    sys.path.insert(0, str(ROOT / "src"))

import numpy as np
import torch
from bench_command import COMMAND, command_goals, measure_command, render_command
from bench_impls import Implementation, implementations
from bench_large import gflops as large_gflops
from bench_large import goal_text, mib, run_large
from bench_machine import CpuMonitor, cores, machine_info, matmul_gflops, wait_until_quiet
from bench_problems import (
    LARGE_N_GOAL_BYTES,
    LARGE_N_GOAL_N,
    LARGE_N_GPU,
    Problem,
    Statistic,
    large_n_problems,
    problems,
    statistic,
)
from rich.console import Console
from rich.table import Table

CONTENDED = 0.2
"""Other processes using more than this many cores on average during a run make it suspect."""
RETRIES = 2
"""With ``--wait-quiet``, a contended run is repeated (same seed) up to this many times."""
LARGE_N = "large-n"
"""Name of the large-n section for ``--only``."""


@dataclass
class Sample:
    seconds: float
    foreign_cores: float
    off_sphere: float
    steps_taken: int
    retries: int = 0


@dataclass
class Cell:
    """All measurements of one implementation on one problem."""

    problem: Problem
    impl: Implementation
    warmup_seconds: float = math.nan
    samples: list[Sample] = field(default_factory=list)
    finals: list[np.ndarray] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def throughput(self) -> float:
        return self.problem.system_steps / self.median

    def gflops(self) -> float | None:
        return self.problem.total_flops() / self.median / 1e9 if self.problem.n > 2 else None

    def stat(self) -> Statistic | None:
        """The statistic of the final states; ``None`` for a bound (its states are not integrated)."""
        return None if self.impl.bound else statistic(self.problem, self.finals)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10x fewer steps and 1 round (smoke test)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "latest.json", help="JSON output file")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, 1 with --quick)")
    ap.add_argument("--device", default="cpu", help="device of the tokensde implementations (cpu or cuda)")
    ap.add_argument("--seed", type=int, default=0, help="base seed (round r uses seed + r)")
    ap.add_argument(
        "--only",
        nargs="*",
        default=None,
        help=f"run only these implementations (by name) and/or the sections {LARGE_N!r}, {COMMAND!r}",
    )
    ap.add_argument(
        "--no-main-job",
        action="store_true",
        help="command section: skip the main job (cold, about a minute on 2 cores; never run with --quick)",
    )
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        metavar="SECONDS",
        help="before each timed run, wait up to SECONDS until other processes use < 0.2 core, and repeat "
        "contended runs up to twice (default 120, 0 with --quick; 0 disables both)",
    )
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 120.0
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda requested but torch.cuda.is_available() is False")
    if args.only is not None:
        known = {i.name for i in implementations("cpu")} | {LARGE_N, COMMAND}
        unknown = sorted(set(args.only) - known)
        if unknown:
            ap.error(f"--only: unknown name(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return args


def wants_large_n(args: argparse.Namespace) -> bool:
    return args.only is None or LARGE_N in args.only


def wants_impls(args: argparse.Namespace) -> bool:
    return args.only is None or any(name not in (LARGE_N, COMMAND) for name in args.only)


def wants_command(args: argparse.Namespace) -> bool:
    return args.only is None or COMMAND in args.only


def measure_ceilings(args: argparse.Namespace, log: Console, samples: dict[str, list[float]]) -> None:
    """Add one sample of the fp32 matmul ceiling of each device to ``samples``.

    It is measured before the warm-ups and at the start of every round, so that
    it sees the machine in the state the timed runs see; the ceiling is the median.
    """
    for dev in dict.fromkeys(["cpu", args.device]):
        samples.setdefault(dev, []).append(matmul_gflops(dev))
    log.log("fp32 matmul ceiling: " + ", ".join(f"{k} {v[-1]:.1f} GFLOP/s" for k, v in samples.items()))


def measure(args: argparse.Namespace, log: Console, ceiling_samples: dict[str, list[float]]) -> list[Cell]:
    probs = problems(args.quick)
    impls = [i for i in implementations(args.device) if args.only is None or i.name in args.only]
    cells = {(p.key, i.name): Cell(p, i) for p in probs for i in impls if i.supports(p)}

    for cell in cells.values():  # warm-up: compilation, kernel loading, allocator
        x0 = cell.problem.initial_state(args.seed)
        if args.wait_quiet > 0:
            wait_until_quiet(CONTENDED, args.wait_quiet)
        cell.warmup_seconds = cell.impl.warmup(cell.problem, x0, args.seed)
        log.log(f"warm-up {cell.problem.key} {cell.impl.name}: {cell.warmup_seconds:.2f} s")

    monitor = CpuMonitor()
    order = list(cells.values())
    for r in range(args.rounds):
        if args.wait_quiet > 0:
            wait_until_quiet(CONTENDED, args.wait_quiet)
        measure_ceilings(args, log, ceiling_samples)
        shift = r % len(order)
        x0s = {p.key: p.initial_state(args.seed + r) for p in probs}
        for cell in order[shift:] + order[:shift]:
            for attempt in range(1 + (RETRIES if args.wait_quiet > 0 else 0)):  # noqa: B007 (read after the loop)
                gc.collect()
                if args.wait_quiet > 0:
                    waited, load = wait_until_quiet(CONTENDED, args.wait_quiet)
                    if waited > 1.5:
                        log.log(f"waited {waited:.0f} s for other processes (load now {load:.2f} cores)")
                monitor.start()
                out = cell.impl.run(cell.problem, x0s[cell.problem.key], args.seed + r)
                foreign = monitor.stop()
                flag = f"  [contended: {foreign:.2f} other cores]" if foreign > CONTENDED else ""
                log.log(f"round {r + 1}/{args.rounds} {cell.problem.key} {cell.impl.name}: {out.seconds:.3f} s{flag}")
                if foreign <= CONTENDED:
                    break
            cell.samples.append(Sample(out.seconds, foreign, out.off_sphere, out.steps_taken, attempt))
            cell.finals.append(out.x)
    return list(cells.values())


def gpu_skip_reason(args: argparse.Namespace) -> str | None:
    """Why the GPU configuration (n = 1e5) does not run, or ``None`` when it does."""
    if args.device.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return "skipped: no GPU available (torch.cuda.is_available() is False)"
    return "skipped: a GPU is available but --device cuda was not given"


def measure_large(args: argparse.Namespace, log: Console, ceilings: dict[str, float]) -> list[dict[str, object]]:
    """The large-n section: every configuration once, in its own child process (peak memory per configuration)."""
    gpu = args.device.startswith("cuda")
    monitor = CpuMonitor()
    rows: list[dict[str, object]] = []
    for p in large_n_problems(args.quick, gpu):
        device = args.device if p.key == LARGE_N_GPU.key else "cpu"
        best: dict[str, object] | None = None  # the least contended attempt
        tried: list[dict[str, object]] = []
        for _attempt in range(1 + (RETRIES if args.wait_quiet > 0 else 0)):
            if args.wait_quiet > 0:
                waited, load = wait_until_quiet(CONTENDED, args.wait_quiet)
                if waited > 1.5:
                    log.log(f"waited {waited:.0f} s for other processes (load now {load:.2f} cores)")
            res = run_large(p, device, torch.get_num_threads(), args.seed, not args.quick, monitor)
            foreign = float(res["foreign_cores"])
            tried.append({k: res.get(k) for k in ("seconds_per_step", "metrics_seconds", "peak_rss_bytes")})
            tried[-1]["foreign_cores"] = foreign
            flag = f"  [contended: {foreign:.2f} other cores]" if foreign > CONTENDED else ""
            if "error" in res:
                log.log(f"large-n {p.key} n={p.n} {device}: {res['error']}")
                best = res
                break
            if best is None or foreign < float(best["foreign_cores"]):  # type: ignore[arg-type]
                best = res
            log.log(
                f"large-n {p.key} n={p.n} {device}: {res['seconds_per_step']:.3f} s/step, "
                f"peak RSS {mib(res['peak_rss_bytes'])} MiB{flag}"
            )
            if foreign <= CONTENDED:
                break
        assert best is not None
        res = best
        gf = large_gflops(p, res)
        ceiling = ceilings.get(device, ceilings["cpu"])
        rss = res.get("peak_rss_bytes")
        rows.append(
            {
                "problem": p.key,
                "title": p.title,
                "n": p.n,
                "d": p.d,
                "systems": p.systems,
                "steps": p.steps,
                "dt": p.dt,
                "device": device,
                "status": "error" if "error" in res else "ok",
                "flops_per_system_step": p.flops_per_system_step(),
                "gflops": gf,
                "fraction_of_matmul_ceiling": gf / ceiling if gf is not None else None,
                "goal_peak_rss_below_bytes": LARGE_N_GOAL_BYTES if p.n == LARGE_N_GOAL_N else None,
                "goal_met": (rss < LARGE_N_GOAL_BYTES) if p.n == LARGE_N_GOAL_N and rss is not None else None,
                **res,
                "attempts": tried,
            }
        )
    reason = gpu_skip_reason(args)
    if reason is not None:
        p = LARGE_N_GPU
        rows.append(
            {"problem": p.key, "title": p.title, "n": p.n, "d": p.d, "device": "cuda", "status": "skipped"}
            | {"reason": reason}
        )
        log.log(f"large-n {p.key} n={p.n}: {reason}")
    return rows


def render_large(rows: list[dict[str, object]], ceilings: dict[str, float], console: Console) -> None:
    table = Table(title="tokensde at large n: model A, 1 system, Euler, float32, fresh process per row")
    for col, just in [
        ("problem", "left"),
        ("n", "right"),
        ("d", "right"),
        ("dev", "left"),
        ("thr", "right"),
        ("steps", "right"),
        ("s/step", "right"),
        ("min–max s", "right"),
        ("GFLOP/s", "right"),
        ("% ceil", "right"),
        ("metrics s", "right"),
        ("peak RSS MiB", "right"),
        ("CUDA MiB", "right"),
        ("goal", "left"),
        ("max||x|-1|", "right"),
        ("other cores", "right"),
    ]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    notes = []
    for r in rows:
        if r["status"] != "ok":
            notes.append(f"{r['problem']} (n = {r['n']}, {r['device']}): {r.get('reason') or r.get('error')}")
            table.add_row(
                str(r["problem"]), str(r["n"]), str(r["d"]), str(r["device"]), *["—"] * 9, str(r["status"]), "—", "—"
            )
            continue
        steps = r["step_seconds"]
        assert isinstance(steps, list)
        frac = r["fraction_of_matmul_ceiling"]
        table.add_row(
            str(r["problem"]),
            str(r["n"]),
            str(r["d"]),
            str(r["device"]),
            str(r["threads"]),
            str(len(steps)),
            f"{r['seconds_per_step']:.3f}",
            f"{min(steps):.3f}–{max(steps):.3f}",
            _fmt(r["gflops"], ".1f"),  # type: ignore[arg-type]
            _fmt(100 * frac if isinstance(frac, float) else None, ".1f"),
            _fmt(r.get("metrics_seconds"), ".2f"),  # type: ignore[arg-type]
            mib(r["peak_rss_bytes"]),  # type: ignore[arg-type]
            mib(r.get("cuda_max_memory_allocated_process")),  # type: ignore[arg-type]
            goal_text(int(r["n"]), r.get("peak_rss_bytes"), LARGE_N_GOAL_N, LARGE_N_GOAL_BYTES),
            f"{r['off_sphere']:.1e}",
            f"{r['foreign_cores']:.2f}",
        )
    console.print(table)
    for note in notes:
        console.print(note)
    console.print(
        f"goal: the n = {LARGE_N_GOAL_N} process peaks below {LARGE_N_GOAL_BYTES / 1e9:g} GB"
        f" ({LARGE_N_GOAL_BYTES:.0e} bytes) of RSS;"
        " CUDA MiB = torch.cuda.max_memory_allocated of the process; s/step = median of the timed steps after"
        " one warm-up step; peak RSS = VmHWM of the"
        " child process (imports, simulation and, unless --quick, tokensde.metrics.summary); % ceiling against the"
        " fp32 2048^2 matmul throughput ("
        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in ceilings.items())
        + ") with the P2 flop count 4 n^2 d + 5 n^2 + 2 n d^2 per step"
    )
    worst = max((float(r["foreign_cores"]) for r in rows if r["status"] == "ok"), default=0.0)
    if worst > CONTENDED:
        console.print(
            f"[bold red]warning:[/] other processes used up to {worst:.2f} cores during large-n runs;"
            " timings are suspect"
        )


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _baseline(cells: list[Cell], problem: str, name: str) -> Cell | None:
    return next((c for c in cells if c.problem.key == problem and c.impl.name == name), None)


def p1_ratios(cells: list[Cell]) -> dict[str, dict[str, float]]:
    """Time ratios other / tokensde on P1 (how many times faster tokensde is), for eager and compiled."""
    by = {c.impl.name: c.median for c in cells if c.problem.key == "P1"}
    others: dict[str, float] = {}
    if "naive_numpy" in by:
        others["naive_numpy"] = by["naive_numpy"]
    sde = [by[k] for k in ("torchsde_default", "torchsde_increments") if k in by]
    if sde:
        others["torchsde_best"] = min(sde)
    if "torchsde_default" in by:
        others["torchsde_default"] = by["torchsde_default"]
    return {tok: {k: v / by[tok] for k, v in others.items()} for tok in ("tokensde", "tokensde_compiled") if tok in by}


P1_GOALS = {"naive_numpy": 10.0, "torchsde_best": 5.0, "torchsde_default": 20.0}
"""P1: tokensde (its faster variant) at least this many times faster than each of the others."""
P2_GOAL = 0.40
"""P2: tokensde at least this fraction of the fp32 matmul ceiling."""
SAME_STATISTIC_Z = 3.0
"""P1's antipodal fractions count as the same when they differ by less than this many standard errors."""


def _stat_text(st: Statistic | None) -> str:
    return "— (bound)" if st is None else st.fmt()


def goals(cells: list[Cell], ceilings: dict[str, float]) -> list[dict[str, object]]:
    """The performance goals, each with the value reached and whether it is met."""
    rows: list[dict[str, object]] = []
    ratios = p1_ratios(cells)
    for other, target in P1_GOALS.items():
        got = {tok: r[other] for tok, r in ratios.items() if other in r}
        if got:
            tok = max(got, key=lambda k: got[k])
            rows.append(
                {"goal": f"P1: {tok} / {other} time ratio >= {target:g}", "value": got[tok], "target": target}
                | {"met": got[tok] >= target, "text": f"{got[tok]:.2f}x"}
            )
    p1 = {c.impl.name: c for c in cells if c.problem.key == "P1"}
    refs = [c for name, c in p1.items() if not name.startswith("tokensde") and not c.impl.bound]
    for tok in ("tokensde_compiled", "tokensde"):
        if tok in p1 and refs:
            a = p1[tok].stat()
            assert a is not None
            zs = []
            for c in refs:
                b = c.stat()
                assert b is not None
                zs.append(abs(a.value - b.value) / max(math.hypot(a.se, b.se), 1e-12))
            rows.append(
                {"goal": f"P1: {tok}'s antipodal fraction within {SAME_STATISTIC_Z:g} se of every other's"}
                | {"value": max(zs), "target": SAME_STATISTIC_Z, "met": max(zs) < SAME_STATISTIC_Z}
                | {"text": f"largest |z| = {max(zs):.2f}"}
            )
            break
    p2 = [c for c in cells if c.problem.key == "P2" and c.impl.name.startswith("tokensde")]
    if p2:
        fr = {c.impl.name: (c.gflops() or 0.0) / ceilings.get(c.impl.device, ceilings["cpu"]) for c in p2}
        tok = max(fr, key=lambda k: fr[k])
        rows.append(
            {"goal": f"P2: {tok} >= {100 * P2_GOAL:g}% of the fp32 matmul ceiling", "value": fr[tok]}
            | {"target": P2_GOAL, "met": fr[tok] >= P2_GOAL, "text": f"{100 * fr[tok]:.1f}%"}
        )
    return rows


def theory_reference(problem: Problem) -> float | None:
    """``P(rho_t -> -1 | rho0)`` as ``t -> infinity`` (two tokens only), from ``tokensde.theory``."""
    if problem.n != 2:
        return None
    try:
        from tokensde.theory.value_noise import two_point_motion

        return float(two_point_motion(problem.d, problem.beta).p_antipodal(problem.rho0))
    except (ImportError, ArithmeticError, ValueError):  # the reference is informative only
        return None


def render(cells: list[Cell], ceilings: dict[str, float], info: dict[str, object], console: Console) -> None:
    if not cells:
        return
    table = Table(title="tokensde benchmarks: model A, medians over interleaved rounds", show_lines=False)
    for col, just in [
        ("problem", "left"),
        ("implementation", "left"),
        ("dev", "left"),
        ("median s", "right"),
        ("min–max s", "right"),
        ("M sys-steps/s", "right"),
        ("× tokensde", "right"),
        ("GFLOP/s", "right"),
        ("% ceiling", "right"),
        ("statistic ± se", "right"),
        ("max||x|-1|", "right"),
        ("warm-up s", "right"),
    ]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    for c in cells:
        if last is not None and c.problem.key != last:
            table.add_section()
        last = c.problem.key
        base = _baseline(cells, c.problem.key, "tokensde")
        secs = [s.seconds for s in c.samples]
        gf = c.gflops()
        ceiling = ceilings.get(c.impl.device, ceilings["cpu"])
        table.add_row(
            c.problem.key,
            c.impl.label,
            c.impl.device,
            f"{c.median:.3f}",
            f"{min(secs):.2f}–{max(secs):.2f}",
            f"{c.throughput / 1e6:.3g}",
            _fmt(c.median / base.median if base else None, ".2f"),
            _fmt(gf, ".1f"),
            _fmt(100 * gf / ceiling if gf is not None else None, ".1f"),
            _stat_text(c.stat()),
            f"{max(s.off_sphere for s in c.samples):.1e}",
            f"{c.warmup_seconds:.2f}",
        )
    console.print(table)

    ratios = p1_ratios(cells)
    if ratios:
        rt = Table(title="P1 time ratios: other / tokensde (higher = tokensde faster)")
        rt.add_column("other")
        for tok in ratios:
            rt.add_column(f"/ {tok}", justify="right")
        for other in next(iter(ratios.values())):
            rt.add_row(other, *(f"{ratios[tok][other]:.2f}" for tok in ratios))
        console.print(rt)

    for p in {c.problem.key: c.problem for c in cells}.values():
        console.print(
            f"{p.key}: {p.title}, beta = {p.beta:g}, {p.systems} systems x {p.steps} steps"
            f" of dt = {p.dt:g} (T = {p.horizon:g})"
        )
    for c in cells:
        ref = theory_reference(c.problem)
        if ref is not None:
            console.print(
                f"{c.problem.key}: statistic = fraction of systems with rho < -0.99 at T = {c.problem.horizon:g}; "
                f"theory, T -> infinity: P(rho -> -1) = {ref:.4f}"
            )
            break
    if any(c.problem.n > 2 for c in cells):
        console.print("P2: statistic = mean pairwise overlap <x_i, x_j> (i < j) at the end, se over systems")
    console.print(
        "fp32 matmul 2048^2 ceiling (median of the samples before the warm-ups and at each round's start): "
        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in ceilings.items())
        + f" | torch {info['torch']}, {info['torch_threads']} threads, {info['cpu_model']}"
    )
    bad = [c for c in cells if any(s.foreign_cores > CONTENDED for s in c.samples)]
    if bad:
        worst = max(s.foreign_cores for c in bad for s in c.samples)
        console.print(
            f"[bold red]warning:[/] other processes used up to {worst:.2f} cores during "
            f"{sum(s.foreign_cores > CONTENDED for c in bad for s in c.samples)} timed runs; timings are suspect"
        )


def all_goals(
    cells: list[Cell], ceilings: dict[str, float], command: dict[str, object] | None
) -> list[dict[str, object]]:
    """The goals of the P1/P2 implementations and of the command section."""
    return goals(cells, ceilings) + (command_goals(command) if command is not None else [])


def render_goals(gl: list[dict[str, object]], console: Console) -> None:
    if gl:
        gt = Table(title="Goals")
        for col in ("goal", "reached", "met"):
            gt.add_column(col)
        for g in gl:
            gt.add_row(str(g["goal"]), str(g["text"]), "yes" if g["met"] else "[bold red]no[/]")
        console.print(gt)


def to_json(
    args: argparse.Namespace,
    cells: list[Cell],
    ceilings: dict[str, float],
    info: dict[str, object],
    wall: float,
    large: list[dict[str, object]] | None = None,
    command: dict[str, object] | None = None,
) -> dict[str, object]:
    rows = []
    for c in cells:
        base = _baseline(cells, c.problem.key, "tokensde")
        st = c.stat()
        gf = c.gflops()
        ceiling = ceilings.get(c.impl.device, ceilings["cpu"])
        rows.append(
            {
                "problem": c.problem.key,
                "implementation": c.impl.name,
                "label": c.impl.label,
                "device": c.impl.device,
                "median_seconds": c.median,
                "seconds": [s.seconds for s in c.samples],
                "system_steps_per_second": c.throughput,
                "ratio_to_tokensde_eager": c.median / base.median if base else None,
                "gflops": gf,
                "fraction_of_matmul_ceiling": gf / ceiling if gf is not None else None,
                "statistic": asdict(st) if st is not None else None,
                "max_off_sphere": max(s.off_sphere for s in c.samples),
                "steps_taken": [s.steps_taken for s in c.samples],
                "warmup_seconds": c.warmup_seconds,
                "foreign_cores": [s.foreign_cores for s in c.samples],
                "retries": [s.retries for s in c.samples],
            }
        )
    probs = {c.problem.key: c.problem for c in cells}
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "quick": args.quick,
        "rounds": args.rounds,
        "seed": args.seed,
        "wait_quiet_seconds": args.wait_quiet,
        "machine": info,
        "matmul_ceiling_gflops": ceilings,
        "problems": {
            k: {
                **asdict(p),
                "horizon": p.horizon,
                "flops_per_system_step": p.flops_per_system_step(),
                "theory_p_antipodal_limit": theory_reference(p),
            }
            for k, p in probs.items()
        },
        "results": rows,
        "p1_time_ratios_other_over_tokensde": p1_ratios(cells),
        "goals": all_goals(cells, ceilings, command),
        "large_n": None
        if large is None
        else {
            "goal": {"n": LARGE_N_GOAL_N, "peak_rss_below_bytes": LARGE_N_GOAL_BYTES},
            "flops_per_system_step": "2 n^2 d + 5 n^2 + 2 n^2 d + 2 n d^2 (as P2)",
            "results": large,
        },
        "command": command,
        "wall_seconds": wall,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(cores())
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    log = Console(stderr=True)
    t0 = time.perf_counter()
    info = machine_info(args.device)
    ceiling_samples: dict[str, list[float]] = {}
    measure_ceilings(args, log, ceiling_samples)
    cells = measure(args, log, ceiling_samples) if wants_impls(args) else []
    ceilings = {k: statistics.median(v) for k, v in ceiling_samples.items()}
    info["matmul_ceiling_samples_gflops"] = ceiling_samples
    large = measure_large(args, log, ceilings) if wants_large_n(args) else None
    command = measure_command(args, log) if wants_command(args) else None
    info["loadavg_at_end"] = list(os.getloadavg())
    render(cells, ceilings, info, console)
    if large is not None:
        render_large(large, ceilings, console)
    if command is not None:
        render_command(command, console)
    render_goals(all_goals(cells, ceilings, command), console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = to_json(args, cells, ceilings, info, time.perf_counter() - t0, large, command)
    args.out.write_text(json.dumps(doc, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
