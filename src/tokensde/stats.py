"""Small statistical helpers: Wilson intervals and family-wise levels."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["wilson", "interval_errors", "z_for", "bonferroni_z", "loglog_slope"]


def z_for(level: float) -> float:
    """Two-sided normal quantile for a confidence ``level`` (0.99 -> 2.576)."""
    return float(stats.norm.ppf(0.5 + level / 2.0))


def bonferroni_z(level: float, m: int) -> float:
    """Quantile making ``m`` two-sided intervals hold simultaneously with probability ``>= level``."""
    return float(stats.norm.ppf(1.0 - (1.0 - level) / (2.0 * max(m, 1))))


def wilson(k: np.ndarray | int, n: np.ndarray | int, z: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Wilson score interval for ``k`` successes out of ``n``.

    .. math::

        \frac{k + z^2/2}{n + z^2} \pm \frac{z}{n + z^2}\sqrt{\frac{k (n-k)}{n} + \frac{z^2}{4}}

    The bounds are exact at the ends: the lower bound is ``0`` at ``k = 0`` and the
    upper bound ``1`` at ``k = n`` (the formula gives them up to rounding, e.g.
    ``2e-19``, which would make an error bar ``k/n - low`` negative), and
    ``low <= k/n <= high`` always holds.
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
    """``(2, m)`` error-bar lengths ``[p - low, high - p]`` for matplotlib, never negative (rounding at the ends)."""
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
