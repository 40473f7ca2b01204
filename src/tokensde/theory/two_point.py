r"""The generic two-point motion on the sphere.

For two tokens driven by equation (*) of docs/models.md with a symmetric kernel
``C_11 = C_22 = c_0(rho)``, ``C_12 = c_1(rho)`` and an attention drift that adds
``b_att(rho)`` to the overlap, the overlap ``rho = <x_1, x_2>`` is the
one-dimensional Itô diffusion

.. math::

    d\rho = \mu(\rho)\,dt + s(\rho)\,dB, \qquad
    \mu = b_{att} + c_1 (d - 2 + \rho^2) - (d-1) c_0 \rho, \qquad
    s^2 = 2 (1 - \rho^2)(c_0 - \rho c_1).

Everything here (scale density, exit law, both boundary exponents) is computed
from ``(d, c_0, c_1, b_att)`` by one routine, for every model.

Boundary analysis. Write ``g = c0 - rho c1``. At an absorbing boundary
(``rho = 1`` always; ``rho = -1`` when ``g(-1) = 0``), ``mu`` vanishes
linearly and ``s^2`` quadratically:

.. math::

    \mu(\rho) \approx \mu'(\pm 1)(\rho \mp 1),\quad
    s^2 \approx 4 D_\pm (1 \mp \rho)^2,\quad
    D_+ = -g'(1),\ D_- = g'(-1).

The almost-sure rate of ``log(1 - rho)`` is ``mu'(1) - 2 D_+`` and that of
``log(1 + rho)`` is ``mu'(-1) - 2 D_-``; the chordal distances
``|x_1 -+ x_2| = sqrt(2 (1 -+ rho))`` have half these rates (docs/models.md's
convention). The scale density ``s'(r) = exp(-int_0^r 2 mu / s^2)`` behaves as
``(1 - r)^{alpha_+} (1 + r)^{-alpha_-}`` with
``alpha_+ = -mu'(1) / (2 D_+)`` and ``alpha_- = mu'(-1) / (2 D_-)``.
``P(rho -> -1) = 0`` exactly when ``alpha_- >= 1``, i.e. when the antipodal
boundary is not attracting (its exponent is ``>= 0``).

Numerics, all in log space. ``alpha_+-`` grow like ``d / 2`` and ``log s'``
ranges over ``O(d)`` (``s'`` itself over ``10^{+-10^4}`` at ``d = 10^5``), so
nothing is exponentiated before the largest value has been subtracted:

* ``L(r) = log s'(r)`` (``L(0) = 0``) is the integral of ``-2 mu / s^2`` from
  the nearest of the anchors ``+-(1 - 2^{-k})``: every piece is a Gauss–Legendre
  integral over an interval whose distance to ``+-1`` is at least its own
  length, so the poles at ``+-1`` (and kernels that vary on a scale ``1/beta``
  there) never spoil the rule. ``2 mu / s^2`` is ``mu_over_g / (1 - r^2)`` when
  the model supplies that closed form (model A does): from ``c_0, c_1``, ``mu``
  is a difference of terms of size ``d`` and ``c_0 - r c_1`` vanishes at the
  boundaries, which costs ``~ d eps`` and ``~ eps / (1 -+ r)`` (relative).
* ``P = B / (A + B)`` with ``A = int_{-1}^{rho0} s'``, ``B = int_{rho0}^1 s'``
  each to a relative accuracy: ``P`` and ``1 - P`` are both accurate, however small.
* Next to each boundary, in a zone ``[1 - z, 1]`` (and ``[-1, -1 + z]``), the
  pole is split off: ``L = alpha_+ log(1 - r) + log G_+(r)`` with ``log G_+``
  the integral of a Chebyshev interpolant of the bounded remainder
  ``2 mu / s^2 - alpha_+ / (1 - u)``. The interpolation points keep their
  distance to the boundary, where ``c_0 - rho c_1`` and ``mu`` are computed
  with relative error ``~ eps / (1 -+ rho)``; the zone width is the largest
  ``2^{-k}`` on which 16 and 32 points agree (or where rounding takes over).
* The exit law is a ratio of two integrals of ``e^{L}``, each computed by an
  adaptive composite rule (Gauss–Legendre panels; a Gauss–Jacobi panel with
  the weight ``(1 -+ r)^{alpha}`` at a boundary when ``-1 < alpha <= 8``, so
  that an integrable singularity, also ``alpha_- -> 1`` next to ``beta_c``,
  is integrated exactly). An end of the range that lies inside a boundary zone
  without being the boundary (``rho0 = -1 + 2^-52``) is reached by panels in
  ``t = log(1 -+ r)``, where the near-singular density is smooth. Panel sums
  are log-sum-exps, and panels are bisected until each is accurate to ``1e-14``
  of the integral or to the rounding of ``L``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import NamedTuple

import numpy as np
from numpy.polynomial import chebyshev as cheb
from numpy.polynomial import legendre
from scipy import special

Array = np.ndarray
Fn = Callable[[Array], Array]

__all__ = ["TwoPointMotion", "BoundaryRates"]

THRESHOLD_TOL = 1e-12
_EPS = float(np.finfo(float).eps)
#: anchors a_k = 1 - 2^{-k}, k = 0..K (and their negatives): ``L`` is known there
_K = 30
_ANCHORS = 1.0 - np.ldexp(1.0, -np.arange(_K + 1))
_GL_INNER = legendre.leggauss(16)
#: an outer panel is integrated with two orders; their difference is its error estimate
_ORDERS = (12, 24)
_GL_OUTER = {n: legendre.leggauss(n) for n in _ORDERS}
#: boundary zones: Chebyshev interpolants with these numbers of points are compared
_ZONE_POINTS = (16, 32)
_ZONE_K = (3, _K)  # zone widths 2^{-3} .. 2^{-K}
_ZONE_TOL = 1e-14
#: Gauss–Jacobi weight at a boundary for exponents in (-1, _JACOBI_MAX]; larger ones stay in the log
_JACOBI_MAX = 8.0
_PANEL_K0 = 4  # initial panels: the anchors +-a_k, k <= 4
_TOL = 1e-14
_MAX_ROUNDS = 100
_MAX_PANELS = 5000


def _fd_derivative(f: Fn, x: float, side: int, h: float = 1e-3) -> float:
    """One-sided fourth-order finite difference of ``f`` at ``x`` (side = -1: from the left)."""
    c = np.array([-25.0 / 12.0, 4.0, -3.0, 4.0 / 3.0, -1.0 / 4.0])
    pts = x - side * h * np.arange(5.0)
    return float(-side * np.dot(c, f(pts)) / h)


@lru_cache(maxsize=512)
def _jacobi(n: int, alpha: float, beta: float) -> tuple[Array, Array]:
    """Gauss–Jacobi nodes and log-weights for ``(1 - t)^alpha (1 + t)^beta`` (``-1 < alpha, beta <= 8``)."""
    t, w = special.roots_jacobi(n, alpha, beta)
    return t, np.log(w)


def _logsumexp(v: Array, axis: int = -1) -> Array:
    """``log sum exp(v)`` along ``axis``; ``-inf`` for an empty or all ``-inf`` row, no warnings."""
    m = np.max(v, axis=axis, keepdims=True)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.sum(np.exp(v - safe), axis=axis, keepdims=True)
        out = np.log(s) + safe
    out = np.where(np.isneginf(m), -np.inf, out)
    return np.squeeze(out, axis=axis)


def _log_abs_diff(la: Array, lb: Array) -> Array:
    """``log|e^la - e^lb|`` (``-inf`` when equal)."""
    hi = np.maximum(la, lb)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log(-np.expm1(-np.abs(la - lb))) + hi
    return np.where(la == lb, -np.inf, d)


@dataclass(frozen=True)
class BoundaryRates:
    r"""Linearisation of the overlap diffusion at one boundary.

    ``mu_prime`` is ``mu'(rho_b)``, ``D`` the coefficient in ``s^2 ~ 4 D delta^2``,
    ``absorbing`` whether the noise vanishes there (``g(rho_b) = 0``):

    .. math:: \mu(\rho) \approx \mu'(\rho_b)(\rho - \rho_b), \qquad s^2(\rho) \approx 4 D (\rho - \rho_b)^2

    Attributes
    ----------
    mu_prime, D : float
    absorbing : bool

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.two_point import TwoPointMotion
    >>> m = TwoPointMotion(d=6, c0=lambda r: np.full_like(r, 0.2), c1=lambda r: 0.2 * r,
    ...                    dc0=lambda r: np.zeros_like(r), dc1=lambda r: np.full_like(r, 0.2))
    >>> b = m.upper  # at collapse, rho = 1
    >>> round(b.mu_prime, 6), round(b.D, 6), b.absorbing
    (0.4, 0.4, True)
    """

    mu_prime: float
    D: float
    absorbing: bool


class _Zone(NamedTuple):
    """``log G`` next to a boundary: ``log G(x) = edge + sign * (I(z) - I(x))``, ``I`` a Chebyshev antiderivative."""

    z: float
    coef: Array  # antiderivative of the remainder in s = 2 x / z - 1 (times z / 2)
    edge: float  # log G at x = z
    sign: float  # +1 at rho = -1, -1 at rho = 1


@dataclass(frozen=True)
class TwoPointMotion:
    r"""Overlap diffusion of two tokens for a symmetric noise kernel.

    Parameters
    ----------
    d : int
        Ambient dimension (tokens on ``S^{d-1}``), ``d >= 2``.
    c0, c1 : callable
        ``C_11(rho) = C_22(rho)`` and ``C_12(rho)``, vectorised over NumPy arrays.
    b_att : callable, optional
        Attention drift of the overlap, ``0`` if omitted.
    dc0, dc1, db_att : callable, optional
        Exact derivatives in ``rho``; only evaluated at ``rho = +-1``. When
        absent, a one-sided fourth-order finite difference is used (exact
        derivatives are required for kernels that are not smooth at ``+-1``).
    scale : float, optional
        A constant factor of the whole generator (a time change): the kernel is
        ``scale * (c0, c1)`` and the attention drift ``scale * b_att``. Drift,
        diffusion, boundary rates and exponents are proportional to it; the
        scale density and the exit law do not depend on it. It lets a model
        pass an O(1) kernel when its physical size would underflow.
    mu_over_g : callable, optional
        Closed form of ``N(rho) = mu / (c_0 - rho c_1) = (1 - rho^2) 2 mu / s^2``
        (bounded at absorbing boundaries), which must agree with ``c0, c1, b_att``.
        When given, the scale density and ``alpha_+- = N(+-1) / 2`` come from it:
        computed from ``c0, c1``, ``mu`` is a difference of terms of size ``d`` and
        ``c_0 - rho c_1`` vanishes at the boundaries, which costs digits at large
        ``d`` and next to ``+-1``. The exponents always come from ``c0, c1``.

    Notes
    -----
    The overlap ``rho = <x_1, x_2>`` solves

    .. math::

        d\rho = \mu(\rho)\,dt + s(\rho)\,dB, \qquad
        \mu = b_{att} + c_1 (d - 2 + \rho^2) - (d-1) c_0 \rho, \qquad
        s^2 = 2 (1 - \rho^2)(c_0 - \rho c_1),

    and ends at ``-1`` with probability :meth:`p_antipodal` (module docstring).

    Examples
    --------
    Tokens that attend only to themselves (model B's logistic case, ``c_1 = rho c_0``):

    >>> import numpy as np
    >>> from tokensde.theory.two_point import TwoPointMotion
    >>> m = TwoPointMotion(d=6, c0=lambda r: np.full_like(r, 0.2), c1=lambda r: 0.2 * r,
    ...                    dc0=lambda r: np.zeros_like(r), dc1=lambda r: np.full_like(r, 0.2))
    >>> m.drift(np.array([0.5])).round(4).tolist(), m.diffusion2(np.array([0.5])).round(4).tolist()
    ([-0.075], [0.225])
    >>> round(m.exponent_collapse, 6), round(m.exponent_antipodal, 6), round(m.alpha_plus, 6)
    (-0.2, -0.2, -0.5)
    >>> round(m.p_antipodal(-0.5), 6)  # 1/2 - arcsin(-1/2)/pi = 2/3
    0.666667
    """

    d: int
    c0: Fn
    c1: Fn
    b_att: Fn | None = None
    dc0: Fn | None = None
    dc1: Fn | None = None
    db_att: Fn | None = None
    absorb_tol: float = 1e-12
    scale: float = 1.0
    mu_over_g: Fn | None = None

    # ----------------------------------------------------------------- coefficients
    def _b(self, r: Array) -> Array:
        return np.zeros_like(r) if self.b_att is None else self.b_att(r)

    def _mu(self, r: Array) -> Array:
        return self._b(r) + self.c1(r) * (self.d - 2 + r * r) - (self.d - 1) * self.c0(r) * r

    def drift(self, rho: Array | float) -> Array:
        r"""``mu(rho) = b_att + c_1 (d - 2 + rho^2) - (d - 1) c_0 rho`` (times ``scale``)."""
        r = np.asarray(rho, dtype=float)
        return self.scale * self._mu(r)

    def diffusion2(self, rho: Array | float) -> Array:
        r"""``s^2(rho) = 2 (1 - rho^2)(c_0 - rho c_1)`` (times ``scale``)."""
        r = np.asarray(rho, dtype=float)
        return self.scale * 2.0 * (1.0 - r * r) * (self.c0(r) - r * self.c1(r))

    def _deriv(self, f: Fn, df: Fn | None, x: float) -> float:
        if df is not None:
            return float(np.asarray(df(np.array([x]))).reshape(-1)[0])
        return _fd_derivative(f, x, side=1 if x > 0 else -1)

    def _boundary(self, x: float) -> BoundaryRates:
        """Linearisation at ``x = +-1`` of the generator without ``scale``."""
        xs = np.array([x])
        c0, c1 = float(self.c0(xs)[0]), float(self.c1(xs)[0])
        dc0 = self._deriv(self.c0, self.dc0, x)
        dc1 = self._deriv(self.c1, self.dc1, x)
        db = 0.0 if self.b_att is None else self._deriv(self.b_att, self.db_att, x)
        g = c0 - x * c1
        dg = dc0 - c1 - x * dc1
        mu_p = db + dc1 * (self.d - 2 + x * x) + 2 * x * c1 - (self.d - 1) * (dc0 * x + c0)
        scale = max(abs(c0), abs(c1))
        absorbing = scale == 0.0 or abs(g) <= self.absorb_tol * scale
        D = -dg if x > 0 else dg
        return BoundaryRates(mu_prime=mu_p, D=D, absorbing=absorbing)

    @cached_property
    def _upper_unit(self) -> BoundaryRates:
        return self._boundary(1.0)

    @cached_property
    def _lower_unit(self) -> BoundaryRates:
        return self._boundary(-1.0)

    def _scaled(self, b: BoundaryRates) -> BoundaryRates:
        return BoundaryRates(mu_prime=self.scale * b.mu_prime, D=self.scale * b.D, absorbing=b.absorbing)

    @cached_property
    def upper(self) -> BoundaryRates:
        """Linearisation at collapse, ``rho = 1``."""
        return self._scaled(self._upper_unit)

    @cached_property
    def lower(self) -> BoundaryRates:
        """Linearisation at the antipodal configuration, ``rho = -1``."""
        return self._scaled(self._lower_unit)

    # ----------------------------------------------------------------- exponents
    @property
    def exponent_collapse(self) -> float:
        r"""A.s. rate of ``log|x_1 - x_2|`` near collapse: ``(mu'(1) - 2 D_+) / 2``."""
        b = self._upper_unit
        return self.scale * 0.5 * (b.mu_prime - 2.0 * b.D)

    @property
    def exponent_antipodal(self) -> float:
        r"""A.s. rate of ``log|x_1 + x_2|`` near ``x_1 = -x_2``: ``(mu'(-1) - 2 D_-) / 2``.

        ``nan`` by design when the antipodal configuration is not a fixed point
        of the noise (``c_0(-1) + c_1(-1) != 0``): the rate is then undefined.
        """
        b = self._lower_unit
        if not b.absorbing:
            return math.nan
        return self.scale * 0.5 * (b.mu_prime - 2.0 * b.D)

    @cached_property
    def alpha_plus(self) -> float:
        """Scale density ``~ (1 - r)^{alpha_+}`` at ``r -> 1``."""
        if self.mu_over_g is not None:
            return 0.5 * float(np.asarray(self.mu_over_g(np.array([1.0]))).reshape(-1)[0])
        b = self._upper_unit
        return -b.mu_prime / (2.0 * b.D)

    @cached_property
    def alpha_minus(self) -> float:
        """Scale density ``~ (1 + r)^{-alpha_-}`` at ``r -> -1``."""
        if self.mu_over_g is not None:
            return 0.5 * float(np.asarray(self.mu_over_g(np.array([-1.0]))).reshape(-1)[0])
        b = self._lower_unit
        return b.mu_prime / (2.0 * b.D)

    # ----------------------------------------------------------------- 2 mu / s^2
    def _h(self, u: Array) -> Array:
        """``2 mu / s^2`` (the scale density is ``exp(-int h)``), for ``u`` in ``(-1, 1)``."""
        if self.mu_over_g is not None:
            return self.mu_over_g(u) / ((1.0 - u) * (1.0 + u))
        g = self.c0(u) - u * self.c1(u)
        return (self._mu(u) / g) / ((1.0 - u) * (1.0 + u))

    def _h_noise(self, u: Array) -> tuple[Array, Array]:
        """``h`` and a bound on its rounding error (``g`` and ``mu`` vanish at an absorbing boundary)."""
        if self.mu_over_g is not None:
            h = self._h(u)
            return h, 8.0 * _EPS * np.abs(h)
        c0, c1, b = self.c0(u), self.c1(u), self._b(u)
        g = c0 - u * c1
        k = self.d - 2 + u * u
        mu = b + c1 * k - (self.d - 1) * c0 * u
        den = (1.0 - u) * (1.0 + u)
        h = (mu / g) / den
        dg = 4.0 * _EPS * (np.abs(c0) + np.abs(u * c1))
        dmu = 4.0 * _EPS * (np.abs(b) + np.abs(c1) * k + (self.d - 1) * np.abs(c0 * u))
        with np.errstate(divide="ignore", invalid="ignore"):
            noise = (dmu + np.abs(mu) * dg / np.abs(g)) / np.abs(g * den) + 8.0 * _EPS * np.abs(h)
        return h, noise

    @cached_property
    def _anchor_log_density(self) -> tuple[Array, Array]:
        """``L = log s'`` at the anchors ``a_k`` and ``-a_k`` (``L(0) = 0``)."""
        x, w = _GL_INNER
        lo, hi = _ANCHORS[:-1], _ANCHORS[1:]
        half = 0.5 * (hi - lo)
        u = lo[:, None] + half[:, None] * (1.0 + x[None, :])
        pos = half * (self._h(u) @ w)  # int_{a_k}^{a_{k+1}} h
        neg = half * (self._h(-u) @ w)  # int_{-a_{k+1}}^{-a_k} h
        return np.concatenate([[0.0], -np.cumsum(pos)]), np.concatenate([[0.0], np.cumsum(neg)])

    def _log_density_bulk(self, r: Array) -> Array:
        """``L(r)`` for ``|r| <= a_K``: anchor value plus a Gauss–Legendre integral from the anchor."""
        lpos, lneg = self._anchor_log_density
        ar = np.abs(r)
        k = np.clip(np.searchsorted(_ANCHORS, ar, side="right") - 1, 0, _K - 1)
        a = np.where(r >= 0, _ANCHORS[k], -_ANCHORS[k])
        base = np.where(r >= 0, lpos[k], lneg[k])
        x, w = _GL_INNER
        half = 0.5 * (r - a)
        u = a[:, None] + half[:, None] * (1.0 + x[None, :])
        return base - half * (self._h(u) @ w)

    def _zone_fit(self, side: int, z: float, m: int) -> tuple[Array, float]:
        """Chebyshev antiderivative of the remainder on the zone of width ``z`` at ``rho = side``.

        Returns the coefficients of ``I(x) = int_0^x R`` in ``s = 2 x / z - 1`` (interpolation at
        ``m`` Chebyshev points of the first kind, none closer to the boundary than ``~z / m^2``)
        and an estimate of the rounding error of ``I(z)``.
        """
        theta = (np.arange(m) + 0.5) * math.pi / m
        s = np.cos(theta)
        x = 0.5 * z * (1.0 + s)
        u = side * (1.0 - x)  # |u| >= 1/2: 1 -+ u below is exact
        xe = (1.0 - u) if side > 0 else (1.0 + u)
        pole = self.alpha_plus if side > 0 else self.alpha_minus
        h, noise = self._h_noise(u)
        # remainder of -dlog G/du (left) or of dlog G/d(1-u) (right): h - pole / x
        rem = h - pole / xe
        coef = 2.0 / m * (np.cos(np.outer(np.arange(m), theta)) @ rem)
        coef[0] *= 0.5
        integ = cheb.chebint(coef) * (0.5 * z)
        weights = 0.5 * z * (math.pi / m) * np.sin(theta)
        err = float(np.dot(weights, noise) + 4.0 * _EPS * np.dot(weights, np.abs(rem)))
        return integ, err

    @cached_property
    def _zone_upper(self) -> _Zone:
        return self._make_zone(1)

    @cached_property
    def _zone_lower(self) -> _Zone:
        return self._make_zone(-1)

    def _zone(self, side: int) -> _Zone:
        return self._zone_upper if side > 0 else self._zone_lower

    def _make_zone(self, side: int) -> _Zone:
        """The boundary zone at ``rho = side`` (``+1``: collapse, ``-1``: antipodal); see the module docstring."""
        probe = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
        chosen: tuple[float, Array] | None = None
        for k in range(_ZONE_K[0], _ZONE_K[1] + 1):
            z = math.ldexp(1.0, -k)
            c1, _ = self._zone_fit(side, z, _ZONE_POINTS[0])
            c2, err = self._zone_fit(side, z, _ZONE_POINTS[1])
            if not np.all(np.isfinite(c2)):
                continue
            gap = float(np.max(np.abs(cheb.chebval(probe, c1) - cheb.chebval(probe, c2))))
            chosen = (z, c2)
            if gap <= max(_ZONE_TOL, 8.0 * err):
                break
        if chosen is None:  # pragma: no cover - a kernel that is not finite next to the boundary
            raise FloatingPointError(f"2 mu / s^2 is not finite next to rho = {side}")
        z, coef = chosen
        edge_r = side * (1.0 - z)
        pole = self.alpha_plus if side > 0 else self.alpha_minus
        l_edge = float(self._log_density_bulk(np.array([edge_r]))[0])
        # G_- = L + alpha_- log(1 + r); G_+ = L - alpha_+ log(1 - r)
        edge = l_edge + (pole if side < 0 else -pole) * math.log(z)
        return _Zone(z=z, coef=coef, edge=edge, sign=1.0 if side < 0 else -1.0)

    def _log_g(self, side: int, x: Array) -> Array:
        r"""``log G`` at distance ``x`` from ``rho = side``.

        ``G = s' (1 + r)^{alpha_-}`` at ``-1`` and ``G = s' (1 - r)^{-alpha_+}`` at ``1``.
        """
        zone = self._zone(side)
        x = np.asarray(x, dtype=float)
        out = np.empty(x.shape)
        inside = x < zone.z
        if inside.any():
            s = 2.0 * x[inside] / zone.z - 1.0
            out[inside] = zone.edge + zone.sign * (cheb.chebval(1.0, zone.coef) - cheb.chebval(s, zone.coef))
        if (~inside).any():
            xo = x[~inside]
            lo = self._log_density_bulk(side * (1.0 - xo))
            pole = self.alpha_plus if side > 0 else self.alpha_minus
            out[~inside] = lo + (pole if side < 0 else -pole) * np.log(xo)
        return out

    def _log_density(self, r: Array) -> Array:
        """``L(r) = log s'(r)`` for ``r`` in ``[-1, 1]`` (any shape); ``+-inf`` where ``s'`` diverges or vanishes."""
        r = np.asarray(r, dtype=float)
        flat = r.reshape(-1)
        out = np.empty(flat.shape)
        xr, xl = 1.0 - flat, 1.0 + flat
        right = xr < self._zone(1).z
        left = xl < self._zone(-1).z
        bulk = ~(right | left)
        if bulk.any():
            out[bulk] = self._log_density_bulk(flat[bulk])
        with np.errstate(divide="ignore", invalid="ignore"):
            for mask, side, x, coef in ((right, 1, xr, self.alpha_plus), (left, -1, xl, -self.alpha_minus)):
                if mask.any():
                    xs = x[mask]
                    pole = np.where(coef == 0.0, 0.0, coef * np.log(xs))
                    out[mask] = self._log_g(side, xs) + pole
        return out.reshape(r.shape)

    # ----------------------------------------------------------------- scale function
    def log_scale_density(self, r: Array | float) -> Array:
        r"""``log s'(r)``, normalised by ``s'(0) = 1``.

        ``-inf`` / ``+inf`` at a boundary where ``s'`` vanishes / diverges (by design: that is its value).
        """
        return self._log_density(np.atleast_1d(np.asarray(r, dtype=float)))

    def log_scale_remainder(self, r: Array | float) -> Array:
        r"""``F(r) = alpha_+ log(1-r) - alpha_- log(1+r) - log s'(r)``, bounded on ``[-1, 1]``.

        ``F(r) = int_0^r R(u) du`` with ``R = 2 mu/s^2 - alpha_+/(1-u) - alpha_-/(1+u)``.
        """
        r = np.atleast_1d(np.asarray(r, dtype=float))
        flat = r.reshape(-1)
        ap, am = self.alpha_plus, self.alpha_minus
        out = np.empty(flat.shape)
        right = 1.0 - flat < self._zone(1).z
        left = 1.0 + flat < self._zone(-1).z
        bulk = ~(right | left)
        if bulk.any():
            rb = flat[bulk]
            out[bulk] = ap * np.log1p(-rb) - am * np.log1p(rb) - self._log_density_bulk(rb)
        if right.any():
            rr = flat[right]
            out[right] = -self._log_g(1, 1.0 - rr) - am * np.log1p(rr)
        if left.any():
            rl = flat[left]
            out[left] = ap * np.log1p(-rl) - self._log_g(-1, 1.0 + rl)
        return out.reshape(r.shape)

    def _panels(self, a: Array, b: Array, kind: Array) -> tuple[Array, Array, Array]:
        """``log`` integral, ``log`` error estimate and ``log`` rounding level of each panel.

        ``kind`` 0: Gauss–Legendre on ``[a, b]``; ``-1``: Gauss–Jacobi with weight
        ``(1 + r)^{-alpha_-}`` on ``[-1, b]``; ``+1``: weight ``(1 - r)^{alpha_+}`` on ``[a, 1]``;
        ``-2`` / ``+2``: Gauss–Legendre in ``t = log(1 -+ r)`` on ``[a, b]`` (next to ``-1`` / ``+1``,
        from an end of the range that is not the boundary itself).
        """
        ap, am = self.alpha_plus, self.alpha_minus
        logi = np.empty((2, a.size))
        level = np.zeros(a.size)
        for i, n in enumerate(_ORDERS):
            for k in (0, -1, 1, -2, 2):
                sel = kind == k
                if not sel.any():
                    continue
                aa, bb = a[sel], b[sel]
                if k == 0:
                    x, w = _GL_OUTER[n]
                    half = 0.5 * (bb - aa)
                    vals = self._log_density(aa[:, None] + half[:, None] * (1.0 + x[None, :]))
                    logw, front = np.log(w), np.log(half)
                elif k == -1:
                    t, logw = _jacobi(n, 0.0, -am)
                    half = 0.5 * (bb + 1.0)
                    vals = self._log_g(-1, half[:, None] * (1.0 + t[None, :]))
                    front = (1.0 - am) * np.log(half)
                elif k == 1:
                    t, logw = _jacobi(n, ap, 0.0)
                    half = 0.5 * (1.0 - aa)
                    vals = self._log_g(1, half[:, None] * (1.0 - t[None, :]))
                    front = (1.0 + ap) * np.log(half)
                else:  # s' dr = G x^{power} x dt, x = e^t the distance to the boundary
                    x, w = _GL_OUTER[n]
                    half = 0.5 * (bb - aa)
                    t = aa[:, None] + half[:, None] * (1.0 + x[None, :])
                    side, power = (-1, -am) if k == -2 else (1, ap)
                    vals = self._log_g(side, np.exp(t)) + (power + 1.0) * t
                    logw, front = np.log(w), np.log(half)
                logi[i, sel] = front + _logsumexp(vals + logw[None, :])
                finite = np.where(np.isfinite(vals), np.abs(vals), 0.0)
                level[sel] = np.maximum(level[sel], np.max(finite, axis=1))
        err = _log_abs_diff(logi[0], logi[1])
        # L is a sum of terms of its own size: relative rounding ~ eps |L| in e^L
        noise = logi[1] + np.log(16.0 * _EPS * np.maximum(1.0, level))
        return logi[1], err, noise

    def _log_integral(self, lo: float, hi: float) -> float:
        r"""``log int_lo^hi s'(r) dr`` (``-1 <= lo < hi <= 1``), adaptive in log space."""
        ap, am = self.alpha_plus, self.alpha_minus
        # an end within a boundary zone (but not the boundary): the near-singular stretch between it
        # and the zone's edge is integrated in t = log(distance to the boundary), where it is smooth
        zl, zr = self._zone(-1).z, self._zone(1).z
        t_panels: list[tuple[float, float, int]] = []
        if lo > -1.0 and 1.0 + lo < zl and hi > -1.0 + zl:
            t_panels.append((math.log1p(lo), math.log(zl), -2))
            lo = -1.0 + zl
        if hi < 1.0 and 1.0 - hi < zr and lo < 1.0 - zr:
            t_panels.append((math.log1p(-hi), math.log(zr), 2))
            hi = 1.0 - zr
        pts = {lo, hi}
        for k in range(_K + 1):
            for p in (_ANCHORS[k], -_ANCHORS[k]):
                # coarse anchors everywhere; fine ones grade the panels towards an end
                # (lo or hi) that sits next to a boundary without being one
                fine_ok = (p < 0 and lo > -1.0 and p < lo / 2) or (p > 0 and hi < 1.0 and p > hi / 2)
                if lo < p < hi and (k <= _PANEL_K0 or fine_ok):
                    pts.add(float(p))
        edges = np.array(sorted(pts))
        a, b = edges[:-1], edges[1:]
        keep = 0.5 * (b - a) > 0.0  # a panel as wide as a subnormal (rho0 = 5e-324) holds nothing
        a, b = a[keep], b[keep]
        kind = np.zeros(a.size, dtype=int)
        if lo == -1.0 and -am <= _JACOBI_MAX:
            kind[0] = -1
        if hi == 1.0 and -1.0 < ap <= _JACOBI_MAX:
            kind[-1] = 1
        for ta, tb, k in t_panels:  # pieces of length <= 2 in t
            cuts = np.linspace(ta, tb, max(1, math.ceil((tb - ta) / 2.0)) + 1)
            a, b = np.concatenate([a, cuts[:-1]]), np.concatenate([b, cuts[1:]])
            kind = np.concatenate([kind, np.full(cuts.size - 1, k)])
        logi, err, noise = self._panels(a, b, kind)
        for _ in range(_MAX_ROUNDS):
            total = float(_logsumexp(logi))
            splittable = (b - a) > 64.0 * _EPS * np.maximum(np.abs(a), np.abs(b))
            bad = (err > total + math.log(_TOL)) & (err > noise) & splittable
            if not bad.any():
                return total
            if a.size + bad.sum() > _MAX_PANELS:
                break
            m = 0.5 * (a[bad] + b[bad])
            # a Jacobi panel keeps its boundary half; the other half is a Legendre panel
            kl = kind[bad]
            new_a = np.concatenate([a[~bad], a[bad], m])
            new_b = np.concatenate([b[~bad], m, b[bad]])
            new_kind = np.concatenate([kind[~bad], np.where(kl == 1, 0, kl), np.where(kl == -1, 0, kl)])
            halves = (np.concatenate([a[bad], m]), np.concatenate([m, b[bad]]), new_kind[(~bad).sum() :])
            li, le, ln = self._panels(*halves)
            logi = np.concatenate([logi[~bad], li])
            err = np.concatenate([err[~bad], le])
            noise = np.concatenate([noise[~bad], ln])
            a, b, kind = new_a, new_b, new_kind
        total = float(_logsumexp(logi))
        warnings.warn(
            f"scale-density integral over [{lo}, {hi}] (d={self.d}) not converged: "
            f"error estimate {math.exp(float(_logsumexp(err)) - total):.1e} (relative)",
            RuntimeWarning,
            stacklevel=3,
        )
        return total

    def p_antipodal(self, rho0: float) -> float:
        r"""Probability that the overlap converges to ``-1`` from ``rho0``.

        .. math::

            P(\rho_t \to -1 \mid \rho_0) = \frac{\int_{\rho_0}^{1} s'}{\int_{-1}^{1} s'},

        exactly ``0`` when the antipodal boundary is not attracting
        (``alpha_- >= 1``, i.e. ``int_{-1} s' = infinity``) or not absorbing,
        and ``1`` (for ``rho0 < 1``) when collapse is not attainable
        (``alpha_+ <= -1``). Both ``A = int_{-1}^{rho0} s'`` and
        ``B = int_{rho0}^{1} s'`` are computed in log space to a relative
        ``1e-14`` (or the rounding of ``log s'``), and ``P = 1 / (1 + A/B)``:
        accurate relative to ``P`` and to ``1 - P``, and always in ``[0, 1]``
        (a ``P`` below ``1e-308`` underflows to ``0``).
        """
        if not -1.0 <= rho0 <= 1.0:
            raise ValueError(f"rho0 must lie in [-1, 1], got {rho0}")
        # at the threshold alpha_- = 1 up to rounding; P ~ (1 - alpha_-) there, so the
        # tolerance changes P by less than ~1e-12
        if not self._lower_unit.absorbing or self.alpha_minus >= 1.0 - THRESHOLD_TOL:
            return 0.0
        if rho0 <= -1.0:
            return 1.0
        if rho0 >= 1.0:
            return 0.0
        if self.alpha_plus <= -1.0 + THRESHOLD_TOL:
            return 1.0
        log_left = self._log_integral(-1.0, rho0)
        log_right = self._log_integral(rho0, 1.0)
        diff = log_right - log_left
        if math.isnan(diff):
            raise FloatingPointError(f"exit law not finite (d={self.d}, rho0={rho0}): {log_left}, {log_right}")
        return float(special.expit(diff))

    def p_collapse(self, rho0: float) -> float:
        """``1 - p_antipodal(rho0)``: both boundaries are the only possible limits."""
        return 1.0 - self.p_antipodal(rho0)
