"""Memory estimates (``Experiment.unit_memory``, :mod:`tokensde.runtime.memory`) and the check before a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tokensde.experiments import REGISTRY
from tokensde.runtime import memory
from tokensde.runtime.memory import (
    MemoryEstimateError,
    available_bytes,
    check_fits,
    estimate_run,
    format_bytes,
    simulate_memory,
)

# What is measured: the growth of the peak resident memory (``VmHWM``) of a fresh spawned interpreter
# over its resident memory just before ``run_unit`` (everything the unit needs is imported and the
# config built before), for one unit sized so that its tensors (tens to hundreds of MB) dominate the
# interpreter's noise. glibc's mmap threshold is fixed at 64 kB (``MALLOC_MMAP_THRESHOLD_``) so that
# freed tensors leave the resident set at once; by default glibc raises the threshold up to 32 MB and
# keeps freed mid-sized blocks, which adds up to about the estimate again for tensors below 32 MB
# (the large runs the check is for allocate far larger blocks, which are always returned).
_MEASURE = r"""
import json, sys
import torch
torch.set_num_threads(1)
from tokensde.experiments import REGISTRY

def rss(key="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

name, over, uid, warm = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
exp = REGISTRY[name]
# the same unit at a small size first: lazy imports and one-off tables are not the unit's tensors
small = exp.Config(**{**over, **warm})
exp.run_unit(small, next(u for u in exp.plan(small) if u["id"] == uid), "cpu")
cfg = exp.Config(**over)
unit = next(u for u in exp.plan(cfg) if u["id"] == uid)
estimate = exp.unit_memory(cfg, unit, "cpu")
before = rss()
exp.run_unit(cfg, unit, "cpu")
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a large pytest process starts
# with its parent's peak; VmHWM belongs to the new address space
peak = rss("VmHWM")
print(json.dumps({"measured": peak - before, "estimate": estimate}))
"""

# measured ratios estimate / measured when these were written: 1.11, 1.06, 1.17
MEASURED = [
    # ``d = 3`` pairs whose two cells end at different steps, so the stream's slab is gathered for
    # the alive pairs (the case the estimate is written for)
    (
        "phase-diagram",
        {"d": [3], "beta": [1.0, 5.0], "runs": 40000, "T": 2.0, "T_max": 6.0, "step": 0.2, "horizon_factor": 1.7},
        "d=3",
        {"runs": 100},
    ),
    ("solver-order", {"systems": 65536, "steps": [2, 4, 8], "ref_steps": 16}, "A-euler", {"systems": 256}),
    (
        "homogenized",
        {"n": 16, "logistic_d": [32, 48, 64], "logistic_beta": [1.0], "systems": 512, "tau_max": 0.08},
        "logistic-b1-d64",
        {"systems": 16},
    ),
]


def _measure(case: tuple[str, dict, str]) -> dict:
    name, over, uid, warm = case
    # a clean environment: what earlier tests left in os.environ must not change the unit's allocations
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"})
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, name, json.dumps(over), uid, json.dumps(warm)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_estimates_within_a_factor_of_the_measured_peak():
    with ThreadPoolExecutor(len(MEASURED)) as pool:
        results = list(pool.map(_measure, MEASURED))
    for (name, _, uid, _), r in zip(MEASURED, results, strict=True):
        ratio = r["estimate"] / r["measured"]
        # an upper estimate within about 2 (a few MB of interpreter noise allowed below it)
        assert 0.9 <= ratio <= 3.0, f"{name} {uid}: estimate {r['estimate']} vs measured {r['measured']}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_unit_of_the_quick_config_is_estimated(name):
    exp = REGISTRY[name]
    cfg = exp.Config(**exp.quick)
    units = exp.plan(cfg)
    sizes = [exp.unit_memory(cfg, u, "cpu") for u in units]
    assert all(isinstance(s, int) and s > 0 for s in sizes), sizes
    # and of the defaults, well below a terabyte
    cfg = exp.Config()
    assert 0 < max(exp.unit_memory(cfg, u, "cpu") for u in exp.plan(cfg)) < 1e12


def test_multi_token_grows_with_runs_and_the_4tb_config_is_refused():
    exp = REGISTRY["multi-token"]

    def est(runs: int) -> int:
        cfg = exp.Config(n=[1024], d=[512], runs=runs)
        return max(exp.unit_memory(cfg, u, "cpu") for u in exp.plan(cfg))

    assert est(2000) / est(1000) == pytest.approx(2.0, rel=0.01)
    assert est(100_000) / est(1000) == pytest.approx(100.0, rel=0.01)
    big = est(1_000_000)
    assert big > 1e12  # its float64 initial tokens alone are 4.3 TB
    cfg = exp.Config(n=[1024], d=[512], runs=1_000_000)
    run = estimate_run(exp, cfg, exp.plan(cfg), "cpu", workers=2)
    assert run["workers"] == 2 and run["largest_unit"] == big
    assert run["bytes"] == 2 * big + 2 * memory.WORKER_BASELINE_BYTES
    with pytest.raises(MemoryEstimateError):
        check_fits(run["bytes"], "cpu", run["what"], run["hint"])


def test_estimate_run_sums_the_largest_units_per_worker():
    class Fake:
        def unit_memory(self, cfg, unit, device):
            return unit["size"]

    units = [{"id": str(i), "size": s} for i, s in enumerate([5, 100, 7, 50])]
    one = estimate_run(Fake(), None, units, "cpu", workers=1)
    assert one == {**one, "bytes": 100, "largest_unit": 100, "workers": 1}
    two = estimate_run(Fake(), None, units, "cpu", workers=2)
    assert two["bytes"] == 150 + 2 * memory.WORKER_BASELINE_BYTES
    many = estimate_run(Fake(), None, units, "cpu", workers=64)  # no more workers than units
    assert many["workers"] == 4 and many["bytes"] == 162 + 4 * memory.WORKER_BASELINE_BYTES
    cuda = estimate_run(Fake(), None, units, "cuda", workers=2)
    assert cuda["bytes"] == 150 + 2 * memory.CUDA_CONTEXT_BYTES


def test_check_fits(monkeypatch):
    monkeypatch.delenv(memory.MEMORY_CHECK_ENV, raising=False)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 21_300_000_000)
    with pytest.raises(MemoryEstimateError) as e:
        check_fits(4_000_000_000_000, "cpu", "this run (largest unit 2.0 TB x 2 workers)")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("memory:")
    assert "4.0 TB" in msg and "21.3 GB" in msg and "cpu" in msg and "workers" in msg
    assert isinstance(e.value, ValueError)
    check_fits(10_000_000_000, "cpu", "this run")  # fits
    with pytest.raises(MemoryEstimateError):
        check_fits(20_000_000_000, "cpu", "this run")  # above 90% of what is available
    monkeypatch.setenv(memory.MEMORY_CHECK_ENV, "0")
    check_fits(4_000_000_000_000, "cpu", "this run")  # turned off
    monkeypatch.setenv(memory.MEMORY_CHECK_ENV, "1")
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    check_fits(4_000_000_000_000, "cpu", "this run")  # unknown: not checked


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/meminfo")
def test_available_bytes_on_this_machine():
    got = available_bytes("cpu")
    assert isinstance(got, int) and got > 0
    assert available_bytes("mps") is None


def test_simulate_memory():
    small = simulate_memory(64, 16, 1000, 100, "auto", "euler", "float32")
    assert small > 1000 * 64 * 16 * 4
    assert simulate_memory(64, 16, 2000, 100, "auto", "euler", "float32") == pytest.approx(2 * small, rel=0.05)
    assert simulate_memory(64, 16, 1000, 100, "auto", "euler", "float64") > small
    # the matrix route draws d x d normals per system, the kernel route min(n, d) x d
    assert simulate_memory(8, 256, 1000, 10, "matrix", "euler", "float32") > 4 * simulate_memory(
        8, 256, 1000, 10, "kernel", "euler", "float32"
    )
    assert simulate_memory(1024, 512, 10_000_000, 10, "auto", "euler", "float32") > 1e12


def test_format_bytes():
    assert format_bytes(4.0e12) == "4.0 TB"
    assert format_bytes(21.3e9) == "21.3 GB"
    assert format_bytes(512) == "512 B"
