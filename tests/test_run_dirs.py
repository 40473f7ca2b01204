"""Run directories you can trust: provenance-checked resume, no silent overwrites, one writer at a time,
nothing half-written, no crash after the compute, one line (and the right exit status) for every failure.

Each case replays a way a careless or hostile user broke a run directory before; the CLI runs in process
(typer's runner) except where a real process is the point (a killed parent, a concurrent writer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_executors import CLI, TINY, Tiny, _env
from typer.testing import CliRunner

from tokensde.cli import app
from tokensde.errors import UsageError
from tokensde.runtime import run_experiment
from tokensde.runtime.executors import ExecutorOptions
from tokensde.runtime.store import LOCK_NAME, FileCheckpoint, RunStore
from tokensde.stats import bonferroni_z, interval_errors, wilson, z_for

SERIAL = ExecutorOptions("serial", threads=1)


@pytest.fixture
def cli(monkeypatch):
    """``cli(*args) -> result``: the CLI in process, with the test-only Tiny experiment registered."""
    monkeypatch.setenv("TOKENSDE_EXPERIMENTS", "test_executors:Tiny")

    def invoke(*args: str):
        return CliRunner().invoke(app, [str(a) for a in args])

    return invoke


def one_error_line(r, code: int, *words: str) -> str:
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tiny_run(out: Path, **cfg) -> dict:
    exp = Tiny()
    return run_experiment(exp, exp.Config(units=3, size=500, **cfg), out, show_progress=False, executor=SERIAL)


# ----------------------------------------------------------------------------- 1. provenance-checked resume


def test_lost_manifest_is_not_resumed_into(tmp_path, cli):
    """A finished seed-0 run without its manifest, rerun with seed 5: refused (exit 2, nothing touched); with
    --force every unit is recomputed (their provenance is seed 0's) and the table is the seed-5 table."""
    out, ref = tmp_path / "run", tmp_path / "ref"
    tiny_run(out, seed=0)
    tiny_run(ref, seed=5)
    (out / "manifest.json").unlink()
    before = tree(out)
    cfg = tmp_path / "c.toml"
    cfg.write_text("units = 3\nsize = 500\nseed = 5\n")
    r = cli("run", TINY, "--config", cfg, "--out", out, "--executor", "serial", "--no-progress")
    one_error_line(r, 2, "out:", "unit files but no manifest.json", "--force")
    assert tree(out) == before
    # --threads 1: the reference's thread count (the default, auto, gives a serial run every core)
    r = cli(
        "run", TINY, "--config", cfg, "--out", out, "--executor", "serial", "--no-progress", "--force", "--threads", "1"
    )
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("was produced by another config") == 3, r.stderr
    assert (out / "results.parquet").read_bytes() == (ref / "results.parquet").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 5 and manifest["units_resumed"] == 0


def test_unit_of_another_config_is_recomputed_not_reused(tmp_path):
    """A unit file copied in from a run of another config (same unit id) is recomputed, with a warning."""
    out, other, ref = tmp_path / "run", tmp_path / "other", tmp_path / "ref"
    tiny_run(out, seed=0)
    tiny_run(other, seed=1)
    tiny_run(ref, seed=0)
    for name in ("u0.json", "u2.json"):
        (out / "units" / name).write_bytes((other / "units" / name).read_bytes())
    warnings: list[str] = []
    exp = Tiny()
    run_experiment(exp, exp.Config(units=3, size=500), out, show_progress=False, executor=SERIAL, warn=warnings.append)
    assert len(warnings) == 2 and all("produced by another config" in w for w in warnings), warnings
    assert (out / "results.parquet").read_bytes() == (ref / "results.parquet").read_bytes()


def test_unit_files_without_provenance_are_recomputed(tmp_path):
    out = tmp_path / "run"
    tiny_run(out)
    store = RunStore(out)
    payload = json.loads(store.unit_path("u1").read_text())
    del payload["provenance"]
    store.unit_path("u1").write_text(json.dumps(payload))
    rows, why = store.check_unit("u1", "0" * 64)
    assert rows is None and why == "has no provenance record"


@pytest.mark.parametrize(
    "content", ["[1, 2, 3]", '{"config": {}}', '{"experiment": 3, "config": {}}', "not json", '"a string"']
)
def test_invalid_manifest_is_refused_in_one_line(tmp_path, cli, content):
    out = tmp_path / "run"
    tiny_run(out)
    (out / "manifest.json").write_text(content)
    before = tree(out)
    r = cli("run", TINY, "--out", out, "--executor", "serial", "--no-progress")
    one_error_line(r, 2, "out:", "not a valid tokensde manifest")
    assert tree(out) == before
    r = cli("report", out)
    one_error_line(r, 2, "dirs:")


def test_edited_checkpoint_is_not_used(tmp_path):
    """A checkpoint whose arrays were edited, or that another config wrote, is ignored with one warning line."""
    said: list[str] = []
    ck = FileCheckpoint(tmp_path / "u.npz", provenance="a" * 64, warn=said.append)
    w = np.arange(12.0).reshape(3, 4)
    ck.save({"weights": w, "epoch": np.asarray(3)})
    got = ck.load()
    assert got is not None and set(got) == {"weights", "epoch"} and np.array_equal(got["weights"], w)
    with np.load(ck.path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["weights"] = arrays["weights"] + 1e-9  # an edit that keeps the file valid
    np.savez(ck.path, **arrays)
    assert ck.load() is None and "checksum" in said[-1]
    ck.save({"weights": w})
    other = FileCheckpoint(ck.path, provenance="b" * 64, warn=said.append)
    assert other.load() is None and "another config" in said[-1]
    ck.path.write_bytes(ck.path.read_bytes()[:100])
    assert ck.load() is None and "truncated" in said[-1]
    assert all(s.startswith("warning: checkpoint") and s.endswith("the unit starts again") for s in said)


# ----------------------------------------------------------------------------- 2. no crash after the compute


@pytest.mark.parametrize("runs", [100, 1000, 3000, 5000, 10000])
def test_wilson_is_exact_at_zero_and_n(runs):
    """The Wilson bounds at 0 and n successes are exactly 0 and 1 (they came out as ~2e-19 for some n), so an
    error bar k/n - low is never negative; every z the experiments use, family-wise ones included."""
    zs = [z_for(lv) for lv in (0.9, 0.95, 0.99, 0.999)] + [bonferroni_z(0.99, m) for m in (1, 7, 45, 300)]
    for z in zs:
        lo, hi = wilson(np.array([0, runs, 1, runs - 1]), np.full(4, runs), z)
        assert lo[0] == 0.0 and hi[1] == 1.0
        p = np.array([0, runs, 1, runs - 1]) / runs
        assert np.all(lo <= p) and np.all(p <= hi)
        assert np.all(interval_errors(p, lo, hi) >= 0.0)


def test_phase_diagram_with_empty_cells_runs_to_a_report(tmp_path, cli):
    """runs = 3000 and a cell with no antipodal pair (beta = 0): figures and report are written (it crashed in
    matplotlib, 'yerr' must not contain negative values, and the CLI reported it as bad input)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("d = [3]\nbeta = [0.0]\nruns = 3000\nT = 0.2\nT_max = 0.4\nhorizon_factor = 0.0\nstep = 0.1\n")
    out = tmp_path / "pd"
    r = cli("run", "phase-diagram", "--config", cfg, "--out", out, "--executor", "serial", "--no-progress")
    assert r.exit_code in (0,), (r.stdout, r.stderr)
    import pandas as pd

    t = pd.read_parquet(out / "results.parquet")
    assert (t["n_antipodal"] == 0).all() and (t["ci_low"] == 0.0).all()
    assert (out / "report.html").exists() and (out / "phase_diagram.png").exists()


# ----------------------------------------------------------------------------- 3. no silent overwrites


def test_out_with_a_users_files_is_refused_unless_forced(tmp_path, cli):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("<html>my notes</html>")
    (out / "results.parquet").write_bytes(b"my table")
    before = tree(out)
    r = cli("run", TINY, "--out", out, "--executor", "serial", "--no-progress")
    one_error_line(r, 2, "out:", "not empty", "--force")
    assert tree(out) == before
    r = cli("run", TINY, "--out", out, "--executor", "serial", "--no-progress", "--force")
    assert r.exit_code == 0, r.stderr
    assert (out / "manifest.json").exists()


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_out_is_refused(tmp_path, cli, bad, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("run", TINY, "--out", bad, "--executor", "serial", "--no-progress")
    one_error_line(r, 2, "out:", "directory path")
    assert list(tmp_path.iterdir()) == []
    r = cli("simulate", "--out", bad, "--n", "4", "--steps", "2")
    one_error_line(r, 2, "out:")
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_or_cannot_be_created(tmp_path, cli):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    r = cli("run", TINY, "--out", f, "--executor", "serial", "--no-progress")
    one_error_line(r, 2, "out:", "not a directory")
    assert f.read_text() == "mine"
    r = cli("run", TINY, "--out", "/proc/tokensde-test/run", "--executor", "serial", "--no-progress")
    one_error_line(r, 2, "out:", "cannot create")
    r = cli("run", TINY, "--out", f / "sub", "--executor", "serial", "--no-progress")
    one_error_line(r, 2, "out:")
    r = cli("simulate", "--out", f, "--n", "4", "--steps", "2")
    one_error_line(r, 2, "out:", "not a directory")


def test_report_never_overwrites_what_is_not_a_report(tmp_path, cli):
    run = tmp_path / "run"
    tiny_run(run)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    r = cli("report", run, "--out", notes)
    one_error_line(r, 2, "out:", "not a report of tokensde")
    assert notes.read_text() == "my notes"
    r = cli("report", run, "--out", tmp_path)
    one_error_line(r, 2, "out:", "is a directory")
    page = tmp_path / "compare.html"
    assert cli("report", run, "--out", page).exit_code == 0
    assert cli("report", run, run, "--out", page).exit_code == 0  # a report of tokensde is replaced
    (run / "report.html").write_text("<html>edited by hand</html>")
    r = cli("report", run)
    one_error_line(r, 2, "not a report of tokensde")
    assert (run / "report.html").read_text() == "<html>edited by hand</html>"
    assert cli("report", run, "--force").exit_code == 0
    assert cli("report", run, "--out", notes, "--force").exit_code == 0


def test_simulate_keeps_its_record(tmp_path, cli):
    out = tmp_path / "sim"
    args = ["simulate", "--out", out, "--n", "4", "--d", "3", "--steps", "3"]
    assert cli(*args).exit_code == 0
    assert cli(*args).exit_code == 0  # the same config again: allowed
    r = cli(*args[:-1], "4")
    one_error_line(r, 2, "out:", "another config")
    assert json.loads((out / "manifest.json").read_text())["config"]["steps"] == 3


# ----------------------------------------------------------------------------- 4. one writer at a time


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path, cli):
    out = tmp_path / "run"
    assert cli("run", TINY, "--out", out, "--executor", "serial", "--no-progress").exit_code == 0
    before = tree(out)
    with RunStore(out).locked():
        r = cli("run", TINY, "--out", out, "--executor", "serial", "--no-progress")
        one_error_line(r, 2, "out:", "being written by another tokensde process", f"pid {os.getpid()}")
        r = cli("report", out)
        one_error_line(r, 2, "being written")
    assert {k: v for k, v in tree(out).items() if k != LOCK_NAME} == {k: v for k, v in before.items() if k != LOCK_NAME}
    assert cli("run", TINY, "--out", out, "--executor", "serial", "--no-progress").exit_code == 0


def test_concurrent_runs_into_one_directory(tmp_path):
    """Two real processes start the same run into one --out: one computes, the other exits 2 at once, and the
    manifest records one execution."""
    out = tmp_path / "run"
    cmd = CLI + ["run", TINY, "--out", str(out), "--executor", "serial", "--no-progress", "--config"]
    cfg = tmp_path / "c.toml"
    # long enough (2 x 4 s) that the second process is still starting up (imports) on a loaded machine
    cfg.write_text("units = 2\nsize = 100\nsleep = 4.0\n")
    first = subprocess.Popen(cmd + [str(cfg)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "manifest.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(cmd + [str(cfg)], env=_env(), capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    assert "being written by another tokensde process" in second.stderr
    assert first.wait(timeout=120) == 0, first.communicate()
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["executions"]) == 1 and "finished_at" in manifest


# ----------------------------------------------------------------------------- 5. memory, workers


def test_memory_is_checked_before_anything_is_written(tmp_path, cli):
    cfg = tmp_path / "c.toml"
    cfg.write_text("n = [1024]\nd = [512]\nruns = 1000000\n")
    out = tmp_path / "mt"
    r = cli("run", "multi-token", "--config", cfg, "--out", out, "--no-progress")
    line = one_error_line(r, 2, "memory:", "available")
    assert "TB" in line or "PB" in line, line
    assert not out.exists()
    r = cli("simulate", "--out", tmp_path / "sim", "--n", "100000", "--systems", "1000000", "--d", "512")
    one_error_line(r, 2, "memory:")
    assert not (tmp_path / "sim").exists()


def _children(pid: int) -> list[int]:
    kids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(p.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_parent(tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "c.toml"
    cfg.write_text("units = 4\nsize = 100\nsleep = 30.0\n")
    cmd = CLI + ["run", TINY, "--out", str(out), "--executor", "local", "--workers", "2", "--no-progress"]
    parent = subprocess.Popen(
        cmd + ["--config", str(cfg)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 60
        workers: list[int] = []
        while time.time() < deadline:
            workers = [k for k in _children(parent.pid) if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, "no workers started"
        time.sleep(1.0)  # the workers are inside their units
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), [w for w in workers if _alive(w)]
    finally:
        if parent.poll() is None:
            parent.kill()


# ----------------------------------------------------------------------------- 6. odd inputs


def test_deeply_nested_and_endless_configs(tmp_path, cli):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    out = tmp_path / "out"
    r = cli("run", TINY, "--config", deep, "--out", out)
    one_error_line(r, 2, "config:")
    r = cli("run", TINY, "--config", "/dev/zero", "--out", out)
    one_error_line(r, 2, "config:", "larger than 1 MiB")
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    one_error_line(cli("run", TINY, "--config", big, "--out", out), 2, "config:", "larger")
    one_error_line(cli("run", TINY, "--config", tmp_path, "--out", out), 2, "config:", "cannot read")
    assert not out.exists()


def test_truncated_trajectories_leave_the_viewer_out(tmp_path, cli):
    run = tmp_path / "run"
    tiny_run(run)
    np.savez(run / "trajectories.npz", x=np.zeros((2, 3, 3)), times=np.arange(2.0), title="t", time_label="t")
    data = (run / "trajectories.npz").read_bytes()
    (run / "trajectories.npz").write_bytes(data[: len(data) // 2])
    r = cli("report", run)
    assert r.exit_code == 0, r.stderr
    assert "trajectories.npz cannot be read" in r.stderr and "viewer is left out" in r.stderr
    assert "viewer is left out" in (run / "report.html").read_text()


def test_internal_errors_are_not_reported_as_bad_input(tmp_path, cli, monkeypatch):
    """A bug inside a unit (here a ValueError) exits 1 with one line that says it is a bug, not exit 2."""

    def broken(self, cfg, unit, device, progress=None):
        raise ValueError("shapes (3,) and (4,) not aligned")

    monkeypatch.setattr(Tiny, "run_unit", broken)
    r = cli("run", TINY, "--out", tmp_path / "run", "--executor", "serial", "--no-progress")
    one_error_line(r, 1, "internal error: ValueError", "bug in tokensde")


def test_usage_error_is_a_value_error():
    assert issubclass(UsageError, ValueError)
