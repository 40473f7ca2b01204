r"""Geometry of the unit sphere ``S^{d-1}`` and of products of spheres.

Tensors hold a batch of independent systems first: ``X`` has shape
``(B, n, d)`` (``n`` tokens in ``R^d``). Device and dtype follow the inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "normalize",
    "tangent_project",
    "retract",
    "gram",
    "uniform",
    "pair_with_overlap",
    "simplex",
]


def normalize(x: Tensor) -> Tensor:
    r"""Project onto the unit sphere along the last axis.

    .. math:: N(y) = \frac{y}{|y|}

    Parameters
    ----------
    x : Tensor ``(..., d)``
        Non-zero vectors.

    Returns
    -------
    Tensor ``(..., d)``
        Unit vectors, same device and dtype.

    Examples
    --------
    >>> import torch
    >>> from tokensde.sphere import normalize
    >>> normalize(torch.tensor([[3.0, 4.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def tangent_project(x: Tensor, v: Tensor) -> Tensor:
    r"""Projection on the tangent space at ``x`` along the last axis (``x`` on the sphere).

    .. math:: P_x v = v - \langle x, v\rangle x

    Parameters
    ----------
    x : Tensor ``(..., d)``
        Points on the sphere.
    v : Tensor ``(..., d)``
        Vectors (broadcast against ``x``).

    Returns
    -------
    Tensor ``(..., d)``
        The tangent part of ``v``, orthogonal to ``x``.

    Examples
    --------
    >>> import torch
    >>> from tokensde.sphere import tangent_project
    >>> tangent_project(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([2.0, 3.0, 0.0])).tolist()
    [0.0, 3.0, 0.0]
    """
    return v - (x * v).sum(-1, keepdim=True) * x


def retract(x: Tensor, v: Tensor) -> Tensor:
    r"""Projective retraction of a step ``v`` from ``x`` back onto the sphere.

    .. math:: R_x(v) = N(x + v) = \frac{x + v}{|x + v|}

    Parameters
    ----------
    x : Tensor ``(..., d)``
        Points on the sphere.
    v : Tensor ``(..., d)``
        Steps (tangent or not).

    Returns
    -------
    Tensor ``(..., d)``
        Unit vectors.

    Examples
    --------
    >>> import torch
    >>> from tokensde.sphere import retract
    >>> retract(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])).tolist()
    [0.7071067690849304, 0.7071067690849304]
    """
    return normalize(x + v)


def gram(x: Tensor) -> Tensor:
    r"""Gram matrix of the overlaps of the tokens.

    .. math:: G_{ij} = \langle x_i, x_j\rangle

    Parameters
    ----------
    x : Tensor ``(..., n, d)``
        Tokens.

    Returns
    -------
    Tensor ``(..., n, n)``
        Symmetric, with unit diagonal when the tokens are on the sphere.

    Examples
    --------
    >>> import torch
    >>> from tokensde.sphere import gram
    >>> gram(torch.tensor([[1.0, 0.0], [0.6, 0.8]])).tolist()
    [[1.0, 0.6000000238418579], [0.6000000238418579, 1.0]]
    """
    return x @ x.transpose(-1, -2)


def uniform(
    shape: tuple[int, ...],
    d: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Independent uniform points on ``S^{d-1}``, the normalised standard normals.

    .. math:: x = \frac{z}{|z|}, \qquad z \sim \mathcal N(0, I_d)

    Parameters
    ----------
    shape : tuple of int
        Batch shape, e.g. ``(B, n)`` for ``B`` systems of ``n`` tokens.
    d : int
        Ambient dimension.
    generator : torch.Generator, optional
        Source of randomness (the global one if omitted).
    dtype, device : optional
        Of the result (default float32, CPU).

    Returns
    -------
    Tensor ``(*shape, d)``

    Examples
    --------
    >>> import torch
    >>> from tokensde.sphere import uniform
    >>> x = uniform((16, 64), 8, generator=torch.Generator().manual_seed(0))
    >>> tuple(x.shape), round(float(x.norm(dim=-1).max()), 4)
    ((16, 64, 8), 1.0)
    """
    z = torch.randn(*shape, d, generator=generator, dtype=dtype, device=device)
    return normalize(z)


def pair_with_overlap(
    batch: int,
    d: int,
    rho: float,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""``batch`` uniformly rotated pairs with ``<x_1, x_2> = rho``: shape ``(batch, 2, d)``.

    ``x_1`` is uniform and

    .. math:: x_2 = \rho x_1 + \sqrt{1 - \rho^2}\, u

    with ``u`` uniform on the unit sphere of the tangent space at ``x_1``.

    Parameters
    ----------
    batch : int
        Number of pairs (systems).
    d : int
        Ambient dimension.
    rho : float
        Overlap, in ``[-1, 1]`` (``ValueError`` otherwise).
    generator, dtype, device : optional
        As in :func:`uniform`.

    Returns
    -------
    Tensor ``(batch, 2, d)``

    Examples
    --------
    >>> import torch
    >>> from tokensde.sphere import pair_with_overlap
    >>> x = pair_with_overlap(4, 6, 0.3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> tuple(x.shape), (x[:, 0] * x[:, 1]).sum(-1).round(decimals=6).tolist()
    ((4, 2, 6), [0.3, 0.3, 0.3, 0.3])
    """
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [-1, 1], got {rho}")
    x1 = uniform((batch,), d, generator, dtype, device)
    u = normalize(tangent_project(x1, torch.randn(batch, d, generator=generator, dtype=dtype, device=device)))
    x2 = rho * x1 + math.sqrt(max(1.0 - rho * rho, 0.0)) * u
    return torch.stack([x1, normalize(x2)], dim=1)


def simplex(
    n: int,
    d: int,
    gamma: float,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""``n <= d`` unit vectors with common overlap ``gamma`` (``gamma >= -1/(n-1)``): ``(n, d)``.

    The rows are a factor ``F`` (from the eigendecomposition) of the target Gram
    matrix, padded with zeros to ``d`` columns:

    .. math:: F F^\top = (1 - \gamma) I_n + \gamma\, \mathbf 1 \mathbf 1^\top

    Parameters
    ----------
    n : int
        Number of tokens, ``n <= d``.
    d : int
        Ambient dimension.
    gamma : float
        Common overlap, in ``[-1/(n-1), 1]`` (``ValueError`` otherwise).
    dtype, device : optional
        Of the result (default float64, CPU); built in float64.

    Returns
    -------
    Tensor ``(n, d)``

    Examples
    --------
    >>> from tokensde.sphere import gram, simplex
    >>> x = simplex(3, 5, -0.5)  # the regular triangle
    >>> gram(x).round(decimals=6).tolist()
    [[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]]
    """
    if n > d:
        raise ValueError(f"simplex needs n <= d, got n={n}, d={d}")
    if not -1.0 / max(n - 1, 1) <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [-1/(n-1), 1], got {gamma}")
    g = (1.0 - gamma) * torch.eye(n, dtype=torch.float64) + gamma * torch.ones(n, n, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(g)
    f = evecs * evals.clamp_min(0).sqrt()
    out = torch.zeros(n, d, dtype=torch.float64)
    out[:, :n] = f
    return normalize(out).to(dtype=dtype, device=device)
