r"""Metrics of token configurations: clusters, antipodal pairs, energy, rank.

Definitions (docs/models.md), with their parameters:

* clusters: connected components of the graph ``<x_i, x_j> > 1 - eps``
  (``eps = 1e-2``);
* *collapsed*: one cluster; *antipodal*: exactly two clusters whose centres
  (normalised means) have overlap ``< -1 + eps``;
* interaction energy ``E_beta(X) = (1/(2 n^2)) sum_ij (e^beta - e^{beta <x_i, x_j>})``;
* effective rank of the Gram matrix ``G``: ``exp(H(p))`` with ``p`` its
  eigenvalues divided by their sum (Roy & Vetterli), between 1 and ``min(n, d)``.

Memory. No function builds the whole ``(B, n, n)`` Gram matrix unless it is
small: overlaps are computed in blocks of ``chunk`` rows of one system
(``chunk * n`` overlaps at most; by default ``chunk = max(1, CHUNK_ENTRIES // n)``,
so a block holds at most ``CHUNK_ENTRIES = 2**22`` overlaps, or ``n`` when
``n > 2**22``). Rows ``a .. a+chunk-1`` meet only the columns ``a .. n-1``: by
symmetry this upper triangle (about ``n^2 / 2`` overlaps) determines every metric.
When a block holds all ``n`` rows, several systems share one block (at most
``CHUNK_ENTRIES`` overlaps, at least one system) and it is the whole Gram matrix.
Peak extra memory is a few blocks (about 4 ``chunk x n`` arrays, 64 MiB in float32
at the default budget) plus ``O(B n d)``; results are exact for every ``n`` and
equal those of the dense Gram matrix up to float rounding (a pair whose overlap
lies within rounding of ``1 - eps`` may be classified differently).

Time: ``O(B n^2 d)`` for everything that needs pairs (energy, min/max overlap,
clusters; with ``chunk < n`` about half the ``B n^2 d`` multiply-adds of the whole
Gram matrix), ``O(B n d)`` for the mean overlap and ``O(B n d^2)`` for the
effective rank. :func:`summary` computes all pair metrics in one pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from .sphere import normalize

__all__ = [
    "EPS",
    "CHUNK_ENTRIES",
    "cluster_labels",
    "n_clusters",
    "is_collapsed",
    "is_antipodal",
    "interaction_energy",
    "overlap_stats",
    "effective_rank",
    "summary",
]

EPS = 1e-2

CHUNK_ENTRIES = 2**22
"""Default budget: overlaps ``<x_i, x_j>`` held at once by the blocked metrics (16 MiB in float32)."""


# --------------------------------------------------------------------------- blocked scan of the Gram matrix
def _block_shape(batch: int, n: int, chunk: int | None) -> tuple[int, int]:
    """``(rows, systems)`` of one block of the Gram matrix."""
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of rows, got {chunk}")
    rows = min(n, chunk if chunk is not None else max(1, CHUNK_ENTRIES // n))
    systems = max(1, CHUNK_ENTRIES // (n * n)) if rows == n else 1
    return rows, min(systems, batch)


class _Components:
    """Connected components of ``<x_i, x_j> > 1 - eps`` of one system, merged block of rows by block.

    ``lab[i]`` is the current component of token ``i`` (``0 .. k-1``). A block of rows
    ``a .. a+c-1`` (columns ``a .. n-1``: the graph is undirected) adds the edges
    ``(lab[i], lab[j])`` between components; when the block has many edges (more
    than 1/16 of its entries) it is first reduced to the ``(c, k)`` incidence "row
    ``i`` touches component ``m``" (``index_add`` over columns), so a block never
    adds more than ``min(edges, c k, c n / 16)`` edges.
    Edges inside one component are dropped, and SciPy recomputes the components of
    the ``k``-node graph only when some remain (so a block without edges between
    distinct tokens costs no SciPy call).
    """

    def __init__(self, n: int, device: torch.device) -> None:
        self.n = n
        self.k = n
        self.lab = torch.arange(n, device=device)

    def add(self, start: int, adj: Tensor) -> None:
        """Merge along the edges ``(start + r, start + j)`` where ``adj[r, j]`` (``adj``: ``(c, n - start)`` bool)."""
        if self.k == 1:
            return
        c, m = adj.shape
        edges = int(torch.count_nonzero(adj))
        if edges == int(torch.count_nonzero(adj.diagonal())):  # only self-loops (i, i)
            return
        if 16 * edges <= c * m:
            r, j = adj.nonzero(as_tuple=True)
            src, dst = self.lab[start + r], self.lab[start + j]
        else:
            touch = torch.zeros(c, self.k, dtype=torch.float32, device=adj.device)
            touch.index_add_(1, self.lab[start:], adj.to(torch.float32))
            r, dst = touch.nonzero(as_tuple=True)
            src = self.lab[start + r]
        keep = src != dst
        if not bool(keep.any()):
            return
        src_np, dst_np = src[keep].cpu().numpy(), dst[keep].cpu().numpy()
        graph = coo_matrix((np.ones(src_np.size, dtype=bool), (src_np, dst_np)), shape=(self.k, self.k)).tocsr()
        self.k, new = connected_components(graph, directed=False)
        self.lab = torch.as_tensor(new, dtype=torch.int64, device=self.lab.device)[self.lab]

    def labels(self) -> np.ndarray:
        """Labels numbered by first appearance (token order), as SciPy numbers a dense graph's components."""
        lab = self.lab.cpu().numpy()
        _, first = np.unique(lab, return_index=True)
        rank = np.empty(self.k, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(self.k)
        return rank[lab]


@dataclass
class _Scan:
    energy: Tensor | None = None
    min_overlap: Tensor | None = None
    max_overlap: Tensor | None = None
    labels: np.ndarray | None = None


def _scan(
    x: Tensor,
    *,
    beta: float | None = None,
    extremes: bool = False,
    eps: float | None = None,
    chunk: int | None = None,
) -> _Scan:
    """One blocked pass over the Gram matrix: energy (``beta``), min/max off the diagonal, clusters (``eps``)."""
    bsz, n, _ = x.shape
    rows, group = _block_shape(bsz, n, chunk)
    out = _Scan()
    if beta is not None:
        energy = torch.zeros(bsz, dtype=torch.float64, device=x.device)
        e_beta = math.exp(beta)
    if extremes:
        lo = torch.full((bsz,), math.inf, dtype=x.dtype, device=x.device)
        hi = torch.full((bsz,), -math.inf, dtype=x.dtype, device=x.device)
    if eps is not None:
        labels = np.empty((bsz, n), dtype=np.int64)
        thr = 1.0 - eps
    # reused blocks (fresh large allocations would cost page faults on every block)
    size = group * rows * n
    g_buf = torch.empty(size, dtype=x.dtype, device=x.device)
    t_buf = torch.empty(size, dtype=x.dtype, device=x.device) if beta is not None else None
    a_buf = torch.empty(size, dtype=torch.bool, device=x.device) if eps is not None else None
    for s0 in range(0, bsz, group):
        s1 = min(s0 + group, bsz)
        xs = x[s0:s1]
        xt = xs.transpose(-1, -2).contiguous()  # O(n d) copy: a contiguous right factor multiplies faster
        # dense route (one block of all rows, a = 0): the whole Gram matrix of the group, as before
        comps = _Components(n, x.device) if eps is not None and rows < n else None
        for a in range(0, n, rows):
            # rows a .. a+c-1 against columns a .. n-1 only: the Gram matrix is symmetric, so the square
            # part (columns a .. a+c-1) holds both (i, j) and (j, i) and the rest stands for its mirror too
            c = min(rows, n - a)
            shape = (s1 - s0, c, n - a)
            block = shape[0] * shape[1] * shape[2]
            g = torch.matmul(xs[:, a : a + c], xt[..., a:], out=g_buf[:block].view(shape))
            if t_buf is not None and beta is not None:
                t = torch.mul(g, beta, out=t_buf[:block].view(shape))
                t.exp_().neg_().add_(e_beta)  # e^beta - e^{beta g}
                part = t[..., :c].sum((-1, -2)).to(torch.float64)
                if c < n - a:
                    part += 2.0 * t[..., c:].sum((-1, -2)).to(torch.float64)
                energy[s0:s1] += part
            if a_buf is not None:
                adj = torch.gt(g, thr, out=a_buf[:block].view(shape))
                if comps is None:  # all rows at once: the dense route, system by system
                    adj_np = adj.cpu().numpy()
                    for b in range(s1 - s0):
                        labels[s0 + b] = connected_components(adj_np[b], directed=False)[1]
                else:
                    comps.add(a, adj[0])
            if extremes:
                diag = g.diagonal(dim1=-2, dim2=-1)  # entries (i, i) of this block
                diag.fill_(math.inf)
                lo[s0:s1] = torch.minimum(lo[s0:s1], g.amin((-1, -2)))
                diag.fill_(-math.inf)
                hi[s0:s1] = torch.maximum(hi[s0:s1], g.amax((-1, -2)))
        if comps is not None:
            labels[s0] = comps.labels()
    if beta is not None:
        out.energy = (energy / (2.0 * n * n)).to(x.dtype)
    if extremes:
        out.min_overlap, out.max_overlap = lo, hi
    if eps is not None:
        out.labels = labels
    return out


# --------------------------------------------------------------------------- clusters
def cluster_labels(x: Tensor, eps: float = EPS, *, chunk: int | None = None) -> np.ndarray:
    r"""Cluster label of every token, ``(B, n)`` int array (components of ``<x_i, x_j> > 1 - eps``).

    Labels are numbered by first appearance (token 0 is in cluster 0), exactly as
    ``scipy.sparse.csgraph.connected_components`` numbers the dense graph. Cost
    ``O(B n^2 d)`` time, blocks of ``chunk`` rows (module docstring); with ``chunk < n``
    each block also costs ``O(chunk k)`` with ``k`` the components merged so far.

    .. math:: i \sim j \iff \langle x_i, x_j\rangle > 1 - \varepsilon \ \text{(transitive closure)}

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
        Tokens on the sphere.
    eps : float
        Cluster threshold: ``<x_i, x_j> > 1 - eps`` links two tokens (default ``EPS = 1e-2``).
    chunk : int, optional
        Rows per block (module docstring).

    Returns
    -------
    ndarray ``(B, n)`` of int

    Examples
    --------
    >>> from tokensde.metrics import cluster_labels
    >>> import torch
    >>> e = torch.eye(3, dtype=torch.float64)
    >>> # (3, 3, 3): an antipodal pair of clusters; three orthogonal tokens; one point
    >>> x = torch.stack([torch.stack([e[0], e[0], -e[0]]), e, e[[1, 1, 1]]])
    >>> cluster_labels(x).tolist()
    [[0, 0, 1], [0, 1, 2], [0, 0, 0]]
    """
    labels = _scan(x, eps=eps, chunk=chunk).labels
    assert labels is not None
    return labels


def _pair_overlap(x: Tensor) -> Tensor:
    return (x[:, 0] * x[:, 1]).sum(-1)


def n_clusters(x: Tensor, eps: float = EPS, *, chunk: int | None = None) -> np.ndarray:
    """Number of clusters per system, ``(B,)``; cost as :func:`cluster_labels` (``O(B d)`` for two tokens).

    The number of connected components of the graph ``<x_i, x_j> > 1 - eps``.

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
        Tokens on the sphere.
    eps : float
        Cluster threshold: ``<x_i, x_j> > 1 - eps`` links two tokens (default ``EPS = 1e-2``).
    chunk : int, optional
        Rows per block (module docstring).

    Returns
    -------
    ndarray ``(B,)`` of int

    Examples
    --------
    >>> from tokensde.metrics import n_clusters
    >>> import torch
    >>> e = torch.eye(3, dtype=torch.float64)
    >>> # (3, 3, 3): an antipodal pair of clusters; three orthogonal tokens; one point
    >>> x = torch.stack([torch.stack([e[0], e[0], -e[0]]), e, e[[1, 1, 1]]])
    >>> n_clusters(x).tolist()
    [2, 3, 1]
    """
    if x.shape[-2] == 2:
        return np.where((_pair_overlap(x) > 1.0 - eps).cpu().numpy(), 1, 2)
    return cluster_labels(x, eps, chunk=chunk).max(axis=1) + 1


def is_collapsed(x: Tensor, eps: float = EPS, *, chunk: int | None = None) -> np.ndarray:
    """``True`` where a system has a single cluster, ``(B,)``; cost as :func:`n_clusters`.

    ``n_clusters(x, eps) == 1``.

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
        Tokens on the sphere.
    eps : float
        Cluster threshold: ``<x_i, x_j> > 1 - eps`` links two tokens (default ``EPS = 1e-2``).
    chunk : int, optional
        Rows per block (module docstring).

    Returns
    -------
    ndarray ``(B,)`` of bool

    Examples
    --------
    >>> from tokensde.metrics import is_collapsed
    >>> import torch
    >>> e = torch.eye(3, dtype=torch.float64)
    >>> # (3, 3, 3): an antipodal pair of clusters; three orthogonal tokens; one point
    >>> x = torch.stack([torch.stack([e[0], e[0], -e[0]]), e, e[[1, 1, 1]]])
    >>> is_collapsed(x).tolist()
    [False, False, True]
    """
    return n_clusters(x, eps, chunk=chunk) == 1


def _antipodal_from_labels(x: Tensor, labels: np.ndarray, eps: float) -> np.ndarray:
    out = np.zeros(x.shape[0], dtype=bool)
    for b in np.nonzero(labels.max(axis=1) == 1)[0]:
        lab = torch.as_tensor(labels[b], device=x.device)
        c0 = normalize(x[b][lab == 0].sum(0))
        c1 = normalize(x[b][lab == 1].sum(0))
        out[b] = bool((c0 * c1).sum() < -1.0 + eps)
    return out


def is_antipodal(x: Tensor, eps: float = EPS, *, chunk: int | None = None) -> np.ndarray:
    """``True`` where a system has exactly two clusters with centres at overlap ``< -1 + eps``, ``(B,)``.

    Cost as :func:`cluster_labels` (``O(B d)`` for two tokens). With ``c_k = N(sum_{i in k} x_i)``
    the normalised centres of the two clusters: ``<c_0, c_1> < -1 + eps``.

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
        Tokens on the sphere.
    eps : float
        Cluster threshold: ``<x_i, x_j> > 1 - eps`` links two tokens (default ``EPS = 1e-2``).
    chunk : int, optional
        Rows per block (module docstring).

    Returns
    -------
    ndarray ``(B,)`` of bool

    Examples
    --------
    >>> from tokensde.metrics import is_antipodal
    >>> import torch
    >>> e = torch.eye(3, dtype=torch.float64)
    >>> # (3, 3, 3): an antipodal pair of clusters; three orthogonal tokens; one point
    >>> x = torch.stack([torch.stack([e[0], e[0], -e[0]]), e, e[[1, 1, 1]]])
    >>> is_antipodal(x).tolist()
    [True, False, False]
    """
    if x.shape[-2] == 2:
        return (_pair_overlap(x) < -1.0 + eps).cpu().numpy()
    return _antipodal_from_labels(x, cluster_labels(x, eps, chunk=chunk), eps)


# --------------------------------------------------------------------------- energy, overlaps, rank
def interaction_energy(x: Tensor, beta: float, *, chunk: int | None = None) -> Tensor:
    r"""``E_beta(X) = (1/(2 n^2)) sum_ij (e^beta - e^{beta <x_i, x_j>})``, ``(B,)``; zero iff collapsed.

    Blocks of ``chunk`` rows, each summed in ``x``'s dtype and accumulated in float64;
    ``O(B n^2 d)`` time.

    .. math:: E_\beta(X) = \frac{1}{2 n^2} \sum_{i,j} \big(e^\beta - e^{\beta \langle x_i, x_j\rangle}\big)

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
        Tokens on the sphere.
    beta : float
        Inverse temperature.
    chunk : int, optional
        Rows per block (module docstring).

    Returns
    -------
    Tensor ``(B,)``
        In ``x``'s dtype and on its device.

    Examples
    --------
    >>> from tokensde.metrics import interaction_energy
    >>> import torch
    >>> e = torch.eye(3, dtype=torch.float64)
    >>> # (3, 3, 3): an antipodal pair of clusters; three orthogonal tokens; one point
    >>> x = torch.stack([torch.stack([e[0], e[0], -e[0]]), e, e[[1, 1, 1]]])
    >>> interaction_energy(x, 1.0).round(decimals=4).tolist()  # 4 (e - 1/e) / 18, (e - 1) / 3, 0
    [0.5223, 0.5728, 0.0]
    """
    energy = _scan(x, beta=float(beta), chunk=chunk).energy
    assert energy is not None
    return energy


def _mean_overlap(x: Tensor) -> Tensor:
    n = x.shape[-2]
    s = x.sum(-2, dtype=torch.float64)
    return ((s * s).sum(-1) / (n * n)).to(x.dtype)


def overlap_stats(x: Tensor, *, chunk: int | None = None) -> dict[str, Tensor]:
    r"""Mean overlap over all ordered pairs ``(i, j)`` *including* ``i = j``, i.e. ``|sum_i x_i|^2 / n^2``
    (``O(B n d)``, no Gram matrix), and minimum and maximum overlap over ``i != j`` (blocks of
    ``chunk`` rows, ``O(B n^2 d)``; ``+inf`` and ``-inf`` when ``n = 1``), per system.

    .. math::

        \bar\rho = \frac{1}{n^2} \sum_{i,j} \langle x_i, x_j\rangle = \Big|\frac1n \sum_i x_i\Big|^2, \qquad
        \min_{i \ne j} \langle x_i, x_j\rangle, \qquad \max_{i \ne j} \langle x_i, x_j\rangle

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
        Tokens on the sphere.
    chunk : int, optional
        Rows per block (module docstring).

    Returns
    -------
    dict of str to Tensor ``(B,)``
        ``mean_overlap``, ``min_overlap``, ``max_overlap``.

    Examples
    --------
    >>> from tokensde.metrics import overlap_stats
    >>> import torch
    >>> e = torch.eye(3, dtype=torch.float64)
    >>> # (3, 3, 3): an antipodal pair of clusters; three orthogonal tokens; one point
    >>> x = torch.stack([torch.stack([e[0], e[0], -e[0]]), e, e[[1, 1, 1]]])
    >>> {k: v.round(decimals=4).tolist() for k, v in overlap_stats(x).items()}
    {'mean_overlap': [0.1111, 0.3333, 1.0], 'min_overlap': [-1.0, 0.0, 1.0], 'max_overlap': [1.0, 0.0, 1.0]}
    """
    scan = _scan(x, extremes=True, chunk=chunk)
    assert scan.min_overlap is not None and scan.max_overlap is not None
    return {"mean_overlap": _mean_overlap(x), "min_overlap": scan.min_overlap, "max_overlap": scan.max_overlap}


def effective_rank(x: Tensor) -> Tensor:
    r"""``exp(-sum_k p_k log p_k)``, ``p`` the normalised eigenvalues of the Gram matrix, ``(B,)``.

    The non-zero eigenvalues of ``G = X X^T`` are those of the ``d x d`` second-moment
    matrix ``X^T X``; the smaller of the two is formed in float64 (``O(B n min(n, d)^2)``
    time, ``O(B min(n, d)^2)`` extra memory) and diagonalised. Rounding of the tiny
    eigenvalues (clamped at 0) changes the result by ``O(1e-16 n)`` at most.

    .. math:: r_{\mathrm{eff}}(X) = \exp\Big(-\sum_k p_k \log p_k\Big), \qquad p_k = \frac{s_k}{\sum_l s_l},

    ``s_k`` the eigenvalues of ``G = X X^T``; between 1 and ``min(n, d)``.

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
        Tokens.

    Returns
    -------
    Tensor ``(B,)``
        In ``x``'s dtype.

    Examples
    --------
    >>> from tokensde.metrics import effective_rank
    >>> import torch
    >>> e = torch.eye(3, dtype=torch.float64)
    >>> # (3, 3, 3): an antipodal pair of clusters; three orthogonal tokens; one point
    >>> x = torch.stack([torch.stack([e[0], e[0], -e[0]]), e, e[[1, 1, 1]]])
    >>> effective_rank(x).round(decimals=4).tolist()
    [1.0, 3.0, 1.0]
    """
    xd = x.double()
    m = xd.transpose(-1, -2) @ xd if x.shape[-2] >= x.shape[-1] else xd @ xd.transpose(-1, -2)
    s = torch.linalg.eigvalsh(m).clamp_min(0.0)
    p = s / s.sum(-1, keepdim=True)
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    return torch.exp(h).to(x.dtype)


def summary(x: Tensor, beta: float, eps: float = EPS, *, chunk: int | None = None) -> dict[str, np.ndarray]:
    """All metrics per system as NumPy arrays, the pair metrics in one blocked pass (``O(B n^2 d)``).

    The values of :func:`n_clusters`, :func:`is_collapsed`, :func:`is_antipodal`,
    :func:`interaction_energy` (``E_beta``), :func:`effective_rank` and :func:`overlap_stats`.

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
        Tokens on the sphere.
    beta : float
        Inverse temperature of the energy.
    eps : float
        Cluster threshold.
    chunk : int, optional
        Rows per block (module docstring).

    Returns
    -------
    dict of str to ndarray ``(B,)``
        ``n_clusters``, ``collapsed``, ``antipodal``, ``energy``, ``effective_rank``,
        ``mean_overlap``, ``min_overlap``, ``max_overlap``.

    Examples
    --------
    >>> from tokensde.metrics import summary
    >>> import torch
    >>> e = torch.eye(3, dtype=torch.float64)
    >>> # (3, 3, 3): an antipodal pair of clusters; three orthogonal tokens; one point
    >>> x = torch.stack([torch.stack([e[0], e[0], -e[0]]), e, e[[1, 1, 1]]])
    >>> s = summary(x, beta=1.0)
    >>> s["n_clusters"].tolist(), s["antipodal"].tolist(), s["energy"].round(4).tolist()
    ([2, 3, 1], [True, False, False], [0.5223, 0.5728, 0.0])
    """
    if x.shape[-2] == 2:
        nc, anti = n_clusters(x, eps), is_antipodal(x, eps)
        scan = _scan(x, beta=float(beta), extremes=True, chunk=chunk)
    else:
        scan = _scan(x, beta=float(beta), extremes=True, eps=eps, chunk=chunk)
        assert scan.labels is not None
        nc = scan.labels.max(axis=1) + 1
        anti = _antipodal_from_labels(x, scan.labels, eps)
    assert scan.energy is not None and scan.min_overlap is not None and scan.max_overlap is not None
    return {
        "n_clusters": nc,
        "collapsed": nc == 1,
        "antipodal": anti,
        "energy": scan.energy.cpu().numpy(),
        "effective_rank": effective_rank(x).cpu().numpy(),
        "mean_overlap": _mean_overlap(x).cpu().numpy(),
        "min_overlap": scan.min_overlap.cpu().numpy(),
        "max_overlap": scan.max_overlap.cpu().numpy(),
    }
