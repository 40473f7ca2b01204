r"""Common noise: reproducible Gaussian streams and the exact factorisations.

The noise of equation (*) is a centred Gaussian martingale ``M`` shared by the
tokens of a system, ``E[dM_i dM_j^T] = C_ij I_d dt``. Two exact ways to draw one
increment:

* **matrix**: ``dM_i = dW a_i`` with ``dW`` a ``d x d`` matrix of independent
  ``N(0, dt)`` entries (``d^2`` normals; this is what the random layers do);
* **kernel**: ``dM = F xi sqrt(dt)`` with ``F F^T = C`` (``n x n``) and ``xi`` an
  ``n x d`` matrix of standard normals (``n d`` normals).

Both give, for every coordinate ``k``, ``(dM_1^k, ..., dM_n^k) ~ N(0, C dt)``
independently over ``k``, so they agree in law.

Reproducibility: the normals themselves are counter-based (:mod:`tokensde.rng`):
normal ``c`` of step ``k`` of system ``i`` of a stream is a function of the
stream's key (:func:`derive_seed` of the seed and the stream's name), ``i``, ``k``
and ``c`` alone, so the numbers a system receives do not depend on how the
systems are chunked, on threads or devices, nor on other cells.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "derive_seed",
    "SLAB",
    "gram_factor",
    "kernel_factor",
    "matrix_increment",
    "kernel_increment",
    "entry_law",
]

SLAB = 16
"""Steps the engine advances between two looks at the states (retiring, recording): a slab."""


def derive_seed(seed: int, *key: object) -> int:
    r"""A 63-bit seed derived from ``seed`` and a key (strings, numbers), stable across runs.

    The key's ``repr`` is hashed (SHA-256) into the spawn key of a
    :class:`numpy.random.SeedSequence` with entropy ``seed``; its first 64-bit word,
    shifted right by one bit, is the result (so it fits a signed 64-bit seed):

    .. math:: s = \mathrm{SeedSequence}(\mathrm{seed}, \mathrm{sha256}(\mathrm{key}))_0 \gg 1

    Parameters
    ----------
    seed : int
        Base seed.
    *key : object
        Strings and numbers identifying the stream.

    Returns
    -------
    int
        In ``[0, 2^63)``; the same on every machine and Python version.

    Examples
    --------
    >>> from tokensde.noise import derive_seed
    >>> derive_seed(0, "cell", 1)
    6515111212377249922
    >>> derive_seed(0, "cell", 2) != derive_seed(0, "cell", 1)
    True
    """
    digest = hashlib.sha256(repr(tuple(key)).encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(words))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def entry_law(xi: Tensor, law: str, nu: float = 5.0, p: float = 0.5) -> Tensor:
    """Map standard normals to the entries of the given law (delegates to :func:`tokensde.laws.entries`).

    ``gaussian``: identity; ``rademacher``: ``sign(xi)``; ``uniform``:
    ``sqrt(3) (2 Phi(xi) - 1)``, uniform on ``[-sqrt 3, sqrt 3]``; ``student``
    (``nu`` degrees of freedom, variance 1 for ``nu > 2``, unscaled otherwise);
    ``sparse`` (Bernoulli(``p``)-masked normal over ``sqrt(p)``); ``haar``
    (``sqrt(d) Q``, ``Q`` Haar, for ``xi`` of shape ``(..., d, d)``). All mean 0,
    variance 1 (``student`` with ``nu <= 2``: infinite); see :mod:`tokensde.laws`.

    Parameters
    ----------
    xi : Tensor ``(..., d, d)``
        Standard normals, one per entry.
    law : str
        A name of :data:`tokensde.laws.LAWS`.
    nu, p : float
        Parameters of the ``student`` and ``sparse`` laws.

    Returns
    -------
    Tensor ``(..., d, d)``
        The entries ``Z``, a deterministic function of ``xi``.

    Examples
    --------
    >>> import math
    >>> import torch
    >>> from tokensde.noise import entry_law
    >>> xi = torch.randn(100, 4, 4, generator=torch.Generator().manual_seed(0))
    >>> bool(torch.equal(entry_law(xi, "gaussian"), xi)), bool(torch.equal(entry_law(xi, "rademacher"), xi.sign()))
    (True, True)
    >>> u = entry_law(xi, "uniform")  # sqrt(3) (2 Phi(xi) - 1)
    >>> bool(torch.allclose(u, math.sqrt(3) * (2 * torch.special.ndtr(xi) - 1), atol=1e-6)), round(float(u.var()), 1)
    (True, 1.0)
    """
    from .laws import entries

    return entries(xi, law, nu, p)


def gram_factor(a: Tensor) -> Tensor:
    r"""An exact factor ``F`` (``n x n``, ``n <= d``) of the Gram matrix: ``F F^T = a a^T``.

    ``a`` has shape ``(B, n, d)``. For ``n = 2`` the closed-form Cholesky factor
    (rank deficiency handled by clamping the Schur complement at 0); otherwise
    ``F = R^T`` from the QR decomposition ``a^T = Q R``, valid also when ``a``
    is rank deficient:

    .. math:: a^\top = Q R \ \Rightarrow\ a a^\top = R^\top Q^\top Q R = R^\top R, \qquad F = R^\top.

    Parameters
    ----------
    a : Tensor ``(B, n, d)``
        Rows ``a_i`` (e.g. the attention barycenters of model A), ``n <= d``.

    Returns
    -------
    Tensor ``(B, n, n)``
        Lower triangular.

    Examples
    --------
    >>> import torch
    >>> from tokensde.noise import gram_factor
    >>> a = torch.tensor([[[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]], dtype=torch.float64)
    >>> f = gram_factor(a)
    >>> f.tolist(), torch.allclose(f @ f.mT, a @ a.mT)
    ([[[1.0, 0.0], [0.6, 0.8]]], True)
    """
    n = a.shape[-2]
    if n == 2:
        a1, a2 = a[..., 0, :], a[..., 1, :]
        c11 = (a1 * a1).sum(-1)
        c12 = (a1 * a2).sum(-1)
        c22 = (a2 * a2).sum(-1)
        l11 = c11.sqrt()
        l21 = torch.where(l11 > 0, c12 / l11.clamp_min(torch.finfo(a.dtype).tiny), 0.0)
        schur = c22 - l21 * l21
        # below eps^2 c22 the Schur complement is rounding noise; zeroing it also keeps
        # subnormal numbers (very slow on x86) out of the square root
        tol = torch.finfo(a.dtype).eps ** 2
        l22 = torch.where(schur > tol * c22, schur, 0.0).sqrt()
        zero = torch.zeros_like(l11)
        return torch.stack([torch.stack([l11, zero], -1), torch.stack([l21, l22], -1)], -2)
    r = torch.linalg.qr(a.transpose(-1, -2), mode="r").R
    return r.transpose(-1, -2)


def kernel_factor(c: Tensor) -> Tensor:
    r"""An exact factor ``F F^T = C`` of a symmetric positive semi-definite kernel matrix.

    Uses the eigendecomposition ``C = U diag(lambda) U^T``, ``F = U diag(sqrt(max(lambda, 0)))``,
    so singular kernels (equal tokens) are handled exactly:

    .. math::

        C = U \operatorname{diag}(\lambda) U^\top, \qquad F = U \operatorname{diag}\big(\sqrt{\max(\lambda, 0)}\big).

    Parameters
    ----------
    c : Tensor ``(..., n, n)``
        Symmetric positive semi-definite.

    Returns
    -------
    Tensor ``(..., n, n)``

    Examples
    --------
    >>> import torch
    >>> from tokensde.noise import kernel_factor
    >>> c = torch.ones(1, 2, 2, dtype=torch.float64)  # two equal tokens: rank 1
    >>> f = kernel_factor(c)
    >>> (f @ f.mT).round(decimals=6).tolist()
    [[[1.0, 1.0], [1.0, 1.0]]]
    """
    evals, evecs = torch.linalg.eigh(c)
    return evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)


def matrix_increment(a: Tensor, xi: Tensor) -> Tensor:
    r"""``dM_i = xi a_i`` for a ``(B, d, d)`` matrix ``xi``: returns ``a xi^T``, shape ``(B, n, d)``.

    The matrix route: with ``xi`` standard normals, ``E[dM_i dM_j^T] = <a_i, a_j> I_d``,

    .. math:: dM_i = \xi\, a_i, \qquad (dM_1^k, \dots, dM_n^k) \sim \mathcal N(0, a a^\top).

    Parameters
    ----------
    a : Tensor ``(B, n, d)``
        Rows ``a_i``.
    xi : Tensor ``(B, d, d)``
        The layer's matrix of normals.

    Returns
    -------
    Tensor ``(B, n, d)``

    Examples
    --------
    >>> import torch
    >>> from tokensde.noise import matrix_increment
    >>> a = torch.tensor([[[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]])
    >>> matrix_increment(a, 2.0 * torch.eye(3).unsqueeze(0)).tolist()
    [[[2.0, 0.0, 0.0], [1.2000000476837158, 1.600000023841858, 0.0]]]
    """
    return a @ xi.transpose(-1, -2)


def kernel_increment(factor: Tensor, xi: Tensor) -> Tensor:
    r"""``dM = F xi`` for ``F`` ``(B, n, n)`` and ``xi`` ``(B, n, d)``.

    The kernel route: with ``F F^T = C`` and ``xi`` standard normals,

    .. math:: dM = F \xi, \qquad (dM_1^k, \dots, dM_n^k) \sim \mathcal N(0, C) \text{ for every coordinate } k.

    Parameters
    ----------
    factor : Tensor ``(B, n, n)``
        ``F`` (:func:`gram_factor`, :func:`kernel_factor`).
    xi : Tensor ``(B, n, d)``
        Standard normals.

    Returns
    -------
    Tensor ``(B, n, d)``

    Examples
    --------
    >>> import torch
    >>> from tokensde.noise import kernel_increment
    >>> f = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # C = 1 1^T: both tokens get the same increment
    >>> kernel_increment(f, torch.tensor([[[0.5, -1.0], [3.0, 3.0]]])).tolist()
    [[[0.5, -1.0], [0.5, -1.0]]]
    """
    return factor @ xi
