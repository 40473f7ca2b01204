r"""Model C: fixed attention and random MLP blocks (Agazzi et al.), as a stack and as its limit.

Discrete stack, layer ``l`` with step ``h`` (layer norm ``N(y) = y / |y|``, applied twice):

.. math::

    Y_i = N\big(X_i + h\,\mathrm{Attn}(X)_i\big), \qquad
    X_i' = N\big(Y_i + \sqrt h\, G_l(Y_i)\big), \qquad
    G_l(y) = m^{-1/2} W_l\,\phi\big(d^{-1/2} U_l y + b_U\big) + b_W,

``U`` (``m x d``), ``W`` (``d x m``) with i.i.d. ``N(0, 1)`` entries,
``b_U ~ N(0, sigma_U^2 I_m)``, ``b_W ~ N(0, sigma_W^2 I_d)``, fresh at every layer
and shared by the tokens of a system. ``Attn(X)_i = V m_{beta, A}(x_i; X)`` with
``A = K^T Q`` (default ``Q^T K = beta I``: ``A = I``) and ``V = c I`` unless a
value matrix is given.

Limit (``L, m -> infinity``): equation (*) with drift ``b_i = Attn(X)_i``
(ambient; the solver projects it) and kernel ``C_ij = kappa(<x_i, x_j>)`` of
:mod:`tokensde.theory.synchronization`, so ``C_ii = kappa(1)``.

Noise routes of the limit:

* ``exact``: the Gaussian field at the current tokens. ``C`` is formed as
  ``kappa(1) - gap(delta_ij)`` with ``delta_ij = 1 - <x_i, x_j>`` and factored
  (:func:`factor`) by Cholesky where it succeeds numerically, and by the
  eigendecomposition :func:`tokensde.noise.kernel_factor` (exact also for the
  singular kernels of coinciding tokens) for the systems where it does not; no
  jitter is added. ``dM = F xi`` with ``n x d`` normals. For two tokens the
  factor is the closed-form symmetric square root ``dM_{1,2} = a xi_1 +- b xi_2``,
  ``a^2 = kappa(1) - gap/2``, ``b^2 = gap/2`` with ``delta = |x_1 - x_2|^2 / 2``,
  which keeps the relative noise of the pair accurate arbitrarily close to collapse.
* ``features``: a random-feature field, the layer field ``G`` above with
  ``M = features`` features drawn fresh every step. Its covariance conditional
  on ``(U, b_U)`` is random, but its mean is exactly ``kappa``; since the
  features are redrawn every step, the quadratic covariation of the noise
  converges to ``int kappa dt`` and the Euler scheme converges to the same limit
  SDE for any ``M`` (only the weak error constant depends on ``M``). The field
  can be evaluated at any points from the same normals (:meth:`MLPNoise.field`),
  so different token sets (``N`` and ``N' >> N`` tokens) can share one noise.

``kappa`` is evaluated in torch on the tensors' device (:class:`TorchKernel`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..activations import Activation, ActivationLike, get_activation
from ..attention import barycenters
from ..noise import kernel_factor
from ..sphere import normalize
from ..theory.synchronization import Kernel, gauss_hermite, kernel
from .base import Model

__all__ = ["MLPNoise", "TorchKernel", "torch_kernel", "factor", "ROUTES"]

ROUTES = ("exact", "features")
TABLE_POINTS = 2048
_CHUNK = 4_000_000


def _gh_torch(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Gauss–Hermite nodes and normalised weights (``E[f(X)]``, ``X ~ N(0,1)``) as a small tensor."""
    x, w = gauss_hermite(n)
    return torch.as_tensor(x, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)


class TorchKernel:
    r"""``kappa`` of one MLP law in torch, on one device.

    Smooth activations: the Gauss–Hermite quadrature of the theory module, of
    the same order, computed in torch on the device with the nodes as a small
    tensor (:meth:`kappa_quadrature`, :meth:`gap_quadrature`), tabulates
    ``gap(delta) = kappa(1) - kappa(1 - delta)`` and its slope
    ``gap'(delta) = kappa'(1 - delta)`` on ``TABLE_POINTS + 1`` equispaced
    ``delta`` in ``[0, 2]`` (in float64). The per-step kernel is the cubic
    Hermite interpolant of this table (:meth:`gap`): a handful of operations per
    matrix entry instead of ``order^2``, error ``h^4 max|kappa''''| / 384``
    (``h = 2 / TABLE_POINTS``, below ``1e-13`` for the named activations), and
    relatively exact near ``delta = 0`` (the interpolant there is ``delta kappa'(1) (1 + O(delta))``).
    ReLU: the arc-cosine closed form, evaluated directly.

    .. math::

        \kappa(u) = \mathbb E[\phi(z_1)\phi(z_2)] + \sigma_W^2, \qquad
        \mathrm{gap}(\delta) = \kappa(1) - \kappa(1-\delta) = \tfrac12\,\mathbb E\big[(\phi(z_1) - \phi(z_2))^2\big].

    Parameters
    ----------
    k : Kernel
        The theory kernel (:func:`tokensde.theory.synchronization.kernel`).
    device : torch.device or str
        Where the tables live and the kernel is evaluated.
    points : int
        Intervals of the table on ``[0, 2]`` (smooth activations).

    Examples
    --------
    ReLU in ``d = 4``: ``kappa(1) = 1/(2d)``, ``kappa(0) = 1/(2 pi d)``, ``kappa(-1) = 0``:

    >>> import torch
    >>> from tokensde.models.mlp_noise import TorchKernel
    >>> from tokensde.theory.synchronization import kernel
    >>> relu = TorchKernel(kernel("relu", 4))
    >>> relu.kappa(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)).round(decimals=4).tolist()
    [0.125, 0.0398, 0.0]

    tanh (a smaller table than the default, to keep the example fast): the
    interpolant agrees with the quadrature, and the gap near collapse is ``kappa'(1) delta``.

    >>> tanh = TorchKernel(kernel("tanh", 4), points=256)
    >>> u = torch.tensor([-0.77, 0.123, 0.9999], dtype=torch.float64)
    >>> bool(torch.allclose(tanh.kappa(u), tanh.kappa_quadrature(u), rtol=0.0, atol=1e-10))
    True
    >>> delta = torch.tensor([1e-6], dtype=torch.float64)
    >>> round(float(tanh.gap(delta)) / 1e-6, 6) == round(tanh.kappa_prime_1, 6)
    True
    """

    def __init__(self, k: Kernel, device: torch.device | str = "cpu", points: int = TABLE_POINTS) -> None:
        self.k = k
        self.device = torch.device(device)
        self.kappa_1 = k.kappa_1
        self.kappa_prime_1 = k.kappa_prime_1
        self.v = k.v
        self.d = k.d
        self.points = points
        self.act: Activation = k.activation
        self._tables: dict[torch.dtype, tuple[Tensor, Tensor]] = {}
        if not k.closed_form:
            self._nodes = _gh_torch(k.order, torch.float64, self.device)
            h = 2.0 / points
            grid = torch.arange(points + 1, dtype=torch.float64, device=self.device) * h
            vals = self.gap_quadrature(grid)
            vals[0] = 0.0
            slopes = self._quad(grid, "grad") / self.d  # gap'(delta) = kappa'(1 - delta)
            self._table64 = (vals, slopes)
            self._h = h

    # ----------------------------------------------------------------- quadrature (torch)
    def _rs(self, delta: Tensor) -> tuple[Tensor, Tensor]:
        omr = (delta / (self.d * self.v)).clamp(0.0, 2.0)
        return 1.0 - omr, (omr * (2.0 - omr)).clamp(0.0, 1.0).sqrt()

    def _quad(self, delta: Tensor, which: str) -> Tensor:
        """At ``u = 1 - delta`` (``delta`` as the argument keeps ``u`` near 1 accurate)."""
        x, w = self._nodes
        n = x.numel()
        sq = math.sqrt(self.v)
        f = self.act.torch_grad if which == "grad" else self.act.torch_fn
        d64 = delta.to(dtype=torch.float64, device=self.device).reshape(-1)
        outer = f(sq * x)
        out = torch.empty_like(d64)
        step = max(1, _CHUNK // (n * n))
        for lo in range(0, d64.numel(), step):
            r, s = self._rs(d64[lo : lo + step])
            inner = f(sq * (r[:, None, None] * x[None, :, None] + s[:, None, None] * x[None, None, :]))
            if which == "gap":
                diff = outer[None, :, None] - inner
                out[lo : lo + step] = 0.5 * torch.einsum("kij,i,j->k", diff * diff, w, w)
            else:
                out[lo : lo + step] = torch.einsum("kij,i,j->k", inner, outer * w, w)
        return out.reshape(delta.shape)

    def kappa_quadrature(self, u: Tensor) -> Tensor:
        """``kappa(u)`` by Gauss–Hermite quadrature in torch (float64; ReLU: closed form)."""
        if self.k.closed_form:
            return self.kappa_1 - self._relu_gap(1.0 - u.to(torch.float64))
        return self._quad(1.0 - u.to(torch.float64), "fn") + self.k.sigma_w**2

    def kappa_prime_quadrature(self, u: Tensor) -> Tensor:
        """``kappa'(u) = (1/d) E[phi'(z_1) phi'(z_2)]`` in torch (float64)."""
        if self.k.closed_form:
            omr = ((1.0 - u.to(torch.float64)) / (self.d * self.v)).clamp(0.0, 2.0)
            t = 2.0 * torch.asin((0.5 * omr).sqrt())
            return (math.pi - t) / (2.0 * math.pi * self.d)
        return self._quad(1.0 - u.to(torch.float64), "grad") / self.d

    def gap_quadrature(self, delta: Tensor) -> Tensor:
        """``kappa(1) - kappa(1 - delta) = E[(phi(z_1) - phi(z_2))^2] / 2`` in torch (float64)."""
        if self.k.closed_form:
            return self._relu_gap(delta.to(torch.float64))
        return self._quad(delta.to(torch.float64), "gap")

    # ----------------------------------------------------------------- per-step evaluation
    def _relu_gap(self, delta: Tensor) -> Tensor:
        omr = (delta / (self.d * self.v)).clamp(0.0, 2.0)
        t = 2.0 * torch.asin((0.5 * omr).sqrt())
        small = t < 0.5
        ts2 = torch.where(small, t * t, torch.zeros_like(t))
        # sin t - t cos t = t^3 sum_k (-1)^(k+1) 2k t^(2k-2) / (2k+1)!, Horner in t^2 (8 terms: error < 1e-18 t^3)
        series = torch.zeros_like(t)
        for k in range(8, 0, -1):
            series = series * ts2 + ((-1) ** (k + 1) * 2 * k / math.factorial(2 * k + 1))
        stc = torch.where(small, series * t * ts2, torch.sin(t) - t * torch.cos(t))
        return (self.v / (2.0 * math.pi)) * (math.pi * omr - stc)

    def _table(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if dtype not in self._tables:
            vals, slopes = self._table64
            self._tables[dtype] = (vals.to(dtype), (slopes * self._h).to(dtype))
        return self._tables[dtype]

    def gap(self, delta: Tensor) -> Tensor:
        r"""``kappa(1) - kappa(1 - delta)`` for ``delta`` in ``[0, 2]``, any shape, dtype of ``delta``."""
        if self.k.closed_form:
            return self._relu_gap(delta)
        vals, slopes = self._table(delta.dtype)
        pos = delta.clamp(0.0, 2.0) / self._h
        idx = pos.floor().clamp(0, self.points - 1)
        t = pos - idx
        i = idx.long()
        y0, y1, m0, m1 = vals[i], vals[i + 1], slopes[i], slopes[i + 1]
        t2 = t * t
        # cubic Hermite basis: h00 = 2t^3 - 3t^2 + 1, h10 = t (1-t)^2, h01 = t^2 (3 - 2t), h11 = t^2 (t - 1)
        omt = 1.0 - t
        return y0 * (omt * omt * (1.0 + 2.0 * t)) + m0 * (t * omt * omt) + y1 * (t2 * (3.0 - 2.0 * t)) - m1 * (t2 * omt)

    def kappa(self, u: Tensor) -> Tensor:
        """``kappa(u) = kappa(1) - gap(1 - u)`` (interpolated; ReLU: the arc-cosine formula in ``u``)."""
        if self.k.closed_form:
            r = (1.0 - (1.0 - u) / (self.d * self.v)).clamp(-1.0, 1.0)
            base = (self.v / (2.0 * math.pi)) * ((1.0 - r * r).clamp_min(0.0).sqrt() + (math.pi - torch.acos(r)) * r)
            return base + self.k.sigma_w**2
        return self.kappa_1 - self.gap((1.0 - u).clamp(0.0, 2.0))


def factor(c: Tensor) -> Tensor:
    r"""A factor ``F F^T = C`` of a batch of kernel matrices ``(B, n, n)``.

    The Cholesky factor (about 15 times faster than an eigendecomposition for
    small ``n`` on a CPU) for every system where it succeeds; the
    eigendecomposition factor of :func:`tokensde.noise.kernel_factor` for the
    systems whose ``C`` is numerically singular (coinciding tokens). Both are
    exact factors, so the noise ``F xi`` has the law ``N(0, C)`` either way.

    Parameters
    ----------
    c : Tensor ``(B, n, n)``
        Symmetric positive semi-definite.

    Returns
    -------
    Tensor ``(B, n, n)``
        ``F`` with ``F F^T = C`` (lower triangular where Cholesky succeeded).

    Examples
    --------
    A positive definite kernel and a singular one (two coinciding tokens):

    >>> import torch
    >>> from tokensde.models.mlp_noise import factor
    >>> c = torch.tensor([[[2.0, 1.0], [1.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    >>> torch.linalg.cholesky_ex(c).info.tolist()  # Cholesky fails on the second
    [0, 2]
    >>> f = factor(c)
    >>> bool(torch.allclose(f @ f.mT, c)), bool(torch.equal(f[0], torch.linalg.cholesky(c[0])))
    (True, True)
    """
    low, info = torch.linalg.cholesky_ex(c)
    bad = info != 0
    if bool(bad.any()):
        low = low.clone()
        low[bad] = kernel_factor(c[bad])
    return low


_TORCH_KERNELS: dict[tuple[int, str], tuple[Kernel, TorchKernel]] = {}


def torch_kernel(k: Kernel, device: torch.device | str) -> TorchKernel:
    """The cached :class:`TorchKernel` of a theory :class:`Kernel` on ``device``.

    Examples
    --------
    >>> from tokensde.models.mlp_noise import TorchKernel, torch_kernel
    >>> from tokensde.theory.synchronization import kernel
    >>> tk = torch_kernel(kernel("relu", 4), "cpu")
    >>> isinstance(tk, TorchKernel), tk is torch_kernel(kernel("relu", 4), "cpu"), tk.kappa_1
    (True, True, 0.125)
    """
    dev = torch.device(device)
    key = (id(k), str(dev))
    hit = _TORCH_KERNELS.get(key)
    if hit is None or hit[0] is not k:
        hit = (k, TorchKernel(k, dev))
        _TORCH_KERNELS[key] = hit
    return hit[1]


@dataclass
class MLPNoise(Model):
    r"""Model C. ``beta`` may be a float or a tensor ``(B,)`` (one value per system).

    Parameters
    ----------
    beta : float or Tensor
        Inverse temperature of the attention, ``Q^T K = beta A``.
    c : float
        Value scale, ``V = c I``: ``1`` attractive, ``0`` attention off, ``-1`` repulsive.
    a : Tensor ``(d, d)``, optional
        Interaction matrix ``A = K^T Q`` (identity if omitted).
    v : Tensor ``(d, d)``, optional
        Value matrix; overrides ``c`` when given.
    width : int
        MLP width ``m`` of the discrete stack.
    activation : str, Activation or callable
        ``relu``, ``tanh``, ``silu``, ``sigmoid``, ``gelu`` or an elementwise
        callable (see :func:`tokensde.activations.make_activation`; the model
        calls it on tensors).
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U``, ``b_W``.
    route : str
        Noise of the limit: ``exact`` (Gaussian field at the tokens, ``n x d``
        normals) or ``features`` (random-feature field with ``features`` features).
    features : int
        Number of random features ``M`` of the ``features`` route.

    Notes
    -----
    States are ``(B, n, d)``. The limit is (*) with

    .. math:: b_i = \mathrm{Attn}(X)_i = V m_{\beta, A}(x_i; X), \qquad C_{ij} = \kappa(\langle x_i, x_j\rangle),

    the layer ``Y = N(X + h Attn(X))``, ``X' = N(Y + sqrt(h) G(Y))`` (:meth:`layer`, :meth:`field`).

    Examples
    --------
    ReLU in ``d = 4``: ``C_ii = kappa(1) = 1/(2d)``, and the kernel is the
    covariance of the exact noise (4000 draws at one pair):

    >>> import torch
    >>> from tokensde.models.mlp_noise import MLPNoise
    >>> from tokensde.sphere import pair_with_overlap
    >>> model = MLPNoise()
    >>> features = MLPNoise(route="features", features=16)
    >>> model.noise_shape(2, 4), model.noise_shape(2, 4, discrete=True), features.noise_shape(2, 4)
    ((2, 4), (4612,), (148,))
    >>> g = torch.Generator().manual_seed(0)
    >>> x = pair_with_overlap(1, 4, 0.2, generator=g).expand(4000, 2, 4)
    >>> c = model.kernel(x[:1])[0]
    >>> round(float(c[0, 0]), 6)
    0.125
    >>> m = model.noise(x, torch.randn(4000, 2, 4, generator=g))
    >>> bool(torch.allclose(torch.einsum("bid,bjd->ij", m, m) / (4000 * 4), c, atol=0.01))
    True
    >>> y = model.layer(x[:3], torch.randn(3, 4612, generator=g), 0.01)  # a layer of width 512
    >>> bool(torch.allclose(y.norm(dim=-1), torch.ones(3, 2)))
    True
    """

    beta: float | Tensor = 1.0
    c: float = 0.0
    a: Tensor | None = None
    v: Tensor | None = None
    width: int = 512
    activation: ActivationLike = "relu"
    sigma_u: float = 0.0
    sigma_w: float = 0.0
    route: str = "exact"
    features: int = 256

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, got {self.route!r}")
        if self.width < 1 or self.features < 1:
            raise ValueError("width and features must be >= 1")
        if self.sigma_u < 0 or self.sigma_w < 0:
            raise ValueError("sigma_u and sigma_w must be >= 0")
        self.act = get_activation(self.activation)

    # ----------------------------------------------------------------- kernel
    def theory_kernel(self, d: int) -> Kernel:
        """The theory kernel (NumPy) in dimension ``d``."""
        return kernel(self.act, d, self.sigma_u, self.sigma_w)

    def torch_kernel(self, x: Tensor) -> TorchKernel:
        """The torch kernel for ``x``'s dimension and device."""
        return torch_kernel(self.theory_kernel(x.shape[-1]), x.device)

    def kernel(self, x: Tensor) -> Tensor:
        """``C_ij = kappa(<x_i, x_j>)``, shape ``(B, n, n)``."""
        tk = self.torch_kernel(x)
        c = tk.kappa(x @ x.transpose(-1, -2))
        idx = torch.arange(x.shape[-2], device=x.device)
        c[..., idx, idx] = tk.kappa_1
        return c

    # ----------------------------------------------------------------- attention
    def drift(self, x: Tensor) -> Tensor | None:
        """``Attn(X)_i = V m_{beta, A}(x_i; X)`` (``None`` when the values vanish)."""
        if self.v is None and self.c == 0.0:
            return None
        m = barycenters(x, self.beta, self.a)
        return self.c * m if self.v is None else m @ self.v.to(m).transpose(-1, -2)

    # ----------------------------------------------------------------- noise
    def noise_size(self, d: int, m: int) -> int:
        """Normals of one layer field of width ``m``: ``U`` (``m d``), ``W`` (``d m``), ``b_U`` and ``b_W``."""
        return m * (2 * d + 1) + d

    def noise_shape(self, n: int, d: int, discrete: bool = False) -> tuple[int, ...]:
        """``(m (2d+1) + d,)`` for the stack and the features route (``m = width`` or ``features``), ``(n, d)`` else."""
        if discrete:
            return (self.noise_size(d, self.width),)
        if self.route == "features":
            return (self.noise_size(d, self.features),)
        return (n, d)

    def field(self, xi: Tensor, y: Tensor, width: int | None = None) -> Tensor:
        r"""One step's field ``G(y)`` at arbitrary points from the same normals.

        Parameters
        ----------
        xi : Tensor ``(B, m (2d+1) + d)``
            Standard normals, laid out as ``U`` (``m x d``, row major), ``W``
            (``d x m``), ``b_U / sigma_U`` (``m``), ``b_W / sigma_W`` (``d``).
        y : Tensor ``(B, P, d)``
            Points (unit vectors for the covariance to be ``kappa``); any ``P``.
        width : int, optional
            ``m`` (default: ``features``).

        Returns
        -------
        Tensor ``(B, P, d)``: ``m^{-1/2} W phi(d^{-1/2} U y + b_U) + b_W``.
        """
        bsz, _, d = y.shape
        m = self.features if width is None else width
        if xi.shape[-1] != self.noise_size(d, m):
            raise ValueError(f"xi has {xi.shape[-1]} normals per system, width {m} needs {self.noise_size(d, m)}")
        u = xi[:, : m * d].reshape(bsz, m, d)
        w = xi[:, m * d : 2 * m * d].reshape(bsz, d, m)
        b_u = xi[:, 2 * m * d : 2 * m * d + m]
        b_w = xi[:, 2 * m * d + m :]
        pre = (y @ u.transpose(-1, -2)) * (1.0 / math.sqrt(d))
        if self.sigma_u != 0.0:
            pre = pre + self.sigma_u * b_u.unsqueeze(-2)
        out = (self.act.torch_fn(pre) @ w.transpose(-1, -2)) * (1.0 / math.sqrt(m))
        if self.sigma_w != 0.0:
            out = out + self.sigma_w * b_w.unsqueeze(-2)
        return out

    def exact_noise(self, x: Tensor, xi: Tensor) -> Tensor:
        """The Gaussian field at the tokens, ``F xi`` with ``F F^T = C`` (``xi``: ``(B, n, d)``)."""
        tk = self.torch_kernel(x)
        if x.shape[-2] == 2:
            x1, x2 = x[:, 0], x[:, 1]
            delta = (0.5 * ((x1 - x2) ** 2).sum(-1, keepdim=True)).clamp(0.0, 2.0)
            g = tk.gap(delta)
            a = (tk.kappa_1 - 0.5 * g).clamp_min(0.0).sqrt()
            b = (0.5 * g).clamp_min(0.0).sqrt()
            common, diff = a * xi[:, 0], b * xi[:, 1]
            return torch.stack([common + diff, common - diff], 1)
        return factor(self.kernel(x)) @ xi

    # ----------------------------------------------------------------- limit face
    def noise(self, x: Tensor, xi: Tensor) -> Tensor:
        """The unit-time noise: the exact Gaussian field (``exact``) or the random-feature field (``features``)."""
        return self.field(xi, x) if self.route == "features" else self.exact_noise(x, xi)

    def coefficients(self, x: Tensor, xi: Tensor | None) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """``(b, C_ii, dM/sqrt(dt))`` at ``x`` for the normals ``xi``: ``b = Attn(X)``, ``C_ii = kappa(1)``."""
        k1 = self.theory_kernel(x.shape[-1]).kappa_1
        cdiag = torch.full(x.shape[:-1], k1, dtype=x.dtype, device=x.device)
        return self.drift(x), cdiag, None if xi is None else self.noise(x, xi)

    def select(self, idx: Tensor, total: int) -> MLPNoise:
        """The model for the systems ``idx`` of ``total`` (a per-system ``beta`` is indexed)."""
        beta = self.beta
        if isinstance(beta, Tensor) and beta.dim() == 1 and beta.shape[0] == total:
            return dataclasses.replace(self, beta=beta[idx.to(beta.device)])
        return self

    # ----------------------------------------------------------------- discrete face
    def layer(self, x: Tensor, xi: Tensor, h: float) -> Tensor:
        r"""One layer: ``Y = N(X + h Attn(X))``, ``X' = N(Y + sqrt(h) G(Y))``, ``G`` of width ``m`` from ``xi``."""
        att = self.drift(x)
        y = x if att is None else normalize(x + h * att)
        return normalize(y + math.sqrt(h) * self.field(xi, y, self.width))

    def describe(self) -> dict[str, Any]:
        """The scalar parameters (for manifests and tables)."""
        return {
            "beta": float(self.beta) if not isinstance(self.beta, Tensor) else "per-system",
            "c": self.c,
            "width": self.width,
            "activation": self.act.name,
            "sigma_u": self.sigma_u,
            "sigma_w": self.sigma_w,
            "route": self.route,
            "features": self.features,
        }
