"""User-defined models (tokensde.models.KernelModel, load_model, ``theory two-point --model MODULE:FACTORY``).

(a) model C's ReLU kernel written as a user callable gives model C's two-point motion and kernel matrices;
(b) model A's two-token kernel written as a whole-state function gives model A's exit law (with and without
its attention drift); (c) Monte Carlo with tokensde.solvers for a kernel of no paper against the generic exit
law; (d) the command line; (e) the checks.
"""

import json
import math
import pickle
import sys
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tokensde.cli import app
from tokensde.errors import UsageError
from tokensde.experiments.noise_sweep import pair_motion
from tokensde.models import KernelModel, MLPNoise, load_model
from tokensde.models.kernel import canonical_pair
from tokensde.solvers import simulate, simulate_coupled
from tokensde.sphere import pair_with_overlap, uniform
from tokensde.stats import wilson
from tokensde.theory import synchronization as S
from tokensde.theory import value_noise as A

F64 = torch.float64


# ----------------------------------------------------------------- user kernels (module level: picklable)
def relu_kernel(d: int, sigma_u: float = 0.0, sigma_w: float = 0.0):
    """Model C's ReLU kernel (arc-cosine, Cho & Saul) and its derivative, written as a user would."""
    v = 1.0 / d + sigma_u**2

    def r_of(u):
        return ((u / d + sigma_u**2) / v).clamp(-1.0, 1.0)

    def kappa(u):
        r = r_of(u)
        return v / (2 * math.pi) * ((1 - r * r).clamp_min(0).sqrt() + (math.pi - torch.acos(r)) * r) + sigma_w**2

    def kappa_prime(u):
        return (math.pi - torch.acos(r_of(u))) / (2 * math.pi * d)

    return kappa, kappa_prime


def attention(c: float, beta: float):
    """``b_i = c m_beta(x_i; X)``, softmax attention with ``Q^T K = beta I``, ``V = c I``."""

    def drift(x):
        return c * torch.softmax(beta * x @ x.transpose(-1, -2), -1) @ x

    return drift


def value_kernel(beta: float, sigma: float = 1.0):
    """Model A's kernel as a function of the whole state: ``C(X) = sigma^2 a a^T``, ``a`` the barycenters."""

    def kernel(x):
        a = torch.softmax(beta * x @ x.transpose(-1, -2), -1) @ x
        return sigma**2 * a @ a.transpose(-1, -2)

    return kernel


def cubic(u):
    """An odd kernel of no paper: ``kappa(u) = (u + u^3)/2`` (PSD on every sphere: nonnegative power series)."""
    return 0.5 * (u + u**3)


def smooth(u):
    return torch.exp(u - 1.0)


# ----------------------------------------------------------------- (a) model C
@pytest.mark.parametrize("beta,c", [(0.0, 0.0), (1.5, 1.0)])
def test_relu_user_kernel_gives_model_c_two_point(beta, c):
    d, su, sw = 5, 0.3, 0.2
    kappa, kappa_prime = relu_kernel(d, su, sw)
    model = KernelModel(kappa, attention(c, beta) if c else None, pairwise=True, kappa_prime=kappa_prime)
    mine, ref = model.two_point(d), S.two_point_motion(d, "relu", su, sw, beta=beta, c=c)
    # c = 0: exact derivative; c = 1: b_att' by finite differences (~1e-12)
    assert mine.exponent_collapse == pytest.approx(ref.exponent_collapse, abs=1e-10)
    assert mine.exponent_collapse == pytest.approx(S.lambda_1("relu", d, su, sw) - c, abs=1e-10)
    assert mine.alpha_plus == pytest.approx(ref.alpha_plus, abs=1e-9)
    # ReLU's kernel never makes the antipode absorbing: undefined exponent, exit law 0, in both
    assert math.isnan(mine.exponent_antipodal) and math.isnan(ref.exponent_antipodal)
    assert mine.p_antipodal(0.3) == ref.p_antipodal(0.3) == 0.0
    rho = np.linspace(-1.0, 1.0, 41)
    np.testing.assert_allclose(mine.drift(rho), ref.drift(rho), rtol=0, atol=1e-13)
    np.testing.assert_allclose(mine.diffusion2(rho), ref.diffusion2(rho), rtol=0, atol=1e-13)


def test_relu_user_kernel_matrices_are_model_c():
    d, su, sw = 6, 0.3, 0.2
    kappa, _ = relu_kernel(d, su, sw)
    model = KernelModel(kappa, pairwise=True)
    x = uniform((4, 7), d, torch.Generator().manual_seed(0), F64)
    ref = MLPNoise(sigma_u=su, sigma_w=sw)
    want = ref.kernel_matrix(x) if hasattr(ref, "kernel_matrix") else ref.kernel(x)
    torch.testing.assert_close(model.kernel(x), want, rtol=0, atol=1e-14)
    b, cdiag, m = model.coefficients(x, torch.randn(4, 7, d, dtype=F64))
    assert b is None and m is not None and m.shape == x.shape
    torch.testing.assert_close(cdiag, torch.full((4, 7), S.kappa_1("relu", d, su, sw), dtype=F64), rtol=0, atol=1e-15)


def test_relu_without_derivative_warns():
    """Autograd of the arc-cosine kernel at u = 1 is not finite: finite differences, with a warning."""
    kappa, _ = relu_kernel(5)
    with pytest.warns(RuntimeWarning, match="kappa_prime"):
        motion = KernelModel(kappa, pairwise=True).two_point(5)
    assert motion.exponent_collapse == pytest.approx(S.lambda_1("relu", 5), abs=1e-2)


def test_smooth_kernel_derivative_by_autograd():
    """kappa = exp(u - 1): c_0 = 1, c_1 = e^{rho - 1}; lambda_1 = (d-3)/2 kappa'(1) - (d-1)/2 kappa(1) = -1."""
    motion = KernelModel(smooth, pairwise=True).two_point(4)
    assert motion.exponent_collapse == pytest.approx(-1.0, abs=1e-14)
    assert math.isnan(motion.exponent_antipodal) and motion.p_antipodal(-0.9) == 0.0


# ----------------------------------------------------------------- (b) model A
@pytest.mark.parametrize("d,beta,rho0", [(6, 1.2, 0.3), (10, 2.0, -0.2), (3, 0.5, 0.0)])
def test_value_noise_kernel_as_whole_state_function(d, beta, rho0):
    sigma = 0.7
    plain = KernelModel(value_kernel(beta, sigma), pairwise=False)
    motion = plain.two_point(d)
    assert plain.p_antipodal(d, rho0) == pytest.approx(A.p_antipodal(d, beta, rho0), rel=1e-10, abs=1e-13)
    assert motion.exponent_collapse == pytest.approx(A.exponent_collapse(d, sigma), abs=1e-9)
    assert motion.exponent_antipodal == pytest.approx(A.exponent_antipodal(d, beta, sigma), abs=1e-9)
    # with its attention drift (Vbar = I, sigma = 1): experiments.noise_sweep.pair_motion
    driven = KernelModel(value_kernel(beta), attention(1.0, beta), pairwise=False).two_point(d)
    ref = pair_motion(d, beta, 1.0)
    assert driven.p_antipodal(rho0) == pytest.approx(ref.p_antipodal(rho0), rel=1e-10, abs=1e-13)
    assert driven.exponent_antipodal == pytest.approx(ref.exponent_antipodal, abs=1e-9)
    assert driven.exponent_collapse == pytest.approx(ref.exponent_collapse, abs=1e-9)


# ----------------------------------------------------------------- (c) Monte Carlo
MC = (4000, 0.01, 20.0)  # pairs, dt, horizon


def test_monte_carlo_exit_law_of_a_user_kernel():
    r"""Pairs under kappa(u) = (u + u^3)/2 with softmax attention (c = 1/2, beta = 1) in d = 3, from rho0 = 0.

    Theory: P(antipodal) = 0.33611 (also by plain scipy quadrature of the scale density), exponents
    -1.5 (collapse) and -0.881 (antipode), antipodal relaxation time tau_a = D_- / (2 lambda_a^2) = 1.93;
    the horizon is ~10 tau_a (the fraction E[1{rho_T < -0.99}] then equals E[p_antipodal(rho_T)] to 4e-4).
    Euler at dt and (coupled, same Brownian path) at 2 dt: the difference of the antipodal fractions
    measures the O(dt) bias at dt; it must lie, with two of its standard errors, inside the half-width
    of the 99% Wilson interval of the fine fraction. Measured (seed 0, one thread, ~10-15 s): 0.3235 in
    [0.3048, 0.3436], bias +0.0055 +- 0.0042, 3 undecided. Coupled differences P(dt) - P(2dt) at 16000
    pairs: +0.0243 (dt = 0.04), +0.0046 (0.02), +0.0028 (0.01), +0.0004 (0.005), each +- 0.002-0.003.
    """
    n_pairs, dt, horizon = MC
    d, rho0 = 3, 0.0
    model = KernelModel(cubic, attention(0.5, 1.0), pairwise=True)
    p = model.p_antipodal(d, rho0)
    assert p == pytest.approx(0.33611, abs=1e-5)  # neither ~0 nor ~1
    x0 = pair_with_overlap(n_pairs, d, rho0, torch.Generator().manual_seed(0), F64)
    steps = 2 * round(horizon / dt / 2)
    fine, coarse = simulate_coupled(model, x0, dt, steps, seed=0, key=("kernel-mc",))

    def classify(x):  # the phase diagram's thresholds: antipodal below -1 + eps, collapsed above 1 - eps
        rho = (x[:, 0] * x[:, 1]).sum(-1)
        return (rho < -1 + 1e-2).double(), (rho > 1 - 1e-2).double()

    anti, coll = classify(fine.x)
    anti2, _ = classify(coarse.x)
    k, undecided = int(anti.sum()), int(n_pairs - anti.sum() - coll.sum())
    assert undecided <= 0.01 * n_pairs
    # undecided pairs may end either way: the interval runs from the low end with k to the high end with k + undecided
    z = 2.576
    lo, _ = wilson(k, n_pairs, z)
    _, hi = wilson(k + undecided, n_pairs, z)
    assert lo <= p <= hi, (k / n_pairs, float(lo), float(hi), p)
    diff = anti - anti2
    bias, bias_se = float(diff.mean()), float(diff.std()) / math.sqrt(n_pairs)
    half = z * math.sqrt(p * (1 - p) / n_pairs)
    assert abs(bias) + 2 * bias_se < half, (bias, bias_se, half)


def test_simulate_integrates_a_kernel_model_as_is():
    """simulate() takes a KernelModel unchanged; the fine run of simulate_coupled is simulate's; tokens stay unit."""
    model = KernelModel(cubic, attention(1.0, 2.0), pairwise=True)
    x0 = uniform((300, 5), 4, torch.Generator().manual_seed(1), F64)
    x = simulate(model, x0, 0.01, 20, seed=3).x
    fine, _ = simulate_coupled(model, x0, 0.01, 20, seed=3)
    torch.testing.assert_close(x, fine.x, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.vector_norm(x, dim=-1), torch.ones(300, 5, dtype=F64))
    assert not torch.equal(x, x0)


def test_factor_falls_back_per_system():
    """Coinciding tokens make C singular: those systems take the eigendecomposition, the others Cholesky."""
    model = KernelModel(smooth, pairwise=True)
    x = uniform((6, 3), 3, torch.Generator().manual_seed(2), F64)
    x[1, 1] = x[1, 0]
    x[4] = x[4, :1].expand(3, 3)
    c = model.kernel(x)
    f = model.factor(c)
    torch.testing.assert_close(f @ f.transpose(-1, -2), c, rtol=0, atol=1e-13)
    assert torch.allclose(f[0], torch.linalg.cholesky(c[0]))  # a regular system: the Cholesky factor


# ----------------------------------------------------------------- loading and the command line
USER_MODULE = """
import torch
from tokensde.models import KernelModel

def cubic(u):
    return 0.5 * (u + u**3)

def attention(x, c=0.5, beta=1.0):
    return c * torch.softmax(beta * x @ x.transpose(-1, -2), -1) @ x

def factory(c=0.5):
    return KernelModel(cubic, lambda x: attention(x, c), pairwise=True, name="cubic")

def smooth():
    return KernelModel(lambda u: torch.exp(u - 1.0), pairwise=True)

def broken():
    raise RuntimeError("no weights here")

def not_a_model():
    return 42

def anisotropic():
    return KernelModel(lambda x: x @ x.transpose(-1, -2) + x[..., 2:3] @ x[..., 2:3].transpose(-1, -2), pairwise=False)

INSTANCE = KernelModel(cubic, pairwise=True)
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "tokensde_test_user_models"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_load_model(user_module):
    m = load_model(f"{user_module}:factory", c=0.25)
    assert isinstance(m, KernelModel) and m.name == "cubic"
    assert load_model(f"{user_module}:INSTANCE") is sys.modules[user_module].INSTANCE
    assert load_model(m) is m  # an object is taken as it is
    assert isinstance(load_model(sys.modules[user_module].smooth), KernelModel)  # a factory object is called
    bad = {
        "no-colon": "expected MODULE:FACTORY",
        f"{user_module}:": "expected MODULE:FACTORY",
        "tokensde_no_such_module_xyz:f": "cannot import",
        f"{user_module}:missing": "no attribute 'missing'",
        f"{user_module}:broken": "RuntimeError: no weights here",
        f"{user_module}:not_a_model": "not a model",
    }
    for spec, msg in bad.items():
        with pytest.raises(UsageError, match=msg) as e:
            load_model(spec)
        assert str(e.value).startswith("model: ") and spec in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="takes no arguments"):
        load_model(f"{user_module}:INSTANCE", c=1.0)


def test_cli_user_model_matches_library(user_module):
    r = CliRunner().invoke(app, ["theory", "two-point", "--model", f"{user_module}:factory", "--d", "3", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    lib = load_model(f"{user_module}:factory").two_point(3)
    assert got["p_antipodal"] == lib.p_antipodal(0.0) == pytest.approx(0.33611, abs=1e-5)
    assert got["exponent_collapse"] == lib.exponent_collapse
    assert got["exponent_antipodal"] == lib.exponent_antipodal
    # a non-absorbing antipode: exponent undefined -> JSON null; the text form prints the same numbers
    r = CliRunner().invoke(app, ["theory", "two-point", "--model", f"{user_module}:smooth", "--d", "4", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["exponent_antipodal"] is None, r.output
    r = CliRunner().invoke(
        app, ["theory", "two-point", "--model", f"{user_module}:factory", "--d", "3", "--rho0", "0.3"]
    )
    assert r.exit_code == 0 and str(lib.p_antipodal(0.3)) in r.stdout, r.output


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--model", "tokensde_no_such_module_xyz:f"], "cannot import"),
        (["--model", "{mod}:missing"], "no attribute"),
        (["--model", "{mod}:not_a_model"], "not a model"),
        (["--model", "{mod}:anisotropic", "--d", "3"], "rotation"),
        (["--model", "no-such-model"], "MODULE:FACTORY"),
        (["--model", "{mod}:factory", "--beta", "2"], "--beta"),
    ],
)
def test_cli_bad_model_exits_2(user_module, args, msg):
    args = [a.format(mod=user_module) for a in args]
    r = CliRunner().invoke(app, ["theory", "two-point", *args])
    assert r.exit_code == 2, r.output
    line = r.stderr.strip()
    assert "\n" not in line and msg in line and ("--model" in line or "--beta" in line), line


def test_cli_help_says_code_runs():
    r = CliRunner().invoke(app, ["theory", "two-point", "--help"], terminal_width=200)
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    assert "MODULE:FACTORY" in text and "PYTHONPATH" in text


# ----------------------------------------------------------------- (e) checks
def test_construction_checks():
    with pytest.raises(TypeError, match="callable"):
        KernelModel(1.0, pairwise=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pairwise=True"):
        KernelModel(cubic)
    with pytest.raises(TypeError, match="drift"):
        KernelModel(cubic, drift="attention", pairwise=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="kappa_prime"):
        KernelModel(value_kernel(1.0), pairwise=False, kappa_prime=cubic)
    with pytest.raises(ValueError, match="no discrete stack"):
        KernelModel(cubic, pairwise=True).noise_shape(2, 3, discrete=True)
    assert KernelModel(cubic, pairwise=True).noise_shape(5, 3) == (5, 3)


def test_shape_and_psd_checks():
    x = uniform((4, 3), 5, torch.Generator().manual_seed(0), F64)
    xi = torch.randn(4, 3, 5, dtype=F64)
    cases = [
        (
            KernelModel(lambda u: u.sum(-1), pairwise=True),
            r"kernel .*shape of u, \(B, n, n\) = \(4, 3, 3\), got \(4, 3\)",
        ),
        (KernelModel(lambda x: x, pairwise=False), r"kernel .*\(B, n, n\) = \(4, 3, 3\), got \(4, 3, 5\)"),
        (KernelModel(lambda x: 1.0, pairwise=False), r"kernel .*\(4, 3, 3\), got float"),
        (KernelModel(lambda x: torch.triu(x @ x.transpose(-1, -2)), pairwise=False), "not symmetric"),
        (KernelModel(lambda u: -u, pairwise=True), "not positive semi-definite"),
        (KernelModel(lambda u: u / 0.0, pairwise=True), "not finite"),
        (KernelModel(cubic, lambda x: x[..., :2], pairwise=True), r"drift .*\(B, n, d\) = \(4, 3, 5\)"),
    ]
    for model, msg in cases:
        with pytest.raises(ValueError, match=msg):
            model.coefficients(x, xi)
    with pytest.raises(ValueError, match="xi"):
        KernelModel(cubic, pairwise=True).coefficients(x, xi[:, :2])
    # a kernel that stops being PSD later is refused where its Cholesky factorisation fails
    with pytest.raises(ValueError, match="not positive semi-definite: system 1"):
        KernelModel(cubic, pairwise=True).factor(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]]))


def test_two_point_checks_its_assumptions():
    with pytest.raises(ValueError, match="C_11 = C_22"):
        KernelModel(lambda x: torch.diag_embed(x[..., 0] ** 2 + 1.0), pairwise=False).two_point(3)

    def anisotropic(x):  # C_11 = C_22 on the canonical pair, but not rotation invariant
        v = x[..., 2:3]
        return x @ x.transpose(-1, -2) + v @ v.transpose(-1, -2)

    with pytest.raises(ValueError, match="rotation"):
        KernelModel(anisotropic, pairwise=False).two_point(3)

    def wind(x):  # a constant field: not equivariant
        b = torch.zeros_like(x)
        b[..., 2] = 1.0
        return b

    with pytest.raises(ValueError, match="drift .*equivariant"):
        KernelModel(cubic, wind, pairwise=True).two_point(3)
    with pytest.raises(ValueError, match="d must be"):
        KernelModel(cubic, pairwise=True).two_point(1)


def test_pair_coefficients_and_pickling():
    model = KernelModel(cubic, attention(0.5, 1.0), pairwise=True)
    rho = np.array([-1.0, -0.3, 0.2, 1.0])
    c11, c22, c12, att = model.pair_coefficients(rho, 4)
    np.testing.assert_allclose(c11, 1.0, atol=1e-15)
    np.testing.assert_allclose(c12, 0.5 * (rho + rho**3), atol=1e-15)
    q = 1.0 / (1.0 + np.exp(1.0 - rho))
    np.testing.assert_allclose(att, 2 * 0.5 * q * (1 - rho**2), atol=1e-15)
    x = canonical_pair(torch.as_tensor(rho), 4)
    torch.testing.assert_close((x[:, 0] * x[:, 1]).sum(-1), torch.as_tensor(rho))
    plain = KernelModel(cubic, pairwise=True)
    plain.two_point(3)  # caches closures: dropped when pickled
    clone = pickle.loads(pickle.dumps(plain))
    assert clone.p_antipodal(3, 0.0) == pytest.approx(0.5, abs=1e-12)  # an odd kernel: symmetric exit law
