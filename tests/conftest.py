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


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """Run an experiment's --quick version once per session: ``quick_run(name) -> (run_dir, verdict)``."""
    from tokensde.experiments import REGISTRY
    from tokensde.runtime import run_experiment

    def get(name: str):
        if name not in _QUICK:
            torch.set_num_threads(THREADS)
            exp = REGISTRY[name]
            out = tmp_path_factory.mktemp(name) / "run"
            verdict = run_experiment(exp, exp.Config(**exp.quick), out, show_progress=False)
            _QUICK[name] = (out, verdict)
        return _QUICK[name]

    return get


@pytest.fixture
def rejects_config(tmp_path):
    """``rejects_config(name, toml, field)``: ``tokensde run NAME --config`` with that TOML exits 2 with one line
    that names ``field``, and writes nothing."""
    import subprocess
    import sys

    def check(name: str, toml: str, field: str) -> None:
        cfg = tmp_path / "c.toml"
        cfg.write_text(toml + "\n")
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "tokensde.cli", "run", name, "--config", str(cfg), "--out", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and field in lines[0], r.stderr
        assert not out.exists()

    return check
