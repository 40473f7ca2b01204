"""Entry laws of model A's layers (tokensde.laws): moments, tails, sparsity and the Haar measure.

Every statistical test compares an estimate with an interval derived from the sample size (fixed seeds,
|z| <= 5 or a p-value above 1e-4), so a wrong scale, a wrong tail or a non-Haar matrix fails it.
"""

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from tokensde import laws
from tokensde.models.value_noise import ValueNoise
from tokensde.noise import entry_law

N = 400_000
Z_LIMIT = 5.0


def _normals(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _haar_fourth(d):
    """E[(sqrt(d) Q_11)^4] = d^2 * 3 / (d (d + 2)): Q_11 is a coordinate of a uniform unit vector."""
    return 3.0 * d / (d + 2.0)


#: law, parameters, fourth moment of an entry (for the interval of the sample variance)
CASES = [
    ("gaussian", {}, 3.0),
    ("rademacher", {}, 1.0),
    ("uniform", {}, 9.0 / 5.0),
    ("student", {"nu": 5.0}, 3.0 + 6.0 / (5.0 - 4.0)),
    ("student", {"nu": 12.0}, 3.0 + 6.0 / (12.0 - 4.0)),
    ("sparse", {"p": 0.25}, 3.0 / 0.25),
    ("sparse", {"p": 1.0}, 3.0),
    ("haar", {}, _haar_fourth(4)),
]


@pytest.mark.parametrize("law,params,m4", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_mean_zero_variance_one(law, params, m4):
    """Sample mean and variance of the entries within Z_LIMIT standard errors of 0 and 1.

    For the haar law the entries of one matrix are dependent: one entry per matrix is used."""
    if law == "haar":
        z = laws.entries(_normals((N // 4, 4, 4), 1), law)[:, 1, 2]
    else:
        z = laws.entries(_normals(N, 1), law, **params)
    n = len(z)
    mean, var = z.mean().item(), (z * z).mean().item()
    assert abs(mean) <= Z_LIMIT * math.sqrt(1.0 / n), mean
    assert abs(var - 1.0) <= Z_LIMIT * math.sqrt((m4 - 1.0) / n), var


def test_a_wrong_scale_fails_the_variance_interval():
    """The interval above has power: entries with variance 1.02 are outside it."""
    z = math.sqrt(1.02) * laws.entries(_normals(N, 1), "gaussian")
    assert abs((z * z).mean().item() - 1.0) > Z_LIMIT * math.sqrt(2.0 / N)


@pytest.mark.parametrize("nu", [1.0, 1.5, 3.0, 5.0])
def test_student_is_the_t_law(nu):
    """KS test of the rescaled entries against scipy's t_nu; the variance is 1 only for nu > 2."""
    z = laws.student(_normals(N // 4, 2), nu).numpy()
    scale = math.sqrt((nu - 2.0) / nu) if nu > 2 else 1.0
    assert stats.kstest(z / scale, "t", args=(nu,)).pvalue > 1e-4
    # the KS test has power here: the same sample is far from the t law with twice the degrees of freedom
    assert stats.kstest(z / scale, "t", args=(2 * nu,)).pvalue < 1e-4


def test_student_matches_the_quantile_function():
    """The tabulated map agrees with scipy's t quantile of Phi(xi) to 1e-9 (relative), in both tails."""
    u = torch.linspace(-9.5, 9.5, 2001, dtype=torch.float64)
    for nu in (1.0, 1.5, 5.0, 40.0):
        got = laws.student(u, nu).numpy() / (math.sqrt((nu - 2.0) / nu) if nu > 2 else 1.0)
        neg = -np.abs(u.numpy())
        ref = np.sign(u.numpy()) * -special.stdtrit(nu, special.ndtr(neg))
        assert np.allclose(got, ref, rtol=1e-9, atol=1e-12), nu


def test_student_kurtosis_of_nu_5():
    """E Z^4 = 3 + 6/(nu - 4) = 9 for nu = 5: the sample fourth moment lies above 6 (normal: 3)."""
    z = laws.student(_normals(N, 3), 5.0)
    assert (z**4).mean().item() > 6.0


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_sparse_zero_fraction_and_values(p):
    """Zeros with probability 1 - p (binomial interval); the kept values times sqrt(p) are N(0, 1) (KS)."""
    z = laws.sparse(_normals(N, 4), p)
    zeros = int((z == 0).sum())
    assert abs(zeros - N * (1 - p)) <= Z_LIMIT * math.sqrt(N * p * (1 - p)), zeros / N
    kept = (z[z != 0] * math.sqrt(p)).numpy()
    assert stats.kstest(kept, "norm").pvalue > 1e-4
    # the mask is not the sign: both signs are kept equally often
    pos = int((kept > 0).sum())
    assert abs(pos - len(kept) / 2) <= Z_LIMIT * math.sqrt(len(kept) / 4)


@pytest.mark.parametrize(
    "d,dtype,tol", [(4, torch.float32, 2e-6), (4, torch.float64, 1e-13), (20, torch.float64, 1e-13)]
)
def test_haar_is_orthogonal(d, dtype, tol):
    """Q^T Q = I for the Gram-Schmidt path (d <= 16) and the Householder path (d > 16)."""
    q = laws.haar(_normals((2000, d, d), 5, dtype)) / math.sqrt(d)
    eye = torch.eye(d, dtype=dtype)
    assert (q.transpose(-1, -2) @ q - eye).abs().max().item() < tol * d
    assert (q @ q.transpose(-1, -2) - eye).abs().max().item() < tol * d


def _trace_z(q):
    """z-scores of the mean and of the second moment of tr Q (Haar on O(d), d >= 2: E tr Q = 0, E (tr Q)^2 = 1)."""
    tr = torch.diagonal(q, dim1=-2, dim2=-1).sum(-1).numpy()
    n = len(tr)
    return tr.mean() / (tr.std() / math.sqrt(n)), ((tr**2).mean() - 1.0) / ((tr**2).std() / math.sqrt(n))


@pytest.mark.parametrize("d", [3, 4, 20])
def test_haar_rotation_invariant_statistics(d):
    """Q_11^2 ~ Beta(1/2, (d-1)/2) (KS); tr Q has mean 0 and second moment 1; det Q = +-1 equally often."""
    n = 40_000 if d <= 4 else 10_000
    q = laws.haar(_normals((n, d, d), 6)) / math.sqrt(d)
    assert stats.kstest(q[:, 0, 0].numpy() ** 2, "beta", args=(0.5, (d - 1) / 2)).pvalue > 1e-4
    z_mean, z_m2 = _trace_z(q)
    assert abs(z_mean) < Z_LIMIT and abs(z_m2) < Z_LIMIT, (z_mean, z_m2)
    pos = int((torch.linalg.det(q) > 0).sum())
    assert abs(pos - n / 2) <= Z_LIMIT * math.sqrt(n / 4)


def test_non_haar_orthogonal_fails_the_trace_statistics():
    """The trace test has power: Q of Householder QR without the sign fix is orthogonal but not Haar."""
    d, n = 4, 40_000
    q = torch.linalg.qr(_normals((n, d, d), 6)).Q
    z_mean, z_m2 = _trace_z(q)
    assert max(abs(z_mean), abs(z_m2)) > Z_LIMIT


def test_maps_are_deterministic_and_entry_law_delegates():
    xi = _normals((64, 5, 5), 7, torch.float32)
    for law in laws.LAWS:
        a = laws.entries(xi, law, nu=3.0, p=0.3)
        assert a.shape == xi.shape and a.dtype == xi.dtype and torch.isfinite(a).all()
        assert torch.equal(a, laws.entries(xi.clone(), law, nu=3.0, p=0.3))
        assert torch.equal(a, entry_law(xi, law, nu=3.0, p=0.3))


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"law": "cauchy"}, ["law must be one of", "student", "haar"]),
        ({"law": "student", "nu": 0.5}, ["nu", "[1, 1e+06]"]),
        ({"law": "student", "nu": float("nan")}, ["nu", "[1, 1e+06]"]),
        ({"law": "sparse", "p": 0.0}, ["p", "(0, 1]"]),
        ({"law": "sparse", "p": 1.5}, ["p", "(0, 1]"]),
    ],
)
def test_parameters_are_validated(kwargs, words):
    """Bad laws and parameters are refused with a ValueError naming the parameter and its range."""
    with pytest.raises(ValueError) as e:
        laws.check(**kwargs)
    assert all(w in str(e.value) for w in words), str(e.value)
    with pytest.raises(ValueError) as e:
        ValueNoise(beta=1.0, **kwargs)
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("law", laws.LAWS)
def test_value_noise_layer_uses_the_law(law):
    """The stack's layer draws Z through the law: unit tokens, and the sparse law with p -> small keeps
    most entries at zero, so most layers barely move the tokens."""
    g = torch.Generator().manual_seed(8)
    x = torch.nn.functional.normalize(torch.randn(256, 2, 4, generator=g), dim=-1)
    xi = torch.randn(256, 4, 4, generator=g)
    m = ValueNoise(beta=1.0, law=law, nu=3.0, p=0.3)
    y = m.layer(x, xi, 0.01)
    assert torch.allclose(y.norm(dim=-1), torch.ones(256, 2), atol=1e-5)
    z = entry_law(xi, law, nu=3.0, p=0.3)
    a = m.barycenters(x)
    want = torch.nn.functional.normalize(x + 0.1 * (a @ z.transpose(-1, -2)), dim=-1)
    assert torch.allclose(y, want, atol=1e-5)
