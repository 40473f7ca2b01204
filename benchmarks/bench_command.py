"""Section ``command``: whole processes, as users run them.

Rows, each a fresh process timed by the runner (``time.perf_counter()`` around ``subprocess.run``):

- ``naive``: ``benchmarks/naive_cell.py`` (float64 NumPy, the loop of ``bench_impls.NumpyNaive``) on the cell;
- ``cell_cold``: ``tokensde run phase-diagram --config cell.toml --out OUT --no-progress`` with empty cache
  directories (``NUMBA_CACHE_DIR``, ``TORCHINDUCTOR_CACHE_DIR``, ``XDG_CACHE_HOME`` fresh and empty);
- ``cell_warm``: the same command in a new process, with the cache directories of the last cold run;
- ``main_cold``: the main job (``scripts/main.sh`` without its set-up: ``tokensde run phase-diagram --out OUT
  --no-progress`` on the defaults), cold; not with ``--quick`` or ``--no-main-job``.

The cell is one phase-diagram cell (``d = 4``, ``beta = 1``, ``runs`` pairs from ``rho0 = 0``,
``dt = step / (d - 1) = 0.002``, ``T = 6``: 3000 steps). The cell rows run ``rounds`` times, interleaved
(the order rotates from round to round; round ``r`` uses seed ``seed + r``, in the TOML and for the naive
script), the main job once. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_machine import CpuMonitor, wait_until_quiet
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

__all__ = [
    "CELL",
    "COMMAND",
    "command_goals",
    "measure_command",
    "render_command",
]

COMMAND = "command"
"""Name of the section for ``--only``."""

CELL: dict[str, Any] = {
    "d": [4],
    "beta": [1.0],
    "runs": 20000,
    "step": 0.006,  # dt = step / (d - 1) = 0.002
    "T": 6.0,
    "T_max": 6.0,
    "horizon_factor": 0.0,
}
"""The phase-diagram cell (the TOML the command reads; each round adds its ``seed``)."""
QUICK_RUNS = 2000
"""Pairs of the cell with ``--quick`` (same ``T``, same ``dt``)."""
GROUP = 4
"""The phase diagram's steps per cell are a multiple of this (``phase_diagram.GROUP``)."""

CACHE_ENV = ("NUMBA_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "XDG_CACHE_HOME")
"""Cache directories a cold run gets fresh and empty (a warm one reuses a cold run's)."""
ENV_RECORDED = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "TORCH_COMPILE_DISABLE",
    "TOKENSDE_DEBUG",
    *CACHE_ENV,
)
"""Variables of the runner's environment (inherited by every row) copied into the JSON when set."""

COLD_GOAL = 8.0
"""Goal: the cold cell command at least this many times faster than the naive NumPy process (medians)."""
WARM_GOAL = 15.0
"""Goal: the warm cell command at least this many times faster than the naive NumPy process (medians)."""
SAME_Z = 3.0
"""Goal: ``|p_cmd - p_naive| <= SAME_Z * sqrt(se_cmd^2 + se_naive^2)``."""
MAIN_JOB_GOAL_SECONDS = 30.0
"""Goal: the main job, cold, in at most this many seconds."""
CONTENDED = 0.2
"""Other processes using more than this many cores on average during a run make it suspect."""
RETRIES = 2
"""With ``--wait-quiet``, a contended run is repeated up to this many times (the least contended one is kept)."""
TIMEOUT = 3600.0
"""Seconds after which a row's process is killed and the sample recorded as an error."""

LABELS = {
    "naive": "naive NumPy f64 (process)",
    "cell_cold": "tokensde cell, cold",
    "cell_warm": "tokensde cell, warm",
    "main_cold": "main job, cold",
}


@dataclass
class Sample:
    """One timed process (the least contended of its attempts)."""

    row: str
    round: int
    seed: int | None
    seconds: float
    foreign_cores: float
    loadavg_before: list[float]
    returncode: int | None
    command: list[str]
    env: dict[str, str]
    runs: int | None = None
    n_antipodal: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


# --------------------------------------------------------------------------- the cell
def cell_config(quick: bool) -> dict[str, Any]:
    return CELL | ({"runs": QUICK_RUNS} if quick else {})


def cell_dt(cfg: dict[str, Any]) -> float:
    """``step / (d - 1)``, as ``phase_diagram.cell_dt``."""
    return float(cfg["step"]) / max(int(cfg["d"][0]) - 1, 1)


def cell_steps(cfg: dict[str, Any]) -> int:
    """Steps of the cell (``horizon_factor = 0``: the horizon is ``T``), as ``phase_diagram.cell_steps``."""
    return GROUP * math.ceil(float(cfg["T"]) / (GROUP * cell_dt(cfg)))


def toml_text(cfg: dict[str, Any], seed: int) -> str:
    def value(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(float(v)) if isinstance(v, float) else str(v)

    return "".join(f"{k} = {value(v)}\n" for k, v in (cfg | {"seed": seed}).items())


def tokensde_exe() -> str:
    """The ``tokensde`` console script of the runner's environment (``<venv>/bin/tokensde``)."""
    exe = Path(sys.executable).parent / "tokensde"  # not resolved: the venv's bin, not the base interpreter's
    if exe.exists():
        return str(exe)
    found = shutil.which("tokensde")
    if found is None:
        raise FileNotFoundError("no tokensde console script next to the interpreter or on PATH")
    return found


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _read_results(out: Path) -> dict[str, Any]:
    """``n_antipodal``, ``runs`` (summed over cells), cells, ``dt``/``steps`` of the first cell, the theory's
    ``T -> infinity`` probability, and the verdict, from a finished run directory."""
    import pandas as pd

    t = pd.read_parquet(out / "results.parquet")
    missing = [c for c in ("n_antipodal", "runs") if c not in t.columns]
    if missing:
        raise KeyError(f"results.parquet lacks the column(s) {', '.join(missing)}")
    res: dict[str, Any] = {
        "n_antipodal": int(t["n_antipodal"].sum()),
        "runs": int(t["runs"].sum()),
        "cells": len(t),
    }
    for col in ("dt", "steps", "p_antipodal_theory", "T_cell"):
        if col in t.columns:
            v = t[col].iloc[0]
            res[col] = int(v) if col == "steps" else float(v)
    try:
        res["verdict"] = json.loads((out / "verdict.json").read_text())["verdict"]
    except (OSError, ValueError, KeyError):
        res["verdict"] = None
    return res


# --------------------------------------------------------------------------- timing
def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
    return " | ".join(lines)


def _once(
    row: str,
    rnd: int,
    seed: int | None,
    command: list[str],
    overrides: dict[str, str],
    monitor: CpuMonitor,
    read: Callable[[subprocess.CompletedProcess[str]], dict[str, Any]],
) -> Sample:
    """Run ``command`` once in a fresh process (cwd: the repository), timed; ``read(proc)`` parses its result."""
    env = dict(os.environ, **overrides)
    load = list(os.getloadavg())
    monitor.start()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        seconds, foreign = time.perf_counter() - t0, monitor.stop()
        return Sample(
            row, rnd, seed, seconds, foreign, load, None, command, overrides, error=f"timed out ({TIMEOUT:g} s)"
        )
    seconds = time.perf_counter() - t0
    foreign = monitor.stop()
    s = Sample(row, rnd, seed, seconds, foreign, load, proc.returncode, command, overrides)
    if proc.returncode != 0:
        s.error = f"exited with {proc.returncode}: {_tail(proc)}"
        return s
    try:
        got = read(proc)
    except Exception as e:  # noqa: BLE001 - any unreadable result is this sample's error, not the runner's
        s.error = f"result unreadable: {type(e).__name__}: {e}"
        return s
    s.runs, s.n_antipodal = got.pop("runs", None), got.pop("n_antipodal", None)
    s.extra = got
    return s


def _timed(args: Any, log: Any, make: Callable[[], Sample]) -> Sample:
    """``make()`` -> Sample, repeated while contended (with ``--wait-quiet``); the least contended is kept."""
    best: Sample | None = None
    tried: list[dict[str, Any]] = []
    for _attempt in range(1 + (RETRIES if args.wait_quiet > 0 else 0)):
        if args.wait_quiet > 0:
            waited, load = wait_until_quiet(CONTENDED, args.wait_quiet)
            if waited > 1.5:
                log.log(f"waited {waited:.0f} s for other processes (load now {load:.2f} cores)")
        s = make()
        tried.append({"seconds": s.seconds, "foreign_cores": s.foreign_cores, "error": s.error})
        flag = f"  [contended: {s.foreign_cores:.2f} other cores]" if s.foreign_cores > CONTENDED else ""
        what = f"{s.seconds:.2f} s" if s.ok else f"ERROR {s.error}"
        log.log(f"command round {s.round + 1} {LABELS[s.row]}: {what}{flag}")
        if best is None or (s.ok and (not best.ok or s.foreign_cores < best.foreign_cores)):
            best = s
        if not s.ok or s.foreign_cores <= CONTENDED:
            break
    assert best is not None
    best.attempts = tried
    return best


def measure_command(args: Any, log: Any) -> dict[str, Any]:
    """The ``command`` section: every sample, the commands and environment used, and per-row statistics."""
    cfg = cell_config(args.quick)
    dt, steps = cell_dt(cfg), cell_steps(cfg)
    main_job = not args.quick and not args.no_main_job
    monitor = CpuMonitor()
    root = Path(tempfile.mkdtemp(prefix="tokensde-bench-command-"))
    counter = iter(range(10**9))

    def fresh(name: str) -> Path:
        p = root / f"{name}-{next(counter)}"
        p.mkdir()
        return p

    def caches() -> dict[str, str]:
        return {k: str(fresh(k.lower())) for k in CACHE_ENV}

    exe = tokensde_exe()
    naive_script = str(HERE / "naive_cell.py")
    commands = {
        "naive": [sys.executable, naive_script, "--d", str(cfg["d"][0]), "--beta", str(cfg["beta"][0])]
        + ["--runs", str(cfg["runs"]), "--dt", repr(dt), "--steps", str(steps), "--seed", "SEED"],
        "cell": [exe, "run", "phase-diagram", "--config", "CELL.toml", "--out", "OUT", "--no-progress"],
        "main_job": [exe, "run", "phase-diagram", "--out", "OUT", "--no-progress"],
    }
    samples: list[Sample] = []
    last_cold: dict[str, str] | None = None

    def read_naive(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
        return {k: res[k] for k in ("runs", "n_antipodal", "loop_seconds", "steps", "dt")}

    def run_dir_reader(
        out: Path, cache: dict[str, str] | None
    ) -> Callable[[subprocess.CompletedProcess[str]], dict[str, Any]]:
        def read(_proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
            res = _read_results(out)
            if cache is not None:
                res["cache_bytes_after"] = {k: _dir_bytes(Path(v)) for k, v in cache.items()}
            shutil.rmtree(out, ignore_errors=True)
            return res

        return read

    def naive(r: int, seed: int) -> Sample:
        cmd = [str(seed) if a == "SEED" else a for a in commands["naive"]]
        return _once("naive", r, seed, cmd, {}, monitor, read_naive)

    def cell(r: int, seed: int, cold: bool) -> Sample:
        nonlocal last_cold
        if cold:
            cache = caches()
        elif last_cold is None:
            return Sample("cell_warm", r, seed, math.nan, 0.0, list(os.getloadavg()), None, [], {}, error="no cold run")
        else:
            cache = last_cold
        conf = root / f"cell-seed{seed}.toml"
        conf.write_text(toml_text(cfg, seed))
        out = root / f"out-{next(counter)}"
        cmd = [str(conf) if a == "CELL.toml" else str(out) if a == "OUT" else a for a in commands["cell"]]
        s = _once("cell_cold" if cold else "cell_warm", r, seed, cmd, cache, monitor, run_dir_reader(out, cache))
        if cold and s.ok:
            last_cold = cache
        return s

    rows = ["naive", "cell_cold", "cell_warm"]  # cold precedes warm in round 0; later a warm reuses the last cold
    try:
        for r in range(args.rounds):
            seed = args.seed + r
            for row in rows[r % 3 :] + rows[: r % 3]:
                if row == "naive":
                    samples.append(_timed(args, log, functools.partial(naive, r, seed)))
                else:
                    cold = row == "cell_cold"
                    samples.append(_timed(args, log, functools.partial(cell, r, seed, cold)))
        if main_job:

            def main_run() -> Sample:
                cache = caches()
                out = root / f"main-{next(counter)}"
                cmd = [str(out) if a == "OUT" else a for a in commands["main_job"]]
                return _once("main_cold", 0, None, cmd, cache, monitor, run_dir_reader(out, cache))

            samples.append(_timed(args, log, main_run))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    stats = {row: row_stats(row, samples) for row in [*rows, *(["main_cold"] if main_job else [])]}
    naive_med = stats["naive"]["median_seconds"]
    for row, st in stats.items():
        med = st["median_seconds"]
        ok = row != "main_cold" and naive_med is not None and med is not None
        st["ratio_vs_naive"] = naive_med / med if ok else None
    section: dict[str, Any] = {
        "cell": cfg | {"dt": dt, "steps": steps, "rho0": 0.0, "antipodal_rho": -0.99},
        "rounds": args.rounds,
        "main_job_rounds": 1 if main_job else 0,
        "main_job_skipped": None if main_job else ("--quick" if args.quick else "--no-main-job"),
        "commands": commands
        | {
            "placeholders": "SEED: seed + round; CELL.toml: the cell (this config plus `seed = SEED`) in a temp"
            " dir; OUT: a fresh directory that does not exist yet",
            "cwd": str(ROOT),
        },
        "env": {
            "inherited": {k: os.environ[k] for k in ENV_RECORDED if k in os.environ},
            "cold": f"{', '.join(CACHE_ENV)} set to fresh empty temporary directories",
            "warm": "the cache directories of the last cold run of the cell (round 0 runs cold before warm)",
            "naive": "inherited environment only",
        },
        "timing": "wall clock of the whole process: time.perf_counter() around subprocess.run in the runner",
        "samples": [asdict(s) for s in samples],
        "rows": stats,
        "consistency": consistency(samples, steps, dt),
    }
    section["goals"] = command_goals(section)
    return section


# --------------------------------------------------------------------------- statistics
def row_stats(row: str, samples: list[Sample]) -> dict[str, Any]:
    got = [s for s in samples if s.row == row]
    good = [s for s in got if s.ok]
    secs = [s.seconds for s in good]
    out: dict[str, Any] = {
        "label": LABELS[row],
        "samples": len(got),
        "errors": [s.error for s in got if not s.ok],
        "seconds": secs,
        "median_seconds": statistics.median(secs) if secs else None,
        "min_seconds": min(secs) if secs else None,
        "max_seconds": max(secs) if secs else None,
        "foreign_cores": [s.foreign_cores for s in got],
        "loadavg_before": [s.loadavg_before for s in got],
        "statistic": None,
    }
    # pooled over rounds, one sample per seed (a warm run repeats its round's cold run on the same seed)
    by_seed = {s.seed: s for s in good if s.n_antipodal is not None and s.runs}
    if by_seed and row != "main_cold":
        n = sum(s.n_antipodal or 0 for s in by_seed.values())
        runs = sum(s.runs or 0 for s in by_seed.values())
        p = n / runs
        out["statistic"] = {"n_antipodal": n, "runs": runs, "p_antipodal": p, "se": math.sqrt(p * (1 - p) / runs)}
    if row == "main_cold" and good:
        out["verdict"] = good[0].extra.get("verdict")
        out["cells"] = good[0].extra.get("cells")
    return out


def consistency(samples: list[Sample], steps: int, dt: float) -> dict[str, Any]:
    """Whether the command's cell ran the naive script's ``steps`` and ``dt``, and whether a warm run's counts
    equal the cold run's of the same seed (the command is deterministic given its seed)."""
    cells = [s for s in samples if s.row.startswith("cell") and s.ok]
    same_grid = all(s.extra.get("steps") == steps and math.isclose(s.extra.get("dt", 0.0), dt) for s in cells)
    cold = {s.seed: s.n_antipodal for s in cells if s.row == "cell_cold"}
    warm_equal = [s.n_antipodal == cold[s.seed] for s in cells if s.row == "cell_warm" and s.seed in cold]
    return {
        "cell_steps_and_dt_match_naive": same_grid if cells else None,
        "warm_counts_equal_cold_same_seed": all(warm_equal) if warm_equal else None,
        "p_antipodal_theory_t_infinity": next((s.extra.get("p_antipodal_theory") for s in cells), None),
    }


def _failed(labels: list[str]) -> str:
    return (", ".join(labels) or "no sample") + " failed (errors below the command table and in the JSON)"


def _goal(name: str, value: float | None, target: float, met: bool, text: str) -> dict[str, Any]:
    return {"goal": name, "value": value, "target": target, "met": met, "text": text}


def command_goals(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals of the section, each with the value reached and whether it is met (as ``run.goals``)."""
    rows = section["rows"]
    goals: list[dict[str, Any]] = []
    for row, target in (("cell_cold", COLD_GOAL), ("cell_warm", WARM_GOAL)):
        st = rows.get(row)
        if st is None:
            continue
        ratio = st["ratio_vs_naive"]
        name = f"command: naive NumPy process / {LABELS[row]} (whole process, medians) >= {target:g}x"
        if ratio is None:
            failed = [r["label"] for r in (rows["naive"], st) if r["errors"]]
            goals.append(_goal(name, None, target, False, "not measured: " + _failed(failed)))
        else:
            goals.append(_goal(name, ratio, target, ratio >= target, f"{ratio:.2f}x"))
    nv = rows["naive"]["statistic"]
    zs = []
    for row in ("cell_cold", "cell_warm"):
        st = rows.get(row, {}).get("statistic")
        if st is not None and nv is not None:
            zs.append(abs(st["p_antipodal"] - nv["p_antipodal"]) / max(math.hypot(st["se"], nv["se"]), 1e-12))
    name = f"command: the cell's antipodal fraction within {SAME_Z:g} se of the naive NumPy process's"
    if zs:
        goals.append(_goal(name, max(zs), SAME_Z, max(zs) <= SAME_Z, f"largest |z| = {max(zs):.2f}"))
    else:
        goals.append(_goal(name, None, SAME_Z, False, "not measured: no fractions to compare"))
    main = rows.get("main_cold")
    if main is not None:
        name, med = f"command: main job, cold, <= {MAIN_JOB_GOAL_SECONDS:g} s", main["median_seconds"]
        if med is None:
            goals.append(_goal(name, None, MAIN_JOB_GOAL_SECONDS, False, "not measured: " + _failed([main["label"]])))
        else:
            goals.append(_goal(name, med, MAIN_JOB_GOAL_SECONDS, med <= MAIN_JOB_GOAL_SECONDS, f"{med:.1f} s"))
    return goals


# --------------------------------------------------------------------------- rendering
def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def render_command(section: dict[str, Any], console: Any) -> None:
    cell = section["cell"]
    table = Table(
        title=f"whole command: one phase-diagram cell (d={cell['d'][0]}, beta={cell['beta'][0]:g},"
        f" {cell['runs']} pairs, dt={cell['dt']:g}, {cell['steps']} steps) and the main job; a fresh process per run"
    )
    for col, just in [
        ("row", "left"),
        ("median s", "right"),
        ("min–max s", "right"),
        ("ratio vs naive", "right"),
        ("antipodal fraction ± se", "right"),
        ("other cores", "right"),
    ]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for row, st in section["rows"].items():
        stat = st["statistic"]
        if stat is not None:
            frac = f"{stat['p_antipodal']:.4f} ± {stat['se']:.4f}"
        elif row == "main_cold" and st.get("verdict"):
            frac = f"— ({st.get('cells')} cells, {st['verdict']})"
        else:
            frac = "—"
        lo, hi = st["min_seconds"], st["max_seconds"]
        table.add_row(
            st["label"] + (" [bold red]ERROR[/]" if st["errors"] else ""),
            _fmt(st["median_seconds"], ".2f"),
            "—" if lo is None else f"{lo:.2f}–{hi:.2f}",
            _fmt(st["ratio_vs_naive"], ".2f"),
            frac,
            _fmt(max(st["foreign_cores"], default=None), ".2f"),
        )
    console.print(table)
    con = section["consistency"]
    console.print(
        "cold = a fresh process with fresh empty " + ", ".join(CACHE_ENV) + "; warm = a fresh process reusing a cold"
        " run's cache directories; ratio vs naive = naive median / row median; fraction = pairs with rho < -0.99 at"
        f" T = {cell['T']:g} (the plain fraction at dt), pooled over rounds (one sample per seed), binomial se"
        + (
            f"; theory, T -> infinity: {con['p_antipodal_theory_t_infinity']:.4f}"
            if con["p_antipodal_theory_t_infinity"] is not None
            else ""
        )
    )
    if section["main_job_skipped"]:
        console.print(f"main job: not run ({section['main_job_skipped']})")
    if con["cell_steps_and_dt_match_naive"] is False:
        console.print("[bold red]warning:[/] the command's cell did not run the naive script's steps and dt")
    if con["warm_counts_equal_cold_same_seed"] is False:
        console.print("[bold red]warning:[/] a warm run's antipodal count differs from the cold run's on the same seed")
    for st in section["rows"].values():
        for e in st["errors"]:
            console.print(f"[bold red]error:[/] {st['label']}: {e}")
    worst = max((s["foreign_cores"] for s in section["samples"]), default=0.0)
    if worst > CONTENDED:
        n = sum(s["foreign_cores"] > CONTENDED for s in section["samples"])
        console.print(
            f"[bold red]warning:[/] other processes used up to {worst:.2f} cores during {n} command runs;"
            " timings are suspect"
        )
