"""Sphere geometry, noise routes, solver invariants and the discrete stack against the limit."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tokensde.attention import barycenters
from tokensde.engine import BrownianPath
from tokensde.models import ValueNoise
from tokensde.models.value_noise import pair_euler_slab, pair_euler_step
from tokensde.noise import gram_factor, kernel_factor
from tokensde.solvers import simulate
from tokensde.sphere import gram, pair_with_overlap, simplex, uniform


def test_pair_with_overlap_and_simplex():
    x = pair_with_overlap(100, 5, -0.3, torch.Generator().manual_seed(0), torch.float64)
    np.testing.assert_allclose((x[:, 0] * x[:, 1]).sum(-1), -0.3, atol=1e-12)
    s = simplex(4, 6, 0.25)
    g = gram(s)
    np.testing.assert_allclose(g, 0.75 * torch.eye(4, dtype=torch.float64) + 0.25, atol=1e-12)


def test_barycenters_match_explicit_softmax_and_pair_closed_form():
    g = torch.Generator().manual_seed(1)
    x = uniform((3, 7), 5, g, torch.float64)
    beta = 1.7
    w = torch.softmax(beta * gram(x), dim=-1)
    torch.testing.assert_close(barycenters(x, beta), w @ x)
    pair = x[:, :2]
    torch.testing.assert_close(ValueNoise(beta=beta).barycenters(pair), barycenters(pair, beta))


def test_norm_preserved_float32_over_1e4_steps():
    x0 = uniform((8, 6), 4, torch.Generator().manual_seed(2))
    res = simulate(ValueNoise(beta=1.0, route="matrix"), x0, 1e-3, 10_000, seed=3)
    assert (torch.linalg.vector_norm(res.x, dim=-1) - 1).abs().max().item() < 1e-6
    x0 = pair_with_overlap(64, 4, 0.0, torch.Generator().manual_seed(2))
    res = simulate(ValueNoise(beta=1.0), x0, 1e-3, 10_000, seed=3)
    assert (torch.linalg.vector_norm(res.x, dim=-1) - 1).abs().max().item() < 1e-6


@pytest.mark.parametrize("route", ["matrix", "kernel"])
def test_permutation_equivariance(route):
    perm = torch.tensor([3, 0, 4, 1, 2])
    m = ValueNoise(beta=2.0, route=route)
    if route == "matrix":  # the same matrix noise acts on every token: exact equivariance, path by path
        x0 = uniform((4, 5), 8, torch.Generator().manual_seed(4), torch.float64)
        a = simulate(m, x0, 1e-2, 50, seed=5).x
        b = simulate(m, x0[:, perm], 1e-2, 50, seed=5).x
        torch.testing.assert_close(b, a[:, perm], atol=1e-10, rtol=0)
        return
    # kernel route: the factor F (F F^T = C) depends on the order of the tokens, so the paths differ, but the
    # law of every step (N(0, C) per coordinate) does not: equivariance in law. From the same 2048 starts, run
    # unpermuted and permuted (the permuted run re-indexed back), compare the increments of the Gram entries
    # G_ij(T) - G_ij(0), i < j, and their squares (20 statistics: the means see a drift, the squares the noise
    # covariance), each by the paired z-test over the systems (the two runs share x0 and the normals); all 20
    # within the two-sided Bonferroni quantile at family-wise level 0.99. (A factor that is not F F^T = C
    # for every order, e.g. R of the QR step instead of R^T, gives |z| ~ 19 here.)
    bsz, n = 2048, 5
    x0 = uniform((bsz, n), 8, torch.Generator().manual_seed(4), torch.float64)
    a = simulate(m, x0, 1e-2, 20, seed=5).x
    b = simulate(m, x0[:, perm], 1e-2, 20, seed=5).x[:, torch.argsort(perm)]
    i, j = torch.triu_indices(n, n, 1)
    g0 = gram(x0)[:, i, j]
    da, db = gram(a)[:, i, j] - g0, gram(b)[:, i, j] - g0
    diff = torch.cat([da - db, da * da - db * db], 1).numpy()
    z = diff.mean(0) / (diff.std(0, ddof=1) / math.sqrt(bsz))
    limit = stats.norm.isf(0.01 / (2 * diff.shape[1]))  # 3.48
    assert np.abs(z).max() <= limit, z


@pytest.mark.parametrize("n,d", [(2, 4), (6, 3), (3, 8)])
def test_chunking_does_not_change_numbers(n, d):
    x0 = uniform((600, n), d, torch.Generator().manual_seed(6))
    m = ValueNoise(beta=torch.linspace(0.0, 3.0, 600))
    full = simulate(m, x0, 1e-2, 40, seed=7).x
    chunked = simulate(m, x0, 1e-2, 40, seed=7, chunk=256).x
    assert torch.equal(full, chunked)


def test_path_cells_and_subsets():
    """A cell of a path of several cells gets the numbers of a path of that key alone; any subset of
    systems and of steps gets the rows of the whole."""
    a = BrownianPath(1, ("c", 1), 600, (2, 3))
    c = BrownianPath(1, (), 0, (2, 3), cells=((("c", 0), 100), (("c", 1), 600)))
    x, z = a.normals(30, 10), c.normals(30, 10)
    assert x.shape == (10, 600, 2, 3) and z.shape == (10, 700, 2, 3)
    assert torch.equal(z[:, 100:], x)
    assert not torch.equal(z[:, :100], x[:, :100])  # another key
    assert torch.equal(a.normals(37, 2, torch.arange(256, 600)), x[7:9, 256:])


@pytest.mark.parametrize("route", ["matrix", "kernel"])
def test_shared_noise_equal_tokens_stay_equal(route):
    x = uniform((16, 1), 5, torch.Generator().manual_seed(8), torch.float64)
    x0 = torch.cat([x, x, uniform((16, 2), 5, torch.Generator().manual_seed(9), torch.float64)], dim=1)
    res = simulate(ValueNoise(beta=1.0, route=route), x0, 1e-2, 300, seed=10)
    assert (res.x[:, 0] - res.x[:, 1]).abs().max().item() < 1e-9


def test_factors_are_exact():
    a = torch.randn(10, 3, 7, dtype=torch.float64)
    f = gram_factor(a)
    torch.testing.assert_close(f @ f.transpose(-1, -2), a @ a.transpose(-1, -2))
    a2 = torch.randn(10, 2, 7, dtype=torch.float64)
    f2 = gram_factor(a2)
    torch.testing.assert_close(f2 @ f2.transpose(-1, -2), a2 @ a2.transpose(-1, -2))
    c = a @ a.transpose(-1, -2)
    k = kernel_factor(c)
    torch.testing.assert_close(k @ k.transpose(-1, -2), c)


@pytest.mark.parametrize("n,d", [(3, 6), (5, 3)])
def test_noise_routes_agree_in_law(n, d):
    """dM from d x d matrices and from the kernel factor: same covariance, same marginals."""
    g = torch.Generator().manual_seed(11)
    x = uniform((1, n), d, g, torch.float64)
    m = ValueNoise(beta=1.5)
    a = m.barycenters(x)
    N = 40_000
    k = n * d
    xs = x.expand(N, n, d)
    ker = ValueNoise(beta=1.5, route="kernel")
    dm_mat = ValueNoise(beta=1.5, route="matrix").noise(xs, torch.randn(N, d, d, generator=g, dtype=torch.float64))
    dm_ker = ker.noise(xs, torch.randn(N, *ker.noise_shape(n, d), generator=g, dtype=torch.float64))
    c = (a @ a.transpose(-1, -2))[0]
    cov_true = torch.kron(c, torch.eye(d, dtype=torch.float64))  # tokens x coordinates
    z = stats.norm.ppf(1 - 0.001 / (2 * k * k * 2))  # Bonferroni over entries and routes
    for dm in (dm_mat, dm_ker):
        flat = dm.reshape(N, k)
        emp = flat.T @ flat / N
        se = torch.sqrt((torch.diagonal(cov_true)[:, None] * torch.diagonal(cov_true)[None, :] + cov_true**2) / N)
        assert ((emp - cov_true).abs() <= z * se + 1e-12).all()
    for j in range(k):  # marginals: two-sample KS between routes, Bonferroni level 1e-3
        p = stats.ks_2samp(dm_mat.reshape(N, k)[:, j].numpy(), dm_ker.reshape(N, k)[:, j].numpy()).pvalue
        assert p > 1e-3 / k


def test_fused_pair_step_matches_generic_euler():
    x = pair_with_overlap(300, 5, 0.2, torch.Generator().manual_seed(12), torch.float64)
    xi = torch.randn(300, 2, 5, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    from tokensde.solvers import EulerMaruyama

    generic = EulerMaruyama().step(ValueNoise(beta=1.3, route="kernel"), x, xi, 1e-2)
    fused = pair_euler_step(x, xi, torch.full((300, 1), 1.3, dtype=torch.float64), 1e-2, 1.0)
    torch.testing.assert_close(fused, generic, atol=1e-12, rtol=0)


@pytest.mark.parametrize("d", [2, 4, 9])
def test_coordinate_major_pair_slab_matches_pair_steps(d):
    """pair_euler_slab (the compiled route's layout) takes the steps of pair_euler_step, also at the boundaries."""
    g = torch.Generator().manual_seed(30 + d)
    x = pair_with_overlap(600, d, 0.3, g, torch.float64)
    x[:100, 1] = x[:100, 0]  # collapsed
    x[100:200, 1] = -x[100:200, 0]  # antipodal
    xi = torch.randn(8, 600, 2, d, generator=g, dtype=torch.float64)
    beta = 4.0 * torch.rand(600, 1, generator=g, dtype=torch.float64)
    steps = x
    for k in range(8):
        steps = pair_euler_step(steps, xi[k], beta, 1e-2, 1.7)
    slab = pair_euler_slab(x.permute(1, 2, 0).contiguous(), xi.permute(0, 2, 3, 1).contiguous(), beta[:, 0], 1e-2, 1.7)
    torch.testing.assert_close(slab.permute(2, 0, 1), steps, atol=1e-13, rtol=0)


def test_stack_converges_to_limit_strongly_on_coupled_noise():
    """Layers with Gaussian Z_k, sqrt(h) Z_k = dW: strong gap to Euler on the same path ~ h^(1/2)."""
    x0 = uniform((256, 4), 3, torch.Generator().manual_seed(14), torch.float64)
    m = ValueNoise(beta=1.0, route="matrix")
    T = 1.0
    hs, errs = [], []
    for L in (25, 50, 100, 200, 400):
        h = T / L
        a = simulate(m, x0, h, L, seed=15, key=("L", L), solver="stack").x
        b = simulate(m, x0, h, L, seed=15, key=("L", L), solver="euler").x
        hs.append(h)
        errs.append(((a - b) ** 2).sum(-1).mean().sqrt().item())
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert 0.35 < slope < 0.75, (slope, errs)


def test_stack_and_limit_agree_weakly():
    """E <x_1, x_2> at T = 1: stack (h = 1/200) vs Euler on the limit, independent noise, 6-sigma interval."""
    x0 = pair_with_overlap(4096, 4, 0.3, torch.Generator().manual_seed(16), torch.float64)
    m = ValueNoise(beta=1.0, route="matrix")
    a = simulate(m, x0, 1 / 200, 200, seed=17, key=("stack",), solver="stack").x
    b = simulate(m, x0, 1 / 200, 200, seed=18, key=("euler",), solver="euler").x
    ra, rb = (a[:, 0] * a[:, 1]).sum(-1), (b[:, 0] * b[:, 1]).sum(-1)
    se = math.sqrt(ra.var().item() / len(ra) + rb.var().item() / len(rb))
    assert abs(ra.mean().item() - rb.mean().item()) < 6 * se


def test_entry_laws_have_unit_variance():
    from tokensde.noise import entry_law

    xi = torch.randn(200_000, generator=torch.Generator().manual_seed(19), dtype=torch.float64)
    for law in ("gaussian", "rademacher", "uniform"):
        z = entry_law(xi, law)
        assert abs(z.mean().item()) < 5 / math.sqrt(len(z))
        assert abs(z.var().item() - 1) < 0.02


@pytest.mark.slow
def test_compiled_slab_path_matches_eager():
    """The torch.compile-d slab (the fused step's fast route off the CPU; 16 steps per compiled call) follows
    the eager steps up to float32 rounding."""
    from tokensde.models.value_noise import FusedPairStep

    x0 = pair_with_overlap(512, 4, 0.0, torch.Generator().manual_seed(20))
    beta = torch.linspace(0.0, 3.0, 512).view(-1, 1)
    xi = torch.randn(16, 512, 2, 4, generator=torch.Generator().manual_seed(21))
    eager = x0
    for k in range(16):
        eager = pair_euler_step(eager, xi[k], beta, 1e-2, 1.0)
    compiled = FusedPairStep(beta, 1.0, 4, compile=True).slab(x0, xi, 1e-2)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=0)
