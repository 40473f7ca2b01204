"""``chaos``: W_2 computation, the shared common noise, the verdict, the quick run and config validation."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tokensde.engine import BrownianPath
from tokensde.experiments.chaos import Chaos, ChaosConfig, build_model, rate, rate_exponent, w2_squared
from tokensde.models.value_noise import ValueNoise
from tokensde.solvers import simulate
from tokensde.sphere import uniform

CLI = [sys.executable, "-m", "tokensde.cli"]


# ----------------------------------------------------------------- W_2^2
def test_w2_of_identical_sets_is_zero():
    x = uniform((50,), 5, torch.Generator().manual_seed(0), torch.float64)
    assert w2_squared(x, x) == pytest.approx(0.0, abs=1e-12)
    assert w2_squared(x, x.flip(0)) == pytest.approx(0.0, abs=1e-12)  # order does not matter


def test_w2_of_two_diracs_is_the_squared_distance():
    x = np.array([[1.0, 0.0, 0.0]])
    y = np.array([[0.0, 0.6, 0.8]])
    assert w2_squared(x, y) == pytest.approx(2.0)
    # a Dirac against a cloud: the mean squared distance to the cloud
    cloud = np.random.default_rng(1).normal(size=(7, 3))
    assert w2_squared(x, cloud) == pytest.approx(((cloud - x) ** 2).sum(1).mean())


def _quantile_w2(a: np.ndarray, b: np.ndarray) -> float:
    """``int_0^1 (F^-1(u) - G^-1(u))^2 du`` for uniform empirical measures on the line."""
    a, b = np.sort(a), np.sort(b)
    cuts = np.union1d(np.arange(len(a) + 1) / len(a), np.arange(len(b) + 1) / len(b))
    mid = 0.5 * (cuts[1:] + cuts[:-1])
    qa = a[np.minimum((mid * len(a)).astype(int), len(a) - 1)]
    qb = b[np.minimum((mid * len(b)).astype(int), len(b) - 1)]
    return float((np.diff(cuts) * (qa - qb) ** 2).sum())


@pytest.mark.parametrize("n,m", [(9, 9), (6, 18), (8, 12)])
def test_w2_of_collinear_points_is_the_sorted_matching(n, m):
    rng = np.random.default_rng(n * m)
    direction = rng.normal(size=4)
    direction /= np.linalg.norm(direction)
    shift = rng.normal(size=4)
    s, u = rng.normal(size=n), 2.0 + rng.normal(size=m)
    x, y = shift + s[:, None] * direction, shift + u[:, None] * direction
    assert w2_squared(x, y) == pytest.approx(_quantile_w2(s, u), rel=1e-10)
    if n == m:
        assert w2_squared(x, y) == pytest.approx(np.mean((np.sort(s) - np.sort(u)) ** 2), rel=1e-10)


def test_rates():
    ns = np.array([16.0, 64.0, 512.0])
    assert np.allclose(rate(3, ns), ns**-0.5)
    assert np.allclose(rate(4, ns), ns**-0.5 * np.log1p(ns))
    assert np.allclose(rate(6, ns), ns ** (-1.0 / 3.0))
    assert rate_exponent(6, ns) == pytest.approx(-1.0 / 3.0)
    assert rate_exponent(2, ns) == pytest.approx(-0.5)
    assert -0.5 < rate_exponent(4, ns) < -0.2  # the log makes it shallower


# ----------------------------------------------------------------- the same noise for every N
@pytest.mark.parametrize("which", ["A", "C"])
def test_noise_shape_does_not_depend_on_the_number_of_tokens(which):
    model = build_model(ChaosConfig(), which)
    shapes = {model.noise_shape(n, 6) for n in (2, 5, 16, 512, 4096)}
    assert len(shapes) == 1
    a = BrownianPath(3, ("k",), 1, model.noise_shape(16, 6)).normals(0, 1)
    b = BrownianPath(3, ("k",), 1, model.noise_shape(4096, 6)).normals(0, 1)
    assert torch.equal(a, b)


def test_small_system_is_reproduced_inside_a_big_one_model_c_without_attention():
    """Model C with attention off: tokens only feel the common field, so a sub-system moves exactly as inside."""
    cfg = ChaosConfig(c=0.0)
    model = build_model(cfg, "C")
    big = uniform((1, 40), 6, torch.Generator().manual_seed(0), torch.float64)
    small = big[:, :3].clone()
    xb = simulate(model, big, 0.02, 25, 7, ("chaos", "common", "C", 0)).x
    xs = simulate(model, small, 0.02, 25, 7, ("chaos", "common", "C", 0)).x
    assert torch.allclose(xs, xb[:, :3], atol=1e-12)
    moved = (xs - small).norm(dim=-1).min()
    assert moved > 0.05  # the noise really moved them
    # another key: another noise, the same tokens end elsewhere
    xo = simulate(model, small, 0.02, 25, 7, ("chaos", "independent", "C", 0)).x
    assert (xo - xs).norm(dim=-1).min() > 1e-3


def test_one_token_is_reproduced_inside_a_big_system_model_a_self_attention_only():
    """Model A, the same W for every system: with beta = 300 and orthogonal tokens attention is self-only
    (cross weights e^-300 and below along the short run), so each token follows dx = P dW x as if alone."""
    model = ValueNoise(beta=300.0, route="matrix")
    d = 6
    big = torch.eye(d, dtype=torch.float64).unsqueeze(0)
    for k in range(d):
        alone = simulate(model, big[:, k : k + 1], 0.002, 10, 5, ("chaos", "common", "A", 1)).x
        inside = simulate(model, big, 0.002, 10, 5, ("chaos", "common", "A", 1)).x
        assert torch.allclose(alone[:, 0], inside[:, k], atol=1e-12)
    assert (alone[:, 0] - big[:, d - 1]).norm() > 1e-3


# ----------------------------------------------------------------- verdict logic
def _table(common_slope: float, indep_slope: float, indep_level: float = 1.0) -> pd.DataFrame:
    ns = np.array([16, 32, 64, 128, 256, 512])
    rows = []
    series = (("t0", -0.4, 1.0), ("common", common_slope, 1.0), ("independent", indep_slope, indep_level))
    for stat, slope, level in series:
        for r, jitter in ((0, 1.0), (1, 1.02)):
            for n in ns:
                w = level * jitter * (n / 16) ** slope
                rows.append({"model": "C", "replicate": r, "N": int(n), "statistic": stat, "w2sq": w})
    return Chaos().summarize(ChaosConfig(models=["C"]), rows)


def test_verdict_passes_and_fails_where_it_should():
    exp, cfg = Chaos(), ChaosConfig(models=["C"])
    assert exp.verdict(cfg, _table(-0.45, -0.05))["verdict"] == "PASS"
    # a rate much slower than r_d and than the sampling rate (e.g. an instability): FAIL
    v = exp.verdict(cfg, _table(-0.05, -0.05, 3.0))
    assert v["verdict"] == "FAIL" and not v["checks"][0]["passed"] and not v["checks"][1]["passed"]
    # a control converging at the sampling rate (the noise would not matter): FAIL
    v = exp.verdict(cfg, _table(-0.45, -0.4, 3.0))
    assert v["verdict"] == "FAIL" and not v["checks"][2]["passed"]


# ----------------------------------------------------------------- end to end
def test_chaos_quick(quick_run):
    out, verdict = quick_run("chaos")
    assert verdict["verdict"] == "PASS", verdict
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["statistic"]) == {"t0", "common", "independent"}
    assert set(table["model"]) == {"A", "C"}
    cfg = ChaosConfig(**Chaos.quick)
    for m in ("A", "C"):
        sub = table[table["model"] == m]
        big = sub[sub["N"] == max(cfg.N)].set_index("statistic")["mean"]
        small = sub[sub["N"] == min(cfg.N)].set_index("statistic")["mean"]
        # common noise: the distance shrinks with N; independent noise: it stays large
        assert big["common"] < 0.7 * small["common"]
        assert big["independent"] > 1.5 * big["common"]
        assert big["independent"] > 0.5 * small["independent"]
    for f in ("chaos.png", "chaos.svg", "report.html", "trajectories.npz"):
        assert (out / f).exists()


@pytest.mark.parametrize(
    "toml,field",
    [
        ("N = [16, 32, 64]\nN_ref = 64", "N_ref"),
        ('models = ["B"]', "models"),
    ],
)
def test_cli_rejects_bad_chaos_config(tmp_path, toml, field):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml + "\n")
    out = tmp_path / "out"
    r = subprocess.run([*CLI, "run", "chaos", "--config", str(cfg), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "data,field",
    [
        ({"N": [16, 32]}, "N"),
        ({"N": [16, 32, 9000]}, "N"),
        ({"T": 1.0, "dt": 0.3}, "dt"),
        ({"replicates": 2}, "replicates"),
        ({"tol": float("nan")}, "tol"),
        ({"foo": 1}, "foo"),
    ],
)
def test_bad_chaos_config_exits_2_naming_the_field(capsys, data, field):
    import typer

    from tokensde.cli import validate

    with pytest.raises(typer.Exit) as e:
        validate(ChaosConfig, data)
    assert e.value.exit_code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}"), lines


def test_tiny_dt_is_refused_in_one_line(rejects_config):
    """T / dt overflowing an integer step count is a config error, not a traceback."""
    rejects_config("chaos", "dt = 5e-324", "dt")
