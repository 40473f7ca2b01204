"""The stochastic Heun scheme for the Stratonovich form of (*): its drift correction and its strong order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokensde.models import ValueNoise
from tokensde.solvers import SOLVERS, stratonovich_coefficients
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
