"""The phase-diagram experiment end to end (quick cells) and the CLI."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tokensde.experiments import REGISTRY
from tokensde.experiments.phase_diagram import simulate_pairs
from tokensde.runtime import run_experiment
from tokensde.stats import wilson

CLI = [sys.executable, "-m", "tokensde.cli"]


def test_monte_carlo_matches_exit_law_on_quick_cells(tmp_path):
    exp = REGISTRY["phase-diagram"]
    cfg = exp.Config(**exp.quick)
    verdict = run_experiment(exp, cfg, tmp_path / "run", show_progress=False)
    table = pd.read_parquet(tmp_path / "run" / "results.parquet")
    for col in ["d", "beta", "rho0", "runs", "p_antipodal_mc", "ci_low", "ci_high", "p_antipodal_theory", "undecided"]:
        assert col in table.columns
    assert verdict["verdict"] == "PASS", verdict
    assert table["p_antipodal_mc"].max() > 0.1  # the check is not vacuous
    assert json.loads((tmp_path / "run" / "verdict.json").read_text())["verdict"] == "PASS"
    for f in ("manifest.json", "phase_diagram.png", "phase_diagram.svg"):
        assert (tmp_path / "run" / f).exists()


def test_resume_reuses_finished_units_and_recomputes_corrupt_ones(tmp_path):
    exp = REGISTRY["phase-diagram"]
    cfg = exp.Config(d=[4, 6], beta=[0.0, 3.0], runs=256, T=3.0, T_max=3.0, horizon_factor=0.0, step=0.2)
    out = tmp_path / "run"
    run_experiment(exp, cfg, out, show_progress=False)
    first = pd.read_parquet(out / "results.parquet")
    (out / "units" / "d=6.json").write_text('{"id": "d=6", "rows": [')  # truncated
    run_experiment(exp, cfg, out, show_progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["units_resumed"] == 1
    pd.testing.assert_frame_equal(first, pd.read_parquet(out / "results.parquet"))


def test_cells_do_not_depend_on_their_neighbours():
    a = simulate_pairs(4, [1.0, 2.0], [40, 80], 256, 0.0, 0.01, seed=3)
    b = simulate_pairs(4, [2.0], [80], 256, 0.0, 0.01, seed=3)
    np.testing.assert_array_equal(a["rho"][1], b["rho"][0])


def test_wilson_interval_covers_at_nominal_rate():
    rng = np.random.default_rng(0)
    n, p, z = 200, 0.1, 2.576
    k = rng.binomial(n, p, size=4000)
    lo, hi = wilson(k, n, z)
    cover = ((lo <= p) & (p <= hi)).mean()
    # 4000 trials: 0.99 nominal, binomial standard error ~0.0016; Wilson is slightly conservative or exact
    assert cover > 0.99 - 4 * math.sqrt(0.99 * 0.01 / 4000)


def run_cli(*args, cwd=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_theory_json():
    r = run_cli("theory", "two-point", "--model", "value-noise", "--d", "6", "--beta", "1.2", "--rho0", "0.3", "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert set(obj) >= {"beta_c", "p_antipodal", "exponent_collapse", "exponent_antipodal"}
    assert obj["beta_c"] == pytest.approx(0.5 * math.acosh(4))
    assert obj["exponent_collapse"] == pytest.approx(-2.5)


@pytest.mark.parametrize(
    "toml,field",
    [
        ("runs = 5", "runs"),
        ("foo = 1", "foo"),
        ("d = [3, 1]", "d"),
        ("beta = [1.0, nan]", "beta"),
        ("rho0 = 1.0", "rho0"),
        ("dt = 0.1", "dt"),
        ('runs = "many"', "runs"),
        ("T = 10.0\nT_max = 5.0", "T_max"),
        ("step = inf", "step"),
    ],
)
def test_cli_rejects_bad_config(rejects_config, toml, field):
    rejects_config("phase-diagram", toml, field)


def test_cli_rejects_unknown_experiment_and_bad_simulate_args(tmp_path):
    r = run_cli("run", "no-such-thing", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no-such-thing" in r.stderr
    r = run_cli("simulate", "--model", "value-noise", "--n", "0", "--d", "4", "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "n:" in r.stderr and not (tmp_path / "s").exists()


def test_cli_simulate_writes_states_and_metrics(tmp_path):
    out = tmp_path / "sim"
    r = run_cli(
        "simulate",
        "--model",
        "value-noise",
        "--n",
        "8",
        "--d",
        "4",
        "--beta",
        "2",
        "--steps",
        "50",
        "--systems",
        "3",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    x = np.load(out / "final_states.npz")["x"]
    assert x.shape == (3, 8, 4)
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["metrics"]["n_clusters"]) == 3


def test_metrics_on_known_configurations():
    from tokensde import metrics

    e = torch.eye(4, dtype=torch.float64)
    collapsed = e[0].expand(1, 5, 4).clone()
    antipodal = torch.stack([e[0], e[0], -e[0], -e[0], -e[0]]).unsqueeze(0)
    spread = e.unsqueeze(0)
    x = torch.cat([collapsed, antipodal, torch.cat([spread, e[:1].unsqueeze(0)], 1)])
    np.testing.assert_array_equal(metrics.n_clusters(x), [1, 2, 4])
    np.testing.assert_array_equal(metrics.is_collapsed(x), [True, False, False])
    np.testing.assert_array_equal(metrics.is_antipodal(x), [False, True, False])
    assert metrics.interaction_energy(x, 1.0)[0].item() == pytest.approx(0.0)
    r = metrics.effective_rank(x)
    assert r[0].item() == pytest.approx(1.0) and r[2].item() > 3.0


def test_freezing_collapsed_pairs_changes_no_classification():
    """Pairs frozen at 1 - rho < 1e-8 end in the same class as when simulated to the horizon."""
    kw = dict(d=4, betas=[0.5, 2.0], steps=[600, 600], runs=512, rho0=0.0, dt=0.02, seed=5)
    frozen = simulate_pairs(**kw, collapse_tol=1e-8)
    full = simulate_pairs(**kw, collapse_tol=0.0)
    for key in ("rho", "rho_half", "rho_coarse"):
        for lo, hi in ((-0.99, 0.99),):
            np.testing.assert_array_equal(frozen[key] < lo, full[key] < lo)
            np.testing.assert_array_equal(frozen[key] > hi, full[key] > hi)
    assert (frozen["rho"] > 0.99).mean() > 0.5  # most pairs did collapse, so freezing was exercised


def test_zero_horizon_factor_where_the_relaxation_time_is_infinite():
    """horizon_factor = 0 means the minimal horizon T everywhere, also where tau_a = inf (d = 3, beta = 0)."""
    from tokensde.experiments.phase_diagram import PhaseDiagramConfig, cell_dt, cell_steps, relaxation_time

    cfg = PhaseDiagramConfig(d=[3], beta=[0.0], horizon_factor=0.0)
    assert relaxation_time(3, 0.0) == float("inf")
    steps, critical, _ = cell_steps(cfg, 3, 0.0)
    assert not critical and steps == 2 * math.ceil(cfg.T / (2.0 * cell_dt(cfg, 3)))


def test_chunked_slab_stepping_gives_the_same_numbers(monkeypatch):
    """Pairs are stepped through whole slabs in cache-sized chunks: bitwise the numbers of one chunk."""
    import tokensde.models.value_noise as vn_mod

    args = (6, [0.0, 1.5, 3.0], [70, 150, 40], 700, 0.0, 0.01)
    whole = simulate_pairs(*args, seed=5)
    monkeypatch.setattr(vn_mod, "CHUNK_ENTRIES", 6 * 1024)  # 1024 pairs per chunk: three chunks
    chunked = simulate_pairs(*args, seed=5)
    for k in whole:
        np.testing.assert_array_equal(whole[k], chunked[k])


def test_split_units_give_the_rows_of_one_unit_per_dimension(monkeypatch):
    import tokensde.experiments.phase_diagram as pd_mod

    exp = REGISTRY["phase-diagram"]
    cfg = exp.Config(d=[5], beta=[0.0, 1.0, 2.0, 3.0], runs=256, T=2.0, T_max=2.0, horizon_factor=0.0, step=0.2)
    (one,) = exp.plan(cfg)
    monkeypatch.setattr(pd_mod, "UNIT_WORK", 1.0)  # every beta its own unit
    split = exp.plan(cfg)
    assert [u["id"] for u in split] == ["d=5:0", "d=5:1", "d=5:2", "d=5:3"]
    assert sum(exp.unit_cost(cfg, u) for u in split) == exp.unit_cost(cfg, one)
    rows = [r for u in split for r in exp.run_unit(cfg, u, "cpu")]
    assert rows == exp.run_unit(cfg, one, "cpu")
