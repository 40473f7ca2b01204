r"""The Lagrangian mean-field solver on any sphere ``S^{d-1}``: a deterministic quantisation of ``mu_0`` pushed forward.

With purely common noise ``mu_t`` is the push-forward of ``mu_0`` by the random flow, so on any sphere it can be
approximated by a deterministic quantisation of ``mu_0`` (``n`` points, equal weights) moved by the engine under
one noise path (:func:`lagrangian`): the points are the tokens of one system of the model, driven by a noise
field that does not depend on how many tokens it moves (model A's matrix route, model C's random-feature
field: ``noise_shape(n, d)`` independent of ``n``), so quantisations of every size see the same noise.

:func:`quasi_uniform` quantises the uniform law: equispaced angles on ``S^1``, the spherical Fibonacci lattice on
``S^2``, and on ``S^{d-1}`` (``d >= 4``) the unscrambled Sobol points of ``[0, 1)^d`` mapped through the
normal quantile function and normalised. No point set beats the rate ``N^{-1/(d-1)}`` of ``W_1`` on a
``(d-1)``-dimensional sphere for ``d - 1 >= 3`` (that is the quantisation rate of the manifold); the gain over
i.i.d. points is the rate on ``S^1`` (``N^{-1}`` against ``N^{-1/2}``) and a smaller constant elsewhere
(measured in tests/test_meanfield_spheres.py).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy import special
from scipy.stats import qmc
from torch import Tensor

from ..engine import BrownianPath, Solution, integrate

__all__ = ["quasi_uniform", "lagrangian"]


def quasi_uniform(n: int, d: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` deterministic points on ``S^{d-1}`` spread like the uniform law, ``(n, d)``.

    Examples
    --------
    >>> import torch
    >>> from tokensde.meanfield.spheres import quasi_uniform
    >>> x = quasi_uniform(256, 4)
    >>> tuple(x.shape), bool(torch.allclose(x.norm(dim=-1), torch.ones(256, dtype=x.dtype)))
    ((256, 4), True)
    >>> bool(x.mean(0).norm() < 0.05)  # balanced: the mean of the points is near the centre
    True
    """
    if n < 1 or d < 2:
        raise ValueError(f"n >= 1 and d >= 2 required, got n = {n}, d = {d}")
    if d == 2:
        th = 2.0 * math.pi * (np.arange(n) + 0.5) / n
        pts = np.stack([np.cos(th), np.sin(th)], -1)
    elif d == 3:
        i = np.arange(n) + 0.5
        z = 1.0 - 2.0 * i / n
        phi = math.pi * (3.0 - math.sqrt(5.0)) * i
        r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
        pts = np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)
    else:
        # a fixed Cranley–Patterson shift (the fractional parts of sqrt(primes)) keeps the unscrambled Sobol points'
        # balance and moves them off the centre 1/2, whose normal quantile 0 would leave a zero vector
        primes = np.array([2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89])
        shift = np.modf(np.sqrt(primes[:d] if d <= len(primes) else np.arange(2, d + 2) * 1.618))[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # balance properties hold best at powers of 2: any n is fine
            u = np.modf(qmc.Sobol(d, scramble=False).random(n) + shift)[0]
        g = special.ndtri(np.clip(u, 1e-12, 1.0 - 1e-12))
        pts = g / np.linalg.norm(g, axis=-1, keepdims=True)
    return torch.as_tensor(pts, dtype=dtype)


def lagrangian(
    model: Any, x0: Tensor, path: BrownianPath, dt: float, steps: int, solver: str = "euler", save_every: int = 0
) -> Solution:
    """The quantised ``mu_0`` (points ``x0`` ``(B, n, d)``, equal weights) pushed forward by ``model``'s flow on
    ``path`` through :func:`tokensde.engine.integrate`. ``model`` must draw a noise field that does not depend on
    the number of tokens (``noise_shape(n, d)`` the same for every ``n``): then quantisations of every size, and a
    reference of many points, are moved by one and the same noise.

    Examples
    --------
    >>> import torch
    >>> from tokensde.engine import BrownianPath
    >>> from tokensde.meanfield.spheres import lagrangian, quasi_uniform
    >>> from tokensde.models import ValueNoise
    >>> model = ValueNoise(beta=1.0, route="matrix")  # the noise dW a(x): d x d normals whatever n
    >>> path = BrownianPath(seed=0, key=("mf",), systems=1, shape=(5, 5), dtype=torch.float64)
    >>> small = lagrangian(model, quasi_uniform(64, 5)[None], path, 0.01, 20).x
    >>> large = lagrangian(model, quasi_uniform(512, 5)[None], path, 0.01, 20).x
    >>> tuple(small.shape), tuple(large.shape)
    ((1, 64, 5), (1, 512, 5))
    """
    n, d = x0.shape[-2:]
    if tuple(model.noise_shape(n, d)) != tuple(model.noise_shape(2 * n + 1, d)):
        raise ValueError("the model's noise depends on the number of tokens: use a field route (matrix, features)")
    return integrate(model, x0, path, dt, steps, solver=solver, save_every=save_every)
