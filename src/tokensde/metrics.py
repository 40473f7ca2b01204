r"""Metrics of token configurations: clusters, antipodal pairs, energy, rank.

Definitions (MODELS.md), with their parameters:

* clusters: connected components of the graph ``<x_i, x_j> > 1 - eps``
  (``eps = 1e-2``);
* *collapsed*: one cluster; *antipodal*: exactly two clusters whose centres
  (normalised means) have overlap ``< -1 + eps``;
* interaction energy ``E_beta(X) = (1/(2 n^2)) sum_ij (e^beta - e^{beta <x_i, x_j>})``;
* effective rank of the Gram matrix ``G``: ``exp(H(p))`` with ``p`` its
  eigenvalues divided by their sum (Roy & Vetterli), between 1 and ``min(n, d)``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from .sphere import gram, normalize

__all__ = [
    "EPS",
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


def cluster_labels(x: Tensor, eps: float = EPS) -> np.ndarray:
    """Cluster label of every token, ``(B, n)`` int array (components of ``<x_i, x_j> > 1 - eps``)."""
    g = (gram(x) > 1.0 - eps).cpu().numpy()
    labels = np.empty(g.shape[:2], dtype=np.int64)
    for b in range(g.shape[0]):
        labels[b] = connected_components(g[b], directed=False)[1]
    return labels


def n_clusters(x: Tensor, eps: float = EPS) -> np.ndarray:
    """Number of clusters per system, ``(B,)``."""
    if x.shape[-2] == 2:
        rho = (x[:, 0] * x[:, 1]).sum(-1)
        return np.where((rho > 1.0 - eps).cpu().numpy(), 1, 2)
    return cluster_labels(x, eps).max(axis=1) + 1


def is_collapsed(x: Tensor, eps: float = EPS) -> np.ndarray:
    """``True`` where a system has a single cluster, ``(B,)``."""
    return n_clusters(x, eps) == 1


def is_antipodal(x: Tensor, eps: float = EPS) -> np.ndarray:
    """``True`` where a system has exactly two clusters with centres at overlap ``< -1 + eps``."""
    if x.shape[-2] == 2:
        rho = (x[:, 0] * x[:, 1]).sum(-1)
        return (rho < -1.0 + eps).cpu().numpy()
    labels = cluster_labels(x, eps)
    out = np.zeros(x.shape[0], dtype=bool)
    for b in np.nonzero(labels.max(axis=1) == 1)[0]:
        lab = torch.as_tensor(labels[b], device=x.device)
        c0 = normalize(x[b][lab == 0].sum(0))
        c1 = normalize(x[b][lab == 1].sum(0))
        out[b] = bool((c0 * c1).sum() < -1.0 + eps)
    return out


def interaction_energy(x: Tensor, beta: float) -> Tensor:
    r"""``E_beta(X) = (1/(2 n^2)) sum_ij (e^beta - e^{beta <x_i, x_j>})``, ``(B,)``; zero iff collapsed."""
    g = gram(x)
    n = x.shape[-2]
    return (np.exp(beta) - torch.exp(beta * g)).sum((-1, -2)) / (2.0 * n * n)


def overlap_stats(x: Tensor) -> dict[str, Tensor]:
    """Mean, minimum and maximum pairwise overlap (``i != j``) per system."""
    g = gram(x)
    n = x.shape[-2]
    mask = ~torch.eye(n, dtype=torch.bool, device=x.device)
    off = g[:, mask]
    return {
        "mean_overlap": g.mean((-1, -2)),
        "min_overlap": off.min(-1).values,
        "max_overlap": off.max(-1).values,
    }


def effective_rank(x: Tensor) -> Tensor:
    r"""``exp(-sum_k p_k log p_k)``, ``p`` the normalised eigenvalues of the Gram matrix, ``(B,)``."""
    s = torch.linalg.svdvals(x.double()) ** 2
    p = s / s.sum(-1, keepdim=True)
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    return torch.exp(h).to(x.dtype)


def summary(x: Tensor, beta: float, eps: float = EPS) -> dict[str, np.ndarray]:
    """All metrics per system as NumPy arrays."""
    out = {
        "n_clusters": n_clusters(x, eps),
        "collapsed": is_collapsed(x, eps),
        "antipodal": is_antipodal(x, eps),
        "energy": interaction_energy(x, beta).cpu().numpy(),
        "effective_rank": effective_rank(x).cpu().numpy(),
    }
    out.update({k: v.cpu().numpy() for k, v in overlap_stats(x).items()})
    return out
