"""Model C in torch: the kernel on the device, the MLP field, the noise routes, the stack against the limit."""

import math

import numpy as np
import pytest
import torch

from tokensde.activations import make_activation
from tokensde.engine import BrownianPath
from tokensde.models.mlp_noise import MLPNoise, torch_kernel
from tokensde.solvers import simulate
from tokensde.sphere import gram, pair_with_overlap, uniform
from tokensde.stats import bonferroni_z
from tokensde.theory import synchronization as S


@pytest.mark.parametrize("act", ["relu", "tanh", "silu", "sigmoid", "gelu"])
@pytest.mark.parametrize("d,sb", [(2, 0.0), (5, 0.1), (64, 0.3)])
def test_torch_kappa_equals_numpy_theory(act, d, sb):
    k = S.kernel(act, d, sb, 0.5 * sb)
    tk = torch_kernel(k, "cpu")
    u = np.concatenate([np.linspace(-1.0, 1.0, 401), 1.0 - np.geomspace(1e-12, 1e-2, 30)])
    ref = k.kappa(u)
    ut = torch.tensor(u, dtype=torch.float64)
    np.testing.assert_allclose(tk.kappa_quadrature(ut).numpy(), ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(tk.kappa_prime_quadrature(ut).numpy(), k.kappa_prime(u), rtol=0, atol=1e-14)
    # the per-step kernel (table + cubic Hermite; relu: closed form in u)
    np.testing.assert_allclose(tk.kappa(ut).numpy(), ref, rtol=0, atol=5e-14)
    delta = np.geomspace(1e-14, 2.0, 60)
    np.testing.assert_allclose(tk.gap(torch.tensor(delta)).numpy(), k.gap(delta), rtol=1e-8, atol=0)
    # float32 follows the input dtype
    got32 = tk.kappa(ut.float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.double().numpy(), ref, atol=2e-6 * max(1.0, k.kappa_1))


def test_torch_kernel_of_a_user_callable():
    act = make_activation(lambda x: torch.tanh(x) + 0.1 * x, name="tanh+lin")
    k = S.kernel(act, 6, 0.1, 0.0)
    tk = torch_kernel(k, "cpu")
    u = torch.linspace(-1.0, 1.0, 51, dtype=torch.float64)
    np.testing.assert_allclose(tk.kappa(u).numpy(), k.kappa(u.numpy()), atol=5e-14)
    m = MLPNoise(activation=act, sigma_u=0.1)
    x = uniform((4, 3), 6, torch.Generator().manual_seed(0), torch.float64)
    np.testing.assert_allclose(m.kernel(x).numpy(), k.kappa(gram(x).numpy()), atol=5e-14)


@pytest.mark.parametrize(
    "act,d,su,sw,width", [("tanh", 5, 0.3, 0.2, 3), ("relu", 4, 0.0, 0.0, 1), ("silu", 3, 0.2, 0.0, 64)]
)
def test_field_covariance_is_kappa(act, d, su, sw, width):
    """``E[G(y) G(y')^T] = kappa(<y, y'>) I`` for any number of features (per-system averages, their CLT)."""
    m = MLPNoise(activation=act, sigma_u=su, sigma_w=sw, features=width)
    bsz = 40_000
    g = torch.Generator().manual_seed(11)
    xi = torch.randn(bsz, m.noise_size(d, width), generator=g, dtype=torch.float64)
    y = torch.zeros(1, 3, d, dtype=torch.float64)
    u = 0.3
    y[0, 0, 0] = 1.0
    y[0, 1, 0], y[0, 1, 1] = u, math.sqrt(1 - u * u)
    y[0, 2, 0] = -1.0
    out = m.field(xi, y.expand(bsz, 3, d))
    k = S.kernel(act, d, su, sw)
    stats = {
        "C(y, y')": ((out[:, 0] * out[:, 1]).mean(-1), float(k.kappa(u))),
        "C(y, y)": ((out[:, 0] ** 2).mean(-1), k.kappa_1),
        "C(y, -y)": ((out[:, 0] * out[:, 2]).mean(-1), float(k.kappa(-1.0))),
        "cross coordinates": ((out[:, 0, 0] * out[:, 1, 1]), 0.0),
        "mean": (out[:, 1].mean(-1), 0.0),
    }
    z = bonferroni_z(0.999, len(stats))
    for name, (sample, target) in stats.items():
        se = sample.std().item() / math.sqrt(bsz)  # 0 for relu's C(y, -y) without biases: exactly 0
        assert abs(sample.mean().item() - target) <= z * se + 1e-15, (name, sample.mean().item(), target, se)


def test_field_at_any_points_from_one_noise():
    m = MLPNoise(activation="gelu", sigma_u=0.1, sigma_w=0.1, features=32)
    d = 6
    xi = torch.randn(8, m.noise_size(d, 32), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    big = uniform((8, 500), d, torch.Generator().manual_seed(2), torch.float64)
    small = big[:, 100:110]
    torch.testing.assert_close(m.field(xi, small), m.field(xi, big)[:, 100:110], rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError, match="normals"):
        m.field(xi[:, :-1], small)


@pytest.mark.parametrize("n", [2, 3, 7])
def test_exact_route_factor_reproduces_the_kernel(n):
    m = MLPNoise(activation="tanh", sigma_u=0.1, sigma_w=0.05)
    d = 5
    x = uniform((6, n), d, torch.Generator().manual_seed(3), torch.float64)
    if n == 2:  # include a nearly collapsed pair
        x[0, 1] = torch.nn.functional.normalize(x[0, 0] + 1e-7 * torch.randn(d, dtype=torch.float64), dim=-1)
    cols = []
    for j in range(n):
        xi = torch.zeros(6, n, d, dtype=torch.float64)
        xi[:, j, 0] = 1.0
        cols.append(m.exact_noise(x, xi)[..., 0])
    f = torch.stack(cols, -1)  # F[:, i, j]
    c = m.kernel(x)
    torch.testing.assert_close(f @ f.transpose(-1, -2), c, rtol=0, atol=1e-14)
    k = S.kernel("tanh", d, 0.1, 0.05)
    np.testing.assert_allclose(c.numpy(), k.kappa(gram(x).numpy()), atol=1e-13)
    if n == 2:  # the relative noise of the close pair: var(dM_1 - dM_2) = 2 gap(delta)
        diff = f[0, 0] - f[0, 1]
        delta = 0.5 * ((x[0, 0] - x[0, 1]) ** 2).sum().item()
        assert (diff**2).sum().item() == pytest.approx(2 * float(k.gap(delta)), rel=1e-6)


@pytest.mark.parametrize("route", ["exact", "features"])
def test_simulate_limit_and_stack_keep_norms_and_chunking(route):
    m = MLPNoise(activation="silu", c=1.0, beta=2.0, sigma_u=0.1, sigma_w=0.1, route=route, features=16, width=16)
    x0 = uniform((600, 4), 5, torch.Generator().manual_seed(4))
    for solver in ("euler", "stack"):
        full = simulate(m, x0, 1e-2, 40, seed=7, solver=solver).x
        chunked = simulate(m, x0, 1e-2, 40, seed=7, solver=solver, chunk=256).x
        assert torch.equal(full, chunked)
        assert (torch.linalg.vector_norm(full, dim=-1) - 1).abs().max().item() < 1e-6
        assert full.dtype == torch.float32


@pytest.mark.parametrize("route", ["exact", "features"])
def test_equal_tokens_stay_equal_under_common_noise(route):
    x = uniform((16, 1), 4, torch.Generator().manual_seed(8), torch.float64)
    x0 = torch.cat([x, x, -x], 1)
    m = MLPNoise(activation="tanh", route=route, features=8)
    out = simulate(m, x0, 1e-2, 200, seed=9).x
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-7, rtol=0)
    # tanh without biases is an odd field: the antipode follows the antipode
    torch.testing.assert_close(out[:, 2], -out[:, 0], atol=1e-7, rtol=0)


def test_stack_coupled_to_features_route_pathwise():
    """The stack (width m) and the features-route Euler scheme (M = m) on the same normals differ by O(h)."""
    x0 = pair_with_overlap(256, 4, 0.0, torch.Generator().manual_seed(5), torch.float64)
    gaps = []
    for h in (0.02, 0.01, 0.005):
        m = MLPNoise(activation="relu", c=1.0, beta=1.0, width=32, features=32, route="features", sigma_w=0.1)
        steps = round(1.0 / h)
        a = simulate(m, x0, h, steps, seed=3, solver="stack").x
        b = simulate(m, x0, h, steps, seed=3, solver="euler").x
        gaps.append(torch.linalg.vector_norm(a - b, dim=-1).mean().item())
    assert gaps[0] > gaps[1] > gaps[2]
    slope = math.log(gaps[0] / gaps[2]) / math.log(4.0)
    assert 0.5 < slope < 1.5  # pathwise O(h) between two discretisations of one noise


def test_discrete_stack_matches_the_limit_in_law():
    """E[<x_1, x_2>(T)]: stack (m = 64, h = 0.02) against the exact-route limit (dt = 0.01), independent noises."""
    d, bsz = 4, 1024
    x0 = pair_with_overlap(bsz, d, 0.0, torch.Generator().manual_seed(6), torch.float64)
    m = MLPNoise(activation="relu", c=1.0, beta=1.0, width=64, sigma_u=0.1, sigma_w=0.1)
    stack = simulate(m, x0, 0.02, 100, seed=21, solver="stack").x
    limit = simulate(m, x0, 0.01, 200, seed=22, solver="euler").x
    rs = (stack[:, 0] * stack[:, 1]).sum(-1)
    rl = (limit[:, 0] * limit[:, 1]).sum(-1)
    se = math.sqrt(rs.var().item() / bsz + rl.var().item() / bsz)
    z = 3.29  # two-sided 0.999
    assert abs(rs.mean().item() - rl.mean().item()) <= z * se, (rs.mean().item(), rl.mean().item(), se)
    # without attention the pair moves much less, so the comparison above does test the attention step
    few = 256
    off = MLPNoise(activation="relu", width=64, sigma_u=0.1, sigma_w=0.1)
    ro = simulate(off, x0[:few], 0.02, 100, seed=21, solver="stack").x
    ro = (ro[:, 0] * ro[:, 1]).sum(-1)
    se_off = math.sqrt(ro.var().item() / few + rs.var().item() / bsz)
    assert ro.mean().item() < rs.mean().item() - z * se_off


def test_noise_stream_gives_flat_normals_per_system():
    m = MLPNoise(width=10, features=7)
    assert m.noise_shape(5, 3, discrete=True) == (10 * 7 + 3,)
    assert MLPNoise(route="features", features=7).noise_shape(5, 3) == (7 * 7 + 3,)
    assert m.noise_shape(5, 3) == (5, 3)
    path = BrownianPath(0, ("x",), 300, m.noise_shape(5, 3, discrete=True))
    assert path.normals(0, 1)[0].shape == (300, 73)
    with pytest.raises(ValueError, match="route"):
        MLPNoise(route="matrix")
