"""Every ``tokensde theory ...`` output is finite over the whole box the CLI accepts.

The boxes are those of ``TwoPointArgs`` and ``SyncArgs`` in ``tokensde.cli`` (d in [2, 1e5],
beta in [0, 1e3], rho0 in [-1, 1], sigma in (0, 1e3]; activations relu/tanh/silu/sigmoid/gelu,
sigma_u in [0, 1], sigma_w in [0, 100]); the phase-diagram experiment's cells (d <= 512,
beta <= 50) lie inside the first. Hypothesis runs derandomized, its corners sampled explicitly.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tokensde.cli import app
from tokensde.theory import homogenized as H
from tokensde.theory import synchronization as C
from tokensde.theory import value_noise as A

TINY = 5e-324  # the smallest positive double


def _corners_or(values: list, inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(values), inner)


dims = _corners_or([2, 3, 4, 1500, 100_000], st.integers(2, 100_000))
betas = _corners_or([0.0, TINY, 1e3, 50.0], st.floats(0.0, 1e3))
rhos = _corners_or([-1.0, 1.0, -1.0 + 2.0**-52, 1.0 - 2.0**-53, 0.0], st.floats(-1.0, 1.0))
sigmas = _corners_or([TINY, 1e-200, 1e3, 1.0], st.floats(0.0, 1e3, exclude_min=True))


@settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=dims, beta=betas, rho0=rhos, sigma=sigmas)
def test_two_point_outputs_are_finite_on_the_whole_box(d, beta, rho0, sigma):
    m = A.two_point_motion(d, beta, sigma)
    p = m.p_antipodal(rho0)
    assert math.isfinite(p) and 0.0 <= p <= 1.0
    assert math.isfinite(m.exponent_collapse) and math.isfinite(m.exponent_antipodal)
    assert math.isfinite(A.exponent_antipodal(d, beta, sigma)) and math.isfinite(A.beta_c(d))
    # the exit law does not depend on sigma, and decreases in rho0
    assert A.p_antipodal(d, beta, rho0) == pytest.approx(p, rel=1e-12, abs=0.0)
    grid = sorted({rho0, -0.5 * (1.0 + rho0) + rho0, 0.5 * (1.0 - rho0) + rho0})
    ps = [m.p_antipodal(r) for r in grid]
    assert all(math.isfinite(q) and 0.0 <= q <= 1.0 for q in ps)
    assert all(q2 <= q1 * (1.0 + 1e-12) for q1, q2 in zip(ps, ps[1:], strict=False))
    # exactly 0 without attraction, positive (or below the smallest double) with it
    if not A.antipodal_attracting(d, beta) and not d == 2:
        assert p == 0.0 or rho0 == -1.0


def test_two_point_closed_forms_do_not_overflow_at_large_beta():
    # cosh(2 beta) overflows a float beyond beta ~ 355: both forms must do without it
    assert A.antipodal_attracting(100_000, 1e3)
    assert not A.antipodal_attracting(100_000, 0.0)
    for d in (2, 4, 100_000):
        m = A.two_point_motion(d, 1e3, 1e3)
        assert A.exponent_antipodal(d, 1e3, 1e3) == pytest.approx(m.exponent_antipodal, rel=1e-12)
        assert A.exponent_antipodal(d, 1e3, 1e3) == pytest.approx(-1e6, rel=1e-12)
    for d, beta in ((4, 1.0), (20, 3.0), (100, 2.5)):
        closed = ((d - 2) - math.cosh(2.0 * beta)) / (2.0 * math.cosh(beta) ** 2)  # the textbook form
        assert A.exponent_antipodal(d, beta) == pytest.approx(closed, rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("sigma", [TINY, 1e-160, 1e-100, 1e-20, 1.0, 1e3])
def test_exit_law_does_not_depend_on_sigma_and_exponents_scale_with_sigma2(sigma):
    d, beta = 6, 1.3
    m = A.two_point_motion(d, beta, sigma)
    assert m.p_antipodal(0.2) == pytest.approx(A.p_antipodal(d, beta, 0.2), rel=1e-13)
    s2 = sigma * sigma  # 0.0 for the smallest ones: the exponents are then 0 (they underflow)
    assert m.exponent_collapse == pytest.approx(A.exponent_collapse(d, sigma), rel=1e-12, abs=1e-300)
    assert m.exponent_antipodal == pytest.approx(s2 * A.exponent_antipodal(d, beta), rel=1e-9, abs=1e-300)


activations = st.sampled_from(["relu", "tanh", "silu", "sigmoid", "gelu"])
sigma_us = _corners_or([0.0, TINY, 1.0], st.floats(0.0, 1.0))
sigma_ws = _corners_or([0.0, TINY, 100.0], st.floats(0.0, 100.0))


# each example is a kernel quadrature of order up to 512^2 at ~2100 points (up to ~2 s at d = 2,
# sigma_u = 1 for tanh); 40 examples by default, 150 with -m slow
def _sync_finite(activation, d, sigma_u, sigma_w, beta):
    c = C.constants(activation, d, sigma_u, sigma_w, beta)
    vals = dataclasses.asdict(c)
    assert all(math.isfinite(v) for v in vals.values()), vals
    assert -1.0 <= c.u_star <= 1.0
    assert c.lambda_bar_prime >= c.lambda_bar - 1e-9 * max(1.0, abs(c.lambda_bar))  # the sup includes u -> 1


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(activation=activations, d=dims, sigma_u=sigma_us, sigma_w=sigma_ws, beta=betas)
def test_sync_constants_are_finite_on_the_whole_box(activation, d, sigma_u, sigma_w, beta):
    _sync_finite(activation, d, sigma_u, sigma_w, beta)


@pytest.mark.slow
@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(activation=activations, d=dims, sigma_u=sigma_us, sigma_w=sigma_ws, beta=betas)
def test_sync_constants_are_finite_on_the_whole_box_many(activation, d, sigma_u, sigma_w, beta):
    _sync_finite(activation, d, sigma_u, sigma_w, beta)


def test_logistic_overlap_is_finite_for_any_time():
    tau = np.array([-1e4, -800.0, -1.0, 0.0, 1.0, 800.0, 1e4])
    for u0 in (0.0, 1e-300, 0.1, 0.5, 1.0 - 1e-16, 1.0):
        u = H.logistic_overlap(u0, tau)
        assert np.all(np.isfinite(u)) and np.all((u >= 0.0) & (u <= 1.0))
    small = np.array([0.0, 0.5, 3.0])
    np.testing.assert_allclose(H.logistic_overlap(0.1, small), 0.1 * np.exp(small) / (0.9 + 0.1 * np.exp(small)))
    assert H.logistic_overlap(0.3, 1e4) == 1.0 and H.logistic_overlap(0.3, -1e4) == 0.0


def _strict(text: str) -> dict:
    def refuse(name: str) -> float:
        raise ValueError(f"non-finite JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    "args",
    [
        ["--d", "2000", "--beta", "10", "--json"],
        ["--d", "100000", "--beta", "1000", "--rho0", "0.3", "--sigma", "1000", "--json"],
        ["--d", "100000", "--beta", "0", "--rho0", "-1", "--sigma", "1e-300", "--json"],
        ["--d", "2", "--beta", "1000", "--rho0", "1", "--json"],
    ],
)
def test_cli_two_point_prints_strict_json(args):
    result = CliRunner().invoke(app, ["theory", "two-point", *args])
    assert result.exit_code == 0, result.output
    res = _strict(result.stdout)
    assert 0.0 <= res["p_antipodal"] <= 1.0
    if args[:4] == ["--d", "2000", "--beta", "10"]:
        assert res["p_antipodal"] == pytest.approx(0.1805364269324693, rel=1e-10)  # LARGE_D reference


@pytest.mark.parametrize(
    "args",
    [
        ["--activation", "relu", "--d", "100000", "--sigma-w", "100", "--beta", "1000"],
        ["--activation", "gelu", "--d", "2", "--sigma-u", "1", "--sigma-w", "0", "--beta", "0"],
    ],
)
def test_cli_sync_prints_strict_json(args):
    result = CliRunner().invoke(app, ["theory", "sync", *args, "--json"])
    assert result.exit_code == 0, result.output
    res = _strict(result.stdout)
    assert all(math.isfinite(v) for v in res.values() if isinstance(v, float))
