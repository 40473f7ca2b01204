"""Model A with many tokens: multi-token and noise-sweep (quick runs, seeding, noiseless flow, configs)."""

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import fisher_exact

from tokensde.experiments.multi_token import MultiToken, MultiTokenConfig, classify, run_systems
from tokensde.experiments.noise_sweep import (
    cochran_armitage,
    exit_law_uniform,
    pair_motion,
    paired_estimates,
    sigma_c,
)
from tokensde.stats import bonferroni_z, z_for
from tokensde.theory.two_point import TwoPointMotion
from tokensde.theory.value_noise import two_point_motion

CLI = [sys.executable, "-m", "tokensde.cli"]


#: the level of the statistical assertions of these tests (family-wise where several cells are tested)
LEVEL = 0.99


def test_multi_token_quick(quick_run):
    out, verdict = quick_run("multi-token")
    assert verdict["verdict"] == "PASS", verdict
    t = pd.read_parquet(out / "results.parquet")
    assert set(t["condition"]) == {"noisy", "noiseless"}
    noisy, quiet = t[t["condition"] == "noisy"], t[t["condition"] == "noiseless"]
    assert len(noisy) == len(quiet) == 6
    # the noiseless flow ends in one cluster everywhere (the theorem: exactly); the noisy runs do not above beta_c
    assert (quiet["p_collapsed"] == 1.0).all()
    above = noisy[noisy["above_beta_c"]]
    assert len(above) == 4
    # per cell, the noisy runs against the noiseless ones from the same starts (0 antipodal, all collapsed):
    # one-sided Fisher exact tests at family-wise LEVEL (Bonferroni over the 4 cells). With 128 runs a cell
    # passes with about 9 or more antipodal (resp. not collapsed) systems of 128.
    alpha = (1.0 - LEVEL) / len(above)
    q = quiet.set_index(["n", "d", "beta"])
    for r in above.itertuples():
        c = q.loc[(r.n, r.d, r.beta)]
        anti = [[r.n_antipodal, r.runs - r.n_antipodal], [c.n_antipodal, c.runs - c.n_antipodal]]
        assert fisher_exact(anti, alternative="greater")[1] < alpha, (r.n, r.beta, anti)
        coll = [[r.n_collapsed, r.runs - r.n_collapsed], [c.n_collapsed, c.runs - c.n_collapsed]]
        assert fisher_exact(coll, alternative="less")[1] < alpha, (r.n, r.beta, coll)
        assert r.fisher_p == pytest.approx(fisher_exact(coll, alternative="less")[1])
    below = noisy[~noisy["above_beta_c"]]
    assert (below["p_collapsed"] == 1.0).all()  # beta = 0.25 < beta_c(4): collapse, like two tokens
    for r in t.itertuples():
        counts = {int(k): v for k, v in json.loads(r.cluster_counts).items()}
        assert sum(counts.values()) == r.runs and counts.get(1, 0) == r.n_collapsed
        assert r.n_collapsed + r.n_antipodal + r.n_other == r.runs
    assert (noisy["uncollapsed"] == 0).all()
    for f in ("multi_token_antipodal.png", "multi_token_clusters.svg", "report.html", "trajectories.npz"):
        assert (out / f).exists()


def test_noise_sweep_quick(quick_run):
    out, verdict = quick_run("noise-sweep")
    assert verdict["verdict"] == "PASS", verdict
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["kind"]) == {"sweep", "exit_law"}
    t = table[table["kind"] == "sweep"].sort_values("sigma")
    assert list(t["sigma"]) == [0.0, 0.2, 0.5, 1.0]
    assert t["n_antipodal"].iloc[0] == 0  # the attention flow alone never ends antipodal (exactly)
    # sigma = 1 against sigma = 0: more antipodal endings, one-sided Fisher exact at LEVEL (about 7 of 192 needed)
    k, n = int(t["n_antipodal"].iloc[-1]), int(t["runs"].iloc[-1])
    assert fisher_exact([[k, n - k], [0, n]], alternative="greater")[1] < 1.0 - LEVEL
    # the increasing trend at LEVEL (one setting): one-sided Cochran-Armitage
    assert t["trend_p"].iloc[0] < 1.0 - LEVEL
    # two-token cells against the exact exit law: each Richardson estimate within the two-sided Bonferroni
    # band at family-wise LEVEL, and the estimates pooled over the cells within the two-sided quantile at LEVEL
    ex = table[table["kind"] == "exit_law"]
    assert len(ex) == 2 and ex["resolved"].all()
    z = (ex["p_exit"] - ex["p_theory"]) / ex["p_exit_se"]
    assert (z.abs() <= bonferroni_z(LEVEL, len(ex))).all(), z
    r = ex["runs"]
    pooled = ((ex["p_exit"] - ex["p_theory"]) * r).sum() / np.sqrt(((ex["p_exit_se"] * r) ** 2).sum())
    assert abs(pooled) <= z_for(LEVEL), pooled
    assert (out / "noise_sweep.png").exists()


def test_cell_seeding_is_independent_of_other_cells():
    exp = MultiToken()
    small = dict(runs=12, T=2.0, step=0.2, T_noiseless=2.0, dt_noiseless=0.2)
    alone = MultiTokenConfig(n=[5], d=[4], beta=[2.0], **small)
    many = MultiTokenConfig(n=[3, 5], d=[3, 4], beta=[0.5, 2.0], **small)
    unit = {"id": "n=5-d=4-beta=2", "n": 5, "d": 4, "beta": 2.0}
    assert unit["id"] in [u["id"] for u in exp.plan(many)]
    torch.manual_seed(123)  # the global generator must not matter
    rows_alone = exp.run_unit(alone, unit, "cpu")
    exp.run_unit(many, {"id": "x", "n": 3, "d": 3, "beta": 0.5}, "cpu")  # another cell first
    rows_many = exp.run_unit(many, unit, "cpu")
    assert pd.DataFrame(rows_alone).equals(pd.DataFrame(rows_many))


def test_noiseless_flow_collapses():
    g = torch.Generator().manual_seed(0)
    x0 = torch.nn.functional.normalize(torch.randn(64, 12, 4, generator=g, dtype=torch.float64), dim=-1)
    half, end, frozen = run_systems(x0, 1.0, 0.0, True, 0.1, 400, 0, ("t",))
    c = classify(end, 1.0, 1e-2)
    assert c["collapsed"].all()
    assert np.isfinite(frozen).all() and frozen.max() <= 40.0
    # without the drift and without noise nothing moves
    _, same, _ = run_systems(x0, 1.0, 0.0, False, 0.1, 20, 0, ("t",))
    assert torch.equal(same, x0)


@pytest.mark.parametrize("d,beta", [(4, 2.0), (8, 2.0), (4, 3.0)])
def test_sigma_c_is_where_the_antipodal_exponent_changes_sign(d, beta):
    sc = sigma_c(d, beta)

    def exponent(sigma):
        m = two_point_motion(d, beta, sigma)
        b_att = lambda r: 2.0 * (1.0 - 1.0 / (1.0 + np.exp(-beta * (1.0 - r)))) * (1.0 - r * r)  # noqa: E731
        return TwoPointMotion(d=d, c0=m.c0, c1=m.c1, dc0=m.dc0, dc1=m.dc1, b_att=b_att).exponent_antipodal

    assert exponent(0.95 * sc) > 0.0 > exponent(1.05 * sc)
    assert abs(exponent(sc)) < 1e-9
    assert sigma_c(8, 1.0) == math.inf  # beta < beta_c(8): never attracting


def test_cochran_armitage():
    n = np.array([100, 100, 100, 100])
    z, p = cochran_armitage(np.array([5, 10, 20, 40]), n, np.array([0.0, 1.0, 2.0, 3.0]))
    assert z > 5 and p < 1e-6
    z, p = cochran_armitage(np.array([40, 20, 10, 5]), n, np.array([0.0, 1.0, 2.0, 3.0]))
    assert z < -5 and p > 0.999
    assert math.isnan(cochran_armitage(np.zeros(4), n, np.arange(4.0))[1])
    # two groups: the square of z is the Pearson chi-square of the 2 x 2 table
    from scipy.stats import chi2_contingency

    z, _ = cochran_armitage(np.array([10, 25]), np.array([100, 100]), np.array([0.0, 1.0]))
    chi2 = chi2_contingency([[10, 90], [25, 75]], correction=False)[0]
    assert z * z == pytest.approx(chi2)


@pytest.mark.parametrize(
    "name,toml,field",
    [
        ("multi-token", "n = [1, 4]", "n"),
        ("multi-token", "n = 4", "n"),
        ("multi-token", "n = [4.5]", "n"),
        ("multi-token", "d = [2, 4]", "d"),
        ("multi-token", "beta = [nan]", "beta"),
        ("multi-token", "beta = [-1.0, 2.0]", "beta"),
        ("multi-token", 'runs = "many"', "runs"),
        ("multi-token", "runs = 5", "runs"),
        ("multi-token", "T = inf", "T"),
        ("multi-token", "colour = 1", "colour"),
        ("noise-sweep", "sigma = [0.0, 5.0, 1.0]", "sigma"),
        ("noise-sweep", "sigma = [0.0, 1.0]", "sigma"),
        ("noise-sweep", "runs = nan", "runs"),
        ("noise-sweep", "settings = [{n = 1, d = 4, beta = 1.0}]", "settings"),
        ("noise-sweep", "settings = [{n = 8, d = 4, beta = 1.0, eta = 2}]", "settings"),
    ],
)
def test_cli_rejects_bad_config(rejects_config, name, toml, field):
    rejects_config(name, toml, field)


def test_coarse_run_is_the_coupled_euler_run():
    """``run_systems(..., coarsen=2)`` is the ``2 dt`` Euler run on the fine run's Brownian path."""
    from tokensde.models import ValueNoise
    from tokensde.solvers import simulate_coupled
    from tokensde.sphere import uniform

    x0 = uniform((300, 3), 5, torch.Generator().manual_seed(1), torch.float64)
    m = ValueNoise(beta=1.5, sigma=0.7, vbar=torch.eye(5, dtype=torch.float64))
    fine, coarse = simulate_coupled(m, x0, 0.01, 64, seed=3, key=("k",))
    _, a, _ = run_systems(x0, 1.5, 0.7, True, 0.01, 64, 3, ("k",), collapse_tol=0.0)
    half, b, _ = run_systems(x0, 1.5, 0.7, True, 0.01, 64, 3, ("k",), collapse_tol=0.0, coarsen=2)
    assert torch.equal(a, fine.x)
    torch.testing.assert_close(b, coarse.x, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="coarsen"):
        run_systems(x0, 1.5, 0.7, True, 0.01, 66, 3, ("k",), coarsen=4)


@pytest.mark.parametrize("d,beta", [(3, 1.5), (4, 2.0)])
def test_two_token_exit_law_at_vbar_identity(d, beta):
    sc = sigma_c(d, beta)
    # the motion's antipodal exponent changes sign at sigma_c (the attention drift enters through db_att)
    assert pair_motion(d, beta, 0.95 * sc).exponent_antipodal > 0.0 > pair_motion(d, beta, 1.05 * sc).exponent_antipodal
    # b_att' in closed form against a central difference
    m = pair_motion(d, beta, 0.8)
    r, h = np.array([-0.7, 0.1, 0.6]), 1e-6
    np.testing.assert_allclose(m.db_att(r), (m.b_att(r + h) - m.b_att(r - h)) / (2 * h), rtol=1e-7)
    # the quadrature over the initial overlap has converged; below sigma_c no antipodal ending at all
    law = exit_law_uniform(d, beta, 0.8)
    assert abs(law["p"] - exit_law_uniform(d, beta, 0.8, nodes=96)["p"]) < 1e-5
    assert exit_law_uniform(d, beta, 0.9 * sc)["p"] == 0.0
    # large noise: the attention drift no longer matters, the law of Vbar = 0 (which does not depend on sigma)
    from scipy import special

    from tokensde.theory.value_noise import p_antipodal

    a = 0.5 * (d - 3)
    t, w = special.roots_jacobi(48, a, a)
    p0 = float(np.dot(w, [p_antipodal(d, beta, float(x)) for x in t]) / w.sum())
    assert exit_law_uniform(d, beta, 30.0)["p"] == pytest.approx(p0, abs=2e-3)


def test_paired_estimates_match_the_per_pair_statistics():
    rng = np.random.default_rng(0)
    a = rng.random(1000) < 0.3
    c = np.where(rng.random(1000) < 0.9, a, rng.random(1000) < 0.3)
    est = paired_estimates((a & c).sum(), (a & ~c).sum(), (~a & c).sum(), 1000)
    for name, y in (("richardson", 2.0 * a - c), ("step_bias", 1.0 * a - c)):
        assert est[name] == pytest.approx(y.mean())
        assert est[f"{name}_se"] == pytest.approx(y.std(ddof=1) / math.sqrt(1000))
