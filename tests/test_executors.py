"""Executors (serial, local processes, Ray) and the run store: bitwise-identical results, resume after
SIGINT / SIGTERM, corrupt unit files recomputed, killed workers retried, Ray on loopback only.

A test-only experiment (:class:`Tiny`, seeded numbers, optional sleep and self-kill) is defined here;
CLI subprocesses load it through ``TOKENSDE_EXPERIMENTS=test_executors:Tiny`` with this directory on
``PYTHONPATH`` (:mod:`tokensde.runtime.registry`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from pydantic import Field

from tokensde.experiments import REGISTRY
from tokensde.experiments.base import Experiment, ExperimentConfig
from tokensde.noise import derive_seed
from tokensde.runtime import run_experiment
from tokensde.runtime.executors import ExecutorOptions, default_executor, open_executor
from tokensde.runtime.store import RunStore

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "tokensde.cli"]
TINY = "tiny-executor-test"


class TinyConfig(ExperimentConfig):
    units: int = Field(default=6, ge=1, le=64)
    size: int = Field(default=4000, ge=2)
    seed: int = Field(default=0, ge=0)
    sleep: float = Field(default=0.0, ge=0.0, le=30.0)
    crash_unit: str = ""  # this unit kills its own process (SIGKILL) the first time it runs ...
    crash_marker: str = ""  # ... which it records by creating this file


class Tiny(Experiment):
    """Test-only: per unit, statistics of seeded normals (a reduction and a matmul, as real units do)."""

    name = TINY
    summary = "test-only experiment of tests/test_executors.py"
    Config = TinyConfig

    def plan(self, cfg: TinyConfig) -> list[dict[str, Any]]:
        return [{"id": f"u{i}", "i": i} for i in range(cfg.units)]

    def run_unit(self, cfg: TinyConfig, unit: dict[str, Any], device: str, progress: Any = None) -> list[dict]:
        if cfg.crash_marker and unit["id"] == cfg.crash_unit and not Path(cfg.crash_marker).exists():
            Path(cfg.crash_marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "tiny", unit["i"]))
        x = torch.randn(cfg.size, 8, generator=g, dtype=torch.float64)
        time.sleep(cfg.sleep)
        cov = x.T @ x / cfg.size
        eig = torch.linalg.eigvalsh(cov)
        return [
            {"unit": unit["i"], "k": k, "mean": x[:, k].mean().item(), "var": cov[k, k].item(), "eig": eig[k].item()}
            for k in range(8)
        ]

    def summarize(self, cfg: TinyConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return pd.DataFrame(rows)

    def verdict(self, cfg: TinyConfig, table: pd.DataFrame) -> dict[str, Any]:
        ok = len(table) == 8 * cfg.units
        return {
            "verdict": "PASS" if ok else "FAIL",
            "checks": [{"name": "rows", "passed": ok, "detail": str(len(table))}],
        }


PD_TINY = dict(d=[3, 4, 5], beta=[0.0, 1.0, 2.0], runs=40, T=1.0, T_max=2.0, horizon_factor=0.01, step=0.1)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    env["TOKENSDE_EXPERIMENTS"] = "test_executors:Tiny"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _reference(tmp_path_factory: pytest.TempPathFactory, **cfg: Any) -> bytes:
    out = tmp_path_factory.mktemp("reference") / "run"
    exp = Tiny()
    run_experiment(exp, exp.Config(**cfg), out, show_progress=False, executor=ExecutorOptions("serial", threads=1))
    return (out / "results.parquet").read_bytes()


@pytest.fixture(scope="module")
def ray_local():
    """One private local Ray instance (loopback only) for the module; workers can import this file."""
    ray = pytest.importorskip("ray")
    from tokensde.runtime.executors import init_local_ray

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _env()["PYTHONPATH"]
    try:
        init_local_ray(num_cpus=2)
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def test_default_executor():
    assert default_executor("cpu", cores=2) == "local"
    assert default_executor("cpu", cores=1) == "serial"
    assert default_executor("cpu", cores=2, units=1) == "serial"
    assert default_executor("cpu", cores=16) == "local"
    assert default_executor("cuda", cores=16) == "serial"
    with pytest.raises(ValueError, match="executor: must be one of serial, local, ray"):
        ExecutorOptions("dask")
    with pytest.raises(ValueError, match="ray-address"):
        ExecutorOptions("local", ray_address="127.0.0.1:6379")


def test_phase_diagram_units_identical_serial_local_ray(ray_local):
    """The phase-diagram units give bitwise the same rows under every executor (and 1 or 2 workers)."""
    exp = REGISTRY["phase-diagram"]
    cfg = exp.Config(**PD_TINY)
    units = exp.plan(cfg)
    got = {}
    for kind, workers in (("serial", None), ("local", 2), ("ray", None)):
        with open_executor(exp, cfg, "cpu", ExecutorOptions(kind, workers=workers, threads=1)) as ex:
            rows = {u["id"]: r for u, r in ex.run(units)}
        got[(kind, workers)] = json.dumps([rows[u["id"]] for u in units])
    assert len(set(got.values())) == 1, {k: v[:200] for k, v in got.items()}


def test_runs_identical_serial_local_ray(ray_local, tmp_path, tmp_path_factory):
    ref = _reference(tmp_path_factory)
    exp = Tiny()
    for kind, workers in (("local", 2), ("ray", None)):
        out = tmp_path / kind
        verdict = run_experiment(
            exp, exp.Config(), out, show_progress=False, executor=ExecutorOptions(kind, workers=workers, threads=1)
        )
        assert verdict["verdict"] == "PASS"
        assert (out / "results.parquet").read_bytes() == ref, kind
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["execution"]["kind"] == kind and manifest["execution"]["threads"] == 1


def test_corrupt_unit_files_are_recomputed(tmp_path, tmp_path_factory):
    ref = _reference(tmp_path_factory)
    exp, out = Tiny(), tmp_path / "run"
    opts = ExecutorOptions("serial", threads=1)
    run_experiment(exp, exp.Config(), out, show_progress=False, executor=opts)
    store = RunStore(out)
    u = {i: store.unit_path(f"u{i}") for i in range(6)}
    data = u[0].read_bytes()
    u[0].write_bytes(data[: len(data) // 2])  # truncated
    u[1].write_bytes(b"\x00\xffgarbage")  # not JSON
    edited = json.loads(u[2].read_text())
    edited["rows"][0]["mean"] += 1e-12  # valid JSON, wrong checksum
    u[2].write_text(json.dumps(edited))
    legacy = json.loads(u[3].read_text())
    u[3].write_text(json.dumps({"id": "u3", "rows": legacy["rows"]}))  # no checksum
    u[4].unlink()  # missing: recomputed without a warning
    untouched = u[5].stat().st_mtime_ns
    warnings: list[str] = []
    run_experiment(exp, exp.Config(), out, show_progress=False, executor=opts, warn=warnings.append)
    assert len(warnings) == 4, warnings
    for w, why in zip(warnings, ("truncated", "truncated", "checksum", "no checksum"), strict=True):
        assert w.startswith("warning: unit file") and why in w and w.endswith("recomputing the unit")
    assert all(store.check_unit(f"u{i}")[1] is None and store.load_unit(f"u{i}") for i in range(6))
    assert u[5].stat().st_mtime_ns == untouched
    assert (out / "results.parquet").read_bytes() == ref
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["units_resumed"] == 1 and len(manifest["executions"]) == 2


def _run_until_units(cmd: list[str], out: Path, sig: int, at_least: int, timeout: float = 120.0):
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    units = out / "units"
    while time.time() < deadline and proc.poll() is None:
        if units.exists() and len(list(units.glob("u*.json"))) >= at_least:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stdout, stderr


def test_interrupt_and_resume_sigint_sigterm(tmp_path, tmp_path_factory):
    """SIGINT (serial), then SIGTERM (local pool), then a clean resume: the table of an uninterrupted run."""
    ref = _reference(tmp_path_factory, sleep=0.0)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("sleep = 1.0\n")
    out = tmp_path / "run"
    # a fixed thread count (the default, auto, gives serial runs every core): byte-equal to the reference
    base = [*CLI, "run", TINY, "--config", str(cfg), "--out", str(out), "--no-progress", "--threads", "1"]

    code, _, err = _run_until_units([*base, "--executor", "serial"], out, signal.SIGINT, at_least=1)
    assert code == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "SIGINT" in lines[0] and "run the same command to resume" in lines[0], err
    first = sorted(p.name for p in (out / "units").glob("u*.json"))
    assert 1 <= len(first) < 6 and not (out / "results.parquet").exists()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("u*.json")}

    code, _, err = _run_until_units(
        [*base, "--executor", "local", "--workers", "2"], out, signal.SIGTERM, at_least=len(first) + 1
    )
    assert code == 143, err
    assert "SIGTERM" in err and "resume" in err
    assert not list(out.rglob("*.tmp")), "no half-written files"
    for name, t in mtimes.items():  # finished units are not recomputed
        assert (out / "units" / name).stat().st_mtime_ns == t

    r = subprocess.run([*base, "--executor", "serial"], env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout
    # sleep is 1 here and 0 in the reference: it does not enter the rows
    assert (out / "results.parquet").read_bytes() == ref
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["kind"] for e in manifest["executions"]] == ["serial", "local", "serial"]
    assert all(e["threads"] == 1 and e["threads_requested"] == 1 for e in manifest["executions"])
    assert manifest["units_resumed"] >= len(first) + 1


# two Ray start-ups and a sweep of sleeping units (1-3 min); the local executor's twin runs by default
@pytest.mark.slow
def test_interrupted_ray_sweep_resumes_to_the_serial_results(tmp_path, tmp_path_factory):
    """A Ray sweep (private local instance) stopped by SIGINT, resumed under Ray: the serial table, byte for byte."""
    ref = _reference(tmp_path_factory, sleep=0.0)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("sleep = 1.5\n")
    out = tmp_path / "run"
    base = [*CLI, "run", TINY, "--config", str(cfg), "--out", str(out), "--no-progress", "--executor", "ray"]
    code, _, err = _run_until_units([*base, "--workers", "1"], out, signal.SIGINT, at_least=1)
    assert code == 130, err
    assert "SIGINT" in err and "resume" in err
    kept = sorted(p.name for p in (out / "units").glob("u*.json"))
    assert 1 <= len(kept) < 6 and not (out / "results.parquet").exists()
    assert not list(out.rglob("*.tmp")), "no half-written files"
    mtimes = {name: (out / "units" / name).stat().st_mtime_ns for name in kept}
    r = subprocess.run(base, env=_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert (out / "results.parquet").read_bytes() == ref
    for name, t in mtimes.items():  # finished units were not recomputed
        assert (out / "units" / name).stat().st_mtime_ns == t


def test_killed_ray_worker_is_retried(ray_local, tmp_path, tmp_path_factory):
    ref = _reference(tmp_path_factory)
    exp, marker = Tiny(), tmp_path / "killed"
    cfg = exp.Config(crash_unit="u2", crash_marker=str(marker))
    out = tmp_path / "run"
    run_experiment(exp, cfg, out, show_progress=False, executor=ExecutorOptions("ray", threads=1))
    assert marker.exists(), "the unit killed its worker once"
    assert int(marker.read_text()) != os.getpid()
    assert (out / "results.parquet").read_bytes() == ref


def test_killed_local_worker_is_retried(tmp_path, tmp_path_factory):
    ref = _reference(tmp_path_factory)
    exp, marker = Tiny(), tmp_path / "killed"
    cfg = exp.Config(crash_unit="u4", crash_marker=str(marker))
    out = tmp_path / "run"
    run_experiment(exp, cfg, out, show_progress=False, executor=ExecutorOptions("local", workers=1, threads=1))
    assert marker.exists()
    assert (out / "results.parquet").read_bytes() == ref


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


def test_local_ray_listens_on_loopback_only(ray_local):
    psutil = pytest.importorskip("psutil")

    @ray_local.remote
    def pid() -> int:
        return os.getpid()

    worker = ray_local.get(pid.remote())
    ours = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid(), worker}
    listening = [
        (c.laddr.ip, c.laddr.port, c.pid)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in ours
    ]
    names = {psutil.Process(p).name() for _, _, p in listening}
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), names
    assert all(_is_loopback(ip) for ip, _, _ in listening), listening


@pytest.mark.parametrize(
    "args,message",
    [
        (["--executor", "dask"], "executor: must be one of serial, local, ray, got 'dask'"),
        (["--workers", "0"], "workers: must be an integer in [1, 4096], got '0'"),
        (["--threads", "two"], "threads: must be auto or an integer in [1, 4096], got 'two'"),
        (["--threads", "0"], "threads: must be auto or an integer in [1, 4096], got '0'"),
        (["--ray-address", ""], "ray-address: must be a Ray address"),
        (["--executor", "local", "--ray-address", "10.0.0.1:6379"], "ray-address: only with --executor ray"),
    ],
)
def test_cli_rejects_bad_executor_options(tmp_path, args, message):
    from typer.testing import CliRunner

    from tokensde.cli import app

    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", "phase-diagram", "--out", str(out), *args])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.output
    assert not out.exists()


HEAD = """
import sys, time
import ray
from tokensde.runtime.executors import init_local_ray
init_local_ray(num_cpus=2)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes stdin
ray.shutdown()
"""


@pytest.mark.slow
def test_cli_joins_an_existing_ray_cluster(tmp_path, tmp_path_factory):
    """--ray-address joins a running (here: loopback) cluster and leaves it running."""
    ref = _reference(tmp_path_factory)
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD], env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), address
        out = tmp_path / "run"
        cmd = [*CLI, "run", TINY, "--out", str(out), "--no-progress", "--ray-address", address]
        # Ray enables token authentication on the clusters it starts; joining by explicit address needs
        # RAY_AUTH_MODE=token (the token is read from ~/.ray/auth_token)
        r = subprocess.run(cmd, env={**_env(), "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert (out / "results.parquet").read_bytes() == ref
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["execution"]["kind"] == "ray" and manifest["execution"]["ray_address"] == address
        assert head.poll() is None, "the cluster is not ours to stop"
    finally:
        head.communicate(input="", timeout=120)
