r"""Model A (random value matrices): closed forms for two tokens.

With ``A = I``, ``Vbar = 0`` and noise scale ``sigma``, two tokens at overlap
``rho`` attend to themselves with weight ``p = 1 / (1 + exp(-beta (1 - rho)))``
and to each other with ``q = 1 - p``; the kernel of MODELS.md is

.. math::

    c_0 = \sigma^2 |a_i|^2 = \sigma^2 (p^2 + q^2 + 2 p q \rho), \qquad
    c_1 = \sigma^2 \langle a_1, a_2\rangle = \sigma^2 (2 p q + (p^2 + q^2)\rho).

Closed forms: collapse exponent ``-sigma^2 (d-1)/2``, antipodal exponent
``sigma^2 ((d-2) - cosh(2 beta)) / (2 cosh^2 beta)``, threshold
``beta_c(d) = arccosh(d-2)/2`` for ``d >= 4`` and ``0`` for ``d <= 3``.
"""

from __future__ import annotations

import math

import numpy as np

from .two_point import TwoPointMotion

__all__ = [
    "beta_c",
    "exponent_collapse",
    "exponent_antipodal",
    "two_point_motion",
    "p_antipodal",
    "antipodal_attracting",
]


def beta_c(d: int) -> float:
    r"""Threshold ``beta_c(d) = arccosh(d - 2)/2`` (``0`` for ``d <= 3``).

    Antipodal pairs attract with positive probability iff ``beta > beta_c(d)``.
    """
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    return 0.5 * math.acosh(d - 2) if d >= 4 else 0.0


def antipodal_attracting(d: int, beta: float) -> bool:
    """``cosh(2 beta) > d - 2`` (strict): the antipodal configuration attracts."""
    return math.cosh(2.0 * beta) > d - 2


def exponent_collapse(d: int, sigma: float = 1.0) -> float:
    """Rate of ``log|x_1 - x_2|`` at collapse: ``-sigma^2 (d - 1) / 2``."""
    return -(sigma**2) * (d - 1) / 2.0


def exponent_antipodal(d: int, beta: float, sigma: float = 1.0) -> float:
    """Rate of ``log|x_1 + x_2|`` at the antipode: ``sigma^2 ((d-2) - cosh 2beta) / (2 cosh^2 beta)``."""
    return sigma**2 * ((d - 2) - math.cosh(2.0 * beta)) / (2.0 * math.cosh(beta) ** 2)


def two_point_motion(d: int, beta: float, sigma: float = 1.0) -> TwoPointMotion:
    """The overlap diffusion of two model-A tokens as a generic :class:`TwoPointMotion`.

    Exact derivatives of ``c_0, c_1`` are supplied (``p' = -beta p q``).
    """
    s2 = float(sigma) ** 2
    b = float(beta)

    def pq(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = 1.0 / (1.0 + np.exp(-b * (1.0 - r)))
        return p, 1.0 - p

    def c0(r: np.ndarray) -> np.ndarray:
        p, q = pq(r)
        return s2 * (p * p + q * q + 2 * p * q * r)

    def c1(r: np.ndarray) -> np.ndarray:
        p, q = pq(r)
        return s2 * (2 * p * q + (p * p + q * q) * r)

    def parts(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        p, q = pq(r)
        dS = 2 * b * p * q * (q - p)  # d(p^2 + q^2)/drho
        dP = 2 * b * p * q * (p - q)  # d(2pq)/drho
        return p * p + q * q, 2 * p * q, dS, dP

    def dc0(r: np.ndarray) -> np.ndarray:
        S, P, dS, dP = parts(r)
        return s2 * (dS + dP * r + P)

    def dc1(r: np.ndarray) -> np.ndarray:
        S, P, dS, dP = parts(r)
        return s2 * (dP + dS * r + S)

    return TwoPointMotion(d=d, c0=c0, c1=c1, dc0=dc0, dc1=dc1)


def p_antipodal(d: int, beta: float, rho0: float = 0.0) -> float:
    """``P(rho_t -> -1 | rho_0)`` for two model-A tokens (independent of ``sigma``)."""
    return two_point_motion(d, beta).p_antipodal(rho0)
