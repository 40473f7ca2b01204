r"""Model C (fixed attention, random MLP): the kernel ``kappa`` and the synchronization constants.

The MLP field of a layer, ``G(y) = m^{-1/2} W phi(d^{-1/2} U y + b_U) + b_W``, is
(for ``|y| = 1``) a centred field with covariance ``E[G(y) G(y')^T] = kappa(<y, y'>) I_d``,

.. math::

    \kappa(u) = \mathbb E[\phi(z_1)\phi(z_2)] + \sigma_W^2, \qquad
    (z_1, z_2) \sim \mathcal N\Big(0, \begin{pmatrix} v & c \\ c & v \end{pmatrix}\Big), \quad
    v = \tfrac1d + \sigma_U^2, \quad c = \tfrac ud + \sigma_U^2 .

Computation. With ``r = c/v``, ``s = sqrt(1 - r^2)`` and ``X, Y`` independent
standard normals, ``z_1 = sqrt(v) X``, ``z_2 = sqrt(v) (r X + s Y)``, and

.. math::

    \mathbb E[\phi(z_1)\phi(z_2)] \approx \sum_{i,j} w_i w_j\,
        \phi(\sqrt v\, x_i)\,\phi\big(\sqrt v (r x_i + s x_j)\big)

with the Gauss–Hermite rule ``(x_i, w_i)`` of the weight ``e^{-x^2/2}`` (weights
normalised to sum 1). The rule is exact for polynomials of degree ``2n - 1``; for
an activation analytic in a strip (tanh, sigmoid, silu: poles at distance
``pi/2`` or ``pi`` from the real axis) the error decays like
``exp(-c sqrt(n) / sqrt(v))``. The order is therefore chosen per kernel
(:attr:`Kernel.order`): doubled from 32 (32, 48, 64, 96, ..., 512) until two
successive orders agree to ``1e-13`` (relative to ``kappa(1)``) at
``u = -1, 0, 1`` for both ``kappa`` and ``kappa'``; the finer of the two is
used. tanh, whose poles are the nearest, needs 48 at ``d >= 64``, 96 at
``d = 4``, 256 at ``v = 1`` and 512 at ``v = 1.5`` (``d = 2``,
``sigma_U = 1``); sigmoid, silu and gelu at most 128 there. A kernel that does
not converge by 512 emits a warning stating the difference reached. Nodes and
weights come from :func:`scipy.special.roots_hermitenorm`, stable at these
orders.

ReLU is not smooth and is treated exactly by the arc-cosine kernel (Cho & Saul):

.. math::

    \mathbb E[\mathrm{relu}(z_1)\,\mathrm{relu}(z_2)] = \frac{v}{2\pi}\big(\sin t + (\pi - t)\cos t\big),
    \qquad \cos t = r, \qquad
    \kappa'(u) = \frac{1}{d}\,\frac{\pi - t}{2\pi}.

Derivative (Price's theorem, ``dc/du = 1/d``):
``kappa'(u) = (1/d) E[phi'(z_1) phi'(z_2)]``, by the same quadrature.

Near collapse the kernel enters through ``kappa(1) - kappa(u)``, which the
difference of two quadratures would resolve only to ``1e-16`` absolutely. It
is computed as its own quadrature (:meth:`Kernel.gap`),

.. math::

    \kappa(1) - \kappa(1 - \delta) = \tfrac12\,\mathbb E\big[(\phi(z_1) - \phi(z_2))^2\big],

accurate relative to its size (relative error of order ``1e-16 / sqrt(delta)``,
from rounding in ``phi(z_1) - phi(z_2)``; ReLU: a cancellation-free
rearrangement of the closed form). All quadratures take ``delta = 1 - u`` as
their argument, so that ``u`` next to 1 loses no digits.

Synchronization constants (docs/models.md, model C):

.. math::

    \lambda_1 = \tfrac{d-3}{2}\kappa'(1) - \tfrac{d-1}{2}\kappa(1), \qquad
    \bar\lambda = (d-1)\kappa'(1) - (d-3)\kappa(1), \qquad
    \bar\lambda' = -\inf_{u\in[-1,1)} F(u),

.. math::

    F(u) = \frac{\beta e^{\beta u} G(u)}{e^\beta - e^{\beta u}}, \quad
    G(u) = \kappa(u)\big(d - 2 + u^2 - \beta u (1 - u^2)\big) + \kappa(1)\big(\beta(1 - u^2) - (d-1) u\big).

Everything is float64 NumPy/SciPy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache

import numpy as np
from scipy import optimize, special

from ..activations import Activation, ActivationLike, get_activation
from .two_point import TwoPointMotion

__all__ = [
    "Kernel",
    "kernel",
    "kappa",
    "kappa_prime",
    "kappa_1",
    "kappa_prime_1",
    "lambda_1",
    "lambda_bar",
    "F",
    "G",
    "lambda_bar_prime",
    "energy_rate",
    "is_odd",
    "attention_overlap_drift",
    "two_point_motion",
    "SyncConstants",
    "constants",
    "ORDERS",
    "gauss_hermite",
]

Array = np.ndarray
Fn = Callable[[np.ndarray], np.ndarray]
ORDERS = (32, 48, 64, 96, 128, 192, 256, 384, 512)
ORDER_TOL = 1e-13
_CHUNK = 2_000_000  # quadrature nodes x points evaluated at once


@cache
def gauss_hermite(n: int) -> tuple[Array, Array]:
    r"""Gauss–Hermite nodes and weights for ``E[f(X)]``, ``X ~ N(0, 1)`` (weights sum to 1).

    .. math:: \mathbb E[f(X)] \approx \sum_{i=1}^n w_i f(x_i), \quad \text{exact for polynomials of degree} \le 2n - 1

    Parameters
    ----------
    n : int
        Order (cached per order).

    Returns
    -------
    x, w : ndarray ``(n,)``

    Examples
    --------
    >>> from tokensde.theory.synchronization import gauss_hermite
    >>> x, w = gauss_hermite(32)
    >>> round(float(w.sum()), 12), round(float((w * x**4).sum()), 10)  # E[X^4] = 3
    (1.0, 3.0)
    """
    x, w = special.roots_hermitenorm(n)  # stable for large n (NumPy's hermegauss overflows beyond ~300)
    return x, w / w.sum()


def _series_sin_minus_tcos(t: Array) -> Array:
    r"""``sin t - t cos t = sum_{k>=1} (-1)^{k+1} 2k t^{2k+1} / (2k+1)!`` without cancellation for small ``t``."""
    out = np.zeros_like(t)
    term_t = t**3
    fact = 6.0  # (2k+1)! at k = 1
    for k in range(1, 12):
        out += (-1) ** (k + 1) * 2 * k * term_t / fact
        term_t = term_t * t * t
        fact *= (2 * k + 2) * (2 * k + 3)
    return out


@dataclass(frozen=True, eq=False)
class Kernel:
    r"""The kernel ``kappa`` of one MLP law: activation, dimension and bias scales.

    Parameters
    ----------
    activation : Activation
        Resolved activation (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.

    Use :func:`kernel` to get a cached instance.

    .. math::

        \kappa(u) = \mathbb E[\phi(z_1)\phi(z_2)] + \sigma_W^2, \quad
        (z_1, z_2) \sim \mathcal N\Big(0, \begin{pmatrix} v & c \\ c & v \end{pmatrix}\Big), \quad
        v = \tfrac1d + \sigma_U^2, \quad c = \tfrac ud + \sigma_U^2

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.synchronization import kernel
    >>> k = kernel("relu", 4)  # the closed-form arc-cosine kernel
    >>> k.closed_form, k.v, k.kappa(np.array([-1.0, 0.0, 1.0])).round(4).tolist()
    (True, 0.25, [0.0, 0.0398, 0.125])
    >>> k.kappa_1, k.kappa_prime_1, k.lambda_1, k.lambda_bar
    (0.125, 0.125, -0.125, 0.25)
    >>> t = kernel("tanh", 4)  # Gauss–Hermite quadrature
    >>> t.order, round(t.kappa_1, 6), t.gap(np.array([1e-8])).round(14).tolist()
    (96, 0.173516, [1.79345e-09])
    """

    activation: Activation
    d: int
    sigma_u: float = 0.0
    sigma_w: float = 0.0

    def __post_init__(self) -> None:
        if self.d < 2:
            raise ValueError(f"d must be >= 2, got {self.d}")
        if self.sigma_u < 0 or self.sigma_w < 0:
            raise ValueError("sigma_u and sigma_w must be >= 0")

    @property
    def v(self) -> float:
        """Variance of the pre-activation, ``1/d + sigma_U^2``."""
        return 1.0 / self.d + self.sigma_u**2

    @property
    def closed_form(self) -> bool:
        """Whether the kernel is the exact arc-cosine one (ReLU)."""
        return self.activation.name == "relu" and not self.activation.smooth

    # ----------------------------------------------------------------- correlation
    def _rs(self, delta: Array) -> tuple[Array, Array]:
        """``(r, s)`` from ``delta = 1 - u``: ``1 - r = delta / (d v)``, ``s = sqrt(1 - r^2)``.

        Taking ``delta`` (not ``u``) as the argument keeps ``s`` accurate for ``u`` next to 1.
        """
        omr = np.clip(delta / (self.d * self.v), 0.0, 2.0)
        r = 1.0 - omr
        s = np.sqrt(np.clip(omr * (2.0 - omr), 0.0, 1.0))
        return r, s

    # ----------------------------------------------------------------- quadrature
    def _quad(self, delta: Array, n: int, which: str) -> Array:
        """At ``u = 1 - delta``: ``E[f(z_1) f(z_2)]`` (``fn``, ``grad``) or ``E[(phi(z_1) - phi(z_2))^2]/2``."""
        x, w = gauss_hermite(n)
        sq = math.sqrt(self.v)
        delta = np.asarray(delta, dtype=float)
        flat = delta.reshape(-1)
        out = np.empty(flat.shape)
        f = self.activation.np_grad if which == "grad" else self.activation.np_fn
        outer = f(sq * x)
        step = max(1, _CHUNK // (n * n))
        for lo in range(0, flat.size, step):
            r, s = self._rs(flat[lo : lo + step])
            z2 = sq * (r[:, None, None] * x[None, :, None] + s[:, None, None] * x[None, None, :])
            inner = f(z2)
            if which == "gap":
                diff = outer[None, :, None] - inner
                vals = 0.5 * np.einsum("kij,i,j->k", diff * diff, w, w)
            else:
                vals = np.einsum("kij,i,j->k", inner, outer * w, w)
            out[lo : lo + step] = vals
        return out.reshape(delta.shape)

    @cached_property
    def order(self) -> int:
        """Gauss–Hermite order per dimension (``0`` for the closed-form ReLU kernel)."""
        if self.closed_form:
            return 0
        pts = np.array([2.0, 1.0, 0.0])  # u = -1, 0, 1
        prev = None
        gap = math.inf
        for n in ORDERS:
            cur = np.concatenate([self._quad(pts, n, "fn"), self.v * self._quad(pts, n, "grad")])
            if prev is not None:
                scale = max(abs(cur[2]), abs(cur[5]), 1e-300)
                gap = float(np.max(np.abs(cur - prev)))
                if gap <= ORDER_TOL * scale:
                    return n
            prev = cur
        warnings.warn(
            f"Gauss–Hermite quadrature for {self.activation.name} (d={self.d}, sigma_u={self.sigma_u}) "
            f"not converged at order {ORDERS[-1]}: orders {ORDERS[-2]} and {ORDERS[-1]} differ by {gap:.2e}",
            RuntimeWarning,
            stacklevel=2,
        )
        return ORDERS[-1]

    # ----------------------------------------------------------------- kernel
    def _relu_t(self, delta: Array) -> Array:
        omr = np.clip(delta / (self.d * self.v), 0.0, 2.0)
        return 2.0 * np.arcsin(np.sqrt(0.5 * omr))  # arccos(r), accurate near r = 1

    def kappa(self, u: Array | float) -> Array:
        r"""``kappa(u) = E[phi(z_1) phi(z_2)] + sigma_W^2``, vectorised over ``u`` in ``[-1, 1]``."""
        delta = 1.0 - np.asarray(u, dtype=float)
        if self.closed_form:
            t = self._relu_t(delta)
            base = self.v / (2.0 * math.pi) * (np.sin(t) + (math.pi - t) * np.cos(t))
        else:
            base = self._quad(delta, self.order, "fn")
        return base + self.sigma_w**2

    def kappa_prime(self, u: Array | float) -> Array:
        r"""``kappa'(u) = (1/d) E[phi'(z_1) phi'(z_2)]`` (ReLU: ``(pi - t) / (2 pi d)``)."""
        delta = 1.0 - np.asarray(u, dtype=float)
        if self.closed_form:
            t = self._relu_t(delta)
            return (math.pi - t) / (2.0 * math.pi * self.d)
        return self._quad(delta, self.order, "grad") / self.d

    def gap(self, delta: Array | float) -> Array:
        r"""``kappa(1) - kappa(1 - delta) = E[(phi(z_1) - phi(z_2))^2] / 2``, accurate relative to its size.

        ReLU: ``(v / 2 pi) (pi (1 - r) - (sin t - t cos t))`` with a series for ``sin t - t cos t``
        when ``t < 1/2``.
        """
        delta = np.asarray(delta, dtype=float)
        if self.closed_form:
            omr = np.clip(delta / (self.d * self.v), 0.0, 2.0)
            t = 2.0 * np.arcsin(np.sqrt(0.5 * omr))
            small = t < 0.5
            stc = np.where(small, _series_sin_minus_tcos(np.where(small, t, 0.0)), np.sin(t) - t * np.cos(t))
            return self.v / (2.0 * math.pi) * (math.pi * omr - stc)
        return self._quad(delta, self.order, "gap")

    def gap_over_delta(self, delta: Array | float) -> Array:
        """``(kappa(1) - kappa(1 - delta)) / delta``, equal to ``kappa'(1)`` at ``delta = 0``."""
        delta = np.asarray(delta, dtype=float)
        safe = np.where(delta > 0, delta, 1.0)
        return np.where(delta > 0, self.gap(safe) / safe, self.kappa_prime_1)

    # ----------------------------------------------------------------- constants
    @cached_property
    def kappa_1(self) -> float:
        """``kappa(1) = E[phi(z)^2] + sigma_W^2``, ``z ~ N(0, v)``."""
        return float(self.kappa(np.array([1.0]))[0])

    @cached_property
    def kappa_prime_1(self) -> float:
        """``kappa'(1) = (1/d) E[phi'(z)^2]``."""
        return float(self.kappa_prime(np.array([1.0]))[0])

    @property
    def lambda_1(self) -> float:
        r"""Distance exponent at collapse, ``((d-3)/2) kappa'(1) - ((d-1)/2) kappa(1)``."""
        return 0.5 * (self.d - 3) * self.kappa_prime_1 - 0.5 * (self.d - 1) * self.kappa_1

    @property
    def lambda_bar(self) -> float:
        r"""Coercivity constant, ``(d-1) kappa'(1) - (d-3) kappa(1)``."""
        return (self.d - 1) * self.kappa_prime_1 - (self.d - 3) * self.kappa_1

    # ----------------------------------------------------------------- energy rate
    def G(self, u: Array | float, beta: float) -> Array:
        r"""``G(u) = kappa(u)(d - 2 + u^2 - beta u (1 - u^2)) + kappa(1)(beta (1 - u^2) - (d - 1) u)``."""
        u = np.asarray(u, dtype=float)
        return self.kappa(u) * (self.d - 2 + u * u - beta * u * (1 - u * u)) + self.kappa_1 * (
            beta * (1 - u * u) - (self.d - 1) * u
        )

    def F_delta(self, delta: Array | float, beta: float) -> Array:
        r"""``F(1 - delta)`` in a form without cancellation, equal to ``-lambda_bar`` at ``delta = 0``.

        With ``u = 1 - delta``, ``G(u) = delta kappa(1) [(d - 2 - u) + beta delta (1 + u)]
        - gap(delta) (d - 2 + u^2 - beta u delta (1 + u))`` and

        .. math::

            F(u) = e^{-\beta\delta}\,\frac{G(u)}{\delta}\,\frac{\beta\delta}{1 - e^{-\beta\delta}},

        which never forms ``e^beta`` (no overflow for large ``beta``) and divides
        ``G`` by ``delta`` analytically.
        """
        delta = np.asarray(delta, dtype=float)
        u = 1.0 - delta
        d = self.d
        g_over = self.kappa_1 * ((d - 2 - u) + beta * delta * (1 + u)) - self.gap_over_delta(delta) * (
            d - 2 + u * u - beta * u * delta * (1 + u)
        )
        x = beta * delta
        safe = np.where(x > 0, x, 1.0)
        q = np.where(x > 0, safe / -np.expm1(-safe), 1.0)
        return np.exp(-x) * g_over * q

    def F(self, u: Array | float, beta: float) -> Array:
        r"""``F(u) = beta e^{beta u} G(u) / (e^beta - e^{beta u})`` on ``[-1, 1]`` (limit ``-lambda_bar`` at 1)."""
        return self.F_delta(1.0 - np.asarray(u, dtype=float), beta)

    def energy_rate(self, beta: float, grid: int = 2001) -> tuple[float, float]:
        r"""``(lambda_bar', u_*)`` with ``lambda_bar' = -inf_{[-1,1)} F = -F(u_*)``.

        ``F`` is evaluated on a dense grid (``grid`` points uniform in ``u`` on
        ``[-1, 1)``, 80 points geometric in ``1 - u`` from ``1e-10`` to ``1e-2``, and
        the limit ``-lambda_bar`` at ``u = 1``); the best grid point is refined by
        bounded Brent minimisation between its neighbours (``xatol = 1e-12``).
        ``u_* = 1`` means the infimum is the limit at collapse.
        """
        deltas = np.unique(np.concatenate([[0.0], np.geomspace(1e-10, 1e-2, 80), 1.0 - np.linspace(-1.0, 1.0, grid)]))
        vals = self.F_delta(deltas, beta)
        k = int(np.argmin(vals))
        best_d, best_v = float(deltas[k]), float(vals[k])
        lo = deltas[max(k - 1, 0)]
        hi = deltas[min(k + 1, len(deltas) - 1)]
        if hi > lo:
            res = optimize.minimize_scalar(
                lambda t: float(self.F_delta(np.array([t]), beta)[0]),
                bounds=(float(lo), float(hi)),
                method="bounded",
                options={"xatol": 1e-12},
            )
            if res.fun < best_v:
                best_d, best_v = float(res.x), float(res.fun)
        return -best_v, 1.0 - best_d


@lru_cache(maxsize=256)
def _kernel(act: Activation, d: int, sigma_u: float, sigma_w: float) -> Kernel:
    return Kernel(act, int(d), float(sigma_u), float(sigma_w))


def kernel(activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0) -> Kernel:
    r"""The (cached) :class:`Kernel` of an activation (name, callable or :class:`Activation`).

    .. math:: \kappa(u) = \mathbb E[\phi(z_1)\phi(z_2)] + \sigma_W^2

    Parameters
    ----------
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.

    Returns
    -------
    Kernel
        The same object for the same arguments.

    Examples
    --------
    >>> from tokensde.theory.synchronization import kernel
    >>> kernel("tanh", 4) is kernel("tanh", 4), kernel("tanh", 4).d
    (True, 4)
    """
    return _kernel(get_activation(activation), int(d), float(sigma_u), float(sigma_w))


# --------------------------------------------------------------------- functional API
def kappa(u: Array | float, activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0) -> Array:
    r"""``kappa(u) = E[phi(z_1) phi(z_2)] + sigma_W^2`` (see the module docstring), vectorised over ``u``.

    .. math::

        \kappa(u) = \mathbb E[\phi(z_1)\phi(z_2)] + \sigma_W^2, \qquad
        \operatorname{Cov}(z_1, z_2) = \tfrac ud + \sigma_U^2

    Parameters
    ----------
    u : float or ndarray
        Overlaps in ``[-1, 1]``.
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.

    Returns
    -------
    ndarray
        The shape of ``u``.

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.synchronization import kappa
    >>> kappa(np.array([0.5, 1.0]), "tanh", 4).round(6).tolist()
    [0.085713, 0.173516]
    """
    return kernel(activation, d, sigma_u, sigma_w).kappa(u)


def kappa_prime(
    u: Array | float, activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0
) -> Array:
    r"""``kappa'(u) = (1/d) E[phi'(z_1) phi'(z_2)]`` (Price's theorem).

    .. math:: \kappa'(u) = \frac1d\, \mathbb E[\phi'(z_1)\phi'(z_2)]

    Parameters
    ----------
    u : float or ndarray
        Overlaps in ``[-1, 1]``.
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.

    Returns
    -------
    ndarray
        The shape of ``u``.

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.synchronization import kappa_prime
    >>> kappa_prime(np.array([0.5, 1.0]), "tanh", 4).round(6).tolist()
    [0.17276, 0.179345]
    >>> kappa_prime(np.array([0.0, 1.0]), "relu", 4).round(6).tolist()  # (pi - t) / (2 pi d)
    [0.0625, 0.125]
    """
    return kernel(activation, d, sigma_u, sigma_w).kappa_prime(u)


def kappa_1(activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0) -> float:
    r"""``kappa(1) = E[phi(z)^2] + sigma_W^2``, ``z ~ N(0, 1/d + sigma_U^2)``.

    .. math:: \kappa(1) = \mathbb E[\phi(z)^2] + \sigma_W^2

    Parameters
    ----------
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.

    Returns
    -------
    float

    Examples
    --------
    >>> from tokensde.theory.synchronization import kappa_1
    >>> kappa_1("relu", 4), round(kappa_1("tanh", 4), 6)  # relu: v / 2
    (0.125, 0.173516)
    """
    return kernel(activation, d, sigma_u, sigma_w).kappa_1


def kappa_prime_1(activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0) -> float:
    r"""``kappa'(1) = (1/d) E[phi'(z)^2]``.

    .. math:: \kappa'(1) = \frac1d\, \mathbb E[\phi'(z)^2], \qquad z \sim \mathcal N(0, \tfrac1d + \sigma_U^2)

    Parameters
    ----------
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.

    Returns
    -------
    float

    Examples
    --------
    >>> from tokensde.theory.synchronization import kappa_prime_1
    >>> kappa_prime_1("relu", 4), round(kappa_prime_1("tanh", 4), 6)  # relu: 1 / (2 d)
    (0.125, 0.179345)
    """
    return kernel(activation, d, sigma_u, sigma_w).kappa_prime_1


def lambda_1(activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0) -> float:
    r"""``lambda_1 = ((d-3)/2) kappa'(1) - ((d-1)/2) kappa(1)``: a.s. rate of ``log|x_1 - x_2|`` at collapse.

    .. math:: \lambda_1 = \tfrac{d-3}{2}\kappa'(1) - \tfrac{d-1}{2}\kappa(1)

    Parameters
    ----------
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.

    Returns
    -------
    float
        Negative: nearby tokens synchronise.

    Examples
    --------
    >>> from tokensde.theory.synchronization import lambda_1
    >>> lambda_1("relu", 4), round(lambda_1("tanh", 4), 6)
    (-0.125, -0.170602)
    """
    return kernel(activation, d, sigma_u, sigma_w).lambda_1


def lambda_bar(activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0) -> float:
    r"""``lambda_bar = (d-1) kappa'(1) - (d-3) kappa(1)``.

    The coercivity constant; ``-lambda_bar`` is the limit of ``F`` at ``u = 1``.

    .. math:: \bar\lambda = (d-1)\kappa'(1) - (d-3)\kappa(1)

    Parameters
    ----------
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.

    Returns
    -------
    float

    Examples
    --------
    >>> from tokensde.theory.synchronization import lambda_bar
    >>> lambda_bar("relu", 4), round(lambda_bar("tanh", 4), 6)
    (0.25, 0.364519)
    """
    return kernel(activation, d, sigma_u, sigma_w).lambda_bar


def G(
    u: Array | float, activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0, beta: float = 1.0
) -> Array:
    r"""``G(u) = kappa(u)(d - 2 + u^2 - beta u (1 - u^2)) + kappa(1)(beta (1 - u^2) - (d - 1) u)``.

    .. math:: G(u) = \kappa(u)\big(d - 2 + u^2 - \beta u (1 - u^2)\big) + \kappa(1)\big(\beta(1 - u^2) - (d-1) u\big)

    Parameters
    ----------
    u : float or ndarray
        Overlaps in ``[-1, 1]``.
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.
    beta : float
        Inverse temperature of the attention.

    Returns
    -------
    ndarray
        The shape of ``u``.

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.synchronization import G
    >>> G(np.array([0.0, 0.5]), "tanh", 4, beta=1.0).round(4).tolist()
    [0.1735, 0.0306]
    """
    return kernel(activation, d, sigma_u, sigma_w).G(u, beta)


def F(
    u: Array | float, activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0, beta: float = 1.0
) -> Array:
    r"""``F(u) = beta e^{beta u} G(u) / (e^beta - e^{beta u})``, continuous at ``u = 1`` with value ``-lambda_bar``.

    .. math:: F(u) = \frac{\beta e^{\beta u} G(u)}{e^\beta - e^{\beta u}}

    Parameters
    ----------
    u : float or ndarray
        Overlaps in ``[-1, 1]``.
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.
    beta : float
        Inverse temperature of the attention.

    Returns
    -------
    ndarray
        The shape of ``u``.

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.synchronization import F
    >>> F(np.array([0.0, 1.0]), "tanh", 4, beta=1.0).round(4).tolist()  # F(1) = -lambda_bar
    [0.101, -0.3645]
    """
    return kernel(activation, d, sigma_u, sigma_w).F(u, beta)


def energy_rate(
    activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0, beta: float = 1.0
) -> tuple[float, float]:
    r"""``(lambda_bar', u_*)``: the energy rate and where ``inf F`` is attained (:meth:`Kernel.energy_rate`).

    .. math:: \bar\lambda' = -\inf_{u \in [-1, 1)} F(u) = -F(u_*)

    Parameters
    ----------
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.
    beta : float
        Inverse temperature of the attention.

    Returns
    -------
    (float, float)
        ``lambda_bar'`` and ``u_*`` (``1``: the infimum is the limit at collapse).

    Examples
    --------
    >>> from tokensde.theory.synchronization import energy_rate
    >>> rate, u_star = energy_rate("relu", 4, beta=1.0)
    >>> round(rate, 6), u_star  # the infimum is the limit at collapse, -lambda_bar
    (0.25, 1.0)
    """
    return kernel(activation, d, sigma_u, sigma_w).energy_rate(beta)


def lambda_bar_prime(
    activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0, beta: float = 1.0
) -> float:
    r"""``lambda_bar' = -inf_{[-1, 1)} F``: ``E[E_beta(t)] <= exp(lambda_bar' t) E[E_beta(0)]`` for ``V = I``.

    .. math::

        \mathbb E[E_\beta(X_t)] \le e^{\bar\lambda' t}\, \mathbb E[E_\beta(X_0)], \qquad
        \bar\lambda' = -\inf_{[-1, 1)} F

    Parameters
    ----------
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.
    beta : float
        Inverse temperature of the attention.

    Returns
    -------
    float

    Examples
    --------
    >>> from tokensde.theory.synchronization import lambda_bar_prime
    >>> lambda_bar_prime("relu", 4, beta=1.0)
    0.25
    """
    return energy_rate(activation, d, sigma_u, sigma_w, beta)[0]


def is_odd(activation: ActivationLike, sigma_u: float = 0.0, sigma_w: float = 0.0) -> bool:
    r"""Whether the MLP field is almost surely odd, ``G(-y) = -G(y)``: ``phi`` odd and both biases zero.

    Then ``kappa(-u) = -kappa(u)``, ``C_11 + C_12 = 0`` at ``rho = -1`` and the
    antipodal configuration is a fixed point of the noise:

    .. math:: \phi(-x) = -\phi(x),\ \sigma_U = \sigma_W = 0 \ \Rightarrow\ G(-y) = -G(y)

    Parameters
    ----------
    activation : str, Activation or callable
        ``phi``.
    sigma_u, sigma_w : float
        Bias scales.

    Returns
    -------
    bool

    Examples
    --------
    >>> from tokensde.theory.synchronization import is_odd
    >>> is_odd("tanh"), is_odd("tanh", sigma_u=0.1), is_odd("relu")
    (True, False, False)
    """
    return bool(get_activation(activation).odd and sigma_u == 0.0 and sigma_w == 0.0)


def attention_overlap_drift(beta: float, c: float) -> tuple[Fn, Fn]:
    r"""``(b_att, b_att')`` for two tokens with ``Q^T K = beta I`` and ``V = c I``.

    Derivation. Token 1 attends to itself with score ``beta <x_1, x_1> = beta``
    and to token 2 with ``beta rho``, so its softmax weights are
    ``p = e^beta / (e^beta + e^{beta rho}) = sigmoid(beta (1 - rho))`` and
    ``q = 1 - p``; ``Attn_1 = c (p x_1 + q x_2)`` and symmetrically for token 2.
    The drift of token 1 is ``P_{x_1} Attn_1 = c q (x_2 - rho x_1)`` (the
    ``x_1`` component is projected out), whose overlap with ``x_2`` is
    ``c q (1 - rho^2)``; adding the symmetric term of token 2,

    .. math::

        b_{att}(\rho) = 2 c\, q(\rho)\, (1 - \rho^2), \qquad
        b_{att}'(\rho) = 2 c \big(\beta p q (1 - \rho^2) - 2 q \rho\big),

    using ``dq/drho = beta p q``. At collapse ``b_att'(1) = -2c``: attractive
    attention shifts the distance exponent by ``-c``.

    Parameters
    ----------
    beta : float
        ``Q^T K = beta I``.
    c : float
        ``V = c I``.

    Returns
    -------
    (callable, callable)
        ``b_att`` and ``b_att'``, vectorised over NumPy arrays of overlaps.

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.synchronization import attention_overlap_drift
    >>> b, db = attention_overlap_drift(1.0, 1.0)
    >>> b(np.array([0.0, 1.0])).round(4).tolist(), db(np.array([1.0])).tolist()
    ([0.5379, 0.0], [-2.0])
    """
    b = float(beta)
    cc = float(c)

    def pq(r: Array) -> tuple[Array, Array]:
        q = 1.0 / (1.0 + np.exp(b * (1.0 - r)))
        return 1.0 - q, q

    def b_att(r: Array) -> Array:
        _, q = pq(r)
        return 2.0 * cc * q * (1.0 - r * r)

    def db_att(r: Array) -> Array:
        p, q = pq(r)
        return 2.0 * cc * (b * p * q * (1.0 - r * r) - 2.0 * q * r)

    return b_att, db_att


def two_point_motion(
    d: int,
    activation: ActivationLike,
    sigma_u: float = 0.0,
    sigma_w: float = 0.0,
    beta: float = 0.0,
    c: float = 0.0,
) -> TwoPointMotion:
    r"""The overlap diffusion of two model-C tokens as a generic :class:`TwoPointMotion`.

    ``c_0 = kappa(1)`` (constant), ``c_1(rho) = kappa(rho)`` with the exact
    derivative ``kappa'``, and the attention drift of
    :func:`attention_overlap_drift` (``Q^T K = beta I``, ``V = c I``; none when ``c = 0``).
    With ``c = 0`` the collapse exponent is :func:`lambda_1`.

    .. math:: d\rho = \big(b_{att} + \kappa(\rho)(d - 2 + \rho^2) - (d-1)\kappa(1)\rho\big) dt
        + \sqrt{2 (1 - \rho^2)(\kappa(1) - \rho \kappa(\rho))}\, dB

    Parameters
    ----------
    d : int
        Dimension.
    activation : str, Activation or callable
        ``phi``.
    sigma_u, sigma_w : float
        Bias scales.
    beta, c : float
        Attention ``Q^T K = beta I``, ``V = c I`` (``c = 0``: none).

    Returns
    -------
    TwoPointMotion

    Examples
    --------
    >>> from tokensde.theory.synchronization import two_point_motion
    >>> m = two_point_motion(4, "tanh")
    >>> round(m.exponent_collapse, 6), round(m.exponent_antipodal, 6)  # both lambda_1: the field is odd
    (-0.170602, -0.170602)
    >>> round(two_point_motion(4, "tanh", beta=1.0, c=1.0).exponent_collapse, 6)  # shifted by -c
    -1.170602
    """
    k = kernel(activation, d, sigma_u, sigma_w)
    k1 = k.kappa_1

    def c0(r: Array) -> Array:
        return np.full(np.shape(r), k1)

    def dc0(r: Array) -> Array:
        return np.zeros(np.shape(r))

    if c == 0.0:
        return TwoPointMotion(d=int(d), c0=c0, c1=k.kappa, dc0=dc0, dc1=k.kappa_prime)
    b_att, db_att = attention_overlap_drift(beta, c)
    return TwoPointMotion(d=int(d), c0=c0, c1=k.kappa, b_att=b_att, dc0=dc0, dc1=k.kappa_prime, db_att=db_att)


@dataclass(frozen=True)
class SyncConstants:
    r"""The synchronization constants of one model-C setting (docs/models.md).

    .. math::

        \lambda_1 = \tfrac{d-3}{2}\kappa'(1) - \tfrac{d-1}{2}\kappa(1), \quad
        \bar\lambda = (d-1)\kappa'(1) - (d-3)\kappa(1), \quad
        \bar\lambda' = -\inf_{[-1, 1)} F = -F(u_*)

    Attributes
    ----------
    kappa_1, kappa_prime_1, lambda_1, lambda_bar, lambda_bar_prime, u_star : float

    Examples
    --------
    >>> from tokensde.theory.synchronization import constants
    >>> c = constants("relu", 4, beta=1.0)
    >>> type(c).__name__, c.lambda_1, c.lambda_bar, c.lambda_bar_prime, c.u_star
    ('SyncConstants', -0.125, 0.25, 0.25, 1.0)
    """

    kappa_1: float
    kappa_prime_1: float
    lambda_1: float
    lambda_bar: float
    lambda_bar_prime: float
    u_star: float  # where the infimum of F defining lambda_bar' is attained


def constants(
    activation: ActivationLike, d: int, sigma_u: float = 0.0, sigma_w: float = 0.0, beta: float = 1.0
) -> SyncConstants:
    r"""``kappa(1)``, ``kappa'(1)``, ``lambda_1``, ``lambda_bar`` and ``lambda_bar'`` (inverse temperature ``beta``).

    See :class:`SyncConstants` for the formulas.

    Parameters
    ----------
    activation : str, Activation or callable
        ``phi`` (:func:`tokensde.activations.get_activation`).
    d : int
        Dimension, ``d >= 2``.
    sigma_u, sigma_w : float
        Standard deviations of the biases ``b_U`` and ``b_W``.
    beta : float
        Inverse temperature of the attention (for ``lambda_bar'``).

    Returns
    -------
    SyncConstants

    Examples
    --------
    >>> from tokensde.theory.synchronization import constants
    >>> c = constants("relu", 8, beta=2.0)
    >>> c.kappa_1, c.kappa_prime_1, c.lambda_1, c.lambda_bar, round(c.lambda_bar_prime, 6)
    (0.0625, 0.0625, -0.0625, 0.125, 0.125)
    """
    k = kernel(activation, d, sigma_u, sigma_w)
    rate, u_star = k.energy_rate(beta)
    return SyncConstants(
        kappa_1=k.kappa_1,
        kappa_prime_1=k.kappa_prime_1,
        lambda_1=k.lambda_1,
        lambda_bar=k.lambda_bar,
        lambda_bar_prime=rate,
        u_star=u_star,
    )
