"""The stochastic Heun scheme for the Stratonovich form of (*): its drift correction and its strong order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokensde.models import ValueNoise
from tokensde.solvers import SOLVERS, Level, simulate_levels, stratonovich_coefficients
from tokensde.sphere import uniform
from tokensde.stats import bonferroni_z, loglog_slope

F64 = torch.float64


def _mean_increment(scheme, model, x, xi, dt):
    """Antithetic mean of (step - x) / dt: the noise cancels to first order, the drift remains."""
    plus = scheme.step(model, x, xi, dt) - x
    minus = scheme.step(model, x, -xi, dt) - x
    return (plus + minus) / (2 * dt)


@pytest.mark.parametrize("beta", [0.0, 1.5])
def test_heun_has_the_ito_drift_of_euler(beta):
    """E[step - x]/dt -> the Itô drift for both schemes: the Itô-Stratonovich correction is right.

    Without the correction term (-1/2 sum_k D sigma_k[g_k]) the Heun drift would differ by an O(1) amount.
    """
    n, d, reps, dt = 3, 3, 20_000, 1e-4
    model = ValueNoise(beta=beta, route="matrix")
    x = uniform((1, n), d, torch.Generator().manual_seed(0), F64).expand(reps, n, d).contiguous()
    xi = torch.randn((reps, d, d), generator=torch.Generator().manual_seed(1), dtype=F64)
    em = _mean_increment(SOLVERS["euler"], model, x, xi, dt)
    heun = _mean_increment(SOLVERS["heun"], model, x, xi, dt)
    diff = heun - em
    se = diff.std(0) / math.sqrt(reps)
    z = (diff.mean(0).abs() / se).max().item()
    assert z < bonferroni_z(0.999, 2 * n * d), z
    # the correction matters: the uncorrected Stratonovich drift P b = 0 here, the Itô drift is not
    ito = em.mean(0)
    assert ito.abs().max().item() > 0.1


def test_stratonovich_drift_cancels_the_curvature_term_at_beta0_for_one_token():
    """One token: Brownian motion on the sphere, whose Stratonovich drift is zero.

    For a single token a = x, sigma_ab = e_a x_b, D sigma_ab[v] = e_a v_b, g_ab = P e_a x_b, so
    sum_ab D sigma_ab[g_ab] = sum_ab e_a (P e_a)_b x_b = P x = 0: Brownian motion on the sphere has no
    Stratonovich drift.
    """
    x = uniform((5, 1), 4, torch.Generator().manual_seed(2), F64)
    xi = torch.randn((5, 4, 4), generator=torch.Generator().manual_seed(3), dtype=F64)
    f, g = stratonovich_coefficients(ValueNoise(beta=0.7, route="matrix"), x, xi)
    assert f.abs().max().item() < 1e-8
    assert (g * x).sum(-1).abs().max().item() < 1e-12


def test_heun_refuses_factor_routes():
    x = uniform((4, 2), 5, torch.Generator().manual_seed(4), F64)
    with pytest.raises(ValueError, match="linear"):
        SOLVERS["heun"].step(ValueNoise(beta=1.0, route="kernel"), x, torch.zeros(4, 2, 5, dtype=F64), 0.01)


@pytest.mark.slow
def test_heun_strong_order_on_one_brownian_path():
    """Nested steps on one fixed Brownian path against a fine Heun reference: slope 1/2 (non-commutative noise)."""
    bsz, n, d, T, kref, ks = 400, 3, 3, 1.0, 9, [3, 4, 5, 6]
    model = ValueNoise(beta=1.0, route="matrix")
    x0 = uniform((bsz, n), d, torch.Generator().manual_seed(0), F64)
    fine = torch.randn((2**kref, bsz, d, d), generator=torch.Generator().manual_seed(1), dtype=F64)
    heun = SOLVERS["heun"]

    def run(k):
        m, x = 2 ** (kref - k), x0
        for j in range(2**k):
            x = heun.step(model, x, fine[j * m : (j + 1) * m].sum(0) / math.sqrt(m), T / 2**k)
        return x

    ref = run(kref)
    err = [((run(k) - ref) ** 2).sum(-1).mean().sqrt().item() for k in ks]
    slope, _ = loglog_slope(np.array([T / 2**k for k in ks]), np.array(err))
    assert abs(slope - heun.strong_order) < 0.25, (slope, err)


def _heun_order_against_euler(heun_step=None, bsz: int = 400) -> tuple[float, float, list[float]]:
    """Coarse Heun runs (``K = 8 .. 256`` steps over ``T = 1/2``) against one fine Euler–Maruyama run
    (``2^12`` steps) on the same Brownian path (:func:`simulate_levels`: a coarse step's increment is the
    normalised sum of its fine normals). Returns the weighted log-log slope of the RMS error at ``T``
    against ``h``, its standard error and the errors."""
    n, d, T, kref, ks = 3, 3, 0.5, 12, [3, 4, 5, 6, 7, 8]
    model = ValueNoise(beta=1.0, route="matrix")
    x0 = uniform((bsz, n), d, torch.Generator().manual_seed(0), F64)
    heun, euler = SOLVERS["heun"], SOLVERS["euler"]
    step = heun_step or (lambda x, xi, h: heun.step(model, x, xi, h))
    levels = [Level(str(k), step, 2 ** (kref - k)) for k in ks]
    levels.append(Level("ref", lambda x, xi, h: euler.step(model, x, xi, h), 1))
    res = simulate_levels(levels, x0, T / 2**kref, 2**kref, model.noise_shape(n, d), 0, ("heun-strong-order",))
    err, se = [], []
    for k in ks:
        sq = ((res[str(k)].x - res["ref"].x) ** 2).sum(-1).mean(-1)  # per system
        e = sq.mean().sqrt().item()
        err.append(e)
        se.append(sq.std().item() / math.sqrt(bsz) / (2.0 * e))  # delta method: se of sqrt(mean)
    slope, se_slope = loglog_slope(np.array([T / 2**k for k in ks]), np.array(err), np.array(se))
    return slope, se_slope, err


def test_heun_strong_order_against_an_euler_reference():
    r"""Heun converges at strong order 1/2 to the Itô solution of (*) that Euler–Maruyama converges to.

    The reference is a fine *Euler* run on the same path, not a fine Heun run, so the test also sees a
    Heun scheme that converges, at whatever rate, to another equation: its error levels off at the
    distance between the two solutions and the fitted slope drops. The bound,
    ``|slope - 1/2| <= max(0.1, 3 se)``, from the mathematics:

    * the noise is non-commutative, so 1/2 is the order (Clark–Cameron: no scheme using only the
      increments does better), with ``e(h) = C h^{1/2} (1 + O(h^{1/2}))``: over ``h = T/8 .. T/256`` the
      next term bends the fitted slope by ``O(0.1)`` at most -- the model tolerance 0.1 (measured with
      2048 systems: 0.494 ± 0.008 and 0.487 ± 0.007 for two seeds, so the bend here is below 0.02);
    * the reference's own error is ``C_E h_ref^{1/2}`` with ``h_ref = h_min / 16``: it adds about
      ``(C_E / C_H)^2 / 16`` (a few percent) to ``e^2`` at the finest step, less at the coarser ones, a bias
      of the slope of about -0.01;
    * ``se`` is the standard error of the weighted fit (per-point standard errors by the delta method,
      treated as independent; the points share their paths and are positively correlated, which makes
      this ``se`` an overestimate). 3 se (about 0.045 with 400 systems) is a two-sided 0.997 level.

    Measured here: 0.474 ± 0.015. What fails it (measured, same seed): Heun without its Itô–Stratonovich
    correction (0.364 ± 0.013; the two solutions 0.034 apart at ``T``), the Euler step on the Stratonovich
    coefficients, i.e. Heun without its corrector (0.374), a corrector without the halves (noise doubled:
    -0.04), coarse increments built as ``sum / r`` instead of ``sum / sqrt(r)`` (0.05). A predictor that
    takes a half step (``x~ = N(x + (f dt + g dW) / 2)``: half the correction) converges to a solution
    only 0.02 away, below what these errors resolve (0.424, passes); test_heun_has_the_ito_drift_of_euler
    fails on it (and on the other two wrong limits), at ``|z|`` 13 to 20.
    """
    slope, se, err = _heun_order_against_euler()
    assert abs(slope - SOLVERS["heun"].strong_order) <= max(0.1, 3.0 * se), (slope, se, err)


@pytest.mark.parametrize(("n", "d"), [(2, 5), (3, 3), (6, 4)])
def test_closed_form_correction_matches_central_differences(n, d):
    """ValueNoise.stratonovich_correction (closed form) = the generic central-difference sum, for general A,
    Vbar, sigma and per-system beta; a wrong sign or a missing term of the closed form is O(1) here."""
    from tokensde.solvers import _correction_by_differences

    g = torch.Generator().manual_seed(n * d)
    x = uniform((8, n), d, g, F64)
    xi = torch.randn((8, d, d), generator=g, dtype=F64)
    a = torch.randn((d, d), generator=g, dtype=F64)
    beta = 3.0 * torch.rand(8, generator=g, dtype=F64)
    for model in (
        ValueNoise(beta=1.3, route="matrix"),
        ValueNoise(beta=0.7, sigma=0.6, a=a, vbar=a.T, route="matrix"),
        ValueNoise(beta=beta, a=a, route="matrix"),
    ):
        closed = model.stratonovich_correction(x)
        fd = _correction_by_differences(model, x, xi)
        assert fd.abs().max().item() > 0.05
        torch.testing.assert_close(closed, fd, rtol=0, atol=1e-8)
    assert ValueNoise(beta=1.0, route="matrix", attention="usa").stratonovich_correction(x) is None
