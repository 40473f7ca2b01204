"""Model A with many tokens: multi-token and noise-sweep (quick runs, seeding, noiseless flow, configs)."""

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tokensde.experiments.multi_token import MultiToken, MultiTokenConfig, classify, run_systems
from tokensde.experiments.noise_sweep import cochran_armitage, sigma_c
from tokensde.theory.two_point import TwoPointMotion
from tokensde.theory.value_noise import two_point_motion

CLI = [sys.executable, "-m", "tokensde.cli"]


def test_multi_token_quick(quick_run):
    out, verdict = quick_run("multi-token")
    assert verdict["verdict"] == "PASS", verdict
    t = pd.read_parquet(out / "results.parquet")
    assert set(t["condition"]) == {"noisy", "noiseless"}
    noisy, quiet = t[t["condition"] == "noisy"], t[t["condition"] == "noiseless"]
    assert len(noisy) == len(quiet) == 6
    # the noiseless flow ends in one cluster everywhere; the noisy runs do not above beta_c
    assert (quiet["p_collapsed"] == 1.0).all()
    above = noisy[noisy["above_beta_c"]]
    assert len(above) == 4 and (above["n_antipodal"] >= 10).all()
    assert (above["collapsed_high"] < 0.95).all()
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
    t = pd.read_parquet(out / "results.parquet").sort_values("sigma")
    assert list(t["sigma"]) == [0.0, 0.2, 0.5, 1.0]
    assert t["n_antipodal"].iloc[0] == 0  # the attention flow alone never ends antipodal
    assert t["antipodal_low"].iloc[-1] > 0.05
    assert t["trend_p"].iloc[0] < 1e-4
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
