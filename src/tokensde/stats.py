"""Small statistical helpers: Wilson intervals and family-wise levels."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["wilson", "interval_errors", "z_for", "bonferroni_z", "loglog_slope"]


def z_for(level: float) -> float:
    r"""Two-sided normal quantile for a confidence ``level`` (0.99 -> 2.576).

    .. math:: z = \Phi^{-1}\big(\tfrac12 + \tfrac{\mathrm{level}}{2}\big)

    Parameters
    ----------
    level : float
        Confidence level in ``(0, 1)``.

    Returns
    -------
    float

    Examples
    --------
    >>> from tokensde.stats import z_for
    >>> round(z_for(0.99), 4), round(z_for(0.95), 4)
    (2.5758, 1.96)
    """
    return float(stats.norm.ppf(0.5 + level / 2.0))


def bonferroni_z(level: float, m: int) -> float:
    r"""Quantile making ``m`` two-sided intervals hold simultaneously with probability ``>= level``.

    Bonferroni: each interval at level ``1 - (1 - level)/m``,

    .. math:: z = \Phi^{-1}\Big(1 - \frac{1 - \mathrm{level}}{2 \max(m, 1)}\Big)

    Parameters
    ----------
    level : float
        Family-wise confidence level in ``(0, 1)``.
    m : int
        Number of intervals (``m <= 1``: a single interval).

    Returns
    -------
    float

    Examples
    --------
    >>> from tokensde.stats import bonferroni_z
    >>> round(bonferroni_z(0.99, 1), 4), round(bonferroni_z(0.99, 10), 4)
    (2.5758, 3.2905)
    """
    return float(stats.norm.ppf(1.0 - (1.0 - level) / (2.0 * max(m, 1))))


def wilson(k: np.ndarray | int, n: np.ndarray | int, z: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Wilson score interval for ``k`` successes out of ``n``.

    .. math::

        \frac{k + z^2/2}{n + z^2} \pm \frac{z}{n + z^2}\sqrt{\frac{k (n-k)}{n} + \frac{z^2}{4}}

    The bounds are exact at the ends: the lower bound is ``0`` at ``k = 0`` and the
    upper bound ``1`` at ``k = n`` (the formula gives them up to rounding, e.g.
    ``2e-19``, which would make an error bar ``k/n - low`` negative), and
    ``low <= k/n <= high`` always holds.

    Parameters
    ----------
    k, n : int or ndarray
        Successes and trials (broadcast together).
    z : float
        Normal quantile (:func:`z_for`, :func:`bonferroni_z`).

    Returns
    -------
    low, high : ndarray
        Bounds, with the broadcast shape of ``k`` and ``n``.

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.stats import wilson
    >>> low, high = wilson(3, 10, 1.96)
    >>> round(float(low), 4), round(float(high), 4)
    (0.1078, 0.6032)
    >>> low, high = wilson(np.array([0, 10]), 10, 1.96)  # exact at the ends
    >>> low.round(4).tolist(), high.round(4).tolist()
    ([0.0, 0.7225], [0.2775, 1.0])
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    centre = (k + z * z / 2.0) / (n + z * z)
    half = z / (n + z * z) * np.sqrt(k * (n - k) / n + z * z / 4.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
    low = np.where(k <= 0, 0.0, np.minimum(np.clip(centre - half, 0.0, 1.0), p))
    high = np.where(k >= n, 1.0, np.maximum(np.clip(centre + half, 0.0, 1.0), p))
    return low, high


def interval_errors(p: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    r"""``(2, m)`` error-bar lengths ``[p - low, high - p]`` for matplotlib, never negative (rounding at the ends).

    .. math:: e = \big(\max(p - \mathrm{low}, 0),\ \max(\mathrm{high} - p, 0)\big)

    Parameters
    ----------
    p, low, high : ndarray ``(m,)``
        Estimates and interval bounds.

    Returns
    -------
    ndarray ``(2, m)``
        The ``yerr`` argument of ``matplotlib.pyplot.errorbar``.

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.stats import interval_errors
    >>> interval_errors(np.array([0.3, 1.0]), np.array([0.1, 0.8]), np.array([0.6, 1.0])).round(4).tolist()
    [[0.2, 0.2], [0.3, 0.0]]
    """
    p, low, high = (np.asarray(a, dtype=float) for a in (p, low, high))
    return np.clip(np.vstack([p - low, high - p]), 0.0, None)


def loglog_slope(x: np.ndarray, y: np.ndarray, se: np.ndarray | None = None) -> tuple[float, float]:
    r"""Least-squares slope of ``log y`` against ``log x`` and its standard error.

    .. math:: \hat s = \frac{\sum w (u - \bar u)(v - \bar v)}{\sum w (u - \bar u)^2}

    with ``u = log x``, ``v = log y`` and weighted means. Without ``se`` the
    weights are 1 and the standard error comes from the residuals (``nan`` for
    two points). With ``se`` (standard errors of ``y``) the weights are
    ``(y / se)^2``, the inverse variances of ``log y`` by the delta method, so
    points within their noise of zero count little, and the standard error is
    ``(sum w (u - ubar)^2)^{-1/2}``.

    Parameters
    ----------
    x, y : ndarray ``(k,)``
        Positive abscissae; ordinates (their absolute values are used).
    se : ndarray ``(k,)``, optional
        Standard errors of ``y``.

    Returns
    -------
    slope, se_slope : float

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.stats import loglog_slope
    >>> x = np.array([1.0, 2.0, 4.0, 8.0])
    >>> y = 3.0 * x**-0.5 * np.array([1.01, 0.99, 1.02, 0.98])
    >>> slope, se = loglog_slope(x, y)
    >>> round(slope, 4), round(se, 4)
    (-0.5087, 0.013)
    >>> slope, se = loglog_slope(x, y, se=0.05 * y)
    >>> round(slope, 4), round(se, 4)
    (-0.5087, 0.0323)
    """
    u = np.log(np.asarray(x, dtype=float))
    yy = np.abs(np.asarray(y, dtype=float))
    v = np.log(yy)
    w = np.ones_like(u) if se is None else (yy / np.asarray(se, dtype=float)) ** 2
    uc = u - (w * u).sum() / w.sum()
    sxx = float((w * uc * uc).sum())
    slope = float((w * uc * (v - (w * v).sum() / w.sum())).sum() / sxx)
    if se is not None:
        return slope, float(1.0 / np.sqrt(sxx))
    k = len(u)
    if k <= 2:
        return slope, float("nan")
    resid = v - v.mean() - slope * uc
    return slope, float(np.sqrt((resid * resid).sum() / (k - 2) / sxx))
