r"""Model B theory: comparison ODEs of the homogenized limit and the logistic exit law.

In the Gaussian setting (``Vbar = Abar = 0``, ``sigma_V^2 = sigma_A^2 = 1/d``) the
homogenized limit in diffusive time ``tau`` is equation (*) with ``b = 0`` and
``C_ij = s(x_i, x_j) / (d - 1)``, ``s(x, y) = E_A <m_A(x), m_A(y)>``. The expected
drift of an overlap ``rho_ij = <x_i, x_j>`` is then

.. math::

    \frac{s_{ij} (d - 2 + \rho_{ij}^2)}{d - 1} - \frac{s_{ii} + s_{jj}}{2} \rho_{ij}
    = s_{ij} - \frac{s_{ii} + s_{jj}}{2}\rho_{ij} + O(1/d).

* ``beta = 0``: ``m = xbar``, ``s_ij = u = |xbar|^2`` (the mean overlap), whence
  ``du/dtau = u (1 - u) + O(1/d)`` (:func:`logistic_overlap`);
* simplex with common overlap ``gamma``: ``s_ij = gamma + (1 - gamma) g``,
  ``s_ii = gamma + (1 - gamma) f``, ``f = E sum_k pi_{i->k}^2``,
  ``g = E sum_k pi_{i->k} pi_{j->k}`` (one random head), whence
  ``dgamma/dtau = gamma + (1-gamma) g - gamma (gamma + (1-gamma) f)`` (:func:`simplex_overlap`);
  ``finite_d=True`` keeps the factor ``(d - 2 + gamma^2)/(d - 1)``;
* a token attending only to itself (``pi_{i->i} = 1``, e.g. ``Abar = I``,
  ``sigma_A = 0``, ``beta -> infinity``): ``s_ij = rho_ij``, and the overlap of a
  pair is *exactly* ``d rho = -rho (1 - rho^2) dtau/(d-1) + sqrt(2/(d-1)) (1 - rho^2) dB``:
  frozen for ``tau << d``, and on the time scale ``d - 1`` the logistic SDE
  ``du = -u (1 - u^2) dt + sqrt(2) (1 - u^2) dB``, which ends at ``+1`` with
  probability ``arcsin(u_0)/pi + 1/2`` (:func:`logistic_exit_plus`; scale density
  ``(1 - u^2)^(-1/2)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp

from .two_point import TwoPointMotion

__all__ = [
    "logistic_overlap",
    "logistic_exit_plus",
    "logistic_two_point",
    "SimplexRates",
    "simplex_fg",
    "simplex_overlap",
    "half_time",
]


def logistic_overlap(u0: np.ndarray | float, tau: np.ndarray | float) -> np.ndarray:
    r"""Solution of ``du/dtau = u (1 - u)``: ``u_0 e^tau / (1 - u_0 + u_0 e^tau)``.

    Evaluated as ``u_0 / (u_0 + (1 - u_0) e^{-tau})`` for ``tau >= 0`` and in the form
    above for ``tau < 0``, so that ``e^{|tau|}`` is never formed (no overflow at any ``tau``);
    the fixed points ``u_0 = 0, 1`` are returned as they are.

    .. math:: u(\tau) = \frac{u_0 e^\tau}{1 - u_0 + u_0 e^\tau}

    Parameters
    ----------
    u0 : float or ndarray
        Initial mean overlap ``|xbar|^2`` in ``[0, 1]``.
    tau : float or ndarray
        Diffusive times (broadcast against ``u0``).

    Returns
    -------
    ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.homogenized import logistic_overlap
    >>> logistic_overlap(0.1, np.array([0.0, 1.0, 10.0])).round(4).tolist()
    [0.1, 0.232, 0.9996]
    """
    u0 = np.asarray(u0, dtype=float)
    tau = np.asarray(tau, dtype=float)
    e = np.exp(-np.abs(tau))  # in (0, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        fwd = u0 / (u0 + (1.0 - u0) * e)
        bwd = u0 * e / (1.0 - u0 + u0 * e)
    # the fixed points 0 and 1 stay put (the forms above give 0/0 there once e^{-|tau|} underflows)
    return np.where((u0 == 0.0) | (u0 == 1.0), u0 + 0.0 * tau, np.where(tau >= 0, fwd, bwd))


def logistic_exit_plus(u0: np.ndarray | float) -> np.ndarray:
    r"""``P(u -> +1)`` for ``du = -u (1 - u^2) dt + sqrt(2) (1 - u^2) dB``: ``arcsin(u_0)/pi + 1/2``.

    The scale density is ``(1 - u^2)^{-1/2}``, whence

    .. math::

        P(u_t \to +1 \mid u_0) = \frac{\int_{-1}^{u_0} (1 - u^2)^{-1/2} du}{\pi} = \frac{\arcsin u_0}{\pi} + \frac12.

    Parameters
    ----------
    u0 : float or ndarray
        Initial overlap in ``[-1, 1]``.

    Returns
    -------
    ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.homogenized import logistic_exit_plus
    >>> logistic_exit_plus(np.array([-1.0, 0.0, 0.5])).round(4).tolist()
    [0.0, 0.5, 0.6667]
    """
    return np.arcsin(np.asarray(u0, dtype=float)) / math.pi + 0.5


def logistic_two_point(d: int) -> TwoPointMotion:
    r"""The generic two-point motion with ``c_0 = 1/(d-1)``, ``c_1 = rho/(d-1)`` (tokens attending to themselves).

    The overlap then solves exactly

    .. math:: d\rho = -\frac{\rho (1 - \rho^2)}{d - 1} d\tau + \sqrt{\frac{2}{d-1}} (1 - \rho^2) dB,

    whose exit law is :func:`logistic_exit_plus` at every ``d``.

    Parameters
    ----------
    d : int
        Dimension, ``d >= 2``.

    Returns
    -------
    TwoPointMotion

    Examples
    --------
    >>> from tokensde.theory.homogenized import logistic_two_point
    >>> m = logistic_two_point(6)
    >>> round(m.p_collapse(0.5), 4), round(m.exponent_collapse, 4)  # arcsin(1/2)/pi + 1/2; -1/(d-1)
    (0.6667, -0.2)
    """
    k = 1.0 / (d - 1)
    return TwoPointMotion(
        d=d,
        c0=lambda r: np.full_like(np.asarray(r, dtype=float), k),
        c1=lambda r: k * np.asarray(r, dtype=float),
        dc0=lambda r: np.zeros_like(np.asarray(r, dtype=float)),
        dc1=lambda r: np.full_like(np.asarray(r, dtype=float), k),
        # mu / (c0 - rho c1) = k rho (rho^2 - 1) / (k (1 - rho^2)) = -rho, exact at every d
        mu_over_g=lambda r: -np.asarray(r, dtype=float),
    )


@dataclass(frozen=True)
class SimplexRates:
    r"""``f(gamma)``, ``g(gamma)`` on a grid of overlaps, with Monte-Carlo standard errors.

    .. math:: f = E \sum_k \pi_{i\to k}^2, \qquad g = E \sum_k \pi_{i\to k}\pi_{j\to k}\ (i \ne j)

    Attributes
    ----------
    gamma, f, g, se_f, se_g : ndarray ``(m,)``
        The grid and the estimates with their standard errors.
    samples : int
        Monte-Carlo samples per grid point.

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.homogenized import simplex_fg
    >>> rates = simplex_fg(3, 8, beta=2.0, gamma=np.array([0.0, 1.0]), samples=256)
    >>> type(rates).__name__, rates.f.round(4).tolist(), rates.samples
    ('SimplexRates', [0.4175, 0.3333], 256)
    """

    gamma: np.ndarray
    f: np.ndarray
    g: np.ndarray
    se_f: np.ndarray
    se_g: np.ndarray
    samples: int


def simplex_fg(
    n: int,
    d: int,
    beta: float,
    gamma: np.ndarray,
    samples: int = 4096,
    seed: int = 0,
    sigma_a: float | None = None,
) -> SimplexRates:
    r"""Monte-Carlo ``f`` and ``g`` for ``n`` tokens with common overlap ``gamma`` (``n <= d``).

    .. math::

        f = E \sum_k \pi_{i\to k}^2, \qquad g = E \sum_k \pi_{i\to k}\pi_{j\to k}\ (i \ne j),

    ``pi = softmax(beta <A x_i, x_k>)`` for one Gaussian head ``A = sigma_A^2 W W'^T``
    (``sigma_A^2 = 1/d`` by default). The scores' law depends on the tokens only
    through their Gram matrix ``R^T R``: ``W^T X^T = xi R`` in law. Per sample,
    ``f`` and ``g`` are averaged over all tokens and pairs; the standard errors are
    over the independent samples. The same normals are used at every ``gamma``
    (common random numbers), so the estimates are smooth in ``gamma``.

    Parameters
    ----------
    n, d : int
        Tokens and dimension, ``2 <= n <= d``.
    beta : float
        Inverse temperature.
    gamma : ndarray ``(m,)``
        Common overlaps (increasing, for :func:`simplex_overlap`).
    samples : int
        Independent heads.
    seed : int
        Seed of the normals.
    sigma_a : float, optional
        Scale of the head (``1/sqrt(d)`` by default).

    Returns
    -------
    SimplexRates

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.homogenized import simplex_fg
    >>> rates = simplex_fg(3, 8, beta=2.0, gamma=np.linspace(-0.5, 1.0, 7), samples=256)
    >>> rates.f.round(4).tolist()
    [0.4512, 0.4339, 0.4175, 0.4001, 0.379, 0.3573, 0.3333]
    >>> rates.g.round(4).tolist()  # at gamma = 1 all tokens coincide: f = g = 1/n
    [0.2812, 0.3075, 0.3335, 0.3487, 0.3555, 0.3511, 0.3333]
    """
    if n > d or n < 2:
        raise ValueError(f"simplex_fg needs 2 <= n <= d, got n={n}, d={d}")
    sa2 = 1.0 / d if sigma_a is None else sigma_a**2
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn((samples, 2, d, n), generator=gen, dtype=torch.float64)
    off = ~torch.eye(n, dtype=torch.bool)
    fs, gs, sf, sg = [], [], [], []
    for gm in np.asarray(gamma, dtype=float):
        gram = (1.0 - gm) * torch.eye(n, dtype=torch.float64) + gm * torch.ones(n, n, dtype=torch.float64)
        evals, evecs = torch.linalg.eigh(gram)
        r = (evecs * evals.clamp_min(0).sqrt()).T  # R^T R = gram
        p, pp = z[:, 0] @ r, z[:, 1] @ r
        pi = torch.softmax(beta * sa2 * (p.transpose(-1, -2) @ pp), dim=-1)
        pp2 = pi @ pi.transpose(-1, -2)  # sum_k pi_ik pi_jk
        f_s = torch.diagonal(pp2, dim1=-2, dim2=-1).mean(-1)
        g_s = pp2[:, off].mean(-1)
        fs.append(f_s.mean().item())
        gs.append(g_s.mean().item())
        sf.append(f_s.std().item() / math.sqrt(samples))
        sg.append(g_s.std().item() / math.sqrt(samples))
    return SimplexRates(np.asarray(gamma, float), np.array(fs), np.array(gs), np.array(sf), np.array(sg), samples)


def _simplex_rhs(gm: float, f: float, g: float, d: int | None) -> float:
    fac = 1.0 if d is None else (d - 2 + gm * gm) / (d - 1)
    return (gm + (1 - gm) * g) * fac - gm * (gm + (1 - gm) * f)


def simplex_overlap(
    rates: SimplexRates,
    gamma0: float,
    tau: np.ndarray,
    z: float = 0.0,
    d: int | None = None,
) -> np.ndarray:
    r"""The comparison ODE ``dgamma/dtau = gamma + (1-gamma) g - gamma (gamma + (1-gamma) f)`` at times ``tau``.

    ``f, g`` are interpolated linearly in ``gamma`` from ``rates``. ``z > 0``
    (``z < 0``) integrates with ``g + z se_g`` and ``f - z se_f`` (the other way
    round): the right-hand side increases with ``g`` and, for ``gamma >= 0``,
    decreases with ``f``, so these bound the solution for rates inside their
    ``z``-bands (comparison principle). ``d`` given: keep the finite-``d`` factor
    ``(d - 2 + gamma^2)/(d - 1)`` on the ``s_ij`` term.

    .. math:: \frac{d\gamma}{d\tau} = \gamma + (1 - \gamma) g(\gamma) - \gamma\big(\gamma + (1 - \gamma) f(\gamma)\big)

    Parameters
    ----------
    rates : SimplexRates
        From :func:`simplex_fg`.
    gamma0 : float
        Initial overlap.
    tau : ndarray ``(k,)``
        Increasing diffusive times, from 0.
    z : float
        Band multiplier (0: the estimate itself).
    d : int, optional
        Keep the finite-``d`` factor.

    Returns
    -------
    ndarray ``(k,)``

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.homogenized import simplex_fg, simplex_overlap
    >>> rates = simplex_fg(3, 8, beta=2.0, gamma=np.linspace(-0.5, 1.0, 7), samples=256)
    >>> simplex_overlap(rates, 0.0, np.array([0.0, 1.0, 2.0, 4.0])).round(4).tolist()
    [0.0, 0.363, 0.6791, 0.9466]
    """
    fg = rates.f - z * rates.se_f
    gg = rates.g + z * rates.se_g

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        gm = float(np.clip(y[0], rates.gamma[0], rates.gamma[-1]))
        return np.array([_simplex_rhs(gm, np.interp(gm, rates.gamma, fg), np.interp(gm, rates.gamma, gg), d)])

    tau = np.asarray(tau, dtype=float)
    sol = solve_ivp(rhs, (0.0, float(tau[-1])), [gamma0], t_eval=tau, rtol=1e-9, atol=1e-11, method="RK45")
    return sol.y[0]


def half_time(rates: SimplexRates, gamma0: float = 0.0, target: float = 0.5, tau_max: float = 1e4) -> float:
    r"""Diffusive time for the simplex comparison ODE to reach the overlap ``target`` (``inf`` if never).

    .. math:: \tau_{1/2} = \inf\{\tau : \gamma(\tau) = \mathrm{target}\}, \qquad \gamma(0) = \gamma_0,

    ``gamma`` solving the ODE of :func:`simplex_overlap` (``z = 0``, ``d`` infinite).

    Parameters
    ----------
    rates : SimplexRates
        From :func:`simplex_fg`.
    gamma0 : float
        Initial overlap.
    target : float
        Overlap to reach.
    tau_max : float
        Horizon of the search.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.theory.homogenized import half_time, simplex_fg
    >>> rates = simplex_fg(3, 8, beta=2.0, gamma=np.linspace(-0.5, 1.0, 7), samples=256)
    >>> round(half_time(rates), 4)
    1.3907
    """

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        gm = float(np.clip(y[0], rates.gamma[0], rates.gamma[-1]))
        f, g = np.interp(gm, rates.gamma, rates.f), np.interp(gm, rates.gamma, rates.g)
        return np.array([_simplex_rhs(gm, f, g, None)])

    def hit(_t: float, y: np.ndarray) -> float:
        return float(y[0] - target)

    hit.terminal = True  # type: ignore[attr-defined]
    sol = solve_ivp(rhs, (0.0, tau_max), [gamma0], events=hit, rtol=1e-8, atol=1e-10)
    return float(sol.t_events[0][0]) if len(sol.t_events[0]) else math.inf
