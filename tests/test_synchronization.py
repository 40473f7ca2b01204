"""Model C theory (kappa, the synchronization constants), the experiment and the CLI."""

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate, special

from tokensde.activations import get_activation, make_activation
from tokensde.theory import synchronization as S

CLI = [sys.executable, "-m", "tokensde.cli"]

SMOOTH = {
    "tanh": np.tanh,
    "sigmoid": special.expit,
    "silu": lambda x: x * special.expit(x),
    "gelu": lambda x: x * special.ndtr(x),
}


def _normal_pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def reference_kappa(act: str, d: int, su: float, sw: float, u: float) -> float:
    """``kappa(u)`` by nested adaptive QUADPACK integration (independent of Gauss–Hermite).

    ``z_1 = sqrt(v) x``, ``z_2 = sqrt(v)(r x + s y)``; for ReLU the inner integral
    is the closed form ``E[relu(a + bY)] = a Phi(a/b) + b phi(a/b)`` and the outer
    one is split at the kink ``x = 0``.
    """
    v = 1.0 / d + su**2
    r = (u / d + su**2) / v
    s = math.sqrt(max(1.0 - r * r, 0.0))
    sq = math.sqrt(v)
    opts = dict(epsabs=1e-15, epsrel=1e-13, limit=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        if act == "relu":

            def inner(x):
                a, b = sq * r * x, sq * s
                if b == 0.0:
                    return max(a, 0.0)
                return a * special.ndtr(a / b) + b * _normal_pdf(a / b)

            val = integrate.quad(lambda x: sq * x * _normal_pdf(x) * inner(x), 0.0, 14.0, **opts)[0]
        else:
            f = SMOOTH[act]

            def inner(x):
                return integrate.quad(lambda y: f(sq * (r * x + s * y)) * _normal_pdf(y), -14, 14, **opts)[0]

            val = integrate.quad(lambda x: f(sq * x) * _normal_pdf(x) * inner(x), -14, 14, **opts)[0]
    return val + sw**2


@pytest.mark.parametrize(
    "act,d,sb,u",
    [
        ("tanh", 2, 0.0, 0.3),
        ("tanh", 4, 0.1, -0.7),
        ("tanh", 2, 0.0, 1.0),
        ("tanh", 3, 0.5, -1.0),
        ("sigmoid", 5, 0.1, 0.5),
        ("silu", 3, 0.0, 0.9),
        ("gelu", 4, 0.3, -1.0),
        ("gelu", 64, 0.1, 0.2),
        ("tanh", 2, 1.0, 0.6),  # v = 1.5: the hardest case the CLI accepts (order 512)
    ],
)
def test_kappa_smooth_matches_independent_quadrature(act, d, sb, u):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the order selection converges (no warning)
        value = float(S.kappa(u, act, d, sb, sb))
    assert value == pytest.approx(reference_kappa(act, d, sb, sb, u), abs=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("act,d,sb,u", [("tanh", 2, 0.0, 0.3), ("gelu", 4, 0.3, -1.0)])
def test_kappa_matches_mpmath(act, d, sb, u):
    """30-digit nested tanh-sinh quadrature (about a minute per point)."""
    import mpmath as mp

    mp.mp.dps = 30
    f = {"tanh": mp.tanh, "gelu": lambda x: x * mp.ncdf(x)}[act]
    v = mp.mpf(1) / d + mp.mpf(sb) ** 2
    r = (mp.mpf(u) / d + mp.mpf(sb) ** 2) / v
    s, sq = mp.sqrt(1 - r * r), mp.sqrt(v)

    def g(x):
        return mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi)

    def inner(x):
        return mp.quad(lambda y: f(sq * (r * x + s * y)) * g(y), [-mp.inf, 0, mp.inf])

    ref = mp.quad(lambda x: f(sq * x) * g(x) * inner(x), [-mp.inf, 0, mp.inf]) + mp.mpf(sb) ** 2
    assert float(S.kappa(u, act, d, sb, sb)) == pytest.approx(float(ref), abs=1e-12)


@pytest.mark.parametrize("d,sb", [(2, 0.0), (4, 0.1), (64, 0.3)])
@pytest.mark.parametrize("u", [-1.0, -0.4, 0.0, 0.55, 0.999, 1.0])
def test_kappa_relu_matches_independent_quadrature(d, sb, u):
    assert float(S.kappa(u, "relu", d, sb, sb)) == pytest.approx(reference_kappa("relu", d, sb, sb, u), abs=1e-12)


@pytest.mark.parametrize("d,su,sw", [(4, 0.0, 0.0), (7, 0.2, 0.1)])
def test_relu_closed_values(d, su, sw):
    v = 1.0 / d + su**2
    assert S.kappa_1("relu", d, su, sw) == pytest.approx(v / 2 + sw**2, rel=1e-15)
    assert S.kappa_prime_1("relu", d, su, sw) == pytest.approx(1.0 / (2 * d), rel=1e-15)
    # u = -1 with sigma_u = 0: z_2 = -z_1, relu(z) relu(-z) = 0
    if su == 0.0:
        assert float(S.kappa(-1.0, "relu", d, su, sw)) == pytest.approx(sw**2, abs=1e-16)


@pytest.mark.parametrize("act", ["tanh", "silu", "sigmoid", "gelu"])
@pytest.mark.parametrize("d,sb", [(3, 0.0), (5, 0.1), (64, 0.1)])
def test_kappa_prime_one_matches_finite_difference(act, d, sb):
    k = S.kernel(act, d, sb, sb)
    h = 1e-3
    c = np.array([25.0 / 12.0, -4.0, 3.0, -4.0 / 3.0, 1.0 / 4.0])  # one-sided, fourth order
    fd = float(np.dot(c, k.kappa(1.0 - h * np.arange(5.0))) / h)
    assert k.kappa_prime_1 == pytest.approx(fd, abs=1e-9 * max(1.0, abs(fd)))


@pytest.mark.parametrize("act", ["relu", "tanh", "silu", "sigmoid", "gelu"])
def test_kappa_prime_interior_matches_central_difference(act):
    k = S.kernel(act, 5, 0.1, 0.05)
    u = np.array([-0.8, -0.2, 0.3, 0.7])
    h = 1e-3
    fd = (-k.kappa(u + 2 * h) + 8 * k.kappa(u + h) - 8 * k.kappa(u - h) + k.kappa(u - 2 * h)) / (12 * h)
    np.testing.assert_allclose(k.kappa_prime(u), fd, atol=1e-10)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
def test_gap_is_the_kernel_difference_and_relatively_accurate(act):
    k = S.kernel(act, 6, 0.1, 0.1)
    delta = np.array([1e-3, 0.1, 0.7, 1.5, 2.0])
    np.testing.assert_allclose(k.gap(delta), k.kappa_1 - k.kappa(1.0 - delta), rtol=1e-11, atol=1e-15)
    tiny = np.array([1e-14, 1e-12, 1e-10])
    # gap(delta)/delta -> kappa'(1), with an O(delta) correction (smooth) or O(sqrt(delta)) (relu)
    np.testing.assert_allclose(k.gap(tiny) / tiny, k.kappa_prime_1, rtol=1e-5 if act == "relu" else 1e-8)


@pytest.mark.parametrize("act,d,sb", [("relu", 64, 0.1), ("sigmoid", 5, 0.0), ("tanh", 4, 0.1), ("silu", 128, 0.1)])
def test_F_tends_to_minus_lambda_bar_at_collapse(act, d, sb):
    k = S.kernel(act, d, sb, sb)
    beta = 1.3
    deltas = np.array([1e-2, 1e-4, 1e-6, 1e-8])
    errs = np.abs(k.F_delta(deltas, beta) + k.lambda_bar)
    # F(1 - delta) + lambda_bar = O(delta) for smooth kernels, O(sqrt(delta)) for relu (kappa' ~ 1 - c sqrt(delta))
    rate = np.sqrt(deltas) if act == "relu" else deltas
    assert np.all(np.diff(errs) < 0) and np.all(errs <= 10.0 * rate * max(1.0, abs(k.lambda_bar)))
    assert float(k.F_delta(np.array([0.0]), beta)[0]) == pytest.approx(-k.lambda_bar, rel=1e-14)
    # the stable form equals the defining formula where the latter is accurate
    u = np.linspace(-1.0, 0.9, 20)
    naive = beta * np.exp(beta * u) * k.G(u, beta) / (np.exp(beta) - np.exp(beta * u))
    np.testing.assert_allclose(k.F(u, beta), naive, rtol=1e-10, atol=1e-13)


def test_F_is_the_energy_rate_of_the_two_point_generator():
    """``mu f' + s^2 f''/2 = -F f`` for ``f = e^beta - e^{beta rho}`` (attention off)."""
    d, beta = 6, 1.7
    m = S.two_point_motion(d, "gelu", 0.1, 0.2)
    r = np.linspace(-0.95, 0.95, 23)
    f = np.exp(beta) - np.exp(beta * r)
    gen = m.drift(r) * (-beta * np.exp(beta * r)) + 0.5 * m.diffusion2(r) * (-(beta**2) * np.exp(beta * r))
    np.testing.assert_allclose(gen, -S.F(r, "gelu", d, 0.1, 0.2, beta) * f, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("act,d,sb", [("relu", 64, 0.1), ("sigmoid", 5, 0.0), ("tanh", 5, 0.0), ("gelu", 128, 0.1)])
def test_lambda_bar_prime_is_minus_the_infimum_of_F(act, d, sb):
    k = S.kernel(act, d, sb, sb)
    beta = 1.0
    lbp, u_star = k.energy_rate(beta)
    brute = np.concatenate([np.linspace(-1.0, 1.0 - 1e-9, 20001), 1.0 - np.geomspace(1e-12, 1e-3, 200)])
    # F carries rounding of relative size ~1e-10 at delta ~ 1e-12 (gap/delta), hence the 1e-9 tolerance
    assert -lbp <= float(np.min(k.F(brute, beta))) + 1e-9
    assert -lbp == pytest.approx(min(float(np.min(k.F(brute, beta))), -k.lambda_bar), abs=1e-9)
    assert lbp >= k.lambda_bar - 1e-12  # inf F <= lim_{u -> 1} F = -lambda_bar
    assert -1.0 <= u_star <= 1.0


def test_odd_field_has_no_decay_of_the_energy():
    # tanh without biases: kappa(-1) = -kappa(1), G(-1) = 0, F(-1) = 0, so lambda_bar' >= 0
    k = S.kernel("tanh", 8, 0.0, 0.0)
    assert float(k.kappa(-1.0)) == pytest.approx(-k.kappa_1, rel=1e-13)
    assert S.lambda_bar_prime("tanh", 8) >= -1e-12
    assert S.is_odd("tanh", 0.0, 0.0) and not S.is_odd("tanh", 0.1, 0.0) and not S.is_odd("tanh", 0.0, 0.1)
    assert not S.is_odd("relu") and not S.is_odd("gelu") and not S.is_odd("sigmoid") and not S.is_odd("silu")
    assert S.is_odd(lambda x: x**3) and not S.is_odd(lambda x: x**2)


@pytest.mark.parametrize(
    "act,d,sb", [("relu", 4, 0.0), ("relu", 9, 0.3), ("tanh", 5, 0.1), ("silu", 3, 0.0), ("sigmoid", 64, 0.1)]
)
def test_generic_two_point_collapse_exponent_is_lambda_1(act, d, sb):
    m = S.two_point_motion(d, act, sb, sb)
    lam = S.lambda_1(act, d, sb, sb)
    k1, kp = S.kappa_1(act, d, sb, sb), S.kappa_prime_1(act, d, sb, sb)
    assert lam == pytest.approx(0.5 * (d - 3) * kp - 0.5 * (d - 1) * k1, rel=1e-14)
    assert m.exponent_collapse == pytest.approx(lam, rel=1e-12, abs=1e-15)
    # attractive (c = 1) / repulsive (c = -1) attention shifts the exponent by -c
    for c in (1.0, -1.0):
        mc = S.two_point_motion(d, act, sb, sb, beta=1.5, c=c)
        assert mc.exponent_collapse == pytest.approx(lam - c, rel=1e-12)


def test_attention_drift_matches_its_definition():
    beta, c = 1.3, 0.7
    b_att, db = S.attention_overlap_drift(beta, c)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal(5), rng.standard_normal(5)
    x1, x2 = x1 / np.linalg.norm(x1), x2 / np.linalg.norm(x2)
    rho = x1 @ x2
    w = np.exp(beta * np.array([1.0, rho]))
    p, q = w / w.sum()
    a1, a2 = c * (p * x1 + q * x2), c * (q * x1 + p * x2)
    drift = (a1 - (a1 @ x1) * x1) @ x2 + x1 @ (a2 - (a2 @ x2) * x2)
    assert float(b_att(np.array([rho]))[0]) == pytest.approx(drift, rel=1e-12)
    r = np.array([-0.5, 0.2, 0.9])
    h = 1e-5
    np.testing.assert_allclose(db(r), (b_att(r + h) - b_att(r - h)) / (2 * h), rtol=1e-8)


def test_tanh_without_bias_is_a_two_point_attractor():
    m = S.two_point_motion(4, "tanh")
    assert m.lower.absorbing
    assert m.exponent_antipodal == pytest.approx(m.exponent_collapse, rel=1e-10)
    assert m.exponent_collapse < 0
    relu = S.two_point_motion(4, "relu")
    assert not relu.lower.absorbing and math.isnan(relu.exponent_antipodal)
    assert relu.p_antipodal(0.0) == 0.0


def test_user_callables_numpy_and_torch():
    named = S.kernel("tanh", 5, 0.1, 0.0)
    u = np.array([-1.0, -0.3, 0.4, 1.0])
    t_act = make_activation(torch.tanh)  # derivative by autograd
    assert t_act.meta["derivative"] == "autograd" and t_act.odd
    np.testing.assert_allclose(S.kappa(u, t_act, 5, 0.1, 0.0), named.kappa(u), atol=1e-15)
    np.testing.assert_allclose(S.kappa_prime(u, t_act, 5, 0.1, 0.0), named.kappa_prime(u), atol=1e-15)
    np_act = make_activation(lambda x: np.tanh(np.asarray(x)))  # numpy only: finite differences
    assert np_act.meta["derivative"] == "finite-difference"
    np.testing.assert_allclose(S.kappa_prime(u, np_act, 5, 0.1, 0.0), named.kappa_prime(u), atol=1e-11)
    given = make_activation(np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)
    assert S.constants(given, 5, 0.1, 0.0) == S.constants("tanh", 5, 0.1, 0.0)
    # a plain callable is resolved once and cached
    assert get_activation(np.sin) is get_activation(np.sin)
    with pytest.raises(ValueError, match="activation"):
        get_activation("softplus")


def test_gauss_hermite_order_is_chosen_and_reported():
    assert S.kernel("relu", 4).order == 0
    assert S.kernel("tanh", 64, 0.1, 0.1).order <= S.kernel("tanh", 2).order
    assert S.kernel("tanh", 2).order in S.ORDERS


def test_constants_dataclass():
    c = S.constants("relu", 64, 0.1, 0.1, beta=1.0)
    assert c.kappa_1 == pytest.approx(1 / 128 + 0.005 + 0.01)
    assert c.lambda_bar < 0 and c.lambda_bar <= c.lambda_bar_prime < 0
    with pytest.raises(dataclasses_error()):
        c.kappa_1 = 0.0  # type: ignore[misc]


def dataclasses_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


# --------------------------------------------------------------------- experiment and CLI
def test_split_law_is_the_uniform_sign_pattern_law():
    from itertools import product

    from tokensde.experiments.synchronization import split_law

    for n in (2, 5, 6):
        counts = np.zeros(n // 2 + 1)
        for signs in product((1, -1), repeat=n):
            plus = sum(s > 0 for s in signs)
            counts[min(plus, n - plus)] += 1
        np.testing.assert_allclose(split_law(n), counts / 2**n, rtol=1e-15)


def test_quick_synchronization_passes_and_its_verdict_can_fail(tmp_path):
    from tokensde.experiments import REGISTRY
    from tokensde.runtime import run_experiment

    exp = REGISTRY["synchronization"]
    cfg = exp.Config(**exp.quick)
    verdict = run_experiment(exp, cfg, tmp_path / "run", show_progress=False)
    assert verdict["verdict"] == "PASS", verdict
    table = pd.read_parquet(tmp_path / "run" / "results.parquet")
    tab = table[table["part"] == "table"]
    assert len(tab) == 4 * 3 * 2
    for col in ("kappa_1", "kappa_prime_1", "lambda_1", "lambda_bar", "lambda_bar_prime"):
        assert tab[col].notna().all()
    row = tab[(tab["activation"] == "relu") & (tab["d"] == 64) & (tab["sigma_u"] == 0.1)].iloc[0]
    assert row["kappa_1"] == pytest.approx(1 / 128 + 0.01 / 2 + 0.01)
    for f in ("sync_table", "clustering", "exponent", "energy"):
        assert (tmp_path / "run" / f"{f}.png").exists()
    # the checks are not vacuous: the repulsive run violates the bound it is not checked against
    en = table[(table["part"] == "energy") & (table["c"] == -1.0)]
    assert (en["excess"] > 3 * en["excess_se"]).any()
    # a wrong theory value makes the verdict fail
    bad = table.copy()
    ex = bad["part"] == "exponent"
    bad.loc[ex, "lambda_1"] = bad.loc[ex, "lambda_1"] * 1.2
    assert exp.verdict(cfg, bad)["verdict"] == "FAIL"
    bad = table.copy()
    cl = (bad["part"] == "cluster") & (bad["activation"] == "tanh")
    bad.loc[cl, "p_theory"] = 1.0  # "tanh collapses or splits with probability 1" is refuted
    assert exp.verdict(cfg, bad)["verdict"] == "FAIL"


def run_cli(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_cli_theory_sync_json():
    r = run_cli("theory", "sync", "--activation", "tanh", "--d", "64", "--sigma-u", "0.1", "--sigma-w", "0.1", "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    c = S.constants("tanh", 64, 0.1, 0.1, beta=1.0)
    for key in ("kappa_1", "kappa_prime_1", "lambda_1", "lambda_bar", "lambda_bar_prime"):
        assert obj[key] == pytest.approx(getattr(c, key), rel=1e-12)
    assert obj["activation"] == "tanh" and obj["d"] == 64 and obj["beta"] == 1.0


@pytest.mark.parametrize(
    "args,field",
    [
        (["--d", "1"], "d"),
        (["--activation", "softplus"], "activation"),
        (["--sigma-u", "-0.1"], "sigma_u"),
        (["--sigma-w", "nan"], "sigma_w"),
        (["--beta", "-1"], "beta"),
    ],
)
def test_cli_theory_sync_rejects_bad_input(args, field):
    r = run_cli("theory", "sync", *args, "--json")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:") and "allowed" in lines[0]
    assert r.stdout == ""


def test_cli_run_rejects_a_non_decaying_energy_setting(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('energy_setting = {activation = "tanh", d = 8}\n')  # odd field: lambda_bar' >= 0
    r = run_cli("run", "synchronization", "--config", str(cfg), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "energy_setting" in lines[0] and "lambda_bar'" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "data,field",
    [
        ({"exponent_r_lo": 1e-5}, "exponent_r_lo"),
        ({"cluster_runs": 3}, "cluster_runs"),
        ({"exponent_settings": [{"activation": "relu", "d": 1}]}, "exponent_settings"),
        ({"table_bias": [0.0, 2.0]}, "table_bias"),
        ({"energy_c": [1.0, float("nan")]}, "energy_c"),
        ({"foo": 1}, "foo"),
    ],
)
def test_bad_synchronization_config_exits_2_naming_the_field(capsys, data, field):
    import typer

    from tokensde.cli import validate
    from tokensde.experiments.synchronization import SynchronizationConfig

    with pytest.raises(typer.Exit) as e:
        validate(SynchronizationConfig, data)
    assert e.value.exit_code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}"), lines
