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
    r"""``N(y) = y / |y|`` along the last axis."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def tangent_project(x: Tensor, v: Tensor) -> Tensor:
    r"""``P_x v = v - <x, v> x`` along the last axis (``x`` on the sphere)."""
    return v - (x * v).sum(-1, keepdim=True) * x


def retract(x: Tensor, v: Tensor) -> Tensor:
    r"""Projective retraction ``N(x + v)``."""
    return normalize(x + v)


def gram(x: Tensor) -> Tensor:
    r"""Overlaps ``<x_i, x_j>``: shape ``(..., n, n)``."""
    return x @ x.transpose(-1, -2)


def uniform(
    shape: tuple[int, ...],
    d: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Independent uniform points on ``S^{d-1}``: shape ``(*shape, d)``."""
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

    ``x_1`` is uniform and ``x_2 = rho x_1 + sqrt(1 - rho^2) u`` with ``u``
    uniform on the unit sphere of the tangent space at ``x_1``.
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

    Built as ``sqrt(1-gamma) e_i + c 1`` with ``c`` solving the overlap equation,
    i.e. the Cholesky factor of ``(1-gamma) I + gamma 1 1^T`` padded with zeros.
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
