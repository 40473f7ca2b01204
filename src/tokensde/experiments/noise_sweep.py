r"""``noise-sweep``: model A at fixed ``Vbar = I``, noise scale ``sigma`` from 0 to 1.

For a few settings ``(n, d, beta)`` and every ``sigma`` of a list, ``runs``
systems of ``n`` i.i.d. uniform tokens follow the limit SDE of model A with
``Vbar = I`` (attention drift) and noise scale ``sigma`` (projected Itô
Euler–Maruyama, ``dt = step / (d - 1)``, horizon ``T``; ``sigma = 0`` is the
deterministic attention flow). Systems are classified at ``T/2`` and ``T`` as in
:mod:`tokensde.experiments.multi_token` (collapsed / antipodal / other, clusters
at threshold ``eps``). Each ``(setting, sigma)`` cell is one unit, seeded from
``(seed, n, d, beta, sigma)`` only: cells are independent samples, which is what
the trend test below assumes.

Where antipodal endings can appear (two tokens). With ``Vbar = I`` the attention
drift adds ``b_att = 2 q (1 - rho^2)`` to the overlap (``q = 1 - p`` the weight on
the other token), which pushes ``log|x_1 + x_2|`` away from the antipode at the
rate ``2 q(-1) = 2 / (1 + e^{2 beta})``; the noise pulls it in at
``sigma^2 |lambda_a(d, beta)|`` where ``lambda_a`` is the antipodal exponent at
``sigma = 1``. The antipodal configuration therefore attracts iff
``sigma > sigma_c = sqrt(2 q(-1) / |lambda_a|)`` (needs ``beta > beta_c(d)``;
``sigma_c = inf`` otherwise). ``sigma_c`` is reported per setting (and marked in
the figures); for ``n > 2`` it is only a guide.

Two-token cells (``exit_*`` keys): the same simulation (the same model, solver,
:func:`~tokensde.experiments.multi_token.run_systems`, and the matrix noise route
that the settings' cells use, ``n >= d``) for ``exit_runs`` pairs of uniform
tokens at ``(exit_d, exit_beta)`` and each ``exit_sigma``, against the exact law
of two tokens at ``Vbar = I``: the overlap is the diffusion of
:class:`~tokensde.theory.two_point.TwoPointMotion` with the model-A kernel times
``sigma^2`` and the attention drift ``b_att`` (:func:`pair_motion`), and
``P(antipodal)`` is its exit law ``P(rho -> -1 | rho_0)`` averaged over the law of
the overlap of two uniform tokens (density ``~ (1 - r^2)^{(d-3)/2}``, Gauss–Jacobi
quadrature, :func:`exit_law_uniform`). This is the law that defines ``sigma_c``,
and it depends on ``sigma`` (unlike at ``Vbar = 0``, where ``sigma`` is only a time
change): a noise of the wrong size or not common to both tokens shows here (a
noise 10% too large raises ``P`` by 0.013 to 0.017 per default cell, about 4.4
pooled standard errors). Three biases are removed, measured or avoided:

* *step*: the Euler scheme has weak order 1: at the sweep's step the antipodal
  fraction is low by about 0.007 at ``sigma = 1`` (3%; ``d = 3, beta = 1.5``). The pairs run with the step ``dt / 2``
  and, on the same Brownian path (normals summed pairwise,
  ``run_systems(..., coarsen=2)``), with the sweep's ``dt``; the estimate is the
  Richardson combination ``2 P(dt/2) - P(dt)`` (bias ``O(dt^2)``), with its
  standard error from the paired outcomes (the counts of (fine, coarse)
  antipodal or not). The level ``dt / 2`` is needed: ``2 P(dt) - P(2 dt)`` at the
  default step keeps an ``O(dt^2)`` bias of about ``+0.006`` at ``sigma = 1``
  (measured with 65536 pairs: it exceeds ``2 P(dt/2) - P(dt)`` by ``0.0041 ± 0.0023``
  in float64 and ``0.0053 ± 0.0023`` in float32, and theory by ``0.006`` and
  ``0.0035``), a quarter of it at ``dt / 2`` (``2 P(dt/2) - P(dt)`` minus theory:
  ``+0.0019`` and ``-0.0018``, standard error 0.002). The raw ``P(dt/2)``, its
  pooled z against theory and the step bias ``P(dt/2) - P(dt)`` are reported.
* *horizon*: the exit law is a ``t -> infinity`` statement. Near ``sigma_c`` the
  antipodal boundary is almost neutral and pairs decide slowly (time scale
  ``tau_a = D_- / (2 lambda^2)`` of the antipodal exponent ``lambda`` including
  the attention drift). A cell is *resolved* when ``exit_horizon_factor * tau_a <= T``;
  unresolved cells are reported, not checked. The drift ``P(T) - P(T/2)`` on the
  same paths is reported. Measured (``d = 4, beta = 2, sigma = 0.6``, 16384 pairs):
  the antipodal fraction is within 0.001 of its value at ``t = 80`` from ``t = 25`` on.
* *route*: the matrix route, not the ``auto`` one (the kernel route for
  ``n = 2 < d``): in float32 the kernel route's closed-form two-token factor
  (:func:`~tokensde.noise.gram_factor`) loses its Schur complement to
  cancellation, which leaves an independent noise of relative size
  ``~ sqrt(eps_32)`` at the antipode; antipodal pairs then sit at
  ``1 + rho ~ 5e-8`` instead of converging, and leak back (measured at
  ``sigma = 1``: 46 of 16384 pairs antipodal at ``T/2 = 20`` and not at ``T = 40``,
  against 2 in float64 and 2 with the matrix route, whose antipodal pairs reach
  ``1 + rho = 0`` in float32): a bias of about ``-0.003`` by ``T = 40``.

Verdict (family-wise level ``level``), built from :mod:`tokensde.experiments.verdict`:

1. **no antipodal endings without noise**: at ``sigma = 0`` no system ends
   antipodal (the attention flow collapses generic starts; ``T`` must exceed its
   collapse time, about 30 at ``beta = 2``): every setting's count inside the
   family-wise Wilson band of ``P = 0``, i.e. zero.
2. **increasing trend**: for every setting the one-sided Cochran–Armitage test of
   an increasing antipodal fraction in ``sigma`` (scores = the ``sigma`` values,
   independent binomial cells) has ``p < (1 - level) / m`` (Bonferroni over the
   ``m`` settings): the comparison of the conditions, pooled per setting. It is
   undefined (and fails) when a setting has no antipodal ending at all.
3. **two-token exit law, per cell**: in every resolved two-token cell the
   Richardson estimate is within ``z_fw`` standard errors of the exact law
   (two-sided, Bonferroni over the cells).
4. **two-token exit law, pooled**: the excess of the Richardson estimates over
   theory summed over the resolved cells, over its standard error, within
   ``z`` at ``level`` (sees a bias of a few percent common to the cells that no
   single cell resolves). No resolved cell is a failed check (nothing shown).

Reported, not checked: **local decreases between neighbours**: for every pair
of consecutive ``sigma`` values the one-sided two-proportion z-test of a
*decrease* at the family-wise level (Bonferroni over all pairs). The trend is
not monotone in general and nothing in the theory says it must be: at fixed
``T`` larger noise also speeds the metastable leak of unequal antipodal
clusters to collapse (see ``multi-token``), which bends the curve down at large
``sigma``. Measured with the defaults (512 runs, ``T = 40``), for
``n = 32, d = 4, beta = 2``: antipodal 119/512 at ``sigma = 0.8`` and 69/512 at
``sigma = 1`` (``z = 4.0`` against ``3.3``), while 141 systems were antipodal at
``T/2`` and 54 of them leaked to collapse by ``T``. The increasing trend
(check 2) holds in every setting (``p <= 1e-5``), and the antipodal endings
appear near the two-token ``sigma_c ~ 0.2``.

Reported per cell: counts, fractions with 99% Wilson intervals, the T/2 -> T
drift (``tv_half``, ``leak``), mean energy, and per setting the trend statistic
``z``, its p-value and ``sigma_c``. The results table holds both kinds of cells
(column ``kind``: ``sweep`` or ``exit_law``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import special
from scipy import stats as sstats

from ..models.value_noise import ValueNoise
from ..noise import derive_seed
from ..sphere import uniform
from ..stats import wilson, z_for
from ..theory import value_noise as theory_a
from ..theory.two_point import TwoPointMotion
from . import plotting
from .base import Experiment, ExperimentConfig, Progress, each_in, recorded
from .multi_token import classify, condition_row, run_systems
from .verdict import Check, binomial_cells, check, pooled_z, verdict

__all__ = [
    "NoiseSweep",
    "NoiseSweepConfig",
    "SweepSetting",
    "cochran_armitage",
    "exit_law_uniform",
    "pair_motion",
    "paired_estimates",
    "sigma_c",
]


class SweepSetting(BaseModel):
    """One ``(n, d, beta)`` setting of the sweep."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    n: int = Field(ge=2, le=1024, description="tokens per system, in [2, 1024]")
    d: int = Field(ge=3, le=512, description="dimension, in [3, 512]")
    beta: float = Field(ge=0.0, le=20.0, description="inverse temperature, in [0, 20]")

    def key(self) -> str:
        return f"n{self.n}-d{self.d}-b{self.beta:g}"


DEFAULT_SETTINGS = [
    SweepSetting(n=8, d=4, beta=2.0),
    SweepSetting(n=32, d=4, beta=2.0),
    SweepSetting(n=16, d=8, beta=2.0),
]


class NoiseSweepConfig(ExperimentConfig):
    """Configuration of ``noise-sweep`` (every field has a default)."""

    settings: list[SweepSetting] = Field(default=DEFAULT_SETTINGS, min_length=1, description="(n, d, beta) settings")
    sigma: list[float] = Field(
        default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0], min_length=3, description="noise scales, each in [0, 4]"
    )
    runs: int = Field(default=512, ge=10, le=1_000_000, description="systems per cell, in [10, 1e6]")
    T: float = Field(default=40.0, gt=0.0, le=1e4, description="horizon, in (0, 1e4]")
    step: float = Field(default=0.1, gt=0.0, le=0.5, description="time step times (d - 1), in (0, 0.5]")
    eps: float = Field(default=1e-2, gt=0.0, lt=0.5, description="cluster threshold, in (0, 0.5)")
    level: float = Field(default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level, in (0.5, 1)")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")
    dtype: Literal["float32", "float64"] = Field(default="float32", description="float32 or float64")
    collapse_tol: float = Field(
        default=1e-8, ge=0.0, le=1e-4, description="freeze systems with 1 - <x_i, x_0> below it, in [0, 1e-4]"
    )

    exit_d: int = Field(default=3, ge=3, le=512, description="two-token cells: dimension, in [3, 512]")
    exit_beta: float = Field(default=1.5, ge=0.0, le=20.0, description="two-token cells: beta, in [0, 20]")
    exit_sigma: list[float] = Field(
        default=[0.7, 0.8, 0.9, 1.0],
        max_length=64,
        description="two-token cells: noise scales, each in (0, 4] (empty: no two-token cells)",
    )
    exit_runs: int = Field(
        default=6144, ge=10, le=10_000_000, description="two-token cells: pairs per cell, in [10, 1e7]"
    )
    exit_horizon_factor: float = Field(
        default=8.0,
        gt=0.0,
        le=1e3,
        description="two-token cells: a cell is checked when exit_horizon_factor * tau_a <= T, in (0, 1000]",
    )

    @field_validator("sigma")
    @classmethod
    def _sigma_range(cls, v: list[float]) -> list[float]:
        out = each_in(v, 0.0, 4.0, "sigma")
        if len(out) < 3:
            raise ValueError(f"needs at least 3 distinct values, got {len(out)}")
        return out

    @field_validator("exit_sigma")
    @classmethod
    def _exit_sigma_range(cls, v: list[float]) -> list[float]:
        out = each_in(v, 0.0, 4.0, "exit_sigma")
        if out and out[0] <= 0.0:
            raise ValueError(f"each exit_sigma must be in (0, 4], got {out[0]}")
        return out

    @field_validator("settings")
    @classmethod
    def _distinct(cls, v: list[SweepSetting]) -> list[SweepSetting]:
        keys = [s.key() for s in v]
        if len(set(keys)) != len(keys):
            raise ValueError("settings must be distinct")
        return v


def sigma_c(d: int, beta: float) -> float:
    r"""Two-token threshold ``sqrt(2 q(-1) / |lambda_a|)`` above which antipodality attracts at ``Vbar = I``."""
    lam = theory_a.exponent_antipodal(d, beta)
    if not lam < 0.0:
        return math.inf
    return math.sqrt((2.0 / (1.0 + math.exp(2.0 * beta))) / -lam)


def pair_motion(d: int, beta: float, sigma: float) -> TwoPointMotion:
    r"""The overlap diffusion of two model-A tokens at ``Vbar = I`` and noise scale ``sigma``.

    The kernel of :func:`tokensde.theory.value_noise.two_point_motion` (times ``sigma^2``)
    and the attention drift ``b_att(rho) = 2 q (1 - rho^2)``, ``q = 1 - p`` the weight on
    the other token (``p = 1 / (1 + e^{-beta (1 - rho)})``), with its exact derivative
    ``b_att' = 2 beta p q (1 - rho^2) - 4 q rho``.
    """
    m = theory_a.two_point_motion(d, beta, sigma)
    b = float(beta)

    def pq(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = 1.0 / (1.0 + np.exp(-b * (1.0 - r)))
        return p, 1.0 - p

    def b_att(r: np.ndarray) -> np.ndarray:
        return 2.0 * pq(r)[1] * (1.0 - r * r)

    def db_att(r: np.ndarray) -> np.ndarray:
        p, q = pq(r)
        return 2.0 * b * p * q * (1.0 - r * r) - 4.0 * q * r

    return TwoPointMotion(d=d, c0=m.c0, c1=m.c1, dc0=m.dc0, dc1=m.dc1, b_att=b_att, db_att=db_att)


#: Gauss–Jacobi nodes of the initial-overlap average (96 nodes change the default cells' values by < 1e-5)
EXIT_NODES = 48


def exit_law_uniform(d: int, beta: float, sigma: float, nodes: int = EXIT_NODES) -> dict[str, float]:
    r"""``P(antipodal)`` of two uniform tokens at ``Vbar = I``: the exit law averaged over the initial overlap.

    The overlap of two independent uniform points of ``S^{d-1}`` has the density
    ``~ (1 - r^2)^{(d-3)/2}`` on ``(-1, 1)``; the average of ``P(rho -> -1 | rho_0)``
    (:meth:`TwoPointMotion.p_antipodal` of :func:`pair_motion`) is a Gauss–Jacobi sum.
    Returns ``p`` and, for the horizon, the antipodal exponent ``lambda`` (with the
    attention drift), ``D_-`` and ``tau_a = D_- / (2 lambda^2)`` (``inf`` at ``lambda = 0``).
    """
    m = pair_motion(d, beta, sigma)
    a = 0.5 * (d - 3)
    t, w = special.roots_jacobi(nodes, a, a)
    p = float(np.dot(w, [m.p_antipodal(float(r)) for r in t]) / w.sum())
    lam, dm = m.exponent_antipodal, m.lower.D
    tau = math.inf if lam == 0.0 else dm / (2.0 * lam * lam)
    return {"p": p, "exponent": lam, "D": dm, "tau": tau}


def paired_estimates(n11: np.ndarray, n10: np.ndarray, n01: np.ndarray, runs: np.ndarray) -> dict[str, np.ndarray]:
    r"""The Richardson estimate ``2 P(h) - P(2 h)`` and the step bias ``P(h) - P(2 h)`` from paired outcomes.

    Per pair ``Y = 2 a - c`` (``a``, ``c``: antipodal with the step ``h`` and with ``2 h`` on the
    same path) takes the values ``1, 2, -1, 0`` for ``(a, c) = (1, 1), (1, 0), (0, 1), (0, 0)``,
    counted by ``n11, n10, n01``; its mean and standard error (sample variance over ``runs``).
    The same for ``a - c``.
    """
    n11, n10, n01, r = (np.asarray(v, dtype=float) for v in (n11, n10, n01, runs))
    out: dict[str, np.ndarray] = {}
    for name, (m1, m2) in {
        "richardson": ((n11 + 2.0 * n10 - n01) / r, (n11 + 4.0 * n10 + n01) / r),
        "step_bias": ((n10 - n01) / r, (n10 + n01) / r),
    }.items():
        var = np.clip(m2 - m1 * m1, 0.0, None) * r / np.maximum(r - 1.0, 1.0)
        out[name], out[f"{name}_se"] = m1, np.sqrt(var / r)
    return out


def cochran_armitage(k: np.ndarray, n: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    r"""One-sided Cochran–Armitage test of an increasing proportion: ``(z, p)``.

    ``T = sum s_i (k_i - n_i pbar)``, ``Var T = pbar (1 - pbar) (sum n_i s_i^2 - (sum n_i s_i)^2 / N)``,
    ``p = P(Z > T / sqrt(Var T))``. ``(nan, nan)`` when ``pbar`` is 0 or 1 (no variation).
    """
    k, n, s = (np.asarray(a, dtype=float) for a in (k, n, scores))
    total = n.sum()
    pbar = k.sum() / total
    var = pbar * (1.0 - pbar) * ((n * s * s).sum() - (n * s).sum() ** 2 / total)
    if not var > 0.0:
        return math.nan, math.nan
    z = float((s * (k - n * pbar)).sum() / math.sqrt(var))
    return z, float(sstats.norm.sf(z))


#: cost of a pair-step relative to a system-step of the sweep's settings (progress bars, scheduling): measured
PAIR_WEIGHT = 0.25


def _exit_key(cfg: NoiseSweepConfig) -> str:
    return f"pairs-d{cfg.exit_d}-b{cfg.exit_beta:g}"


def _pair_classes(x: torch.Tensor, eps: float) -> dict[str, np.ndarray]:
    """``antipodal`` (``1 + rho < eps``) and ``collapsed`` (``1 - rho < eps``) per pair, from chordal distances.

    For two tokens these are the classes of :func:`~tokensde.experiments.multi_token.classify`.
    """
    plus = 0.5 * ((x[:, 0] + x[:, 1]) ** 2).sum(-1)
    minus = 0.5 * ((x[:, 0] - x[:, 1]) ** 2).sum(-1)
    return {"antipodal": (plus < eps).cpu().numpy(), "collapsed": (minus < eps).cpu().numpy()}


def _exit_checks(exits: pd.DataFrame, level: float, horizon_factor: float) -> list[Check]:
    """Checks 3 and 4: the resolved two-token cells' Richardson estimates against the exact law."""
    res = exits[exits["resolved"].astype(bool)]
    if res.empty:
        detail = (
            f"none of the {len(exits)} two-token cells is resolved at T (needs {horizon_factor:g} tau_a <= T; "
            + ", ".join(f"sigma={r.sigma:g}: tau_a = {r.tau_a:.3g}" for r in exits.itertuples())
            + "): nothing shown"
        )
        return [check("two-token exit law (resolved cells)", False, detail, source="horizon rule")]
    labels = [f"sigma={v:g}" for v in res["sigma"]]
    est, se, p = res["p_exit"].to_numpy(), res["p_exit_se"].to_numpy(), res["p_theory"].to_numpy()
    per_cell = pooled_z(
        "two-token exit law per cell: Richardson 2 P(dt/2) - P(dt) against the exact law",
        est, se, p, labels, level, family_label="cell", scale=res["runs"].to_numpy(),
    )  # fmt: skip
    pooled = pooled_z(
        "two-token exit law pooled over the cells (excess antipodal pairs against theory)",
        est, se, p, ["all"] * len(res), level, family_label="cells", scale=res["runs"].to_numpy(),
    )  # fmt: skip
    return [per_cell, pooled]


def _exit_notes(exits: pd.DataFrame) -> list[str]:
    """What the two-token check does not decide: the raw estimate, the step and horizon biases, unresolved cells."""
    res = exits[exits["resolved"].astype(bool)]
    out = []
    if len(res):
        r = res["runs"].to_numpy(float)
        diff = float(((res["p_antipodal"] - res["p_theory"]) * r).sum())
        z_raw = diff / math.sqrt(float((r * r * res["p_fine_se"] ** 2).sum()))
        out.append(
            f"two-token cells, raw P(dt/2) (not extrapolated) pooled against theory: excess {diff:+.1f} pairs, "
            f"z = {z_raw:+.2f} (the O(dt) bias the Richardson combination removes)"
        )
    for r in exits.itertuples():
        out.append(
            f"two-token sigma={r.sigma:g}: theory {r.p_theory:.4f}, Richardson {r.p_exit:.4f} ± {r.p_exit_se:.4f} "
            f"(z = {r.z_exit:+.2f}), P(dt/2) = {r.p_antipodal:.4f}, step bias P(dt/2) - P(dt) = "
            f"{r.step_bias:+.4f} ± {r.step_bias_se:.4f}, drift P(T) - P(T/2) = {r.time_drift:+.4f} ± "
            f"{r.time_drift_se:.4f}, undecided {r.n_other}/{r.runs}, tau_a = {r.tau_a:.3g}"
            + ("" if r.resolved else " (not resolved at T: not checked)")
        )
    return out


class NoiseSweep(Experiment):
    name = "noise-sweep"
    summary = "Model A at Vbar = I: antipodal endings as the noise scale sigma goes from 0 to 1, with a trend test"
    Config = NoiseSweepConfig
    quick = {
        "settings": [{"n": 8, "d": 4, "beta": 2.0}],
        "sigma": [0.0, 0.2, 0.5, 1.0],
        "runs": 192,
        "exit_sigma": [0.8, 1.0],
        "exit_runs": 4096,
        "T": 30.0,
        "step": 0.15,
    }

    def plan(self, cfg: NoiseSweepConfig) -> list[dict[str, Any]]:
        return [
            {"id": f"{s.key()}-sigma={sg:g}", "setting": s.model_dump(), "sigma": sg}
            for s in cfg.settings
            for sg in cfg.sigma
        ] + [{"id": f"{_exit_key(cfg)}-sigma={sg:g}", "exit_law": True, "sigma": sg} for sg in cfg.exit_sigma]

    def _steps(self, cfg: NoiseSweepConfig, d: int) -> tuple[float, int]:
        dt = cfg.step / max(d - 1, 1)
        return dt, 2 * math.ceil(cfg.T / (2.0 * dt))

    def unit_cost(self, cfg: NoiseSweepConfig, unit: dict[str, Any]) -> float:
        if unit.get("exit_law"):
            # the fine run (step dt / 2) and its coupled coarse run (dt), pair-steps weighted as in run_unit
            return float(PAIR_WEIGHT * 3 * self._steps(cfg, cfg.exit_d)[1] * cfg.exit_runs)
        return float(self._steps(cfg, unit["setting"]["d"])[1] * cfg.runs)

    def unit_memory(self, cfg: NoiseSweepConfig, unit: dict[str, Any], device: str) -> int:
        """``runs`` systems of ``n x d``: the float64 draw of ``x0``, one run of model A with ``Vbar = I`` beside
        ``x0`` (:func:`~tokensde.experiments.multi_token.run_systems`; no noise stream at ``sigma = 0``), and
        the classification of its ``T/2`` and ``T`` states (blocked metrics). Two-token cells: the fine run,
        then the coarse run beside ``x0`` and the fine run's two states; overlaps only (no metrics)."""
        from ..sizes import itemsize, metrics_bytes, uniform_bytes
        from .multi_token import _run_systems_bytes

        item = itemsize(cfg.dtype)
        if unit.get("exit_law"):
            bsz, d = cfg.exit_runs, cfg.exit_d
            bnd = bsz * 2 * d * item
            run = 3 * bnd + _run_systems_bytes(bsz, 2, d, item, device, True, True, coarsen=2, route="matrix")
            return int(max(uniform_bytes(bsz * 2, d, item), run) + 64 * bsz)
        s = unit["setting"]
        n, d, bsz = int(s["n"]), int(s["d"]), cfg.runs
        bnd = bsz * n * d * item
        draw = uniform_bytes(bsz * n, d, item)
        run = bnd + _run_systems_bytes(bsz, n, d, item, device, float(unit["sigma"]) > 0.0, True)
        classify = 3 * bnd + metrics_bytes(bsz, n, d, item)
        return int(max(draw, run, classify))

    def run_unit(
        self, cfg: NoiseSweepConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        if unit.get("exit_law"):
            return [self._run_exit_cell(cfg, float(unit["sigma"]), device, progress)]
        s = SweepSetting(**unit["setting"])
        sigma = float(unit["sigma"])
        n, d, beta = s.n, s.d, s.beta
        dt, steps = self._steps(cfg, d)
        dtype = getattr(torch, cfg.dtype)
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "noise-sweep", "x0", n, d, beta, sigma))
        x0 = uniform((cfg.runs, n), d, g, torch.float64).to(dtype=dtype, device=device)
        key = ("noise-sweep", n, d, beta, sigma)
        half, end, _ = run_systems(x0, beta, sigma, True, dt, steps, cfg.seed, key, cfg.collapse_tol, progress)
        return [
            {
                "kind": "sweep",
                "setting": s.key(),
                "n": n,
                "d": d,
                "beta": beta,
                "sigma": sigma,
                "runs": cfg.runs,
                "T": steps * dt,
                "dt": dt,
                "steps": steps,
                "beta_c": theory_a.beta_c(d),
                "sigma_c": sigma_c(d, beta),
                "above_sigma_c": bool(sigma > sigma_c(d, beta)),
                **condition_row(classify(half, beta, cfg.eps), classify(end, beta, cfg.eps), n),
            }
        ]

    def _run_exit_cell(
        self, cfg: NoiseSweepConfig, sigma: float, device: str, progress: Progress | None
    ) -> dict[str, Any]:
        """One two-token cell: pairs with the step ``dt / 2`` and, on the same paths, with the sweep's ``dt``;
        the exact law."""
        d, beta = cfg.exit_d, cfg.exit_beta
        dt, steps = self._steps(cfg, d)
        dt, steps = 0.5 * dt, 2 * steps  # the fine level; the coarse level is the sweep's step
        dtype = getattr(torch, cfg.dtype)
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "noise-sweep", "exit-law", "x0", d, beta, sigma))
        x0 = uniform((cfg.exit_runs, 2), d, g, torch.float64).to(dtype=dtype, device=device)
        key = ("noise-sweep", "exit-law", d, beta, sigma)
        tick = None if progress is None else (lambda active: progress(PAIR_WEIGHT * active))
        args = (x0, beta, sigma, True, dt, steps, cfg.seed, key, cfg.collapse_tol, tick)
        half, end, _ = run_systems(*args, route="matrix")
        fine_half, fine = _pair_classes(half, cfg.eps), _pair_classes(end, cfg.eps)
        del half, end
        _, end2, _ = run_systems(*args, coarsen=2, route="matrix")
        coarse = _pair_classes(end2, cfg.eps)
        a, c, h = fine["antipodal"], coarse["antipodal"], fine_half["antipodal"]
        law = exit_law_uniform(d, beta, sigma)
        return {
            "kind": "exit_law",
            "setting": _exit_key(cfg),
            "n": 2,
            "d": d,
            "beta": beta,
            "sigma": sigma,
            "runs": cfg.exit_runs,
            "T": steps * dt,
            "dt": dt,
            "dt_coarse": 2.0 * dt,
            "steps": steps,
            "beta_c": theory_a.beta_c(d),
            "sigma_c": sigma_c(d, beta),
            "above_sigma_c": bool(sigma > sigma_c(d, beta)),
            "n_antipodal": int(a.sum()),
            "n_collapsed": int(fine["collapsed"].sum()),
            "n_other": int((~a & ~fine["collapsed"]).sum()),
            "n_antipodal_half": int(h.sum()),
            "n_collapsed_half": int(fine_half["collapsed"].sum()),
            "n_antipodal_coarse": int(c.sum()),
            "n_collapsed_coarse": int(coarse["collapsed"].sum()),
            "n_both": int((a & c).sum()),
            "n_fine_only": int((a & ~c).sum()),
            "n_coarse_only": int((~a & c).sum()),
            "n_gained": int((a & ~h).sum()),
            "n_lost": int((~a & h).sum()),
            "p_theory": law["p"],
            "exponent_antipodal": law["exponent"],
            "tau_a": law["tau"],
            "resolved": bool(cfg.exit_horizon_factor * law["tau"] <= steps * dt),
        }

    def summarize(self, cfg: NoiseSweepConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        all_rows = pd.DataFrame(rows)
        sweep = all_rows[all_rows["kind"] == "sweep"]
        exits = all_rows[all_rows["kind"] == "exit_law"]
        t = sweep.sort_values(["n", "d", "beta", "sigma"]).reset_index(drop=True)
        t["trend_z"] = math.nan
        t["trend_p"] = math.nan
        t["decrease_z"] = math.nan  # one-sided z of a decrease from the previous sigma
        for _, idx in t.groupby("setting").groups.items():
            s = t.loc[idx].sort_values("sigma")
            zt, pt = cochran_armitage(s["n_antipodal"].to_numpy(), s["runs"].to_numpy(), s["sigma"].to_numpy())
            t.loc[idx, "trend_z"] = zt
            t.loc[idx, "trend_p"] = pt
            k, m = s["n_antipodal"].to_numpy(float), s["runs"].to_numpy(float)
            dec = [math.nan]
            for i in range(1, len(s)):
                pool = (k[i] + k[i - 1]) / (m[i] + m[i - 1])
                se = math.sqrt(pool * (1.0 - pool) * (1.0 / m[i] + 1.0 / m[i - 1]))
                dec.append((k[i - 1] / m[i - 1] - k[i] / m[i]) / se if se > 0 else 0.0)
            t.loc[s.index, "decrease_z"] = dec
        if len(exits):
            x = exits.sort_values("sigma").reset_index(drop=True)
            r = x["runs"].to_numpy(float)
            est = paired_estimates(x["n_both"], x["n_fine_only"], x["n_coarse_only"], r)
            x["p_exit"], x["p_exit_se"] = est["richardson"], est["richardson_se"]
            x["step_bias"], x["step_bias_se"] = est["step_bias"], est["step_bias_se"]
            pf = x["n_antipodal"].to_numpy() / r
            x["p_fine_se"] = np.sqrt(pf * (1.0 - pf) / r)
            gain, lost = x["n_gained"].to_numpy(float), x["n_lost"].to_numpy(float)
            x["time_drift"] = (gain - lost) / r  # P(T) - P(T/2) on the same paths
            x["time_drift_se"] = np.sqrt(np.clip((gain + lost) / r - x["time_drift"] ** 2, 0.0, None) / r)
            x["z_exit"] = (x["p_exit"] - x["p_theory"]) / x["p_exit_se"]
            t = pd.concat([t, x], ignore_index=True)
        r = t["runs"].to_numpy()
        z = z_for(cfg.level)
        for col in ("collapsed", "antipodal"):
            k = t[f"n_{col}"].to_numpy()
            t[f"p_{col}"] = k / r
            lo, hi = wilson(k, r, z)
            t[f"{col}_low"] = np.where(k == 0, 0.0, lo)  # exact ends (rounding residue of the closed form)
            t[f"{col}_high"] = np.where(k == r, 1.0, hi)
        t["p_other"] = t["n_other"] / r
        return t

    def verdict(self, cfg: NoiseSweepConfig, table: pd.DataFrame) -> dict[str, Any]:
        level = cfg.level
        sweep = table[table["kind"] == "sweep"]
        exits = table[table["kind"] == "exit_law"] if "kind" in table else table.iloc[:0]
        checks: list[Check] = []

        # 1. the attention flow alone: P(antipodal) = 0 exactly, so every count must be 0
        zero = sweep[sweep["sigma"] == 0.0]
        c = binomial_cells(
            "no antipodal endings without noise (sigma = 0)",
            zero["n_antipodal"].to_numpy(),
            zero["runs"].to_numpy(),
            np.zeros(len(zero)),
            [f"{k}" for k in zero["setting"]],
            level,
        )
        if len(zero):
            c = dataclasses.replace(
                c,
                detail=c.detail
                + "; "
                + ", ".join(
                    f"{r.setting}: {r.n_antipodal} antipodal, {r.n_collapsed}/{r.runs} collapsed"
                    for r in zero.itertuples()
                ),
            )
        else:
            c = dataclasses.replace(c, detail="sigma = 0 is not in the sweep: " + c.detail)
        checks.append(c)

        # 2. the conditions compared, pooled per setting: an increasing trend in sigma
        per = sweep.groupby("setting", sort=False).first()
        m = len(per)
        alpha = (1.0 - level) / max(m, 1)
        ok = m > 0 and bool((per["trend_p"] < alpha).all())
        checks.append(
            check(
                "antipodal fraction increases with sigma (one-sided Cochran-Armitage, Bonferroni)",
                ok,
                f"p < {alpha:.2g} required; "
                + ", ".join(f"{k}: z = {r.trend_z:.2f}, p = {r.trend_p:.2g}" for k, r in per.iterrows()),
                {"trend_z": dict(per["trend_z"]), "trend_p": dict(per["trend_p"]), "alpha": alpha},
                alpha,
                f"one-sided Cochran-Armitage test per setting at (1 - {level:g}) / {m} (Bonferroni over the settings)",
            )
        )

        # 3, 4. two-token cells against the exact exit law: per cell and pooled
        notes: list[str] = []
        if len(exits):
            checks.extend(_exit_checks(exits, level, cfg.exit_horizon_factor))
            notes.extend(_exit_notes(exits))
        else:
            notes.append("two-token cells: none (exit_sigma is empty): the exit law is not checked")

        pairs = int(sweep["decrease_z"].notna().sum())
        # one-sided, family-wise over the pairs (Bonferroni)
        z_pair = float(sstats.norm.isf((1.0 - level) / max(pairs, 1)))
        drops = sweep[sweep["decrease_z"] > z_pair]
        notes.insert(
            0,
            f"neighbouring sigma values (reported, not checked): largest decrease z = {sweep['decrease_z'].max():.2f} "
            f"against {z_pair:.2f} (one-sided, Bonferroni over {pairs} pairs)"
            + (
                "; no significant decrease"
                if drops.empty
                else "; significant decreases at: "
                + ", ".join(f"{r.setting} sigma={r.sigma:g}" for r in drops.itertuples())
                + " (metastable antipodal clusters leak to collapse faster at larger sigma within T)"
            ),
        )
        for k, s in sweep.groupby("setting", sort=False):
            pos = s[s["n_antipodal"] > 0]
            first = f"{pos['sigma'].min():g}" if len(pos) else "none"
            notes.append(
                f"{k}: first sigma with antipodal lower bound > 0 = {first}, sigma_c = {s['sigma_c'].iloc[0]:.3f}"
            )
        return verdict(checks, notes)

    def trajectory(self, cfg: NoiseSweepConfig, device: str = "cpu") -> dict[str, Any]:
        """The first setting's tokens (at most 32) at the largest ``sigma``, up to ``T``."""
        s = cfg.settings[0]
        sigma = cfg.sigma[-1]
        n = min(s.n, 32)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "noise-sweep", "trajectory"))
        x0 = uniform((1, n), s.d, gen, torch.float64).to(device)
        dt, steps = self._steps(cfg, s.d)
        model = ValueNoise(beta=s.beta, sigma=sigma, vbar=torch.eye(s.d, dtype=torch.float64, device=device))
        title = f"model A, {n} tokens, d = {s.d}, beta = {s.beta:g}, Vbar = I, sigma = {sigma:g}"
        return recorded(model, x0, dt, steps, cfg.seed, ("noise-sweep", "trajectory"), title)

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The report's interactive (plotly) figures (beside the static ones of :meth:`figures`)."""
        return _interactive_figures(table, cfg)

    def figures(self, cfg: NoiseSweepConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        exits = table[table["kind"] == "exit_law"]
        sweep = table[table["kind"] == "sweep"]
        fig, axes = plt.subplots(1, 2 if len(exits) else 1, figsize=(11.0 if len(exits) else 7.0, 4.5), squeeze=False)
        ax = axes[0][0]
        keys = list(dict.fromkeys(sweep["setting"]))
        colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(len(keys), 1)))
        for color, k in zip(colors, keys, strict=False):
            s = sweep[sweep["setting"] == k].sort_values("sigma")
            err = np.clip(
                np.vstack([s["p_antipodal"] - s["antipodal_low"], s["antipodal_high"] - s["p_antipodal"]]), 0.0, None
            )
            lab = f"{k} (trend p = {s['trend_p'].iloc[0]:.1g})"
            ax.errorbar(s["sigma"], s["p_antipodal"], yerr=err, fmt="o-", ms=3.5, color=color, capsize=2, label=lab)
            sc = s["sigma_c"].iloc[0]
            if math.isfinite(sc) and sc <= max(cfg.sigma):
                ax.axvline(sc, color=color, ls="--", lw=0.8)
        ax.set_xlabel(r"$\sigma$")
        ax.set_ylabel("antipodal fraction at T (99% Wilson)")
        ax.set_title(r"Model A, $\bar V = I$: antipodal endings vs noise scale; dashed: two-token $\sigma_c$")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="upper left")
        ax.set_ylim(-0.01, None)
        if len(exits):
            ax = axes[0][1]
            x = exits.sort_values("sigma")
            z = z_for(cfg.level)
            ax.plot(x["sigma"], x["p_theory"], "k-", lw=1.0, label="exact exit law (uniform starts)")
            ax.errorbar(x["sigma"], x["p_exit"], yerr=z * x["p_exit_se"], fmt="o", ms=4, capsize=2,
                        label=r"$2P_{dt/2} - P_{dt}$ (99%)")  # fmt: skip
            ax.plot(x["sigma"], x["p_antipodal"], "x", ms=5, color="gray", label=r"$P_{dt/2}$ (raw)")
            ax.set_xlabel(r"$\sigma$")
            ax.set_ylabel("P(antipodal)")
            ax.set_title(
                f"two tokens, d = {cfg.exit_d}, beta = {cfg.exit_beta:g}, Vbar = I: Monte Carlo vs exit law", fontsize=9
            )
            ax.legend(fontsize=7)
        fig.tight_layout()
        return {"noise_sweep": fig}


def _interactive_figures(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's interactive (plotly) figures, from the results table and the run's JSON config."""
    go = plotting.go()
    fig = go.Figure()
    sweep = t[t["kind"] == "sweep"] if "kind" in t else t  # the two-token exit-law cells: the static figure's panel
    for k, s in sweep.groupby("setting", sort=False):
        s = s.sort_values("sigma")
        name = f"{k} (trend p = {s['trend_p'].iloc[0]:.2g}, sigma_c = {s['sigma_c'].iloc[0]:.3f})"
        fig.add_trace(go.Scatter(x=s["sigma"], y=s["p_antipodal"], mode="lines+markers", name=name,
                                 error_y=plotting.error_bars(s, "antipodal")))  # fmt: skip
    fig.update_layout(title="model A, Vbar = I: antipodal fraction at T vs sigma (99% Wilson)", xaxis_title="sigma")
    return {"noise sweep": fig}
