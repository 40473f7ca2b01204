r"""Model B: homogenized multi-head attention (Koubbi, Geshkovski, Rigollet).

Discrete stack: ``H`` heads per layer, residual step ``eta``, weights drawn
independently for every (layer, head),

.. math::

    x_i^{l+1} = N\Big(x_i^l + \frac{\eta}{H}\sum_{h=1}^H V_h^l\, m_{\beta, A_h^l}(x_i^l; X^l)\Big),
    \qquad V = \bar V + \sigma_V G,\quad A = \bar A + \sigma_A^2 W W'^T,

``G, W, W'`` i.i.d. standard Gaussian ``d x d``; defaults ``sigma_V^2 = sigma_A^2 = 1/d``
and ``Vbar = Abar = 0`` (the Gaussian setting). Layer time ``t = eta l``.

Scales: ``varsigma^2 = sigma_V^2 (d - 1)``, ``alpha = eta varsigma^2 / H`` and the
diffusive time ``tau = alpha t``. Limits in layer time ``t`` (:class:`MultiheadLimit`):

* **diffusive**: equation (*) with drift ``b_i = Vbar E_A m_A(x_i)`` and kernel
  ``C_ij = (alpha / (d - 1)) s(x_i, x_j)``, ``s(x, y) = E_A <m_A(x), m_A(y)>``;
  in diffusive time ``tau`` the drift is ``b / alpha`` and ``C = s / (d - 1)``;
* **ballistic**: the ODE ``dX/dt = P b``;
* **modified**: the ODE ``dX/dt = P b + eta (c - (1/2) (grad P b) P b)``, the
  modified equation of the normalised residual step: with ``v = Vbar m``,
  ``N(x + eta v) = x + eta P_x v + eta^2 c(x) + O(eta^3)``,
  ``c = -<x, v> v + ((3/2) <x, v>^2 - |v|^2 / 2) x``. (Without the normalisation,
  ``c = 0`` and this is the ``b - (eta/2) grad_b b`` of the paper.)

Exact laws used to keep the random numbers few (all exact in law, and tested
against the literal layer :meth:`Multihead.literal_layer`):

* the attention scores of a head only involve ``W^T x_i`` and ``W'^T x_j``. With
  ``X^T = Q R`` (``R``: ``r x n``, ``r = min(n, d)``), ``W^T X^T = (W^T Q) R`` and
  ``W^T Q`` has i.i.d. standard entries, so the scores are drawn from
  ``2 d r`` normals instead of ``2 d^2``;
* given the heads, ``sum_h G_h m_h(x_i)`` is jointly Gaussian with covariance
  ``sum_h <m_h(x_i), m_h(x_j)> I_d``; it is drawn as ``F xi`` with
  ``F F^T = sum_h pi_h X X^T pi_h^T`` (``pi_h`` the attention matrix of head ``h``)
  and ``xi`` a ``min(n, H r) x d`` matrix of normals;
* when the heads' attention does not depend on the head (``beta = 0`` or
  ``sigma_A = 0``), all ``H`` heads share one ``m`` and the sum is ``sqrt(H) G m``.

The diffusive limit draws ``K = samples`` heads per step and uses their
empirical kernel ``(1/K) sum_k pi_k X X^T pi_k^T``, an unbiased estimate of
``s``: each step is exact in law for that kernel, and since heads are
redrawn every step the scheme converges (weakly, at the Euler rate) to the
limit with the exact ``s`` for every ``K``; ``K -> infinity`` removes the
per-step sampling error altogether.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..noise import gram_factor
from ..sphere import normalize
from .base import Model

__all__ = ["Multihead", "MultiheadLimit", "Scales", "scales", "classify_regime", "REGIMES"]

REGIMES = ("ballistic", "modified", "diffusive", "none")


@dataclass(frozen=True)
class Scales:
    """``varsigma^2 = sigma_V^2 (d-1)``, ``alpha = eta varsigma^2 / H`` and the three products of the regimes.

    Attributes
    ----------
    varsigma2 : float
        ``sigma_V^2 (d - 1)``.
    alpha : float
        ``eta varsigma^2 / H``: diffusive time per unit of layer time.
    alpha_eta_L, eta2_L, eta3_L : float
        ``alpha eta L``, ``eta^2 L`` and ``eta^3 L``, read by :func:`classify_regime`.

    Examples
    --------
    >>> from tokensde.models.multihead import Scales, scales
    >>> s = scales(eta=0.1, L=100, H=4, d=5)
    >>> isinstance(s, Scales), round(s.alpha * 0.1 * 100, 12) == round(s.alpha_eta_L, 12)
    (True, True)
    """

    varsigma2: float
    alpha: float
    alpha_eta_L: float
    eta2_L: float
    eta3_L: float


def scales(eta: float, L: int, H: int, d: int, sigma_v: float | None = None) -> Scales:
    r"""The scales of a stack of depth ``L`` with step ``eta`` and ``H`` heads.

    .. math:: \varsigma^2 = \sigma_V^2 (d-1), \quad \alpha = \eta \varsigma^2 / H .

    ``sigma_v`` defaults to ``1/sqrt(d)`` (the Gaussian setting).

    Examples
    --------
    With ``sigma_V^2 = 1/5``: ``varsigma^2 = 4/5``, ``alpha = 0.1 * 0.8 / 4 = 0.02``,
    ``alpha eta L = 0.2``, ``eta^2 L = 1``, ``eta^3 L = 0.1``:

    >>> from tokensde.models.multihead import scales
    >>> s = scales(eta=0.1, L=100, H=4, d=5)
    >>> [round(v, 12) for v in (s.varsigma2, s.alpha, s.alpha_eta_L, s.eta2_L, s.eta3_L)]
    [0.8, 0.02, 0.2, 1.0, 0.1]
    """
    sv2 = 1.0 / d if sigma_v is None else sigma_v**2
    vs2 = sv2 * (d - 1)
    alpha = eta * vs2 / H
    return Scales(vs2, alpha, alpha * eta * L, eta * eta * L, eta**3 * L)


def classify_regime(
    eta: float, L: int, H: int, d: int, sigma_v: float | None = None, small: float = 0.05, large: float = 20.0
) -> str:
    """Which limit describes ``(eta, L, H)``: ``ballistic``, ``modified``, ``diffusive`` or ``none``.

    The paper's conditions with "-> 0" read as "``<= small``" and "``O(1)``" as
    "``<= large``" (thresholds are parameters):

    * ballistic: ``alpha eta L <= small`` and ``eta^2 L <= small``;
    * modified ODE: ``alpha eta L <= small`` and ``eta^3 L <= small`` (but not ballistic);
    * diffusive: ``alpha eta L <= large`` and ``eta^3 L <= small`` (noise of order one);
    * none: ``eta^3 L > small`` or ``alpha eta L > large`` (no limit applies).

    Examples
    --------
    >>> from tokensde.models.multihead import classify_regime
    >>> [classify_regime(eta, L, H, d=8) for eta, L, H in [(0.01, 100, 1), (0.1, 20, 16), (0.1, 10, 1), (0.3, 1000, 1)]]
    ['ballistic', 'modified', 'diffusive', 'none']
    >>> classify_regime(0.1, 10, 1, d=8, small=0.1)  # alpha eta L = 0.0875 now counts as small
    'modified'
    """
    s = scales(eta, L, H, d, sigma_v)
    if s.eta3_L > small or s.alpha_eta_L > large:
        return "none"
    if s.alpha_eta_L <= small:
        return "ballistic" if s.eta2_L <= small else "modified"
    return "diffusive"


def gram_root(x: Tensor) -> Tensor:
    """``R`` (``(B, r, n)``, ``r = min(n, d)``) with ``R^T R = X X^T``, from the QR decomposition ``X^T = Q R``."""
    r = min(x.shape[-2], x.shape[-1])
    return torch.linalg.qr(x.transpose(-1, -2), mode="r").R[..., :r, :]


@dataclass
class Multihead(Model):
    r"""Model B's weight law and its discrete stack (``layer``); the step ``h`` of a layer is ``eta``.

    Parameters
    ----------
    beta : float
        Inverse temperature.
    heads : int
        Number of heads ``H`` per layer.
    sigma_v, sigma_a : float, optional
        Fluctuation scales of ``V`` and of ``A``'s factors (default ``1/sqrt(d)``).
    vbar, abar : Tensor ``(d, d)``, optional
        Means of ``V`` and ``A`` (default 0).
    route : str
        How ``sum_h G_h m_h`` is drawn: ``compressed`` (``F xi``, the fewest normals) or
        ``matrix`` (the ``d x d`` matrices ``G_h`` themselves, one per head, or one when
        attention is shared: what a pathwise coupling with a Brownian matrix needs).

    Notes
    -----
    States are ``(B, n, d)``; a layer (:meth:`layer`) is

    .. math::

        x_i^{l+1} = N\Big(x_i^l + \frac{\eta}{H}\sum_{h=1}^{H} V_h\, m_{\beta, A_h}(x_i^l; X^l)\Big),
        \qquad V = \bar V + \sigma_V G, \quad A = \bar A + \sigma_A^2 W W'^\top,

    drawn from ``noise_shape(n, d)`` normals per system: ``2 H d min(n, d)`` for
    the scores (none when attention is shared) and then the value noise.

    Examples
    --------
    >>> import torch
    >>> from tokensde.models.multihead import Multihead
    >>> from tokensde.sphere import uniform
    >>> law = Multihead(beta=1.0, heads=2)
    >>> law.noise_shape(3, 4)  # scores 2 * 2 * 4 * 3 = 48, compressed noise min(3, 2 * 3) * 4 = 12
    (60,)
    >>> Multihead(beta=0.0, heads=2).noise_shape(3, 4)  # shared attention: no scores
    (12,)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = uniform((5, 3), 4, g)
    >>> y = law.layer(x, torch.randn(5, 60, generator=g), 0.1)
    >>> tuple(y.shape), bool(torch.allclose(y.norm(dim=-1), torch.ones(5, 3)))
    ((5, 3, 4), True)
    """

    beta: float = 1.0
    heads: int = 1
    sigma_v: float | None = None
    sigma_a: float | None = None
    vbar: Tensor | None = None
    abar: Tensor | None = None
    route: str = "compressed"

    def __post_init__(self) -> None:
        if self.route not in ("compressed", "matrix"):
            raise ValueError(f"route must be compressed or matrix, got {self.route!r}")
        if self.heads < 1:
            raise ValueError(f"heads must be >= 1, got {self.heads}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    # ------------------------------------------------------------------ weight law
    def sv(self, d: int) -> float:
        return 1.0 / math.sqrt(d) if self.sigma_v is None else float(self.sigma_v)

    def sa(self, d: int) -> float:
        return 1.0 / math.sqrt(d) if self.sigma_a is None else float(self.sigma_a)

    def shared_attention(self, d: int) -> bool:
        """Whether every head attends the same way (``beta = 0`` or ``sigma_A = 0``)."""
        return self.beta == 0.0 or self.sa(d) == 0.0

    def head_normals(self, n: int, d: int, k: int) -> int:
        """Normals per system for the scores of ``k`` heads (``2 k d min(n, d)``; 0 if attention is shared)."""
        return 0 if self.shared_attention(d) else 2 * k * d * min(n, d)

    def noise_normals(self, n: int, d: int, k: int) -> int:
        """Value-noise normals per system for ``k`` heads: ``min(n, k r) d``, ``r = min(n, d)`` (or ``k d^2``)."""
        k_eff = 1 if self.shared_attention(d) else k
        if self.route == "matrix":
            return k_eff * d * d
        return min(n, k_eff * min(n, d)) * d

    def noise_shape(self, n: int, d: int, discrete: bool = False) -> tuple[int]:
        """Flat normals per system per layer: scores of ``H`` heads, then their value noise."""
        return (self.head_normals(n, d, self.heads) + self.noise_normals(n, d, self.heads),)

    # ------------------------------------------------------------------ heads, exact in law
    def needs_root(self, d: int) -> bool:
        """Whether a step uses :func:`gram_root` (random scores or the compressed value noise)."""
        return not self.shared_attention(d) or self.route == "compressed"

    def attention(self, x: Tensor, z: Tensor | None, k: int, rr: Tensor | None = None) -> Tensor:
        r"""Attention matrices ``pi_h`` of ``k`` random heads, ``(B, k, n, n)`` (``k = 1`` if shared).

        ``z`` holds the ``2 k d r`` score normals (``None`` when attention is shared).
        Scores ``<A x_i, x_j> = <Abar x_i, x_j> + sigma_A^2 <W^T x_i, W'^T x_j>``
        with ``W^T X^T = xi R`` in law (``X^T = Q R``); ``rr`` is :func:`gram_root` of ``x`` if already known.
        """
        bsz, n, d = x.shape
        if self.abar is None:
            base = x.new_zeros(bsz, n, n)
        else:
            base = (x @ self.abar.to(x).transpose(-1, -2)) @ x.transpose(-1, -2)
        if self.shared_attention(d):
            return torch.softmax(self.beta * base, dim=-1).unsqueeze(1)
        assert z is not None
        r = min(n, d)
        rr = gram_root(x) if rr is None else rr  # (B, r, n)
        z = z.reshape(bsz, k, 2, d, r)
        p = z[:, :, 0] @ rr.unsqueeze(1)  # (B, k, d, n): W^T X^T
        pp = z[:, :, 1] @ rr.unsqueeze(1)  # W'^T X^T
        scores = self.sa(d) ** 2 * (p.transpose(-1, -2) @ pp) + base.unsqueeze(1)
        return torch.softmax(self.beta * scores, dim=-1)

    def split(self, xi: Tensor, n: int, d: int, k: int) -> tuple[Tensor | None, Tensor]:
        """Split a step's flat normals into score normals and value-noise normals ``(B, rows, d)``."""
        nh = self.head_normals(n, d, k)
        zh = xi[:, :nh] if nh else None
        zv = xi[:, nh : nh + self.noise_normals(n, d, k)].reshape(xi.shape[0], -1, d)
        return zh, zv

    def value_noise(self, x: Tensor, pi: Tensor, zv: Tensor, rr: Tensor | None = None) -> Tensor:
        r"""``sum_h G_h m_h(x_i)`` for ``k`` heads with attention ``pi`` ``(B, k, n, n)``: ``(B, n, d)``.

        ``matrix`` route: ``zv`` holds the ``G_h``. ``compressed``: ``F zv`` with
        ``F F^T = sum_h pi_h X X^T pi_h^T`` and ``zv`` of shape ``(B, min(n, k r), d)``
        (the same law given the heads); ``rr`` is :func:`gram_root` of ``x`` if already known.
        """
        bsz, k, n, _ = pi.shape
        d = x.shape[-1]
        if self.route == "matrix":
            g = zv.reshape(bsz, k, d, d)
            return ((pi @ x.unsqueeze(1)) @ g.transpose(-1, -2)).sum(1)
        r = min(n, d)
        rr = gram_root(x) if rr is None else rr  # X X^T = R^T R
        f = pi @ rr.transpose(-1, -2).unsqueeze(1)  # (B, k, n, r): pi_h R^T
        f = f.transpose(1, 2).reshape(bsz, n, k * r)  # [pi_1 R^T | ... | pi_k R^T]
        if k * r > n:
            f = gram_factor(f)  # n x n factor of the same Gram matrix
        return f @ zv

    # ------------------------------------------------------------------ discrete face
    def layer(self, x: Tensor, xi: Tensor, h: float) -> Tensor:
        r"""One layer ``N(x + (eta/H) sum_h V_h m_h)`` with ``eta = h``; ``xi``: ``(B, noise_shape)``."""
        n, d = x.shape[-2:]
        zh, zv = self.split(xi, n, d, self.heads)
        rr = gram_root(x) if self.needs_root(d) else None  # one QR per layer, shared by scores and noise
        pi = self.attention(x, zh, self.heads, rr)
        m = pi @ x.unsqueeze(1)  # (B, k, n, d)
        scale = h * self.sv(d) / self.heads
        if self.shared_attention(d):
            scale *= math.sqrt(self.heads)  # sum of H i.i.d. G_h m = sqrt(H) G m in law
        y = x + scale * self.value_noise(x, pi, zv, rr)
        if self.vbar is not None:
            y = y + h * (m.mean(1) @ self.vbar.to(x).transpose(-1, -2))
        return normalize(y)

    def literal_layer(self, x: Tensor, gen: torch.Generator, h: float) -> Tensor:
        """The layer exactly as written, with full ``d x d`` matrices ``G_h, W_h, W'_h`` (reference for tests)."""
        bsz, n, d = x.shape
        g = torch.randn((bsz, self.heads, 3, d, d), generator=gen, dtype=x.dtype, device=x.device)
        sa2 = self.sa(d) ** 2
        a = sa2 * g[:, :, 1] @ g[:, :, 2].transpose(-1, -2)
        if self.abar is not None:
            a = a + self.abar.to(x)
        v = self.sv(d) * g[:, :, 0]
        if self.vbar is not None:
            v = v + self.vbar.to(x)
        xs = x.unsqueeze(1)
        scores = (xs @ a.transpose(-1, -2)) @ xs.transpose(-1, -2)  # <A x_i, x_j>
        m = torch.softmax(self.beta * scores, dim=-1) @ xs  # (B, H, n, d)
        upd = (m @ v.transpose(-1, -2)).sum(1)
        return normalize(x + (h / self.heads) * upd)


KINDS = ("diffusive", "ballistic", "modified")


@dataclass
class MultiheadLimit(Model):
    r"""Limits of model B (a :class:`Multihead` law at residual step ``eta``), in layer time ``t``.

    Parameters
    ----------
    law : Multihead
        Weight law and number of heads ``H``.
    eta : float
        Residual step; sets ``alpha = eta varsigma^2 / H`` and the modified drift.
    kind : str
        ``diffusive`` (SDE, :meth:`coefficients`), ``ballistic`` or ``modified`` (ODEs, :meth:`field`).
    samples : int
        Heads ``K`` sampled per step for the diffusive kernel (and drift when attention is random).
    time : str
        ``layer`` (time ``t``) or ``diffusive`` (time ``tau = alpha t``: drift divided by ``alpha``,
        kernel ``s / (d - 1)``).

    Notes
    -----
    The diffusive limit is (*) with

    .. math::

        b_i = \bar V\,\mathbb E_A m_A(x_i), \qquad
        C_{ij} = \frac{\alpha}{d-1}\, \mathbb E_A \langle m_A(x_i), m_A(x_j)\rangle,

    estimated from ``K`` heads per step; the ballistic and modified ODEs are given by :meth:`field`.

    Examples
    --------
    At ``beta = 0`` every token attends uniformly, ``m(x_i) = xbar`` (the mean
    token), so ``C_ij = alpha |xbar|^2 / (d - 1)`` for all ``i, j``:

    >>> import torch
    >>> from tokensde.models.multihead import Multihead, MultiheadLimit
    >>> from tokensde.sphere import uniform
    >>> g = torch.Generator().manual_seed(0)
    >>> x = uniform((5, 3), 4, g)
    >>> lim = MultiheadLimit(Multihead(beta=0.0, heads=4), eta=0.1)
    >>> xbar2 = (x.mean(1) ** 2).sum(-1)
    >>> c = lim.kernel(x)
    >>> round(lim.alpha(4), 6), bool(torch.allclose(c, (lim.alpha(4) / 3 * xbar2)[:, None, None].expand(5, 3, 3)))
    (0.01875, True)
    >>> b, cdiag, m = lim.coefficients(x, torch.randn(5, *lim.noise_shape(3, 4), generator=g))
    >>> b is None, bool(torch.allclose(cdiag, torch.diagonal(c, dim1=-2, dim2=-1))), tuple(m.shape)
    (True, True, (5, 3, 4))

    The ballistic limit with ``Vbar = I`` moves every token towards the mean, ``field = P_x xbar``:

    >>> bal = MultiheadLimit(Multihead(beta=0.0, vbar=torch.eye(4)), kind="ballistic")
    >>> xbar = x.mean(1, keepdim=True)
    >>> bool(torch.allclose(bal.field(x), xbar - (x * xbar).sum(-1, keepdim=True) * x, atol=1e-6))
    True
    """

    law: Multihead
    eta: float = 0.1
    kind: str = "diffusive"
    samples: int = 8
    time: str = "layer"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.time not in ("layer", "diffusive"):
            raise ValueError(f"time must be layer or diffusive, got {self.time!r}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")

    def alpha(self, d: int) -> float:
        return scales(self.eta, 1, self.law.heads, d, self.law.sv(d)).alpha

    def linear_noise(self, n: int, d: int) -> bool:
        """Whether the noise is one fixed linear map of the normals: matrix route and shared attention."""
        return self.law.route == "matrix" and self.law.shared_attention(d)

    def noise_shape(self, n: int, d: int, discrete: bool = False) -> tuple[int]:
        k = self.samples
        return (self.law.head_normals(n, d, k) + self.law.noise_normals(n, d, k),)

    def coefficients(self, x: Tensor, xi: Tensor | None) -> tuple[Tensor | None, Tensor, Tensor]:
        r"""``(b, C_ii, dM / sqrt(dt))`` of the diffusive limit from ``K`` sampled heads.

        In layer time, ``C = (alpha/(d-1)) (1/K) sum_k pi_k X X^T pi_k^T`` and ``b = Vbar (1/K) sum_k m_k``.
        """
        n, d = x.shape[-2:]
        if xi is None:
            raise ValueError("the diffusive limit of model B draws its heads from the step's normals")
        zh, zv = self.law.split(xi, n, d, self.samples)
        rr = gram_root(x) if self.law.needs_root(d) else None  # one QR per step, shared by scores and noise
        pi = self.law.attention(x, zh, self.samples, rr)
        k = pi.shape[1]
        m = pi @ x.unsqueeze(1)  # (B, k, n, d)
        c = self._coefficient(d)
        cdiag = (c / k) * (m * m).sum(-1).sum(1)
        noise = math.sqrt(c / k) * self.law.value_noise(x, pi, zv, rr)
        b = None
        if self.law.vbar is not None:
            b = m.mean(1) @ self.law.vbar.to(x).transpose(-1, -2)
            if self.time == "diffusive":
                b = b / self.alpha(d)
        return b, cdiag, noise

    def _coefficient(self, d: int) -> float:
        return 1.0 / (d - 1) if self.time == "diffusive" else self.alpha(d) / (d - 1)

    def drift(self, x: Tensor) -> Tensor | None:
        """``b_i = Vbar m(x_i)`` for deterministic attention (divided by ``alpha`` in diffusive time)."""
        if self.law.vbar is None:
            return None
        b = self.mean_velocity(x)
        return b / self.alpha(x.shape[-1]) if self.time == "diffusive" else b

    def kernel(self, x: Tensor) -> Tensor:
        """``C = c pi X X^T pi^T`` for deterministic attention (``c = alpha/(d-1)``, ``1/(d-1)`` in diffusive time)."""
        d = x.shape[-1]
        if not self.law.shared_attention(d):
            raise ValueError("the kernel in closed form needs deterministic attention: sigma_a = 0 or beta = 0")
        m = self.law.attention(x, None, 1)[:, 0] @ x
        return self._coefficient(d) * (m @ m.transpose(-1, -2))

    def noise(self, x: Tensor, xi: Tensor) -> Tensor:
        """The unit-time noise of the ``samples`` heads drawn from ``xi`` (see :meth:`coefficients`)."""
        return self.coefficients(x, xi)[2]

    # ------------------------------------------------------------------ ODE limits
    def mean_velocity(self, x: Tensor) -> Tensor:
        """``v_i = Vbar m(x_i)`` for deterministic attention (ambient, ``(B, n, d)``)."""
        d = x.shape[-1]
        if not self.law.shared_attention(d):
            raise ValueError("the ODE limits need deterministic attention: sigma_a = 0 or beta = 0")
        if self.law.vbar is None:
            return torch.zeros_like(x)
        pi = self.law.attention(x, None, 1)[:, 0]
        return (pi @ x) @ self.law.vbar.to(x).transpose(-1, -2)

    def _ballistic(self, x: Tensor) -> Tensor:
        v = self.mean_velocity(x)
        return v - (v * x).sum(-1, keepdim=True) * x

    def field(self, x: Tensor) -> Tensor:
        r"""The ODE's vector field (tangent, ``(B, n, d)``): ``P b`` or ``P b + eta (c - (1/2) (grad P b) P b)``."""
        b = self._ballistic(x)
        if self.kind == "ballistic":
            return b
        if self.kind != "modified":
            raise ValueError("field() is for the ballistic and modified limits")
        v = self.mean_velocity(x)
        a = (x * v).sum(-1, keepdim=True)
        c = -a * v + (1.5 * a * a - 0.5 * (v * v).sum(-1, keepdim=True)) * x
        jb = torch.func.jvp(self._ballistic, (x,), (b,))[1]
        return b + self.eta * (c - 0.5 * jb)
