import os

import pytest
import torch

# two threads on CI's two cores; TOKENSDE_TEST_THREADS=1 when two test runs share the machine
THREADS = int(os.environ.get("TOKENSDE_TEST_THREADS", "2"))


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)
    yield


_QUICK: dict = {}
_PARALLEL = {"accuracy", "accuracy-map"}


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """Run an experiment's --quick version once per session: ``quick_run(name) -> (run_dir, verdict)``."""
    from tokensde.experiments import REGISTRY
    from tokensde.runtime import run_experiment
    from tokensde.runtime.executors import ExecutorOptions

    def get(name: str):
        if name not in _QUICK:
            torch.set_num_threads(THREADS)
            exp = REGISTRY[name]
            out = tmp_path_factory.mktemp(name) / "run"
            # many small independent units (training): one process per core beats threads inside each unit
            parallel = name in _PARALLEL and THREADS > 1
            executor = ExecutorOptions("local", workers=THREADS, threads=1) if parallel else None
            verdict = run_experiment(exp, exp.Config(**exp.quick), out, show_progress=False, executor=executor)
            _QUICK[name] = (out, verdict)
        return _QUICK[name]

    return get


@pytest.fixture
def rejects_config(tmp_path):
    """``rejects_config(name, toml, field)``: ``tokensde run NAME --config`` with that TOML exits 2 with one line
    on stderr that names ``field``, and writes nothing. In process (typer's runner: the same command function,
    without paying the interpreter's start-up per case); tests/test_config_fuzz.py also checks real processes."""
    from typer.testing import CliRunner

    from tokensde.cli import app

    def check(name: str, toml: str, field: str) -> None:
        cfg = tmp_path / "c.toml"
        cfg.write_text(toml + "\n")
        out = tmp_path / "out"
        r = CliRunner().invoke(app, ["run", name, "--config", str(cfg), "--out", str(out)])
        assert r.exit_code == 2, (r.stdout, r.stderr, r.exception)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and field in lines[0], r.stderr
        assert not r.stdout.strip()
        assert not out.exists()

    return check
