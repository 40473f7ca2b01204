"""Blocked metrics (no ``n x n`` Gram matrix) against the dense route, and ``simulate`` at large ``n``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components

from tokensde import metrics
from tokensde.sphere import normalize, uniform

EPS = metrics.EPS


# --------------------------------------------------------------------------- dense reference (whole Gram matrix)
def dense_gram(x):
    return x @ x.transpose(-1, -2)


def dense_labels(x, eps=EPS):
    g = (dense_gram(x) > 1.0 - eps).cpu().numpy()
    return np.stack([connected_components(g[b], directed=False)[1] for b in range(g.shape[0])])


def dense_energy(x, beta):
    n = x.shape[-2]
    return (np.exp(beta) - torch.exp(beta * dense_gram(x))).sum((-1, -2)) / (2.0 * n * n)


def dense_overlaps(x):
    g = dense_gram(x)
    n = x.shape[-2]
    off = g[:, ~torch.eye(n, dtype=torch.bool)]
    return g.mean((-1, -2)), off.min(-1).values, off.max(-1).values


def dense_antipodal(x, eps=EPS):
    labels = dense_labels(x, eps)
    out = np.zeros(x.shape[0], dtype=bool)
    for b in range(x.shape[0]):
        if labels[b].max() == 1:
            lab = torch.as_tensor(labels[b])
            c0, c1 = normalize(x[b][lab == 0].sum(0)), normalize(x[b][lab == 1].sum(0))
            out[b] = bool((c0 * c1).sum() < -1.0 + eps)
    return out


def dense_rank(x):
    s = torch.linalg.svdvals(x.double()) ** 2
    p = s / s.sum(-1, keepdim=True)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-300))).sum(-1))


# --------------------------------------------------------------------------- configurations
def clustered(n, d, centres, spread, gen, perm=True):
    """``n`` tokens around the rows of ``centres`` (round robin), angular noise ``spread``, shuffled."""
    k = centres.shape[0]
    idx = torch.arange(n) % k
    if perm:
        idx = idx[torch.randperm(n, generator=gen)]
    noise = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return normalize(centres[idx] + spread * noise)


def configurations(n=300, d=6, seed=0):
    """A batch of systems: several clusters, antipodal, collapsed, uniform, chains, three-cluster antipodal-like."""
    g = torch.Generator().manual_seed(seed)
    e = torch.eye(d, dtype=torch.float64)
    systems = [
        clustered(n, d, e[:5], 0.02, g),  # 5 well separated clusters
        clustered(n, d, torch.stack([e[0], -e[0]]), 0.02, g),  # antipodal
        clustered(n, d, e[:1], 0.02, g),  # collapsed
        uniform((n,), d, g, torch.float64),  # spread: mostly singletons, a few close pairs
        clustered(n, d, torch.stack([e[0], -e[0], e[1]]), 0.02, g),  # 3 clusters, two of them antipodal
        clustered(n, d, normalize(torch.stack([e[0], -e[0] + 0.3 * e[1]])), 0.02, g),  # two clusters, not antipodal
    ]
    # a chain: consecutive overlaps ~0.995 > 1 - eps, ends far apart -> one cluster only through the chain,
    # with the tokens shuffled so the chain crosses every block boundary
    ang = torch.linspace(0.0, 3.0, n, dtype=torch.float64)
    chain = torch.zeros(n, d, dtype=torch.float64)
    chain[:, 0], chain[:, 1] = torch.cos(ang), torch.sin(ang)
    systems.append(chain[torch.randperm(n, generator=g)])
    return torch.stack(systems)


@pytest.fixture(scope="module")
def x():
    return configurations()


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("chunk", [1, 7, 64, 299, None])
def test_cluster_labels_match_dense(x, chunk):
    ref = dense_labels(x)
    got = metrics.cluster_labels(x, chunk=chunk)
    np.testing.assert_array_equal(got, ref)  # same numbering (first appearance), hence the same partition
    # the configurations do what they claim
    np.testing.assert_array_equal(ref.max(1) + 1, [5, 2, 1, ref[3].max() + 1, 3, 2, 1])
    assert ref[3].max() + 1 > 250


def _same_partition(a, b):
    """Labels ``a`` and ``b`` define the same partition (any numbering)."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_partition_helper_can_fail():
    assert _same_partition(np.array([0, 0, 1]), np.array([5, 5, 2]))
    assert not _same_partition(np.array([0, 0, 1]), np.array([0, 1, 1]))
    assert not _same_partition(np.array([0, 0, 1]), np.array([0, 0, 0]))


def test_partitions_agree_with_small_eps_and_chunks():
    """Many medium clusters at a tighter threshold, block of 13 rows: same partition as dense."""
    g = torch.Generator().manual_seed(3)
    centres = normalize(torch.randn(40, 5, generator=g, dtype=torch.float64))
    x = torch.stack([clustered(400, 5, centres, 0.03, g), clustered(400, 5, centres[:3], 0.05, g)])
    for eps in (1e-2, 3e-3):
        ref = dense_labels(x, eps)
        got = metrics.cluster_labels(x, eps, chunk=13)
        assert ref[0].max() > 3  # several clusters
        for b in range(2):
            assert _same_partition(got[b], ref[b])
        np.testing.assert_array_equal(got, ref)


def test_cluster_classifications_match_dense(x):
    for chunk in (5, None):
        np.testing.assert_array_equal(metrics.n_clusters(x, chunk=chunk), dense_labels(x).max(1) + 1)
        np.testing.assert_array_equal(metrics.is_collapsed(x, chunk=chunk), dense_labels(x).max(1) == 0)
        np.testing.assert_array_equal(metrics.is_antipodal(x, chunk=chunk), dense_antipodal(x))
    np.testing.assert_array_equal(dense_antipodal(x), [False, True, False, False, False, False, False])


@pytest.mark.parametrize("chunk", [1, 11, 300, None])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_energy_and_overlaps_match_dense(x, chunk, dtype):
    x = x.to(dtype)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)
    for beta in (0.5, 4.0):
        torch.testing.assert_close(metrics.interaction_energy(x, beta, chunk=chunk), dense_energy(x, beta), **tol)
    ov = metrics.overlap_stats(x, chunk=chunk)
    mean, lo, hi = dense_overlaps(x)
    torch.testing.assert_close(ov["mean_overlap"], mean, **tol)
    torch.testing.assert_close(ov["min_overlap"], lo, **tol)
    torch.testing.assert_close(ov["max_overlap"], hi, **tol)
    # the diagonal is excluded: the chain's neighbours are below 1, not the diagonal's 1
    assert ov["max_overlap"][-1].item() < 1.0 - 1e-6


def test_effective_rank_matches_svd(x):
    torch.testing.assert_close(metrics.effective_rank(x), dense_rank(x), rtol=1e-9, atol=1e-9)
    r = metrics.effective_rank(x)
    assert r[2].item() < 1.05 and r[3].item() > 5.5  # collapsed (spread 0.02) ~1, uniform in d = 6 ~6
    few = x[:, :4]  # n < d: the n x n side
    torch.testing.assert_close(metrics.effective_rank(few), dense_rank(few), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(metrics.effective_rank(x.float()), dense_rank(x).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [17, None])
def test_summary_matches_dense(x, chunk):
    s = metrics.summary(x, 1.0, chunk=chunk)
    labels = dense_labels(x)
    mean, lo, hi = dense_overlaps(x)
    np.testing.assert_array_equal(s["n_clusters"], labels.max(1) + 1)
    np.testing.assert_array_equal(s["collapsed"], labels.max(1) == 0)
    np.testing.assert_array_equal(s["antipodal"], dense_antipodal(x))
    np.testing.assert_allclose(s["energy"], dense_energy(x, 1.0).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s["effective_rank"], dense_rank(x).numpy(), rtol=1e-9)
    np.testing.assert_allclose(s["mean_overlap"], mean.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s["min_overlap"], lo.numpy(), rtol=1e-10)
    np.testing.assert_allclose(s["max_overlap"], hi.numpy(), rtol=1e-10)
    assert list(s) == [
        "n_clusters",
        "collapsed",
        "antipodal",
        "energy",
        "effective_rank",
        "mean_overlap",
        "min_overlap",
        "max_overlap",
    ]


def test_many_small_systems_grouped_match_dense():
    """Many systems of few tokens share one block: same results as dense, two-token special case included."""
    g = torch.Generator().manual_seed(1)
    x = uniform((500, 3), 3, g, torch.float64)
    x[:100, 1] = x[:100, 0]  # some collapsed pairs
    x[100:200, 2] = -x[100:200, 0]
    np.testing.assert_array_equal(metrics.cluster_labels(x), dense_labels(x))
    np.testing.assert_array_equal(metrics.is_antipodal(x), dense_antipodal(x))
    torch.testing.assert_close(metrics.interaction_energy(x, 2.0), dense_energy(x, 2.0))
    pair = torch.stack([x[:50, :2], torch.stack([x[:50, 0], -x[:50, 0]], 1)]).reshape(100, 2, 3)
    s = metrics.summary(pair, 1.0)
    np.testing.assert_array_equal(s["n_clusters"], dense_labels(pair).max(1) + 1)
    np.testing.assert_array_equal(s["antipodal"], dense_antipodal(pair))
    np.testing.assert_allclose(s["min_overlap"], dense_overlaps(pair)[1].numpy())


def test_block_shape_respects_budget():
    assert metrics._block_shape(1, 65536, None) == (metrics.CHUNK_ENTRIES // 65536, 1)
    rows, systems = metrics._block_shape(10_000, 32, None)
    assert rows == 32 and systems * 32 * 32 <= metrics.CHUNK_ENTRIES and systems > 1
    assert metrics._block_shape(3, 300, 7) == (7, 1)
    assert metrics._block_shape(1, 10**8, None) == (1, 1)
    with pytest.raises(ValueError):
        metrics._block_shape(1, 10, 0)


def test_blocked_clusters_never_build_the_gram_matrix(monkeypatch):
    """With chunk = 8 no product larger than 8 x n appears (guards against a silent dense fallback)."""
    x = configurations(n=120)
    seen = []
    real_op, real_fn = torch.Tensor.__matmul__, torch.matmul

    def spy_op(a, b):
        out = real_op(a, b)
        seen.append(tuple(out.shape))
        return out

    def spy_fn(*args, **kwargs):
        out = real_fn(*args, **kwargs)
        seen.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy_op)
    monkeypatch.setattr(torch, "matmul", spy_fn)
    labels = metrics.cluster_labels(x, chunk=8)
    metrics.overlap_stats(x, chunk=8)
    metrics.interaction_energy(x, 1.0, chunk=8)
    monkeypatch.undo()
    assert seen and max(s[-2] for s in seen) <= 8
    np.testing.assert_array_equal(labels, dense_labels(x))


def test_simulate_large_n_writes_metrics(tmp_path):
    n = 20000
    out = tmp_path / "big"
    env_cmd = [sys.executable, "-m", "tokensde.cli"]
    r = subprocess.run(
        [*env_cmd, "simulate", "--n", str(n), "--d", "8", "--steps", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    m = s["metrics"]
    for key in ("n_clusters", "collapsed", "antipodal", "energy", "effective_rank", "mean_overlap", "min_overlap"):
        assert len(m[key]) == 1, key
    # uniform tokens after two small steps: spread out, many clusters, rank ~ d, overlaps in [-1, 1]
    assert m["n_clusters"][0] > n / 2 and not m["collapsed"][0] and not m["antipodal"][0]
    assert 7.0 < m["effective_rank"][0] <= 8.0 + 1e-6
    assert -1.0 - 1e-5 <= m["min_overlap"][0] < -0.9 and 0.9 < m["max_overlap"][0] <= 1.0 + 1e-5
    assert 0.0 <= m["mean_overlap"][0] < 0.01 and m["energy"][0] > 0
    assert s["seconds_per_step"] > 0 and s["peak_rss_bytes"] > 0
