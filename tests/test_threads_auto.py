"""``--threads auto`` (the default): the cores shared among the units that run at once, fixed once per run.

The rule (:func:`tokensde.runtime.executors.auto_threads`, :meth:`ExecutorOptions.resolved`) with the cores
mocked; the command line's parsing and its one-line errors; the manifest's record of the resolved and the
requested values (a ``--quick`` phase diagram, the cheapest catalogue run: about 5 s); units to run, not
units planned, on resume; progress of a unit running alone in a local worker.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd
import pytest
import torch
from pydantic import Field
from typer.testing import CliRunner

import tokensde.runtime
import tokensde.threads
from tokensde.cli import app
from tokensde.experiments.base import Experiment, ExperimentConfig
from tokensde.runtime import run_experiment
from tokensde.runtime.executors import ExecutorOptions, auto_threads, open_executor, parse_threads
from tokensde.runtime.store import RunStore


def resolve(kind: str, cores: int, units: int, threads: Any = "auto", workers: int | None = None) -> ExecutorOptions:
    return ExecutorOptions(kind, workers=workers, threads=threads).resolved(units, "cpu", cores)


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    "cores,units,workers,threads",
    [
        (2, 1, 1, 2),  # one unit on 2 cores: both cores in its threads
        (2, 13, 2, 1),  # more units than cores: one process per core, one thread each
        (16, 3, 3, 5),  # 16 // 3
        (2, 2, 2, 1),
        (1, 5, 1, 1),
        (8, 8, 8, 1),
        (8, 0, 1, 8),  # nothing left to run (a finished run summarised again): as for one unit
    ],
)
def test_local_auto_shares_the_cores_among_the_units(cores, units, workers, threads):
    o = resolve("local", cores, units)
    assert (o.workers, o.threads, o.threads_requested) == (workers, threads, "auto")


def test_workers_times_threads_never_exceeds_the_cores():
    for cores in range(1, 65):
        for units in range(1, 80):
            o = resolve("local", cores, units)
            assert o.workers == min(cores, units)
            assert o.workers * o.threads <= cores, (cores, units, o)
            assert o.threads == max(1, cores // units)


def test_serial_ray_cuda_and_given_values():
    assert resolve("serial", 2, 13).threads == 2 and resolve("serial", 16, 3).threads == 16
    assert resolve("serial", 16, 3).workers == 1
    assert resolve("ray", 16, 3).threads == 1  # one CPU per Ray task, as before
    assert resolve("ray", 16, 3, threads=4).threads == 4
    assert resolve("ray", 16, 3, workers=2).workers == 2 and resolve("ray", 16, 3, workers=9).workers == 3
    cuda = ExecutorOptions("local", threads="auto").resolved(5, "cuda", 8)
    assert (cuda.workers, cuda.threads) == (1, 8)  # one worker on the device, every core in its threads
    # explicit workers: the cores are shared among those that run at once
    assert (resolve("local", 16, 3, workers=1).workers, resolve("local", 16, 3, workers=1).threads) == (1, 16)
    given = resolve("local", 16, 3, threads=3)
    assert (given.workers, given.threads, given.threads_requested) == (3, 3, 3)
    assert auto_threads("local", 2, 1) == 2 and auto_threads("ray", 64, 1) == 1


def test_cores_default_to_available_cores(monkeypatch):
    monkeypatch.setattr(tokensde.threads, "available_cores", lambda: 16)
    o = ExecutorOptions("local", threads="auto").resolved(3)
    assert (o.workers, o.threads) == (3, 5)
    monkeypatch.setattr(tokensde.threads, "available_cores", lambda: 2)
    o = ExecutorOptions("local", threads="auto").resolved(13)
    assert (o.workers, o.threads) == (2, 1)


def test_none_keeps_the_current_count_and_records_it():
    torch_before = torch.get_num_threads()
    o = ExecutorOptions("serial").resolved(4, cores=64)
    assert o.threads == torch_before and o.threads_requested is None
    rec = o.record()
    assert set(rec) == {"kind", "workers", "threads", "threads_requested", "ray_address", "max_retries"}


@pytest.mark.parametrize("bad", [0, -1, "x", "2", 1.5, True])
def test_options_reject_bad_threads(bad):
    with pytest.raises(ValueError, match="threads: must be auto or a positive integer"):
        ExecutorOptions("serial", threads=bad)


# ----------------------------------------------------------------------------- the command line


def test_parse_threads():
    assert parse_threads("auto") == "auto" and parse_threads("1") == 1 and parse_threads("4096") == 4096
    for bad in ("0", "-2", "x", "", "1.5", "4097", "AUTO ", None, True):
        with pytest.raises(ValueError, match=r"threads: must be auto or an integer in \[1, 4096\]"):
            parse_threads(bad)


@pytest.fixture
def captured(monkeypatch):
    """The ExecutorOptions that ``tokensde run`` passes to run_experiment (which does not run)."""
    got: dict[str, Any] = {}

    def fake(exp, cfg, out, device="cpu", show_progress=True, executor=None, **kw):
        got["options"] = executor
        return {"verdict": "PASS", "checks": [], "notes": []}

    monkeypatch.setattr(tokensde.runtime, "run_experiment", fake)
    return got


@pytest.mark.parametrize("args,threads", [([], "auto"), (["--threads", "auto"], "auto"), (["--threads", "3"], 3)])
def test_cli_threads_default_is_auto(tmp_path, captured, args, threads):
    r = CliRunner().invoke(app, ["run", "phase-diagram", "--quick", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert captured["options"].threads == threads and captured["options"].workers is None


@pytest.mark.parametrize("raw", ["0", "x", "-1", "4097", "1.5", "", "Auto"])
def test_cli_bad_threads_one_line_exit_2(tmp_path, raw):
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["run", "phase-diagram", "--quick", "--out", str(out), "--threads", raw])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines == [f"error: threads: must be auto or an integer in [1, 4096], got {raw!r}"], r.stderr
    assert not r.stdout.strip() and not out.exists()


def test_cli_help_states_the_default():
    r = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    assert "auto (default" in text and "[default: auto]" in text


# ----------------------------------------------------------------------------- the manifest


def test_manifest_records_resolved_and_requested_threads(tmp_path, monkeypatch):
    """A --quick phase diagram (2 units), serial: auto -> every core (mocked: 2); then the same command with
    --threads 1 on the finished run (nothing left to run): both executions recorded."""
    monkeypatch.setattr(tokensde.threads, "available_cores", lambda: 2)
    before = torch.get_num_threads()
    out = tmp_path / "run"
    base = ["run", "phase-diagram", "--quick", "--out", str(out), "--executor", "serial", "--no-progress"]
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    m = json.loads((out / "manifest.json").read_text())
    assert m["execution"]["kind"] == "serial"
    assert (m["execution"]["workers"], m["execution"]["threads"], m["execution"]["threads_requested"]) == (
        1,
        2,
        "auto",
    )
    assert torch.get_num_threads() == before, "the unit's threads are restored afterwards"
    r = CliRunner().invoke(app, [*base, "--threads", "1"])
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    m = json.loads((out / "manifest.json").read_text())
    got = [(e["threads"], e["threads_requested"]) for e in m["executions"]]
    assert got == [(2, "auto"), (1, 1)] and m["execution"]["threads_requested"] == 1
    assert m["units_resumed"] == 2


# ----------------------------------------------------------------------------- units to run, progress


class TickConfig(ExperimentConfig):
    units: int = Field(default=3, ge=1, le=16)
    ticks: int = Field(default=2, ge=1, le=100)
    pause: float = Field(default=0.0, ge=0.0, le=5.0)
    seed: int = Field(default=0, ge=0)


class Ticking(Experiment):
    """Test-only: each unit reports ``ticks`` progress steps ``pause`` seconds apart and the threads it ran with."""

    name = "tick-threads-test"
    summary = "test-only experiment of tests/test_threads_auto.py"
    Config = TickConfig

    def plan(self, cfg: TickConfig) -> list[dict[str, Any]]:
        return [{"id": f"u{i}", "i": i} for i in range(cfg.units)]

    def unit_cost(self, cfg: TickConfig, unit: dict[str, Any]) -> float:
        return float(cfg.ticks)

    def run_unit(self, cfg: TickConfig, unit: dict[str, Any], device: str, progress: Any = None) -> list[dict]:
        for _ in range(cfg.ticks):
            time.sleep(cfg.pause)
            if progress is not None:
                progress(1.0)
        return [{"unit": unit["i"], "threads": torch.get_num_threads()}]

    def summarize(self, cfg: TickConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return pd.DataFrame(rows)

    def verdict(self, cfg: TickConfig, table: pd.DataFrame) -> dict[str, Any]:
        return {"verdict": "PASS", "checks": [{"name": "rows", "passed": True, "detail": str(len(table))}]}


def test_resume_counts_only_the_units_left(tmp_path, monkeypatch):
    """3 units, 2 of them removed after a first run: auto resolves for 2 units to run (mocked 4 cores: 2 workers
    x 2 threads; counting all 3 planned units would give 3 x 1), and the recomputed units ran with 2 threads."""
    exp, out = Ticking(), tmp_path / "run"
    cfg = exp.Config()
    run_experiment(exp, cfg, out, show_progress=False, executor=ExecutorOptions("serial", threads=1))
    store = RunStore(out)
    for uid in ("u0", "u2"):
        store.unit_path(uid).unlink()
    monkeypatch.setattr(tokensde.threads, "available_cores", lambda: 4)
    run_experiment(exp, cfg, out, show_progress=False, executor=ExecutorOptions("local", threads="auto"))
    m = json.loads((out / "manifest.json").read_text())
    first, second = m["executions"]
    assert (first["kind"], first["workers"], first["threads"], first["threads_requested"]) == ("serial", 1, 1, 1)
    assert (second["kind"], second["workers"], second["threads"], second["threads_requested"]) == (
        "local",
        2,
        2,
        "auto",
    )
    assert m["units_resumed"] == 1
    table = pd.read_parquet(out / "results.parquet").set_index("unit")["threads"].to_dict()
    assert table == {0: 2, 1: 1, 2: 2}


def test_a_unit_alone_in_a_local_worker_shows_progress():
    """One unit, one local worker, 2 threads: its progress reaches the main process while it runs."""
    exp = Ticking()
    cfg = exp.Config(units=1, ticks=8, pause=0.15)
    units = exp.plan(cfg)
    ticks: list[tuple[float, float]] = []

    def factory(u: dict[str, Any]):
        assert u["id"] == "u0"
        return lambda amount: ticks.append((time.monotonic(), amount))

    before = torch.get_num_threads()
    with open_executor(exp, cfg, "cpu", ExecutorOptions("local", workers=1, threads=2)) as ex:
        got = list(ex.run(units, factory))
        done = time.monotonic()
    assert [u["id"] for u, _ in got] == ["u0"] and got[0][1] == [{"unit": 0, "threads": 2}]
    assert sum(a for _, a in ticks) == pytest.approx(8.0)
    assert len(ticks) >= 2, ticks  # sent in parts (every 0.2 s), not once at the end
    assert ticks[0][0] < done - 0.2, "progress arrived only with the result"
    assert torch.get_num_threads() == before
