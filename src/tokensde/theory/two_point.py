r"""The generic two-point motion on the sphere.

For two tokens driven by equation (*) of MODELS.md with a symmetric kernel
``C_11 = C_22 = c_0(rho)``, ``C_12 = c_1(rho)`` and an attention drift that adds
``b_att(rho)`` to the overlap, the overlap ``rho = <x_1, x_2>`` is the
one-dimensional Itô diffusion

.. math::

    d\rho = \mu(\rho)\,dt + s(\rho)\,dB, \qquad
    \mu = b_{att} + c_1 (d - 2 + \rho^2) - (d-1) c_0 \rho, \qquad
    s^2 = 2 (1 - \rho^2)(c_0 - \rho c_1).

Everything here (scale density, exit law, both boundary exponents) is computed
from ``(d, c_0, c_1, b_att)`` by one routine, for every model.

Boundary analysis. Write ``g = c_0 - rho c_1``. At an absorbing boundary
(``rho = 1`` always; ``rho = -1`` when ``g(-1) = 0``), ``mu`` vanishes
linearly and ``s^2`` quadratically:

.. math::

    \mu(\rho) \approx \mu'(\pm 1)(\rho \mp 1),\quad
    s^2 \approx 4 D_\pm (1 \mp \rho)^2,\quad
    D_+ = -g'(1),\ D_- = g'(-1).

The almost-sure rate of ``log(1 - rho)`` is ``mu'(1) - 2 D_+`` and that of
``log(1 + rho)`` is ``mu'(-1) - 2 D_-``; the chordal distances
``|x_1 -+ x_2| = sqrt(2 (1 -+ rho))`` have half these rates (MODELS.md's
convention). The scale density ``s'(r) = exp(-int_0^r 2 mu / s^2)`` behaves as
``(1 - r)^{alpha_+} (1 + r)^{-alpha_-}`` with
``alpha_+ = -mu'(1) / (2 D_+)`` and ``alpha_- = mu'(-1) / (2 D_-)``. These
algebraic endpoint factors are integrated exactly, as the weights of
Gauss–Jacobi rules; only the bounded remainder is integrated numerically
(tanh-sinh rule for its antiderivative). ``P(rho -> -1) = 0`` exactly when ``alpha_- >= 1``, i.e. when
the antipodal boundary is not attracting (its exponent is ``>= 0``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import special

Array = np.ndarray
Fn = Callable[[Array], Array]

__all__ = ["TwoPointMotion", "BoundaryRates"]


def _tanh_sinh(step: float = 1.0 / 16.0, cutoff: float = 1e-15) -> tuple[Array, Array]:
    """Nodes ``t`` and weights of the tanh-sinh rule on ``[-1, 1]``.

    Nodes closer than ``cutoff`` to an endpoint are dropped; the integrand
    being bounded, what is dropped is below ``cutoff`` times its sup.
    """
    k = np.arange(-int(4.5 / step), int(4.5 / step) + 1)
    x = k * step
    s = 0.5 * math.pi * np.sinh(x)
    t = np.tanh(s)
    one_minus_abs = 2.0 / (np.exp(2.0 * np.abs(s)) + 1.0)  # 1 - |tanh(s)| without cancellation
    w = step * 0.5 * math.pi * np.cosh(x) / np.cosh(s) ** 2
    keep = one_minus_abs > cutoff
    return t[keep], w[keep]


_TS_T, _TS_W = _tanh_sinh()
THRESHOLD_TOL = 1e-12


def _fd_derivative(f: Fn, x: float, side: int, h: float = 1e-3) -> float:
    """One-sided fourth-order finite difference of ``f`` at ``x`` (side = -1: from the left)."""
    c = np.array([-25.0 / 12.0, 4.0, -3.0, 4.0 / 3.0, -1.0 / 4.0])
    pts = x - side * h * np.arange(5.0)
    return float(-side * np.dot(c, f(pts)) / h)


@dataclass(frozen=True)
class BoundaryRates:
    """Linearisation of the overlap diffusion at one boundary.

    ``mu_prime`` is ``mu'(rho_b)``, ``D`` the coefficient in ``s^2 ~ 4 D delta^2``,
    ``absorbing`` whether the noise vanishes there (``g(rho_b) = 0``).
    """

    mu_prime: float
    D: float
    absorbing: bool


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
    """

    d: int
    c0: Fn
    c1: Fn
    b_att: Fn | None = None
    dc0: Fn | None = None
    dc1: Fn | None = None
    db_att: Fn | None = None
    absorb_tol: float = 1e-12

    # ----------------------------------------------------------------- coefficients
    def _b(self, r: Array) -> Array:
        return np.zeros_like(r) if self.b_att is None else self.b_att(r)

    def drift(self, rho: Array | float) -> Array:
        r"""``mu(rho) = b_att + c_1 (d - 2 + rho^2) - (d - 1) c_0 rho``."""
        r = np.asarray(rho, dtype=float)
        return self._b(r) + self.c1(r) * (self.d - 2 + r * r) - (self.d - 1) * self.c0(r) * r

    def diffusion2(self, rho: Array | float) -> Array:
        r"""``s^2(rho) = 2 (1 - rho^2)(c_0 - rho c_1)``."""
        r = np.asarray(rho, dtype=float)
        return 2.0 * (1.0 - r * r) * (self.c0(r) - r * self.c1(r))

    def _deriv(self, f: Fn, df: Fn | None, x: float) -> float:
        if df is not None:
            return float(np.asarray(df(np.array([x]))).reshape(-1)[0])
        return _fd_derivative(f, x, side=1 if x > 0 else -1)

    def _boundary(self, x: float) -> BoundaryRates:
        xs = np.array([x])
        c0, c1 = float(self.c0(xs)[0]), float(self.c1(xs)[0])
        dc0 = self._deriv(self.c0, self.dc0, x)
        dc1 = self._deriv(self.c1, self.dc1, x)
        db = 0.0 if self.b_att is None else self._deriv(self.b_att, self.db_att, x)
        g = c0 - x * c1
        dg = dc0 - c1 - x * dc1
        mu_p = db + dc1 * (self.d - 2 + x * x) + 2 * x * c1 - (self.d - 1) * (dc0 * x + c0)
        scale = max(abs(c0), abs(c1), 1e-300)
        absorbing = abs(g) <= self.absorb_tol * scale
        D = -dg if x > 0 else dg
        return BoundaryRates(mu_prime=mu_p, D=D, absorbing=absorbing)

    @cached_property
    def upper(self) -> BoundaryRates:
        """Linearisation at collapse, ``rho = 1``."""
        return self._boundary(1.0)

    @cached_property
    def lower(self) -> BoundaryRates:
        """Linearisation at the antipodal configuration, ``rho = -1``."""
        return self._boundary(-1.0)

    # ----------------------------------------------------------------- exponents
    @property
    def exponent_collapse(self) -> float:
        r"""A.s. rate of ``log|x_1 - x_2|`` near collapse: ``(mu'(1) - 2 D_+) / 2``."""
        b = self.upper
        return 0.5 * (b.mu_prime - 2.0 * b.D)

    @property
    def exponent_antipodal(self) -> float:
        r"""A.s. rate of ``log|x_1 + x_2|`` near ``x_1 = -x_2``: ``(mu'(-1) - 2 D_-) / 2``.

        ``nan`` when the antipodal configuration is not a fixed point of the
        noise (``c_0(-1) + c_1(-1) != 0``).
        """
        b = self.lower
        if not b.absorbing:
            return math.nan
        return 0.5 * (b.mu_prime - 2.0 * b.D)

    @property
    def alpha_plus(self) -> float:
        """Scale density ``~ (1 - r)^{alpha_+}`` at ``r -> 1``."""
        b = self.upper
        return -b.mu_prime / (2.0 * b.D)

    @property
    def alpha_minus(self) -> float:
        """Scale density ``~ (1 + r)^{-alpha_-}`` at ``r -> -1``."""
        b = self.lower
        return b.mu_prime / (2.0 * b.D)

    # ----------------------------------------------------------------- scale function
    def _h(self, u: Array) -> Array:
        """``2 mu / s^2`` (the scale density is ``exp(-int h)``)."""
        g = self.c0(u) - u * self.c1(u)
        return self.drift(u) / ((1.0 - u * u) * g)

    def _remainder(self, u: Array) -> Array:
        """Bounded part of ``2 mu / s^2`` once the endpoint poles are removed."""
        ap, am = self.alpha_plus, self.alpha_minus
        return self._h(u) - ap / (1.0 - u) - am / (1.0 + u)

    def log_scale_remainder(self, r: Array | float) -> Array:
        r"""``F(r) = int_0^r R(u) du`` (tanh-sinh), ``R = 2 mu/s^2 - alpha_+/(1-u) - alpha_-/(1+u)``."""
        r = np.atleast_1d(np.asarray(r, dtype=float))
        u = 0.5 * r[:, None] * (1.0 + _TS_T[None, :])
        vals = self._remainder(u)
        return 0.5 * r * (vals @ _TS_W)

    def log_scale_density(self, r: Array | float) -> Array:
        r"""``log s'(r) = alpha_+ log(1-r) - alpha_- log(1+r) - F(r)``, normalised by ``s'(0) = 1``."""
        r = np.atleast_1d(np.asarray(r, dtype=float))
        return self.alpha_plus * np.log1p(-r) - self.alpha_minus * np.log1p(r) - self.log_scale_remainder(r)

    def _log_integral(self, a: float, b: float, n: int) -> float:
        r"""``log int_a^b (1-r)^{alpha_+} (1+r)^{-alpha_-} e^{-F(r)} dr`` by Gauss–Jacobi.

        Requires ``a = -1`` or ``b = 1`` but not both: the algebraic factor at the
        singular endpoint is the Jacobi weight (integrated exactly), the rest is
        smooth and evaluated at the nodes; sums are taken in log space.
        """
        ap, am = self.alpha_plus, self.alpha_minus
        half = 0.5 * (b - a)
        if b == 1.0:
            t, w = special.roots_jacobi(n, ap, 0.0)
            r = a + half * (1.0 + t)
            log_f = -am * np.log1p(r) + ap * math.log(half)
        elif a == -1.0:
            t, w = special.roots_jacobi(n, 0.0, -am)
            r = a + half * (1.0 + t)
            log_f = ap * np.log1p(-r) - am * math.log(half)
        else:  # pragma: no cover - internal misuse
            raise ValueError("one endpoint must be singular")
        log_f = log_f - self.log_scale_remainder(r)
        return float(math.log(half) + special.logsumexp(log_f, b=w))

    def _log_integral_checked(self, a: float, b: float) -> float:
        prev = self._log_integral(a, b, 48)
        for n in (96, 192, 384):
            cur = self._log_integral(a, b, n)
            if abs(cur - prev) < 1e-11:
                return cur
            prev = cur
        return prev

    def p_antipodal(self, rho0: float) -> float:
        r"""Probability that the overlap converges to ``-1`` from ``rho0``.

        .. math::

            P(\rho_t \to -1 \mid \rho_0) = \frac{\int_{\rho_0}^{1} s'}{\int_{-1}^{1} s'},

        exactly ``0`` when the antipodal boundary is not attracting
        (``alpha_- >= 1``, i.e. ``int_{-1} s' = infinity``) or not absorbing.
        Both integrals are split at ``0`` (or ``rho0``) so that each piece has one
        algebraic endpoint, integrated by a Gauss–Jacobi rule whose order is
        doubled until two orders agree to ``1e-11`` (relative).
        """
        if not -1.0 <= rho0 <= 1.0:
            raise ValueError(f"rho0 must lie in [-1, 1], got {rho0}")
        # at the threshold alpha_- = 1 up to rounding; P ~ (1 - alpha_-) there, so the
        # tolerance changes P by less than ~1e-12
        if not self.lower.absorbing or self.alpha_minus >= 1.0 - THRESHOLD_TOL:
            return 0.0
        if rho0 <= -1.0:
            return 1.0
        if rho0 >= 1.0:
            return 0.0
        log_left = self._log_integral_checked(-1.0, 0.0)
        log_right = self._log_integral_checked(0.0, 1.0)
        log_total = float(np.logaddexp(log_left, log_right))
        if rho0 >= 0.0:
            return min(max(math.exp(self._log_integral_checked(rho0, 1.0) - log_total), 0.0), 1.0)
        part = math.exp(self._log_integral_checked(-1.0, rho0) - log_total)
        return min(max(1.0 - part, 0.0), 1.0)

    def p_collapse(self, rho0: float) -> float:
        """``1 - p_antipodal(rho0)``: both boundaries are the only possible limits."""
        return 1.0 - self.p_antipodal(rho0)
