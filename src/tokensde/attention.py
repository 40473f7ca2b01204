r"""Softmax barycenters (self-attention with values equal to the tokens).

.. math::

    m_{\beta, A}(x; X) = \sum_j w_j x_j, \qquad
    w_j = \frac{\exp(\beta \langle A x, x_j\rangle)}{\sum_l \exp(\beta \langle A x, x_l\rangle)},

self included. This is exactly
``scaled_dot_product_attention(q = x A^T, k = X, v = X, scale = beta)``, which
never materialises the ``n x n`` weights on backends with fused kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["barycenters", "usa_barycenters"]


def _queries(x: Tensor, beta: float | Tensor, a: Tensor | None) -> Tensor:
    q = x if a is None else x @ a.transpose(-1, -2)
    if isinstance(beta, Tensor):
        b = beta.to(dtype=x.dtype, device=x.device)
        q = q * b.reshape(b.shape + (1,) * (x.dim() - b.dim()))
    else:
        q = q * float(beta)
    return q


def barycenters(x: Tensor, beta: float | Tensor, a: Tensor | None = None) -> Tensor:
    r"""``m_{beta, A}(x_i; X)`` for every token: shape ``(B, n, d)``.

    .. math::

        m_{\beta, A}(x_i; X) = \sum_j w_{ij} x_j, \qquad
        w_{ij} = \frac{e^{\beta \langle A x_i, x_j\rangle}}{\sum_l e^{\beta \langle A x_i, x_l\rangle}}

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
    beta : float or Tensor ``(B,)``
        Inverse temperature, one per system if a tensor.
    a : Tensor ``(d, d)``, optional
        Interaction matrix ``A = K^T Q`` (identity if omitted).

    Returns
    -------
    Tensor ``(B, n, d)``
        The barycenters (inside the unit ball, not normalised).

    Examples
    --------
    Two orthogonal tokens at ``beta = 1``: each weighs itself by ``e / (e + 1)``.

    >>> import torch
    >>> from tokensde.attention import barycenters
    >>> x = torch.eye(2, dtype=torch.float64).unsqueeze(0)  # (1, 2, 2)
    >>> barycenters(x, 1.0).round(decimals=4).tolist()
    [[[0.7311, 0.2689], [0.2689, 0.7311]]]
    """
    # a singleton head axis: (B, 1, n, d) takes SDPA's fused CPU kernel, (B, n, d) a slow fallback
    k = x.unsqueeze(-3)
    if a is None and not isinstance(beta, Tensor):  # the scale does the multiplication by beta
        return F.scaled_dot_product_attention(k, k, k, scale=float(beta)).squeeze(-3)
    q = _queries(x, beta, a)
    return F.scaled_dot_product_attention(q.unsqueeze(-3), k, k, scale=1.0).squeeze(-3)


def usa_barycenters(x: Tensor, beta: float | Tensor, a: Tensor | None = None, chunk: int = 4096) -> Tensor:
    r"""Unnormalised variant (USA) of :func:`barycenters`.

    .. math:: m^{USA}_i = \frac1n \sum_j e^{\beta \langle A x_i, x_j\rangle} x_j

    Queries are processed in chunks of ``chunk`` so that at most
    ``chunk x n`` weights exist at once.

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
    beta : float or Tensor ``(B,)``
        Inverse temperature, one per system if a tensor.
    a : Tensor ``(d, d)``, optional
        Interaction matrix (identity if omitted).
    chunk : int
        Queries per block.

    Returns
    -------
    Tensor ``(B, n, d)``

    Examples
    --------
    >>> import torch
    >>> from tokensde.attention import usa_barycenters
    >>> x = torch.eye(2, dtype=torch.float64).unsqueeze(0)
    >>> usa_barycenters(x, 1.0).round(decimals=4).tolist()  # (e x_i + x_j) / 2
    [[[1.3591, 0.5], [0.5, 1.3591]]]
    """
    q = _queries(x, beta, a)
    n = x.shape[-2]
    out = torch.empty_like(x)
    for s in range(0, n, chunk):
        w = torch.exp(q[..., s : s + chunk, :] @ x.transpose(-1, -2))
        out[..., s : s + chunk, :] = (w @ x) / n
    return out
