"""The engine (tokensde.engine): one loop, Brownian path views, hooks, and the model contract for every model."""

from __future__ import annotations

import math
import pathlib
import re

import pytest
import torch

from tokensde.engine import BrownianPath, Hooks, Run, integrate, integrate_runs
from tokensde.models import KernelModel, MLPNoise, Model, MultiheadLimit, ValueNoise
from tokensde.models.multihead import Multihead
from tokensde.solvers import simulate, simulate_coupled
from tokensde.sphere import pair_with_overlap, uniform

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "tokensde"


def _x0(bsz: int = 300, n: int = 5, d: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return uniform((bsz, n), d, torch.Generator().manual_seed(seed), dtype)


def test_one_stepping_loop_in_the_package():
    """Only the engine draws the path's normals: no other module owns a stepping loop (the generator and the
    kernels define the normals; model A's joint step is a capability the engine calls)."""
    offenders = []
    allowed = {"engine.py", "rng.py", "kernels.py", "value_noise.py"}
    for f in SRC.rglob("*.py"):
        if f.name in allowed:
            continue
        text = f.read_text()
        patterns = (
            r"\.normals\(",
            r"\bnormals_into\(",
            r"\bpair_levels\(",
            r"\bcounter_normals\(",
            r"\bsimulate_levels\(.*\n.*for ",
        )
        for pattern in patterns:
            if re.search(pattern, text):
                offenders.append(f"{f.relative_to(SRC)}: {pattern}")
    assert not offenders, offenders


def test_a_path_gives_the_same_normals_to_every_integration():
    x0 = _x0()
    model = ValueNoise(beta=1.0)
    path = BrownianPath.for_model(model, x0, seed=3, key=("same",))
    a = integrate(model, x0, path, 0.01, 40).x
    b = integrate(model, x0, path, 0.01, 40).x
    c = integrate(model, x0, BrownianPath.for_model(model, x0, seed=3, key=("other",)), 0.01, 40).x
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_coarse_view_is_the_coupled_coarse_run():
    """``integrate`` on ``path.coarsen(2)`` is ``simulate_coupled``'s coarse run, bitwise, and close to the fine run."""
    x0 = _x0()
    model = ValueNoise(beta=1.5)
    fine, coarse = simulate_coupled(model, x0, 0.005, 64, seed=4, key=("c",))
    path = BrownianPath.for_model(model, x0, seed=4, key=("c",))
    view = integrate(model, x0, path.coarsen(2), 0.005, 64).x
    assert torch.equal(view, coarse.x)
    assert torch.equal(integrate(model, x0, path, 0.005, 64).x, fine.x)
    # strong coupling: the coarse run is far closer to its fine partner than to an independent run
    indep = simulate(model, x0, 0.005, 64, seed=5, key=("c",)).x
    near = (view - fine.x).norm(dim=-1).mean()
    far = (indep - fine.x).norm(dim=-1).mean()
    assert near < 0.25 * far, (near, far)


def test_coarse_increment_is_the_normalised_sum():
    """A coarse step takes ``(xi_1 + ... + xi_r)/sqrt(r)``: a custom step records what it receives."""
    path = BrownianPath(seed=1, key=("sum",), systems=3, shape=(2,), dtype=torch.float64)
    got: dict[int, list[torch.Tensor]] = {1: [], 4: []}

    def recorder(r: int):
        def step(x, xi, h):
            got[r].append(xi.clone())
            return x

        return step

    x0 = torch.zeros(3, 1, 2, dtype=torch.float64)
    integrate_runs(
        [Run(step=recorder(1), ratio=1, name="1"), Run(step=recorder(4), ratio=4, name="4")], x0, path, 0.1, 40
    )
    fine = torch.stack(got[1])
    assert len(got[4]) == 10
    for j, xi in enumerate(got[4]):
        torch.testing.assert_close(xi, fine[4 * j : 4 * j + 4].sum(0) / 2.0, rtol=0, atol=1e-15)


@pytest.mark.parametrize("model_kind", ["pairs", "tokens"])
def test_slab_route_and_step_route_give_the_same_numbers(model_kind):
    """A hook that reads every step forces the step-by-step route; the numbers are those of the slab route."""
    if model_kind == "pairs":
        x0 = pair_with_overlap(512, 5, 0.2, torch.Generator().manual_seed(6))
        model = ValueNoise(beta=torch.linspace(0.0, 3.0, 512))
    else:
        x0 = _x0(64, 6, 4, dtype=torch.float32)
        model = ValueNoise(beta=1.0, vbar=torch.eye(4))
    path = BrownianPath.for_model(model, x0, seed=7)
    runs = [Run(model, "euler", 1, "a"), Run(model, "euler", 2, "b"), Run(model, "euler", 4, "c")]
    fast = integrate_runs(runs, x0, path, 0.01, 48)
    seen = []
    slow = integrate_runs(runs, x0, path, 0.01, 48, hooks=Hooks(observe=lambda k, s: seen.append(k)))
    assert seen == list(range(48))
    for name in "abc":
        assert torch.equal(fast[name].x, slow[name].x), name


def test_retired_systems_keep_their_state_and_do_not_change_the_others():
    x0 = _x0(600, 4, 5)
    model = ValueNoise(beta=1.0)
    path = BrownianPath.for_model(model, x0, seed=8)
    full = integrate(model, x0, path, 0.01, 64).x
    at = {}

    def retire(k, states, alive):
        if k == 32:
            at["x"] = states["x"][:256].clone()
            return {"x": alive["x"][alive["x"] >= 256]}
        return alive

    part = integrate(model, x0, path, 0.01, 64, hooks=Hooks(retire=retire)).x
    assert torch.equal(part[256:], full[256:])
    assert torch.equal(part[:256], at["x"]) and not torch.equal(part[:256], full[:256])


def test_observe_may_modify_the_state():
    """Renormalisation hooks change the state the next steps start from."""
    x0 = _x0(8, 3, 4)
    model = ValueNoise(beta=1.0)
    path = BrownianPath.for_model(model, x0, seed=9)

    def reset(k, states):
        states["x"].copy_(x0)

    out = integrate(model, x0, path, 0.01, 16, hooks=Hooks(observe=reset, observe_at=lambda k: k == 14))
    one = integrate(model, x0, path.fine(), 0.01, 1).x  # one step from x0 with the path's first normals
    assert not torch.equal(out.x, x0) and not torch.equal(out.x, one)  # one more step after the reset


def test_saved_states_and_times():
    x0 = _x0(4, 3, 4)
    sol = integrate(ValueNoise(), x0, BrownianPath.for_model(ValueNoise(), x0, seed=1), 0.1, 20, save_every=4)
    assert sol.t == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6, 2.0]) and sol.xs is not None
    assert sol.xs.shape == (6, 4, 3, 4) and torch.equal(sol.xs[0], x0) and torch.equal(sol.xs[-1], sol.x)


def test_contract_is_checked_once_at_entry():
    x0 = _x0(4, 3, 4)
    model = ValueNoise(route="matrix")
    with pytest.raises(ValueError, match="the path draws"):
        integrate(model, x0, BrownianPath(0, (), 4, (3, 4), x0.dtype), 0.1, 2)
    with pytest.raises(ValueError, match="x0 must be"):
        integrate(model, x0[0], BrownianPath(0, (), 4, (4, 4), x0.dtype), 0.1, 2)

    class NoShape(Model):
        def noise_shape(self, n, d, discrete=False):
            return (n, d)

        def kernel(self, x):
            return torch.ones(x.shape[0], x.shape[1] + 1)  # wrong: (B, n+1) instead of (B, n, n)

        def noise(self, x, xi):
            return xi

    with pytest.raises(ValueError, match="kernel diagonal has shape"):
        integrate(NoShape(), x0, BrownianPath(0, (), 4, (3, 4), x0.dtype), 0.1, 2)
    with pytest.raises(ValueError, match="steps and save_every must be multiples"):
        integrate(model, x0, BrownianPath.for_model(model, x0, 0).coarsen(4), 0.1, 6)


def _contract_models() -> dict[str, tuple[Model, int, int]]:
    relu_kappa = KernelModel(kernel=lambda u: 0.5 + 0.25 * u + 0.25 * u * u, pairwise=True)
    return {
        "A matrix": (ValueNoise(beta=1.3, route="matrix", vbar=0.5 * torch.eye(4, dtype=torch.float64)), 5, 4),
        "A kernel": (ValueNoise(beta=0.7, sigma=1.4, route="kernel"), 3, 6),
        "A usa": (ValueNoise(beta=0.5, attention="usa", route="kernel"), 3, 5),
        "B shared": (MultiheadLimit(Multihead(beta=1.0, heads=2, sigma_a=0.0), eta=0.1, samples=1), 4, 4),
        "C exact": (MLPNoise(activation="tanh", sigma_u=0.2, c=1.0), 4, 5),
        "user kernel": (relu_kappa, 4, 3),
    }


@pytest.mark.parametrize("name", list(_contract_models()))
def test_declared_kernel_is_the_covariance_of_the_noise(name):
    """For every model: at a random state, ``E[m_i m_j^T] = C_ij I`` for the noise the model produces.

    ``N`` draws of the step's normals at one fixed state; ``<m_i, m_j>/d`` estimates ``C_ij`` with standard
    error ``sqrt((C_ii C_jj + C_ij^2) / (N d))`` (Gaussian fourth moments); every entry within 4.5 se
    (Bonferroni over the entries at family-wise 1e-3), and ``C_ii`` from ``coefficients`` equals ``diag kernel``.
    """
    model, n, d = _contract_models()[name]
    N = 40_000
    x = _x0(1, n, d, seed=11).expand(N, n, d).contiguous()
    g = torch.Generator().manual_seed(12)
    xi = torch.randn((N, *model.noise_shape(n, d)), generator=g, dtype=torch.float64)
    _, cdiag, m = model.coefficients(x, xi)
    c = model.kernel(x[:1])[0]
    torch.testing.assert_close(cdiag[0], torch.diagonal(c), rtol=1e-10, atol=1e-12)
    emp = torch.einsum("bid,bjd->ij", m, m) / (N * d)
    se = ((torch.outer(torch.diagonal(c), torch.diagonal(c)) + c * c) / (N * d)).sqrt()
    z = ((emp - c) / se).abs().max().item()
    assert z < 4.5, (name, z, emp, c)
    # the coordinates are uncorrelated: E[m_i^k m_i^l] = 0 for k != l
    cross = torch.einsum("bk,bl->kl", m[:, 0], m[:, 0]) / N
    off = cross - torch.diag(torch.diagonal(cross))
    assert off.abs().max().item() < 4.5 * float(c[0, 0]) / math.sqrt(N) * 1.5


def test_an_injected_noise_scale_is_seen_by_the_contract_check():
    """The covariance check has power: a noise 5% too large fails it at the same sample size."""
    model, n, d = _contract_models()["A kernel"]
    N = 40_000
    x = _x0(1, n, d, seed=11).expand(N, n, d).contiguous()
    xi = torch.randn((N, *model.noise_shape(n, d)), generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    m = 1.05 * model.coefficients(x, xi)[2]
    c = model.kernel(x[:1])[0]
    emp = torch.einsum("bid,bjd->ij", m, m) / (N * d)
    se = ((torch.outer(torch.diagonal(c), torch.diagonal(c)) + c * c) / (N * d)).sqrt()
    assert ((emp - c) / se).abs().max().item() > 4.5


def test_path_less_run_integrates_the_drift_only():
    """``path=None``: the Euler step with no noise drawn; with ``Vbar = I`` the tokens follow the attention flow."""
    x0 = _x0(16, 6, 4)
    model = ValueNoise(beta=1.0, sigma=0.0, vbar=torch.eye(4, dtype=torch.float64))
    x = integrate(model, x0, None, 0.05, 400).x
    spread = (1 - (x @ x.transpose(-1, -2))).amax((-1, -2))
    assert float(spread.max()) < 1e-3  # the noiseless attention flow at beta = 1 clusters
