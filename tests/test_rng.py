"""Counter-based normals (tokensde.rng, tokensde.kernels): known answers, bitwise agreement of the kernel and
the torch form, invariance under chunking and threads, and the law (moments, KS, tails, independence) at
the sample size's level; the fused coupled two-token kernel against the torch step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tokensde import kernels
from tokensde.models.value_noise import pair_euler_step
from tokensde.rng import box_muller, normals, normals_torch, philox4x32, stream_keys
from tokensde.sphere import pair_with_overlap

Z = 4.5  # two-sided, about 7e-6 per check: a handful of checks per test


def _words(*vals: int) -> torch.Tensor:
    return torch.tensor(vals, dtype=torch.int64)


@pytest.mark.parametrize(
    ("ctr", "key", "expected"),
    [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(ctr, key, expected):
    """Random123's known-answer vectors of Philox4x32-10, in the torch form and in the kernel."""
    got = philox4x32(tuple(_words(c) for c in ctr), *key)  # type: ignore[arg-type]
    assert tuple(int(w) for w in got) == expected
    c0, c1, c2, c3 = (np.array([c], dtype=np.uint64) for c in ctr)
    k0, k1 = np.array([key[0]], dtype=np.uint64), np.array([key[1]], dtype=np.uint64)
    kernels._philox(c0, c1, c2, c3, k0, k1, 1)
    assert (int(c0[0]), int(c1[0]), int(c2[0]), int(c3[0])) == expected


def test_kernel_and_torch_form_agree_bitwise():
    """Random keys, indices beyond 2^32, steps near 2^32, counts not a multiple of 4."""
    g = torch.Generator().manual_seed(0)
    size = 3000
    idx = torch.randint(0, 2**62, (size,), generator=g)
    idx[:10] = torch.arange(10)
    k0 = torch.randint(0, 2**32, (size,), generator=g)
    k1 = torch.randint(0, 2**32, (size,), generator=g)
    for step0, steps, count in ((0, 3, 1), (17, 2, 7), (2**32 - 2, 2, 12)):
        a = normals(k0, k1, idx, step0, steps, count)
        b = normals_torch(k0, k1, idx, step0, steps, count)
        assert torch.equal(a, b), (step0, count)


def test_box_muller_polynomials_against_libm():
    """The fixed-polynomial Box-Muller map against NumPy's log/cos/sin, extreme words included."""
    g = torch.Generator().manual_seed(1)
    wr = torch.randint(0, 2**32, (200_000,), generator=g)
    wa = torch.randint(0, 2**32, (200_000,), generator=g)
    wr[:6] = _words(0, 1, 2**31, 2**32 - 1, 0x6A09E667, 0xB504F333)
    wa[:4] = _words(0, 2**30 - 1, 2**31, 2**32 - 1)
    z0, z1 = box_muller(wr, wa)
    u = (wr.double().numpy() + 1.0) * 2.0**-32
    r = np.sqrt(-2.0 * np.log(u))
    q = (wa >> 30).numpy()
    theta = 0.5 * np.pi * (q + ((wa & 0x3FFFFFFF).double().numpy() + 0.5) * 2.0**-30 - 0.5)
    scale = np.maximum(r, 1e-300)
    assert np.max(np.abs(z0.numpy() - r * np.cos(theta)) / scale) < 1e-14
    assert np.max(np.abs(z1.numpy() - r * np.sin(theta)) / scale) < 1e-14
    assert float(z0[3]) == 0.0 and float(z1[3]) == 0.0  # u = 1: radius 0
    assert math.isclose(math.hypot(float(z0[0]), float(z1[0])), math.sqrt(64 * math.log(2)), rel_tol=1e-15)


def test_any_subset_any_steps_any_threads():
    """A system's normals depend on (key, index, step) only: not on the other systems, the steps asked
    together, nor the threads."""
    k0, k1 = stream_keys(3, "subset")
    idx = torch.arange(5000)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = normals(k0, k1, idx, 10, 4, 6)
        torch.set_num_threads(2)
        two = normals(k0, k1, idx, 10, 4, 6)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    pick = torch.tensor([4999, 7, 64, 63, 65, 0])
    assert torch.equal(normals(k0, k1, pick, 12, 1, 6)[0], one[2, pick])
    assert torch.equal(normals(k0, k1, idx[100:300], 11, 3, 6), one[1:4, 100:300])


def _law_checks(z: np.ndarray) -> dict[str, bool]:
    """Standard-normal checks at the sample size's level: mean, variance, excess kurtosis (normal-theory
    standard errors), the KS distance (its asymptotic critical value) and two tail frequencies (binomial)."""
    n = z.size
    out = {
        "mean": abs(z.mean()) < Z / math.sqrt(n),
        "variance": abs(z.var() - 1.0) < Z * math.sqrt(2.0 / n),
        "kurtosis": abs(stats.kurtosis(z)) < Z * math.sqrt(24.0 / n),
    }
    d = stats.kstest(z, "norm").statistic
    out["ks"] = d < math.sqrt(-0.5 * math.log(1e-5 / 2) / n)
    for t in (2.0, 3.5):
        p = 2 * stats.norm.sf(t)
        freq = np.mean(np.abs(z) > t)
        out[f"tail {t}"] = abs(freq - p) < Z * math.sqrt(p * (1 - p) / n)
    return out


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    k0, k1 = stream_keys(0, "law")
    return normals(k0, k1, torch.arange(100_000), 0, 4, 10).numpy()  # 4e6 normals


def test_law_of_the_normals(sample):
    checks = _law_checks(sample.ravel())
    assert all(checks.values()), checks
    per_coordinate = sample.reshape(-1, 10)  # each of the 10 positions (4j + t, t = 0..3) is standard normal
    for c in range(10):
        assert all(_law_checks(per_coordinate[:, c]).values()), c


@pytest.mark.parametrize("defect", ["scale", "shift", "heavy"])
def test_law_checks_catch_a_defective_generator(sample, defect):
    """The same checks on normals 1% too wide, shifted by 0.005, or mixed with 2% of a wider law: FAIL."""
    z = sample.ravel()
    if defect == "scale":
        bad = 1.01 * z
    elif defect == "shift":
        bad = z + 0.005
    else:
        bad = z.copy()
        bad[::50] *= 1.5
    assert not all(_law_checks(bad).values())


def test_independence_across_counters_and_keys(sample):
    """Correlations between normals of neighbouring coordinates, steps, systems, and of keys one bit apart,
    each within Z standard errors of 0 (1/sqrt(n) under independence)."""
    n = sample.shape[0] * sample.shape[1]
    lim = Z / math.sqrt(n)
    pairs = {
        "coordinate": (sample[..., 0], sample[..., 1]),
        "group": (sample[..., 0], sample[..., 4]),
        "step": (sample[0], sample[1]),
        "system": (sample[:, :-1, 3], sample[:, 1:, 3]),
    }
    k0, k1 = stream_keys(0, "law")
    other = normals(k0 ^ 1, k1, torch.arange(100_000), 0, 4, 10).numpy()
    pairs["key"] = (sample[..., 2], other[..., 2])
    for name, (a, b) in pairs.items():
        lim = Z / math.sqrt(a.size)
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < lim, name
    # squares too: Box-Muller's radius is shared by two normals, but they are independent
    a, b = sample[..., 0].ravel(), sample[..., 1].ravel()
    assert abs(np.corrcoef(a * a, b * b)[0, 1]) < Z / math.sqrt(a.size)
    # and the check sees a dependence of that size
    assert abs(np.corrcoef(a, 0.99 * a + 0.14 * b)[0, 1]) > lim


def _pairs(bsz: int, d: int, dtype=torch.float64) -> torch.Tensor:
    return pair_with_overlap(bsz, d, 0.1, torch.Generator().manual_seed(2), torch.float64).to(dtype)


def _keys(bsz: int):
    k0, k1 = stream_keys(5, "pairs")
    return (np.full(bsz, k0, np.int64), np.full(bsz, k1, np.int64), np.arange(bsz, dtype=np.int64))


@pytest.mark.parametrize("d", [3, 4, 10])
def test_pair_kernel_is_the_fused_step(d):
    """Fine run and ratio-2 and ratio-4 runs of the kernel against pair_euler_step in float64 fed with the
    same normals (and their normalised sums): equal to rounding."""
    bsz, steps, dt = 300, 8, 0.01
    x0 = _pairs(bsz, d)
    keys = _keys(bsz)
    beta = torch.linspace(0.0, 4.0, bsz, dtype=torch.float64)
    states = torch.stack([x0, x0, x0]).contiguous()
    acc = torch.zeros(3, bsz, 2 * d, dtype=torch.float64)
    kernels.pair_levels(
        states.numpy(),
        acc.numpy(),
        np.ones((3, bsz), bool),
        beta.numpy(),
        *keys,
        np.array([1, 2, 4]),
        0,
        steps,
        dt,
        1.0,
    )
    xi = normals(*(torch.from_numpy(k) for k in keys), 0, steps, 2 * d).view(steps, bsz, 2, d)
    for ratio, got in zip((1, 2, 4), states, strict=True):
        y = x0.clone()
        for j in range(steps // ratio):
            z = xi[j * ratio : (j + 1) * ratio].sum(0) * (1.0 / math.sqrt(ratio)) if ratio > 1 else xi[j]
            y = pair_euler_step(y, z, beta.view(-1, 1), ratio * dt, 1.0)
        assert (got - y).abs().max() < 1e-13, ratio
    assert acc.abs().max() == 0.0  # every coarse step completed


def test_pair_kernel_split_calls_threads_and_float32():
    """Cutting the steps into calls (the sums of the coarse runs carried in acc), the threads, and the
    retired systems leave every number unchanged; with single=True the states are float32 numbers."""
    bsz, d = 700, 5
    x0 = _pairs(bsz, d)
    keys = _keys(bsz)
    beta = np.full(bsz, 1.5)
    ratios = np.array([1, 4])

    def run(cuts, threads, alive=None, single=False):
        st = torch.stack([x0, x0]).contiguous()
        acc = torch.zeros(2, bsz, 2 * d, dtype=torch.float64)
        mask = np.ones((2, bsz), bool) if alive is None else alive
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                kernels.pair_levels(st.numpy(), acc.numpy(), mask, beta, *keys, ratios, a, b - a, 0.01, 1.0, single)
        finally:
            torch.set_num_threads(before)
        return st

    whole = run([0, 16], 1)
    assert torch.equal(run([0, 3, 5, 11, 16], 2), whole)
    mask = np.ones((2, bsz), bool)
    mask[1, ::3] = False
    part = run([0, 16], 2, mask)
    assert torch.equal(part[0], whole[0]) and torch.equal(part[1, 1::3], whole[1, 1::3])
    assert torch.equal(part[1, ::3], x0[::3])
    single = run([0, 7, 16], 1, single=True)
    assert torch.equal(single, single.float().double())
    assert (single - whole).abs().max() < 1e-5


def test_kernel_tanh_against_libm():
    """The pair step's vectorised tanh: relative error below 2e-15 from 1e-300 to beyond saturation, odd."""
    y = np.concatenate([np.logspace(-300, 1.7, 100_000), [0.0, 0.0999999999, 0.1, 0.10029516712842032, 20.0, 1e300]])
    y = np.concatenate([y, -y])
    out = np.empty_like(y)
    kernels._tanh(y, out, len(y))
    ref = np.tanh(y)
    assert np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1e-308)) < 2e-15
    assert np.array_equal(out[: len(y) // 2], -out[len(y) // 2 :])
