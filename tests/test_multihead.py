"""Model B: the exact-in-law layer, the limits, the regimes and the theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokensde.models.multihead import Multihead, MultiheadLimit, classify_regime, scales
from tokensde.solvers import integrate_ode, simulate, simulate_coupled
from tokensde.sphere import gram, simplex, uniform
from tokensde.stats import bonferroni_z, loglog_slope
from tokensde.theory import homogenized as th

F64 = torch.float64


def _stats(y: torch.Tensor) -> list[torch.Tensor]:
    """A few statistics of a layer's output ``(B, n, d)`` (overlaps, coordinates, squares)."""
    return [
        (y[:, 0] * y[:, 1]).sum(-1),
        y[:, 0, 0],
        y[:, 2, 1] ** 2,
        (y[:, 1] * y[:, 2]).sum(-1) ** 2,
    ]


def _same_law(a: torch.Tensor, b: torch.Tensor, tests: int) -> list[float]:
    za = _stats(a)
    zb = _stats(b)
    out = []
    for s1, s2 in zip(za, zb, strict=True):
        se = math.sqrt(s1.var().item() / len(s1) + s2.var().item() / len(s2))
        out.append(abs(s1.mean().item() - s2.mean().item()) / se)
    return out


LAWS = {
    "gaussian": dict(beta=2.0, heads=3),
    "means": dict(beta=2.0, heads=3, vbar=0.7, abar=1.0),
    "shared": dict(beta=1.5, heads=5, sigma_a=0.0, abar=1.0, vbar=-1.0),
    "beta0": dict(beta=0.0, heads=4),
}


def _law(spec: dict, d: int, route: str = "compressed") -> Multihead:
    kw = dict(spec)
    eye = torch.eye(d, dtype=F64)
    if "vbar" in kw:
        kw["vbar"] = kw["vbar"] * eye
    if "abar" in kw:
        kw["abar"] = kw["abar"] * eye
    return Multihead(route=route, **kw)


@pytest.mark.parametrize("route", ["compressed", "matrix"])
@pytest.mark.parametrize("name", sorted(LAWS))
def test_layer_has_the_law_of_the_literal_layer(name: str, route: str) -> None:
    """The layer drawn from few normals has the law of the layer with full d x d weight matrices."""
    g = torch.Generator().manual_seed(7)
    bsz, n, d = 60_000, 3, 4
    law = _law(LAWS[name], d, route)
    x0 = uniform((1, n), d, g, F64).expand(bsz, n, d).contiguous()
    xi = torch.randn((bsz, *law.noise_shape(n, d)), generator=g, dtype=F64)
    y1 = law.layer(x0, xi, 0.5)
    y2 = law.literal_layer(x0, g, 0.5)
    z = _same_law(y1, y2, 4)
    assert max(z) < bonferroni_z(0.999, 4 * len(LAWS) * 2), z


def test_noise_counts() -> None:
    law = Multihead(beta=1.0, heads=8)
    n, d = 16, 64
    assert law.head_normals(n, d, 8) == 2 * 8 * d * n
    assert law.noise_normals(n, d, 8) == n * d  # min(n, 8 r) = n rows
    assert Multihead(beta=0.0, heads=8).noise_shape(n, d) == (n * d,)
    assert Multihead(beta=1.0, heads=8, sigma_a=0.0, route="matrix").noise_shape(n, d) == (d * d,)


def test_limit_kernel_at_beta0() -> None:
    """beta = 0: C_ij = |xbar|^2 / (d-1) for all i, j (diffusive time); check the noise covariance."""
    g = torch.Generator().manual_seed(1)
    n, d, reps = 5, 6, 200_000
    x = uniform((1, n), d, g, F64)
    lim = MultiheadLimit(Multihead(beta=0.0), samples=3, time="diffusive")
    xs = x.expand(reps, n, d)
    xi = torch.randn((reps, *lim.noise_shape(n, d)), generator=g, dtype=F64)
    _, cdiag, m = lim.coefficients(xs, xi)
    u = (x.mean(1) ** 2).sum().item()
    c = u / (d - 1)
    assert torch.allclose(cdiag, torch.full_like(cdiag, c))
    cov = torch.einsum("bik,bjk->bij", m, m) / d  # per coordinate
    est = cov.mean(0)
    se = cov.std(0) / math.sqrt(reps)
    z = ((est - c) / se).abs().max().item()
    assert z < bonferroni_z(0.999, n * n), z


def test_limit_kernel_random_heads_is_unbiased() -> None:
    """Random heads: E[dM_i . dM_j]/d = s_ij/(d-1) with s from a direct Monte Carlo over literal heads."""
    g = torch.Generator().manual_seed(2)
    n, d, reps = 3, 5, 200_000
    beta = 3.0
    x = uniform((1, n), d, g, F64)
    lim = MultiheadLimit(Multihead(beta=beta), samples=2, time="diffusive")
    xs = x.expand(reps, n, d)
    xi = torch.randn((reps, *lim.noise_shape(n, d)), generator=g, dtype=F64)
    _, cdiag, m = lim.coefficients(xs, xi)
    cov = torch.einsum("bik,bjk->bij", m, m) / d
    # reference s_ij from literal heads A = W W'^T / d
    w = torch.randn((reps, 2, d, d), generator=g, dtype=F64) / math.sqrt(d)
    a = w[:, 0] @ w[:, 1].transpose(-1, -2)
    scores = (xs @ a.transpose(-1, -2)) @ xs.transpose(-1, -2)
    mm = torch.softmax(beta * scores, -1) @ xs
    s = (mm @ mm.transpose(-1, -2)) / (d - 1)
    se = torch.sqrt(cov.var(0) / reps + s.var(0) / reps)
    z = ((cov.mean(0) - s.mean(0)) / se).abs().max().item()
    assert z < bonferroni_z(0.999, n * n + n), z
    zd = ((cdiag.mean(0) - torch.diagonal(s, dim1=-2, dim2=-1).mean(0)).abs() / se.diagonal()).max().item()
    assert zd < bonferroni_z(0.999, n * n + n), zd


def test_discrete_stack_matches_limit_at_small_step() -> None:
    """Gaussian setting: the stack at small eta and the diffusive limit give the same E u(tau)."""
    n, d, heads, eta, tau = 4, 8, 2, 0.1, 1.0
    law = Multihead(beta=1.0, heads=heads)
    alpha = scales(eta, 1, heads, d).alpha
    layers = round(tau / (alpha * eta))
    g = torch.Generator().manual_seed(3)
    bsz = 4096
    x0 = uniform((bsz, n), d, g, F64)
    xs = simulate(law, x0, eta, layers, seed=1, key=("stack",), solver="stack").x
    lim = MultiheadLimit(law, samples=4, time="diffusive")
    steps = 100
    fine, coarse = simulate_coupled(lim, x0, tau / steps, steps, seed=2, key=("limit",))
    us = gram(xs).mean((-1, -2))
    ul = 2 * gram(fine.x).mean((-1, -2)) - gram(coarse.x).mean((-1, -2))
    se = math.sqrt(us.var().item() / bsz + ul.var().item() / bsz)
    assert abs(us.mean().item() - ul.mean().item()) < 3.29 * se, (us.mean().item(), ul.mean().item(), se)
    # and the overlap really moved: the comparison is not vacuous
    assert us.mean().item() - gram(x0).mean((-1, -2)).mean().item() > 10 * se


def test_simulate_coupled_fine_equals_simulate() -> None:
    g = torch.Generator().manual_seed(4)
    x0 = uniform((300, 3), 5, g, F64)
    lim = MultiheadLimit(Multihead(beta=1.0), samples=2, time="diffusive")
    fine, coarse = simulate_coupled(lim, x0, 0.01, 20, seed=5, key=("k",), record_every=10)
    ref = simulate(lim, x0, 0.01, 20, seed=5, key=("k",), record_every=10)
    assert torch.equal(fine.x, ref.x)
    assert fine.xs is not None and coarse.xs is not None and fine.xs.shape == coarse.xs.shape
    other = simulate(lim, x0, 0.02, 10, seed=6, key=("k",)).x
    coupled = (fine.x - coarse.x).norm(dim=-1).mean().item()
    independent = (fine.x - other).norm(dim=-1).mean().item()
    assert 0 < coupled < 0.5 * independent, (coupled, independent)  # same Brownian path: close, not equal
    with pytest.raises(ValueError, match="even"):
        simulate_coupled(lim, x0, 0.01, 21, seed=5)


def test_modified_ode_is_second_order() -> None:
    """Deterministic stack (sigma_V = 0): distance to the ballistic ODE ~ eta, to the modified ODE ~ eta^2."""
    n, d, T = 5, 4, 1.0
    eye = torch.eye(d, dtype=F64)
    x0 = uniform((64, n), d, torch.Generator().manual_seed(5), F64)
    etas = [0.1, 0.05, 0.025]
    eb, em = [], []
    for eta in etas:
        law = Multihead(beta=1.0, heads=1, sigma_v=0.0, sigma_a=0.0, vbar=eye, abar=eye)
        x = x0
        for _ in range(round(T / eta)):
            x = law.layer(x, torch.zeros((64, *law.noise_shape(n, d)), dtype=F64), eta)
        ball = integrate_ode(MultiheadLimit(law, eta=eta, kind="ballistic").field, x0, 0.0125, 80)
        mod = integrate_ode(MultiheadLimit(law, eta=eta, kind="modified").field, x0, 0.0125, 80)
        eb.append((x - ball).norm(dim=-1).max().item())
        em.append((x - mod).norm(dim=-1).max().item())
    sb, _ = loglog_slope(np.array(etas), np.array(eb))
    sm, _ = loglog_slope(np.array(etas), np.array(em))
    assert abs(sb - 1.0) < 0.15, sb
    assert abs(sm - 2.0) < 0.15, sm


def test_rk4_order() -> None:
    law = Multihead(beta=1.0, sigma_a=0.0, vbar=torch.eye(3, dtype=F64), abar=torch.eye(3, dtype=F64))
    field = MultiheadLimit(law, kind="ballistic").field
    x0 = uniform((8, 4), 3, torch.Generator().manual_seed(6), F64)
    ref = integrate_ode(field, x0, 1 / 256, 256)
    errs = [(integrate_ode(field, x0, 1 / k, k) - ref).abs().max().item() for k in (4, 8, 16)]
    s, _ = loglog_slope(np.array([1 / 4, 1 / 8, 1 / 16]), np.array(errs))
    assert abs(s - 4.0) < 0.5, s


def test_regimes() -> None:
    d = 16
    # ballistic: small noise and small eta^2 L
    assert classify_regime(0.001, 1000, 8, d) == "ballistic"
    # modified: eta^2 L not small, eta^3 L small, noise small (many heads)
    assert classify_regime(0.05, 100, 10**6, d) == "modified"
    # diffusive: alpha eta L of order one
    assert classify_regime(0.01, 2 * 10**4, 1, d) == "diffusive"
    # none: eta^3 L large
    assert classify_regime(0.5, 1000, 1, d) == "none"
    s = scales(0.1, 50, 4, d)
    assert math.isclose(s.alpha, 0.1 * (d - 1) / d / 4)
    assert math.isclose(s.alpha_eta_L, s.alpha * 0.1 * 50)


# ---------------------------------------------------------------------------- theory


@pytest.mark.parametrize("d", [3, 5, 40])
def test_logistic_exit_law_from_the_generic_two_point_routine(d: int) -> None:
    motion = th.logistic_two_point(d)
    for u0 in (-0.8, -0.3, 0.0, 0.45, 0.9):
        assert abs((1 - motion.p_antipodal(u0)) - th.logistic_exit_plus(u0)) < 1e-9


def test_logistic_overlap_solves_the_ode() -> None:
    tau = np.linspace(0, 4, 401)
    u = th.logistic_overlap(0.1, tau)
    du = np.gradient(u, tau, edge_order=2)
    assert np.abs(du - u * (1 - u)).max() < 1e-4
    assert u[0] == pytest.approx(0.1)


def test_simplex_rates_at_beta0_and_large_beta() -> None:
    r = th.simplex_fg(6, 16, 0.0, np.array([0.0, 0.5]), samples=64)
    assert np.allclose(r.f, 1 / 6) and np.allclose(r.g, 1 / 6)
    r = th.simplex_fg(6, 16, 1e4, np.array([0.0]), samples=4000, seed=1)
    assert r.f[0] > 0.99  # hard attention: one token per head


def test_simplex_rates_against_literal_heads() -> None:
    """f and g from the Gram-factor trick equal those of literal heads A = W W'^T / d on actual tokens."""
    n, d, beta, gamma, reps = 5, 8, 6.0, 0.3, 40_000
    r = th.simplex_fg(n, d, beta, np.array([gamma]), samples=reps, seed=3)
    x = simplex(n, d, gamma, F64)
    g = torch.Generator().manual_seed(9)
    w = torch.randn((reps, 2, d, d), generator=g, dtype=F64) / math.sqrt(d)
    a = w[:, 0] @ w[:, 1].transpose(-1, -2)
    pi = torch.softmax(beta * (x @ a.transpose(-1, -2)) @ x.T, -1)
    pp = pi @ pi.transpose(-1, -2)
    f = torch.diagonal(pp, dim1=-2, dim2=-1).mean(-1)
    off = ~torch.eye(n, dtype=torch.bool)
    gg = pp[:, off].mean(-1)
    zf = abs(f.mean().item() - r.f[0]) / math.hypot(f.std().item() / math.sqrt(reps), r.se_f[0])
    zg = abs(gg.mean().item() - r.g[0]) / math.hypot(gg.std().item() / math.sqrt(reps), r.se_g[0])
    assert max(zf, zg) < 3.29, (zf, zg)
    assert r.f[0] > 1.5 / n  # far from uniform attention: the comparison is not vacuous


def test_simplex_ode_at_beta0_is_the_logistic() -> None:
    n = 8
    rates = th.simplex_fg(n, 16, 0.0, np.linspace(0, 1, 11), samples=16)
    tau = np.linspace(0, 5, 11)
    gamma = th.simplex_overlap(rates, 0.0, tau)
    u = gamma + (1 - gamma) / n
    assert np.abs(u - th.logistic_overlap(1 / n, tau)).max() < 1e-7


def test_loglog_slope() -> None:
    x = np.array([1.0, 2.0, 4.0, 8.0])
    s, se = loglog_slope(x, 3 * x**-1.5)
    assert abs(s + 1.5) < 1e-12 and se < 1e-10
    s, se = loglog_slope(x, 3 * x**-1.5, se=0.01 * 3 * x**-1.5)
    assert abs(s + 1.5) < 1e-12 and se > 0


def test_small_beta_mean_overlap_follows_beta0_and_the_logistic_curve() -> None:
    """Gaussian setting, large d: at small beta the mean overlap follows the beta = 0 dynamics, hence the logistic.

    The attention scores have standard deviation beta / sqrt(d), so E u differs from the beta = 0 value by
    O(beta^2 / d), below this test's resolution; beta = 0 itself follows u' = u (1 - u) up to O(1/d)
    (the homogenized experiment fits that rate).
    """
    n, d, bsz, tau, steps = 8, 64, 1024, 1.5, 50
    x0 = uniform((bsz, n), d, torch.Generator().manual_seed(11), F64)
    out = {}
    for beta in (0.0, 0.25):
        lim = MultiheadLimit(Multihead(beta=beta), samples=2, time="diffusive")
        fine, coarse = simulate_coupled(lim, x0, tau / steps, steps, seed=12, key=("small-beta",))
        out[beta] = 2 * gram(fine.x).mean((-1, -2)) - gram(coarse.x).mean((-1, -2))
    diff = out[0.25] - out[0.0]  # same start; independent noise (the two draw different numbers)
    se = diff.std().item() / math.sqrt(bsz)
    assert abs(diff.mean().item()) < 3.29 * se + 1e-12, (diff.mean().item(), se)
    u0 = gram(x0).mean((-1, -2)).numpy()
    assert out[0.25].mean().item() - u0.mean() > 0.1  # the overlap grew: the comparison is not vacuous
