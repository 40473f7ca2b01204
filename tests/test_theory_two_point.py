"""The generic two-point routine against closed forms and an independent mpmath reference."""

import math

import mpmath as mp
import numpy as np
import pytest

from tokensde.theory import value_noise as A


def mp_reference(d: int, beta: float, rho0: float) -> float:
    """P(rho -> -1) from docs/models.md's scale density, in 30-digit arithmetic.

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


# ---------------------------------------------------------------------------- large d
def mp_reference_marched(d: int, beta: float, rho0: float, dps: int = 30) -> mp.mpf:
    """P(rho -> -1) from docs/models.md's scale density, in ``dps``-digit arithmetic, for any d.

    ``log s'`` is marched from ``a = min(-1/2, rho0)`` towards 1 in steps over which it changes by
    at most ~2 (steps also below (1 - r)/4 and where ``(log s')''`` is large), each step a 96-point
    Gauss–Legendre rule in mpmath whose inner integrals of ``2 mu/s^2`` are fixed rules too (an
    adaptive inner rule is not smooth in its end point and spoils the outer one). mpmath's
    exponent range holds ``s'`` of any size. The left piece ``[-1, a]`` splits off
    ``(1 + r)^{-alpha_-}`` analytically as in :func:`mp_reference`, in the variable ``x = 1 + r``
    (so that ``rho0 = -1 + 2^-52`` is resolved). The march stops once ``log s'`` has dropped 160 below
    its maximum past ``rho0`` (and past the bulk): ``e^{-160}`` is below 30 digits.
    """
    mp.mp.dps = dps
    b, rho0 = mp.mpf(beta), mp.mpf(rho0)
    if mp.cosh(2 * b) <= d - 2:
        return mp.mpf(0)
    cm = mp.sech(2 * b) / 2
    ap = mp.mpf(d - 3) / 2
    am = mp.mpf(1) / 2 + (d - 2) * cm
    unit = mp.calculus.quadrature.GaussLegendre(mp.mp).get_nodes(mp.mpf(-1), mp.mpf(1), 6, mp.mp.prec)

    def fixed(f, lo, hi):
        half, mid = (hi - lo) / 2, (hi + lo) / 2
        return half * mp.fsum(w * f(mid + half * x) for x, w in unit)

    def h(u):  # 2 mu / s^2 of model A
        return ((d - 2) * mp.sech(b * (1 - u)) - u) / ((1 - u) * (1 + u))

    def gx(x):  # h with both poles split off (bounded), at u = x - 1 (x = 1 + u carried exactly)
        return mp.sech(b * (2 - x)) / ((2 - x) * x) - 1 / (2 * (2 - x)) - cm / x

    a = min(mp.mpf(-0.5), rho0)
    xa = 1 + a
    k_a = -fixed(gx, xa, 1)  # int_0^a of the remainder
    k_m1 = k_a - fixed(gx, 0, xa)
    g_m1 = mp.exp(ap * mp.log(2) - (d - 2) * k_m1)  # G(-1), G = s' (1 + r)^{alpha_-}

    def big_g(x):  # G at r = x - 1
        return mp.exp(ap * mp.log(2 - x) - (d - 2) * (k_a - fixed(gx, x, xa)))

    left = mp.quad(lambda x: x ** (-am) * (big_g(x) - g_m1), [0, xa])
    left += g_m1 * xa ** (1 - am) / (1 - am)
    x, log_s = a, ap * mp.log(1 - a) - am * mp.log(1 + a) - (d - 2) * k_a
    pieces, top = [], -mp.inf
    while 1 - x > mp.mpf(10) ** (-dps):
        step = min(
            2 / max(abs(h(x)), mp.mpf(1e-30)),
            mp.sqrt(2 / max(abs(mp.diff(h, x)), mp.mpf(1e-30))),
            (1 - x) / 4,
            mp.mpf(1) / 8,
        )
        nxt = rho0 if x < rho0 < x + step else x + step
        x0, l0 = x, log_s
        pieces.append((x0, fixed(lambda r, x0=x0, l0=l0: mp.exp(l0 - fixed(h, x0, r)), x0, nxt)))
        log_s, x = l0 - fixed(h, x0, nxt), nxt
        if x0 >= rho0:
            top = max(top, l0, log_s)
            if log_s < top - 160:
                break
    num = mp.fsum(v for lo, v in pieces if lo >= rho0)
    return num / (left + mp.fsum(v for _, v in pieces))


# (d, beta, rho0, P) with P from mp_reference_marched at 30 digits (the same to all digits shown at 40);
# beta next to beta_c(d) is the double beta_c(d) + delta, written out. Before the exit law was computed in
# log space these gave NaN (d >= 1500) or silently wrong values (d = 1000: 25% off; next to beta_c with
# rho0 < 0: P = 1 - (1 - P) lost up to all digits).
LARGE_D = [
    (2000, 10.0, 0.0, "0.1805364269324693001397357887"),
    (2000, 10.0, -0.9, "0.7644080597953545042879486416"),
    (2000, 10.0, 0.9, "1.638904643591296392211228866e-201"),
    (100000, 1000.0, 0.3, "0.3752916813865959896374777849"),
    (100000, 1000.0, -0.9, "0.8497670718784631682482888684"),
    (100000, 1000.0, 0.9, "0.103796993560950371512975294"),
    (5000, 4.60597014097342, 0.0, "1.288295020162255571508122843e-15"),  # beta_c(5000) + 1e-3
    (5000, 4.654970140973419, -0.9, "0.03728051368751551312320969417"),  # beta_c(5000) + 0.05
    (5000, 4.654970140973419, 0.0, "2.632658121866222047374697088e-13"),
    (100000, 6.113026322652585, 0.0, "1.951901547284580691204722616e-38"),  # beta_c(1e5) + 0.01
    (100000, 50.0, -0.3, "0.4944974839629160735634769425"),
    (2000, 1000.0, 0.9, "0.1121227896304354677396977615"),
    (1000, 10.0, 0.0, "0.2093640844023828497231303187"),
    (1000, 50.0, 0.95, "5.068909910429395807808163858e-15"),
    (500, 3.5, 0.5, "4.114812767137199535343295485e-28"),
    (50, 2.2831198334292484, -0.3, "0.00003999782709435506870948198719"),  # beta_c(50) + 1e-3
    (200, 2.991703917146583, -0.3, "0.000009858615630227950280964752134"),  # beta_c(200) + 1e-3
    # rho0 one double away from -1
    (100, 2.6400443136967806, -1.0 + 2.0**-52, "0.03413417637784076913118675026"),  # beta_c(100) + 1e-3
    (5000, 4.654970140973419, -1.0 + 2.0**-52, "0.8048071594384867632264420251"),
]
# Tolerance: the routine asks each integral for 1e-14 (relative) of the adaptive quadrature, and
# log s' itself carries rounding of ~eps |log s'| (|log s'| ~ 1e5 at d = 1e5 next to beta_c, ~1e-11);
# measured agreement is <= 2e-13 on these and on 44 more grid points. 1e-10 leaves room for other
# platforms' libm.
LARGE_D_RTOL = 1e-10


@pytest.mark.parametrize("d,beta,rho0,ref", LARGE_D)
def test_exit_law_at_large_d_matches_stored_mp_reference(d, beta, rho0, ref):
    p = A.p_antipodal(d, beta, rho0)
    assert math.isfinite(p)
    assert p == pytest.approx(float(mp.mpf(ref)), rel=LARGE_D_RTOL, abs=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("d,beta,rho0,ref", LARGE_D)
def test_stored_large_d_references_are_reproduced_by_mpmath(d, beta, rho0, ref):
    # 4-17 s each at 30 digits
    fresh = mp_reference_marched(d, beta, rho0)
    assert abs(fresh - mp.mpf(ref)) <= mp.mpf("1e-25") * abs(fresh)
    assert A.p_antipodal(d, beta, rho0) == pytest.approx(float(fresh), rel=LARGE_D_RTOL, abs=0.0)


@pytest.mark.parametrize("d", [1500, 5000, 100000])
def test_exactly_zero_below_threshold_at_large_d(d):
    bc = A.beta_c(d)
    for beta in (0.0, 0.5 * bc, bc * (1 - 1e-9), bc):
        for rho0 in (-0.9, 0.0, 0.9):
            assert A.p_antipodal(d, beta, rho0) == 0.0
    p = A.p_antipodal(d, bc + 0.01, -0.5)
    assert 0.0 < p < 0.05


def test_exit_law_below_the_smallest_double_underflows_to_zero():
    # P ~ 4e-1276 (d = 5000 just above beta_c, rho0 = 0.9): 0.0, and 1 - P is 1.0
    p = A.p_antipodal(5000, 4.654970140973419, 0.9)
    assert p == 0.0
    assert A.two_point_motion(5000, 4.654970140973419).p_collapse(0.9) == 1.0
