"""The generic two-point routine against closed forms and an independent mpmath reference."""

import math

import mpmath as mp
import numpy as np
import pytest

from tokensde.theory import value_noise as A


def mp_reference(d: int, beta: float, rho0: float) -> float:
    """P(rho -> -1) from MODELS.md's scale density, in 30-digit arithmetic.

    The left endpoint's algebraic singularity (1+r)^(-alpha_-) is split off
    analytically: int (1+r)^(-a) G = int (1+r)^(-a) (G - G(-1)) + G(-1) int (1+r)^(-a).
    """
    if math.cosh(2 * beta) <= d - 2:
        return 0.0
    mp.mp.dps = 30
    b = mp.mpf(beta)
    am = (1 + (d - 2) * mp.sech(2 * b)) / 2

    def log_sp(r):
        integral = mp.quad(lambda u: mp.sech(b * (1 - u)) / (1 - u * u), [0, r])
        return -mp.log(1 - r * r) / 2 - (d - 2) * integral

    def G(r):
        return mp.exp(log_sp(r) + am * mp.log(1 + r))

    g_m1 = G(mp.mpf(-1) + mp.mpf(10) ** (-25))
    a = mp.mpf(-0.5)
    left = mp.quad(lambda r: (1 + r) ** (-am) * (G(r) - g_m1), [-1, a]) + g_m1 * (1 + a) ** (1 - am) / (1 - am)
    sp = lambda r: mp.exp(log_sp(r))  # noqa: E731
    num = mp.quad(sp, [max(rho0, -0.5), 1]) if rho0 >= -0.5 else None
    den = left + mp.quad(sp, [a, 0, 1])
    return float(num / den)


# each case's 30-digit reference takes 15-40 s: two cover the default run (next to beta_c, large d with
# rho0 != 0); the others run with -m slow
@pytest.mark.parametrize(
    "d,beta,rho0",
    [
        pytest.param(4, 1.0, 0.0, marks=pytest.mark.slow),
        pytest.param(6, 1.2, 0.3, marks=pytest.mark.slow),
        pytest.param(10, 3.0, -0.4, marks=pytest.mark.slow),
        pytest.param(20, 1.8, 0.0, marks=pytest.mark.slow),
        (20, 1.7925, 0.0),
        pytest.param(6, 1.04, 0.0, marks=pytest.mark.slow),
        pytest.param(50, 3.0, 0.0, marks=pytest.mark.slow),
        (100, 3.5, 0.2),
    ],
)
def test_exit_law_matches_independent_reference(d, beta, rho0):
    assert A.p_antipodal(d, beta, rho0) == pytest.approx(mp_reference(d, beta, rho0), abs=1e-8, rel=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0, 7.0])
@pytest.mark.parametrize("rho0", [-0.9, -0.3, 0.0, 0.6, 0.95])
def test_d2_is_arccos_over_pi(beta, rho0):
    assert A.p_antipodal(2, beta, rho0) == pytest.approx(math.acos(rho0) / math.pi, abs=1e-9)


@pytest.mark.parametrize("d", [3, 5, 12])
def test_large_beta_tends_to_arccos_over_pi(d):
    rho0 = 0.2
    target = math.acos(rho0) / math.pi
    gaps = [abs(A.p_antipodal(d, b, rho0) - target) for b in (5.0, 20.0, 80.0, 320.0)]
    assert all(g2 < g1 for g1, g2 in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 2e-2


@pytest.mark.parametrize("d", [4, 5, 8, 20, 100])
def test_exactly_zero_below_threshold_and_positive_above(d):
    bc = A.beta_c(d)
    assert bc == pytest.approx(0.5 * math.acosh(d - 2))
    for beta in (0.0, 0.5 * bc, bc * (1 - 1e-9), bc):
        assert A.p_antipodal(d, beta) == 0.0
    p_above = A.p_antipodal(d, bc + 0.05)
    assert 0.0 < p_above < 0.05


def test_continuity_at_threshold():
    d = 10
    bc = A.beta_c(d)
    values = [A.p_antipodal(d, bc + h) for h in (1e-1, 1e-2, 1e-3)]
    assert values[0] > values[1] > values[2] > 0
    assert values[2] < 1e-3


@pytest.mark.parametrize("d,beta", [(3, 0.7), (4, 1.0), (6, 2.0), (20, 3.0), (7, 0.1)])
def test_exponents_match_closed_forms(d, beta):
    m = A.two_point_motion(d, beta, sigma=1.3)
    assert m.exponent_collapse == pytest.approx(A.exponent_collapse(d, 1.3), rel=1e-10)
    assert m.exponent_antipodal == pytest.approx(A.exponent_antipodal(d, beta, 1.3), rel=1e-9, abs=1e-12)


def test_generic_drift_and_diffusion_match_model_a_overlap_sde():
    d, beta = 6, 1.3
    m = A.two_point_motion(d, beta)
    r = np.linspace(-0.99, 0.99, 41)
    p = 1 / (1 + np.exp(-beta * (1 - r)))
    q = 1 - p
    drift = (1 - r**2) * (2 * p * q * (d - 2) - (p**2 + q**2) * r)
    diff2 = 2 * (p**2 + q**2) * (1 - r**2) ** 2
    np.testing.assert_allclose(m.drift(r), drift, atol=1e-12)
    np.testing.assert_allclose(m.diffusion2(r), diff2, atol=1e-12)


def test_finite_difference_fallback_agrees_with_exact_derivatives():
    from tokensde.theory import TwoPointMotion

    exact = A.two_point_motion(8, 2.0)
    fd = TwoPointMotion(d=8, c0=exact.c0, c1=exact.c1)
    assert fd.exponent_antipodal == pytest.approx(exact.exponent_antipodal, rel=1e-6)
    assert fd.p_antipodal(0.1) == pytest.approx(exact.p_antipodal(0.1), abs=1e-6)


def test_bad_rho0_rejected():
    with pytest.raises(ValueError, match="rho0"):
        A.p_antipodal(4, 1.0, 1.5)
