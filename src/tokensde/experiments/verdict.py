r"""The verdict toolkit: check records and the ready-made checks every experiment builds its verdict from.

A *check* is one statement about a run's table that can be true or false, with the
numbers behind it and the tolerance it was held to, and where that tolerance comes
from (a confidence level and a sample size, a model's truncation error, a stated
precision). A *verdict* is ``PASS`` when there is at least one check and every
check passed; an empty list of checks is a ``FAIL`` (nothing was shown).

Ready-made checks (each returns a :class:`Check`):

- :func:`binomial_cells`: Monte-Carlo counts against probabilities, cell by cell,
  at the family-wise level (Bonferroni Wilson bands);
- :func:`pooled_z`: estimates against targets pooled per family (the sum of the
  differences over the root of the summed variances, ``|z| <= z_fw``): sees a
  systematic bias of a few percent that no single cell's band can;
- :func:`slope_within`: a fitted slope within ``max(model tolerance, z * se)`` of
  its theoretical value, both parts reported;
- :func:`coverage`: how many intervals contain their target against the binomial
  law of their nominal coverage;
- :func:`monotone`: a trend in the stated direction, successive differences not
  reversed beyond their noise, overall change significant;
- :func:`at_most` / :func:`at_least`: a number against a stated bound;
- :func:`check`: anything else, with its numbers.

The records are JSON-able dicts in ``verdict.json``: ``name``, ``passed``,
``detail`` (one line for people), ``values`` (the numbers), ``tolerance`` and
``source``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sstats

from ..stats import bonferroni_z, wilson, z_for

__all__ = [
    "Check",
    "at_least",
    "at_most",
    "binomial_cells",
    "check",
    "coverage",
    "monotone",
    "pooled_z",
    "settle",
    "slope_within",
    "verdict",
]


def _plain(v: Any) -> Any:
    """A JSON-able copy: NumPy scalars to Python, non-finite floats to ``None``, containers element-wise."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v if v is None or isinstance(v, str) else str(v)


@dataclass(frozen=True)
class Check:
    """One check: its name, whether it passed, a line with the numbers, the numbers themselves,
    the tolerance it was held to and where that tolerance comes from."""

    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    tolerance: float | None = None
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": bool(self.passed),
            "detail": self.detail,
            "values": _plain(self.values),
            "tolerance": _plain(self.tolerance),
            "source": self.source,
        }


def verdict(checks: Iterable[Check], notes: Sequence[str] = ()) -> dict[str, Any]:
    """``{"verdict": "PASS" | "FAIL", "checks": [...]}``: ``PASS`` only with at least one check, all passed.

    An empty list of checks gives ``FAIL`` with one failed check saying so.
    """
    cs = list(checks)
    if not cs:
        cs = [check("at least one check was made", False, "no check applied to this table (nothing was shown)")]
    out: dict[str, Any] = {
        "verdict": "PASS" if all(c.passed for c in cs) else "FAIL",
        "checks": [c.as_dict() for c in cs],
    }
    if notes:
        out["notes"] = list(notes)
    return out


def settle(v: dict[str, Any]) -> dict[str, Any]:
    """The runtime's guard on any experiment's verdict dict (also one not built with :func:`verdict`, e.g. from
    an experiment loaded through ``TOKENSDE_EXPERIMENTS``): ``PASS`` only when it says so, has at least one
    check, and every check passed; otherwise ``FAIL`` (an empty list gets the failed check of :func:`verdict`)."""
    cs = list(v.get("checks") or [])
    out = dict(v)
    if not cs:
        out["checks"] = verdict([])["checks"]
    ok = v.get("verdict") == "PASS" and bool(cs) and all(bool(c.get("passed")) for c in cs)
    out["verdict"] = "PASS" if ok else "FAIL"
    return out


def check(
    name: str,
    passed: bool,
    detail: str,
    values: dict[str, Any] | None = None,
    tolerance: float | None = None,
    source: str = "",
) -> Check:
    """A check made by hand (the ready-made ones below cover the common statistics)."""
    return Check(name, bool(passed), detail, dict(values or {}), tolerance, source)


def at_most(name: str, value: float, limit: float, what: str, source: str, fmt: str = ".4g") -> Check:
    """``value <= limit`` (a NaN value fails)."""
    ok = bool(np.isfinite(value) and value <= limit)
    return check(name, ok, f"{what} = {value:{fmt}} (limit {limit:{fmt}}: {source})", {what: value}, limit, source)


def at_least(name: str, value: float, limit: float, what: str, source: str, fmt: str = ".4g") -> Check:
    """``value >= limit`` (a NaN value fails)."""
    ok = bool(np.isfinite(value) and value >= limit)
    return check(name, ok, f"{what} = {value:{fmt}} (at least {limit:{fmt}}: {source})", {what: value}, limit, source)


def binomial_cells(
    name: str,
    k: Sequence[int] | np.ndarray,
    n: Sequence[int] | np.ndarray,
    p: Sequence[float] | np.ndarray,
    labels: Sequence[str],
    level: float,
    extra_high: Sequence[int] | np.ndarray | None = None,
) -> Check:
    r"""Every cell's probability ``p`` inside the Wilson band of ``k`` out of ``n`` at the family-wise ``level``.

    The bands use the Bonferroni quantile for ``m`` cells, so that all of them hold
    together with probability ``>= level``. ``extra_high`` (e.g. runs still
    undecided, which may end either way) widens each band's upper side: the upper
    bound is that of ``k + extra_high``. No cells is a failed check.
    """
    k, n, p = (np.asarray(a, dtype=float) for a in (k, n, p))
    m = len(k)
    if m == 0:
        return check(name, False, "no cells to check", source=f"family-wise {level}")
    zf = bonferroni_z(level, m)
    low, _ = wilson(k, n, zf)
    _, high = wilson(k + (0.0 if extra_high is None else np.asarray(extra_high, dtype=float)), n, zf)
    inside = (p >= low) & (p <= high)
    bad = [
        f"{labels[int(i)]}: mc {k[i] / n[i]:.4f} [{low[i]:.4f}, {high[i]:.4f}], theory {p[i]:.4f}"
        for i in np.flatnonzero(~inside)
    ]
    detail = f"{int(inside.sum())}/{m} cells inside their family-wise {level:g} Wilson band (z = {zf:.3f})"
    if bad:
        detail += "; outside: " + ", ".join(bad)
    return check(
        name,
        bool(inside.all()),
        detail,
        {"cells": m, "inside": int(inside.sum()), "z": zf, "outside": bad},
        zf,
        f"Bonferroni over {m} cells at family-wise level {level:g}",
    )


def pooled_z(
    name: str,
    estimate: Sequence[float] | np.ndarray,
    se: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    families: Sequence[Any],
    level: float,
    family_label: str = "family",
    scale: Sequence[float] | np.ndarray | None = None,
) -> Check:
    r"""Estimates against their targets pooled per family: for each family ``F``

    .. math:: z_F = \frac{\sum_{i \in F} w_i (\hat p_i - p_i)}{\sqrt{\sum_{i \in F} w_i^2 \, se_i^2}},

    (``w = scale``, e.g. the number of runs, so that the numerator is an excess
    count; 1 by default), which is standard normal when every estimate is
    unbiased with the stated standard error (independent cells). Passes when
    ``|z_F| <= z_fw`` for every family, ``z_fw`` the two-sided Bonferroni
    quantile over the families at ``level``. A family whose variances are all
    zero and whose estimates all equal their targets has ``z = 0``; with a
    difference and no variance, ``|z| = inf`` (fails). No families is a failed check.
    """
    est, s, tgt = (np.asarray(a, dtype=float) for a in (estimate, se, target))
    w = np.ones_like(est) if scale is None else np.asarray(scale, dtype=float)
    fam = list(families)
    keys = list(dict.fromkeys(fam))
    if not keys:
        return check(name, False, "no cells to pool", source=f"family-wise {level}")
    zf = bonferroni_z(level, len(keys))
    zs: dict[str, float] = {}
    parts = []
    for key in keys:
        idx = np.array([f == key for f in fam])
        diff = float((w[idx] * (est[idx] - tgt[idx])).sum())
        var = float((w[idx] ** 2 * s[idx] ** 2).sum())
        if var > 0.0:
            z = diff / math.sqrt(var)
        else:
            z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
        zs[str(key)] = z
        obs, exp = float((w[idx] * est[idx]).sum()), float((w[idx] * tgt[idx]).sum())
        parts.append(f"{family_label} {key}: {obs:.1f} vs {exp:.1f} (z = {z:+.2f}, {int(idx.sum())} cells)")
    ok = all(abs(z) <= zf for z in zs.values())
    return check(
        name,
        ok,
        "; ".join(parts) + f"; |z| <= {zf:.3f} required",
        {"z": zs, "z_limit": zf},
        zf,
        f"two-sided, Bonferroni over {len(keys)} {family_label} families at family-wise level {level:g}",
    )


def slope_within(
    name: str,
    slope: float,
    se: float,
    expected: float,
    model_tol: float,
    level: float,
    m: int = 1,
    side: str = "both",
    what: str = "slope",
) -> Check:
    r"""A fitted slope against its theoretical value, within ``max(model_tol, z * se)``.

    ``z`` is the Bonferroni quantile over ``m`` slopes at ``level`` (two-sided).
    ``model_tol`` is the part no sample size removes (pre-asymptotic curvature,
    a truncation error); ``z * se`` the statistical part. ``side = "upper"``
    checks only ``slope <= expected + tol`` (a rate *at least* as fast as
    theory), ``"lower"`` only ``slope >= expected - tol``. A NaN slope fails; a
    NaN standard error (two points) leaves the model part alone.
    """
    z = bonferroni_z(level, m)
    stat = z * se if np.isfinite(se) else 0.0
    tol = max(model_tol, stat)
    dev = slope - expected
    if side == "upper":
        ok = dev <= tol
    elif side == "lower":
        ok = dev >= -tol
    else:
        ok = abs(dev) <= tol
    ok = bool(np.isfinite(slope) and ok)
    rel = {"both": "|slope - expected|", "upper": "slope - expected", "lower": "expected - slope"}[side]
    detail = (
        f"{what} {slope:.3f} ± {se:.3f} (se) vs {expected:.3f}: {rel} <= max(model tol {model_tol:g}, "
        f"{z:.2f} se = {stat:.3f}) = {tol:.3f}"
    )
    return check(
        name,
        ok,
        detail,
        {"slope": slope, "se": se, "expected": expected, "model_tol": model_tol, "stat_tol": stat, "z": z},
        tol,
        f"max of the model tolerance and {z:.2f} standard errors (level {level:g} over {m} slopes)",
    )


def coverage(
    name: str, covered: Sequence[bool] | np.ndarray, nominal: float, level: float, what: str = "intervals"
) -> Check:
    r"""``k`` of ``m`` intervals contain their target; each nominally with probability ``nominal``.

    Fails when ``P(Binomial(m, nominal) <= k) < 1 - level`` (too few covered:
    the intervals are too narrow or the estimates biased). No intervals fails.
    """
    c = np.asarray(covered, dtype=bool)
    m, k = len(c), int(c.sum())
    if m == 0:
        return check(name, False, f"no {what} to check", source=f"level {level:g}")
    p_low = float(sstats.binom.cdf(k, m, nominal))
    ok = p_low >= 1.0 - level
    return check(
        name,
        ok,
        f"{k}/{m} {what} contain their target (nominal {nominal:g}); P(Binomial({m}, {nominal:g}) <= {k}) = "
        f"{p_low:.3g} (fails below {1.0 - level:.3g})",
        {"covered": k, "intervals": m, "nominal": nominal, "p_value": p_low},
        1.0 - level,
        f"one-sided binomial test of the coverage at level {level:g}",
    )


def monotone(
    name: str,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    se: Sequence[float] | np.ndarray,
    direction: str,
    level: float,
    what: str = "y",
) -> Check:
    r"""``y`` moves in ``direction`` (``"increasing"`` or ``"decreasing"``) along sorted ``x``.

    Two parts: no successive difference goes against the direction by more than
    ``z * sqrt(se_i^2 + se_{i+1}^2)`` (Bonferroni over the differences), and the
    overall change ``y_last - y_first`` is in the direction by more than
    ``z * sqrt(se_first^2 + se_last^2)``. Fewer than two points fail.
    """
    order = np.argsort(np.asarray(x, dtype=float))
    xs = np.asarray(x, dtype=float)[order]
    ys = np.asarray(y, dtype=float)[order]
    ss = np.asarray(se, dtype=float)[order]
    if len(ys) < 2:
        return check(name, False, f"fewer than two points of {what}", source=f"level {level:g}")
    sign = 1.0 if direction == "increasing" else -1.0
    diffs = sign * np.diff(ys)
    noise = np.sqrt(ss[1:] ** 2 + ss[:-1] ** 2)
    zd = bonferroni_z(level, len(diffs))
    reversed_ = np.flatnonzero(diffs < -zd * noise)
    z1 = z_for(2.0 * level - 1.0)  # one-sided quantile at level
    total = sign * (ys[-1] - ys[0])
    total_noise = math.sqrt(ss[0] ** 2 + ss[-1] ** 2)
    ok = bool(len(reversed_) == 0 and total > z1 * total_noise and np.isfinite(total))
    detail = (
        f"{what} {direction} over x = {xs[0]:g}..{xs[-1]:g}: overall change {sign * total:+.4g} "
        f"(needs {'>' if sign > 0 else '<'} {sign * z1 * total_noise:+.4g}); "
        f"{len(reversed_)} of {len(diffs)} steps reversed beyond {zd:.2f} se"
    )
    if len(reversed_):
        detail += ": " + ", ".join(f"{xs[i]:g}->{xs[i + 1]:g}" for i in reversed_)
    return check(
        name,
        ok,
        detail,
        {"x": xs, "y": ys, "se": ss, "reversed": len(reversed_), "change": sign * total},
        zd,
        f"successive differences at family-wise level {level:g}; overall change one-sided at {level:g}",
    )
