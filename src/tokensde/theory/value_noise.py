r"""Model A (random value matrices): closed forms for two tokens.

With ``A = I``, ``Vbar = 0`` and noise scale ``sigma``, two tokens at overlap
``rho`` attend to themselves with weight ``p = 1 / (1 + exp(-beta (1 - rho)))``
and to each other with ``q = 1 - p``; the kernel of docs/models.md is

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

    Antipodal pairs attract with positive probability iff ``beta > beta_c(d)``:

    .. math::

        \beta_c(d) = \tfrac12 \operatorname{arccosh}(d - 2) \quad (d \ge 4), \qquad \beta_c(d) = 0 \quad (d \le 3).

    Parameters
    ----------
    d : int
        Dimension, ``d >= 2`` (``ValueError`` otherwise).

    Returns
    -------
    float

    Examples
    --------
    >>> from tokensde.theory.value_noise import beta_c
    >>> round(beta_c(6), 4), beta_c(3)
    (1.0317, 0.0)
    """
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    return 0.5 * math.acosh(d - 2) if d >= 4 else 0.0


def antipodal_attracting(d: int, beta: float) -> bool:
    r"""``cosh(2 beta) > d - 2`` (strict): the antipodal configuration attracts.

    ``cosh(2 beta)`` overflows a float beyond ``beta ~ 355``, where it exceeds any ``d - 2`` a float can hold.

    .. math:: \cosh(2\beta) > d - 2 \iff \lambda_a < 0 \iff \beta > \beta_c(d)

    Parameters
    ----------
    d : int
        Dimension.
    beta : float
        Inverse temperature.

    Returns
    -------
    bool

    Examples
    --------
    >>> from tokensde.theory.value_noise import antipodal_attracting
    >>> antipodal_attracting(6, 1.2), antipodal_attracting(6, 0.9)  # beta_c(6) = 1.0317
    (True, False)
    """
    return 2.0 * abs(beta) > 700.0 or math.cosh(2.0 * beta) > d - 2


def exponent_collapse(d: int, sigma: float = 1.0) -> float:
    r"""Rate of ``log|x_1 - x_2|`` at collapse: ``-sigma^2 (d - 1) / 2``.

    .. math:: \lambda_c = \lim_{t\to\infty} \frac1t \log|x_1(t) - x_2(t)| = -\frac{\sigma^2 (d-1)}{2}
        \quad \text{(on collapse)}

    Parameters
    ----------
    d : int
        Dimension.
    sigma : float
        Noise scale of the value matrices.

    Returns
    -------
    float

    Examples
    --------
    >>> from tokensde.theory.value_noise import exponent_collapse
    >>> exponent_collapse(6), exponent_collapse(6, sigma=0.5)
    (-2.5, -0.625)
    """
    return -(sigma**2) * (d - 1) / 2.0


def exponent_antipodal(d: int, beta: float, sigma: float = 1.0) -> float:
    r"""Rate of ``log|x_1 + x_2|`` at the antipode: ``sigma^2 ((d-2) - cosh 2beta) / (2 cosh^2 beta)``.

    Evaluated as ``sigma^2 ((d - 1) sech^2(beta) / 2 - 1)`` (the same number, using
    ``cosh 2beta = 2 cosh^2 beta - 1``), which does not overflow for large ``beta``:

    .. math:: \lambda_a = \sigma^2 \frac{(d - 2) - \cosh 2\beta}{2 \cosh^2 \beta}

    Negative iff ``beta > beta_c(d)`` (:func:`antipodal_attracting`).

    Parameters
    ----------
    d : int
        Dimension.
    beta : float
        Inverse temperature.
    sigma : float
        Noise scale.

    Returns
    -------
    float

    Examples
    --------
    >>> from tokensde.theory.value_noise import exponent_antipodal
    >>> round(exponent_antipodal(6, 1.2), 4), round(exponent_antipodal(6, 1.2, sigma=0.5), 4)
    (-0.2375, -0.0594)
    """
    sech = 0.0 if abs(beta) > 700.0 else 1.0 / math.cosh(beta)
    return sigma**2 * (0.5 * (d - 1) * sech * sech - 1.0)


#: below this ``sigma^2`` the kernel is passed at ``sigma = 1`` with ``scale = sigma^2``
#: (products such as ``c_0 (1 - rho^2)`` of the scaled kernel would underflow)
_TINY_S2 = 1e-150


def two_point_motion(d: int, beta: float, sigma: float = 1.0) -> TwoPointMotion:
    r"""The overlap diffusion of two model-A tokens as a generic :class:`TwoPointMotion`.

    Exact derivatives of ``c_0, c_1`` are supplied (``p' = -beta p q``), and the
    closed form ``mu / (c_0 - rho c_1) = (d - 2) sech(beta (1 - rho)) - rho`` of
    the scale density's rate (exact at every ``d``; see :class:`TwoPointMotion`). The
    kernel ``c_0, c_1`` includes the factor ``sigma^2``, except for
    ``sigma^2 < 1e-150`` (down to a ``sigma^2`` that underflows to ``0``): there
    ``c_0, c_1`` are those of ``sigma = 1`` and the motion's ``scale`` is
    ``sigma^2``, so that the exit law stays exact and the exponents are
    ``sigma^2`` times those of ``sigma = 1``.

    With ``p = 1/(1 + e^{-beta (1 - rho)})``, ``q = 1 - p``:

    .. math::

        c_0 = \sigma^2 (p^2 + q^2 + 2 p q \rho), \qquad
        c_1 = \sigma^2 (2 p q + (p^2 + q^2) \rho).

    Parameters
    ----------
    d : int
        Dimension.
    beta : float
        Inverse temperature.
    sigma : float
        Noise scale.

    Returns
    -------
    TwoPointMotion

    Examples
    --------
    >>> from tokensde.theory.value_noise import two_point_motion
    >>> m = two_point_motion(6, 1.2)
    >>> round(m.exponent_collapse, 4), round(m.exponent_antipodal, 4), round(m.p_antipodal(0.3), 4)
    (-2.5, -0.2375, 0.008)
    """
    s2 = float(sigma) ** 2
    scale = 1.0
    if s2 < _TINY_S2:
        s2, scale = 1.0, s2
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

    def mu_over_g(r: np.ndarray) -> np.ndarray:
        # mu / (c0 - rho c1) = (d - 2) 2pq / (p^2 + q^2) - rho, and 2pq / (p^2 + q^2) = sech(beta (1 - rho))
        e = np.exp(-b * (1.0 - r))  # beta (1 - rho) >= 0: no overflow
        return (d - 2) * (2.0 * e / (1.0 + e * e)) - r

    return TwoPointMotion(d=d, c0=c0, c1=c1, dc0=dc0, dc1=dc1, scale=scale, mu_over_g=mu_over_g)


def p_antipodal(d: int, beta: float, rho0: float = 0.0) -> float:
    r"""``P(rho_t -> -1 | rho_0)`` for two model-A tokens (independent of ``sigma``).

    The exit law of the overlap diffusion, from its scale density ``s'``:

    .. math:: P(\rho_t \to -1 \mid \rho_0) = \frac{\int_{\rho_0}^1 s'(r)\,dr}{\int_{-1}^1 s'(r)\,dr},

    ``0`` when ``beta <= beta_c(d)`` (see :class:`~tokensde.theory.two_point.TwoPointMotion`).

    Parameters
    ----------
    d : int
        Dimension.
    beta : float
        Inverse temperature.
    rho0 : float
        Initial overlap in ``[-1, 1]``.

    Returns
    -------
    float

    Examples
    --------
    >>> from tokensde.theory.value_noise import p_antipodal
    >>> round(p_antipodal(6, 1.2, 0.3), 6), p_antipodal(6, 0.5)
    (0.007987, 0.0)
    """
    return two_point_motion(d, beta).p_antipodal(rho0)
