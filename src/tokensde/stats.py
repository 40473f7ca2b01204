"""Small statistical helpers: Wilson intervals and family-wise levels."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["wilson", "z_for", "bonferroni_z"]


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
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    centre = (k + z * z / 2.0) / (n + z * z)
    half = z / (n + z * z) * np.sqrt(k * (n - k) / n + z * z / 4.0)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
