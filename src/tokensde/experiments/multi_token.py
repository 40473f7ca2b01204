r"""``multi-token``: ``n`` tokens of model A, noisy dynamics against the noiseless attention flow.

Cells ``(n, d, beta)``. In every cell ``runs`` systems of ``n`` i.i.d. uniform
tokens on ``S^{d-1}`` follow two conditions from the *same* initial tokens:

* **noisy**: the limit SDE of model A with ``Vbar = 0``, ``sigma = 1``
  (projected Itô Euler–Maruyama, :class:`~tokensde.models.value_noise.ValueNoise`,
  its ``auto`` noise route);
* **noiseless**: ``sigma = 0``, ``Vbar = I``, the deterministic attention flow
  ``dx_i = P_{x_i} a_i dt`` (the same Euler step with the noise removed), with
  its own step ``dt_noiseless`` and horizon ``T_noiseless``: at large ``beta``
  the flow is metastable (clusters at overlap ``rho`` interact with weight
  ``~ e^{-beta (1 - rho)}``), and measured collapse times reach ``~370`` at
  ``beta = 3`` (``n = 64``, ``d = 4``) and ``~2000`` at ``beta = 4``. The defaults
  (``beta <= 3``, ``T_noiseless = 600``) leave a factor 1.6 (at ``beta = 4``, 4 to 10% of
  the systems of several cells are still uncollapsed at 600); each row reports the
  largest freeze time ``t_frozen_max``.

A cell's initial tokens and noise depend only on ``(seed, n, d, beta)``; the
replicate is the system index within the cell's path (:class:`~tokensde.engine.BrownianPath`),
so a cell gives the same rows whatever other cells run, and in whatever order.
Time step ``dt = step / (d - 1)`` (a token's squared displacement per step is
``~ (d - 1) dt``), horizon ``T`` (an even number of steps); float32 by default
(tokens closer than ``~1e-7`` merge by rounding, far inside the ``eps``
threshold and far below the distance from which a collapsed pair could ever
separate again). At ``T/2`` and ``T`` every system is classified with
:mod:`tokensde.metrics`: clusters are the components of ``<x_i, x_j> > 1 - eps``;
*collapsed* = one cluster, *antipodal* = two clusters with centres at overlap
``< -1 + eps``, *other* = anything else (three or more clusters, or two clusters
that are not (yet) antipodal).

Finished systems are frozen: every 16 steps, systems whose tokens all lie within
``1 - <x_i, x_0> < collapse_tol`` leave the batch. Noiseless: all tokens in an
open hemisphere converge to one point under the attention flow, so nothing
changes but the (tiny) spread. Noisy: collapse attracts with exponent
``-(d-1)/2``; a pair at gap ``delta`` ever reaches gap ``eps`` with probability
``~ (delta/eps)^{(d-1)/2} <= 1e-6`` for ``d >= 3``.

Horizon. The noisy dynamics settle in two stages: tokens merge into clusters
at the collapse rate ``(d-1)/2`` (fast), then the surviving two-cluster
configurations decide between collapse and antipodality at the two-token
antipodal rate (slow near ``beta_c(d)``). For ``n > 2`` an antipodal
configuration with clusters of unequal sizes ``k != n - k`` is **not** invariant:
the two clusters' barycenters ``c_1 x`` and ``-c_2 x`` have
``c_1 != c_2`` (``c_1 - c_2 ~ 2 e^{-2 beta}((n-k)/k - k/(n-k))``), so the
common noise pushes them off antipodality with an additive forcing of that
size, and a system can leak from the antipodal to the collapsed state at a
rate that is small only when ``e^{-2 beta}`` is. The antipodal endings are
therefore *metastable*, and no finite horizon makes the distribution
stationary. This is reported, not hidden: every row carries the T/2 -> T drift
on the same paths (``tv_half``: total variation between the two cluster-count
distributions; ``leak``: systems antipodal at T/2 and collapsed at T;
``uncollapsed``: systems collapsed at T/2 and not at T) and the sizes of the
antipodal splits. The default horizon ``T = 40`` is chosen so that the noisy
runs have finished their first stage (no default cell has a system with three
or more clusters at ``T``); the drift of the second stage at ``beta = 2``,
``n = 64``, ``d = 4`` is ``tv_half ~ 0.15`` (antipodal 111 -> 79 of 256
between ``T/2`` and ``T``), at ``beta = 3`` it is a few percent. Unequal
antipodal clusters also sit at a distance ``~ |c_1 - c_2|`` from exact
antipodality, so some two-cluster systems have centre overlap above
``-1 + eps`` and count as *other* (``centre_overlap_mean`` is reported).

Verdict (family-wise level ``level``, Bonferroni over the cells of each check,
Wilson intervals), built from :mod:`tokensde.experiments.verdict`. The claims are
statements *at the horizon T*:

1. **the noiseless flow collapses**: in every cell the collapsed count is inside
   the family-wise Wilson band of ``P = 1`` (the theorem for ``d >= 3``:
   :func:`~tokensde.experiments.verdict.binomial_cells`), which holds exactly when
   every noiseless system has one cluster at ``T`` (with ``k = runs - 1`` the
   upper bound is already below 1). A cell that has not collapsed fails the
   check and is named with its cluster counts; it is not excused, since the
   theorem says the flow collapses from almost every start and only the horizon
   can be too short.
2. **antipodal endings above beta_c**: for every cell with ``beta > beta_c(d)``
   (two-token threshold, :func:`tokensde.theory.value_noise.beta_c`) the lower
   family-wise Wilson bound of the noisy antipodal fraction is ``> 0``. (A lower
   Wilson bound is positive exactly when ``k >= 1``, at any level: the claim
   ``P > 0`` is shown by one antipodal system, and cannot be shown wrongly.)
3. **noisy runs do not collapse at the noiseless rate**, the comparison of the
   two conditions, per cell and pooled per family:

   * per cell: for every cell with ``beta > beta_c(d)`` the family-wise upper
     Wilson bound of the noisy collapsed fraction is below the noiseless rate 1
     (exact: the theorem, and check 1 on the same initial tokens);
   * pooled per dimension ``d`` (the family: ``beta_c`` depends on ``d``): the
     one-sided Fisher exact test of the summed 2 x 2 tables (noisy against
     noiseless collapsed counts over the cells above ``beta_c``) has
     ``p < (1 - level) / m_d`` (Bonferroni over the dimensions).

   The per-cell two-sample comparison (one-sided Fisher exact, ``fisher_p``;
   Bonferroni) is reported and the cells it does not resolve are named but do
   not fail the check: near ``beta_c`` (``d = 4, beta = 1``; ``d = 8, beta = 2``)
   only balanced splits ``k = n/2`` survive the leak below, so antipodal endings
   are rare for large ``n`` (2 of 512 at ``n = 32``) and no affordable sample
   separates ``0.996`` from ``1`` against an estimated noiseless fraction. Below
   ``beta_c`` the two-token theory predicts collapse for the noisy runs as well:
   reported, not checked.
4. **collapse is absorbing on the paths**: no noisy system collapsed at T/2 is
   uncollapsed at T (at most ``0.5%`` of the runs of a cell, a stated
   tolerance), a consistency check of the time step, of ``eps`` and of freezing.
5. **first stage finished**: in every cell the noisy systems with three or
   more clusters at ``T`` are at most ``undecided_max`` of the runs. (Two-cluster
   systems that are not antipodal are counted and reported: they are the
   quasi-antipodal states above or a slow decision near ``beta_c``.)

What the verdict can and cannot see. A noise that is not common to the tokens
of a system (each token its own Brownian motion, e.g. the kernel route's
factor replaced by the square root of the kernel's diagonal) never lets tokens
merge: checks 2 and 5 fail. At ``Vbar = 0`` the noise scale ``sigma`` is only a
time change (``sigma^2 t``), so a noise of the wrong size shows only as a
different horizon, which these statements at ``T`` do not pin down; the
quantitative test of the noise is the two-token exit law of ``noise-sweep``.

The metastable leak (``leak``, ``tv_half``) is reported in the notes, never
hidden; it weakens claims 2 and 3 only for ``T -> infinity``, which no
simulation checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator
from scipy import stats as sstats

from .. import metrics
from ..engine import BrownianPath, Hooks, integrate
from ..models.value_noise import ValueNoise
from ..noise import SLAB, derive_seed
from ..sphere import normalize, uniform
from ..stats import bonferroni_z, wilson, z_for
from ..theory import value_noise as theory_a
from . import plotting
from .base import Experiment, ExperimentConfig, Progress, each_in, recorded
from .verdict import Check, at_most, binomial_cells, check, verdict

__all__ = ["MultiToken", "MultiTokenConfig", "run_systems", "classify"]


class MultiTokenConfig(ExperimentConfig):
    """Configuration of ``multi-token`` (every field has a default)."""

    n: list[int] = Field(default=[4, 8, 16, 32, 64], min_length=1, description="tokens per system, each in [2, 1024]")
    d: list[int] = Field(default=[4, 8], min_length=1, description="dimensions, each in [3, 512]")
    beta: list[float] = Field(
        default=[0.5, 1.0, 2.0, 3.0], min_length=1, description="inverse temperatures, each in [0, 20]"
    )
    runs: int = Field(default=512, ge=10, le=1_000_000, description="systems per cell, in [10, 1e6]")
    T: float = Field(default=40.0, gt=0.0, le=1e4, description="horizon of the noisy runs, in (0, 1e4]")
    step: float = Field(default=0.1, gt=0.0, le=0.5, description="noisy time step times (d - 1), in (0, 0.5]")
    T_noiseless: float = Field(default=600.0, gt=0.0, le=1e5, description="horizon of the noiseless flow, in (0, 1e5]")
    dt_noiseless: float = Field(default=0.1, gt=0.0, le=0.5, description="time step of the noiseless flow, in (0, 0.5]")
    eps: float = Field(default=1e-2, gt=0.0, lt=0.5, description="cluster threshold, in (0, 0.5)")
    level: float = Field(default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level, in (0.5, 1)")
    undecided_max: float = Field(
        default=0.05, ge=0.0, le=1.0, description="largest fraction of noisy systems with 3+ clusters at T, in [0, 1]"
    )
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")
    dtype: Literal["float32", "float64"] = Field(default="float32", description="float32 or float64")
    collapse_tol: float = Field(
        default=1e-8, ge=0.0, le=1e-4, description="freeze systems with 1 - <x_i, x_0> below it, in [0, 1e-4]"
    )

    @field_validator("n")
    @classmethod
    def _n_range(cls, v: list[int]) -> list[int]:
        return each_in(v, 2, 1024, "n")

    @field_validator("d")
    @classmethod
    def _d_range(cls, v: list[int]) -> list[int]:
        return each_in(v, 3, 512, "d")

    @field_validator("beta")
    @classmethod
    def _beta_range(cls, v: list[float]) -> list[float]:
        return each_in(v, 0.0, 20.0, "beta")


# --------------------------------------------------------------------- simulation
def _spread(x: torch.Tensor) -> torch.Tensor:
    """``max_i (1 - <x_i, x_0>)`` per system, from chordal distances (accurate near collapse)."""
    return 0.5 * ((x - x[:, :1]) ** 2).sum(-1).amax(-1)


def run_systems(
    x0: torch.Tensor,
    beta: float,
    sigma: float,
    attention_drift: bool,
    dt: float,
    steps: int,
    seed: int,
    key: tuple[object, ...],
    collapse_tol: float = 1e-8,
    progress: Progress | None = None,
    coarsen: int = 1,
    route: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    r"""States at ``steps // 2`` and ``steps`` of model A from ``x0`` ``(B, n, d)``.

    ``sigma`` is the noise scale, ``attention_drift`` selects ``Vbar = I``
    (else ``0``). The noise of system ``b`` depends only on ``(seed, key, b)``
    (counter-based normals, :mod:`tokensde.rng`; none is drawn when ``sigma = 0``).
    Systems whose spread ``max_i (1 - <x_i, x_0>)`` is below ``collapse_tol`` are
    frozen (checked every 16 steps); their normals stop being computed, which does
    not change the other systems' numbers.
    ``progress(active)`` is called every step (of size ``coarsen * dt``) with the number of systems simulated.
    Returns ``(x at steps // 2, x at steps, freeze time)`` (``inf`` for systems never frozen).

    ``coarsen = r > 1`` gives the run *coupled* to the one with ``coarsen = 1``:
    the same stream of normals at the step ``dt``, of which every ``r``
    consecutive ones are summed and divided by ``sqrt(r)`` (the Brownian
    increment over ``r dt``) to make one step of size ``r dt``; ``steps`` still
    counts steps of ``dt`` and must be a multiple of ``r`` (``r`` divides
    ``SLAB``). The state at ``steps // 2`` is the one after the coarse step that
    reaches or first passes it. Paired with the fine run it gives the step-size
    bias and the Richardson combination ``2 P(dt) - P(2 dt)``. ``route`` is the model's noise route
    (:class:`~tokensde.models.value_noise.ValueNoise`; both routes are exact in law).
    """
    bsz, n, d = x0.shape
    r = int(coarsen)
    if r < 1 or SLAB % r or steps % r:
        raise ValueError(f"coarsen = {coarsen} must divide SLAB = {SLAB} and steps = {steps}")
    vbar = torch.eye(d, dtype=x0.dtype, device=x0.device) if attention_drift else None
    model = ValueNoise(beta=beta, sigma=sigma, vbar=vbar, route=route)
    frozen = np.full(bsz, math.inf)
    if sigma == 0.0 and vbar is None:
        return x0.clone(), x0.clone(), frozen  # C = 0 and no drift: nothing moves
    # no noise is drawn without noise (the Euler step with C = 0 is x' = N(x + dt P_x Vbar a))
    path = BrownianPath.for_model(model, x0, seed, key).coarsen(r) if sigma > 0.0 else None
    half_at = steps // 2
    kept: dict[str, torch.Tensor] = {}

    def retire(k: int, states: dict[str, torch.Tensor], alive: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        idx = alive["x"]
        spread = _spread(states["x"][idx])
        frozen[idx[spread < collapse_tol].cpu().numpy()] = k * dt
        return {"x": idx[spread >= collapse_tol]}

    def observe(k: int, states: dict[str, torch.Tensor]) -> None:
        kept["half"] = states["x"].clone()  # the state after the coarse step that reaches or first passes T/2

    def tick(k: int, active: int) -> None:
        if progress is not None and (k + 1) % r == 0:
            progress(float(active))

    hooks = Hooks(
        retire=retire,
        observe=observe if half_at else None,
        observe_at=lambda k: k + 1 == r * math.ceil(half_at / r),
        progress=tick,
    )
    x = integrate(model, x0, path, dt, steps, hooks=hooks).x
    half = kept.get("half", x0.clone() if half_at == 0 else x.clone())
    return half, x, frozen


def _run_systems_bytes(
    bsz: int, n: int, d: int, item: int, device: str, noisy: bool, drift: bool, coarsen: int = 1, route: str = "auto"
) -> int:
    """Peak bytes :func:`run_systems` allocates beyond ``x0``: the state, its ``T/2`` copy and the working
    set of the alive systems (three ``(B, n, d)``), the noise stream (``SLAB`` steps of the ``auto`` route's
    normals, ``(d, d)`` or ``(min(n, d), d)`` per system, plus the step's copy and its alive rows, and the
    running sum of a coarse step's normals when ``coarsen > 1``) and one Euler step; noiseless: barycenters,
    drift, projection and normalisation."""
    from ..sizes import attention_bytes, stream_bytes, value_noise_step_bytes

    bnd = bsz * n * d * item
    base = 3 * bnd + 32 * bsz
    if not noisy:
        return base + 6 * bnd + attention_bytes(bsz, n, d, item, device)
    kernel = n < d if route == "auto" else route == "kernel"
    shape = (min(n, d), d) if kernel else (d, d)
    step = value_noise_step_bytes(bsz, n, d, item, device, kernel, drift)
    return base + stream_bytes(bsz, shape, item, copies=2 if coarsen == 1 else 3) + step


def classify(x: torch.Tensor, beta: float, eps: float) -> dict[str, np.ndarray]:
    """Per system: ``n_clusters``, ``collapsed``, ``antipodal``, ``energy``, ``small`` (smaller antipodal cluster),
    ``centre`` (overlap of the two cluster centres of two-cluster systems, else ``nan``)."""
    s = metrics.summary(x, beta, eps)
    labels = metrics.cluster_labels(x, eps)
    small = np.zeros(x.shape[0], dtype=np.int64)
    centre = np.full(x.shape[0], np.nan)
    for b in np.nonzero(s["n_clusters"] == 2)[0]:
        lab = torch.as_tensor(labels[b], device=x.device)
        c0, c1 = normalize(x[b][lab == 0].sum(0)), normalize(x[b][lab == 1].sum(0))
        centre[b] = float((c0 * c1).sum())
        if s["antipodal"][b]:
            k0 = int((labels[b] == 0).sum())
            small[b] = min(k0, x.shape[1] - k0)
    return {
        "centre": centre,
        "n_clusters": s["n_clusters"],
        "collapsed": s["collapsed"],
        "antipodal": s["antipodal"],
        "energy": s["energy"],
        "small": small,
    }


def _counts(nc: np.ndarray) -> dict[int, int]:
    vals, cnt = np.unique(nc, return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, cnt, strict=True)}


def tv_distance(a: dict[int, int], b: dict[int, int]) -> float:
    """Total variation between two count distributions over the number of clusters."""
    na, nb = sum(a.values()), sum(b.values())
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in keys)


def condition_row(half: dict[str, np.ndarray], end: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """Counts at T and T/2 of one condition, its drift and its antipodal splits."""
    c_end, c_half = _counts(end["n_clusters"]), _counts(half["n_clusters"])
    anti = end["antipodal"]
    small = end["small"][anti]
    e = end["energy"]
    runs = len(e)
    return {
        "n_collapsed": int(end["collapsed"].sum()),
        "n_antipodal": int(anti.sum()),
        "n_other": int((~end["collapsed"] & ~anti).sum()),
        "n_two_clusters": int((end["n_clusters"] == 2).sum()),
        "n_three_plus": int((end["n_clusters"] >= 3).sum()),
        "centre_overlap_mean": float(np.nanmean(end["centre"])) if (end["n_clusters"] == 2).any() else math.nan,
        "centre_overlap_max": float(np.nanmax(end["centre"])) if (end["n_clusters"] == 2).any() else math.nan,
        "n_collapsed_half": int(half["collapsed"].sum()),
        "n_antipodal_half": int(half["antipodal"].sum()),
        "n_other_half": int((~half["collapsed"] & ~half["antipodal"]).sum()),
        "leak": int((half["antipodal"] & end["collapsed"]).sum()),
        "uncollapsed": int((half["collapsed"] & ~end["collapsed"]).sum()),
        "tv_half": tv_distance(c_end, c_half),
        "cluster_counts": json.dumps(c_end),
        "cluster_counts_half": json.dumps(c_half),
        "max_clusters": int(end["n_clusters"].max()),
        "mean_clusters": float(end["n_clusters"].mean()),
        "energy_mean": float(e.mean()),
        "energy_se": float(e.std(ddof=1) / math.sqrt(runs)) if runs > 1 else math.nan,
        "energy_mean_half": float(half["energy"].mean()),
        "split_mean": float(small.mean() / n) if len(small) else math.nan,
        "n_balanced": int((small == n // 2).sum()) if n % 2 == 0 else 0,
    }


def cell_x0(seed: int, n: int, d: int, beta: float, runs: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """Uniform i.i.d. initial tokens of a cell (drawn in float64), from ``(seed, n, d, beta)`` only."""
    g = torch.Generator().manual_seed(derive_seed(seed, "multi-token", "x0", n, d, float(beta)))
    return uniform((runs, n), d, g, torch.float64).to(dtype=dtype, device=device)


def cell_steps(cfg: Any, d: int) -> tuple[float, int]:
    """``(dt, steps)``: ``dt = step / (d - 1)`` and an even number of steps covering ``T``."""
    dt = cfg.step / max(d - 1, 1)
    return dt, 2 * math.ceil(cfg.T / (2.0 * dt))


def noiseless_steps(cfg: Any) -> int:
    """An even number of noiseless steps covering ``T_noiseless``."""
    return 2 * math.ceil(cfg.T_noiseless / (2.0 * cfg.dt_noiseless))


class MultiToken(Experiment):
    name = "multi-token"
    summary = "Model A, n tokens: clusters, collapse and antipodal endings, noisy vs the noiseless attention flow"
    Config = MultiTokenConfig
    quick = {"n": [4, 16], "d": [4], "beta": [0.25, 2.0, 3.0], "runs": 128, "T": 20.0, "step": 0.15}

    def plan(self, cfg: MultiTokenConfig) -> list[dict[str, Any]]:
        return [
            {"id": f"n={n}-d={d}-beta={b:g}", "n": n, "d": d, "beta": b} for n in cfg.n for d in cfg.d for b in cfg.beta
        ]

    def unit_cost(self, cfg: MultiTokenConfig, unit: dict[str, Any]) -> float:
        # the noiseless flow is cheaper per step and freezes early: counted at a quarter of its steps
        return float((cell_steps(cfg, unit["d"])[1] + noiseless_steps(cfg) // 4) * cfg.runs)

    def unit_memory(self, cfg: MultiTokenConfig, unit: dict[str, Any], device: str) -> int:
        """``runs`` systems of ``n x d``: the float64 draw of ``x0``; the noisy run beside ``x0``; the noiseless
        run beside ``x0`` and the noisy ``T/2`` and ``T`` states; the classification (blocked metrics)."""
        from ..sizes import itemsize, metrics_bytes, uniform_bytes

        n, d, bsz, item = int(unit["n"]), int(unit["d"]), cfg.runs, itemsize(cfg.dtype)
        bnd = bsz * n * d * item
        draw = uniform_bytes(bsz * n, d, item)
        noisy = bnd + _run_systems_bytes(bsz, n, d, item, device, True, False)
        quiet = 3 * bnd + _run_systems_bytes(bsz, n, d, item, device, False, True)
        classify = 5 * bnd + metrics_bytes(bsz, n, d, item)
        return int(max(draw, noisy, quiet, classify))

    def run_unit(
        self, cfg: MultiTokenConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        n, d, beta = int(unit["n"]), int(unit["d"]), float(unit["beta"])
        dtype = getattr(torch, cfg.dtype)
        dt, steps = cell_steps(cfg, d)
        q_steps = noiseless_steps(cfg)
        x0 = cell_x0(cfg.seed, n, d, beta, cfg.runs, dtype, device)
        key = ("multi-token", n, d, beta)
        m = theory_a.two_point_motion(d, beta)
        base = {
            "n": n,
            "d": d,
            "beta": beta,
            "runs": cfg.runs,
            "beta_c": theory_a.beta_c(d),
            "above_beta_c": bool(theory_a.antipodal_attracting(d, beta)),
            "exponent_antipodal": m.exponent_antipodal,
            "p_antipodal_two_tokens": m.p_antipodal(0.0),
        }
        tick_q = None if progress is None else (lambda a: progress(a / 4.0))
        rows = []
        for condition, sigma, drift, h, k, tick in (
            ("noisy", 1.0, False, dt, steps, progress),
            ("noiseless", 0.0, True, cfg.dt_noiseless, q_steps, tick_q),
        ):
            half, end, frozen = run_systems(x0, beta, sigma, drift, h, k, cfg.seed, key, cfg.collapse_tol, tick)
            done = frozen[np.isfinite(frozen)]
            rows.append(
                {
                    **base,
                    "condition": condition,
                    "sigma": sigma,
                    "vbar": "I" if drift else "0",
                    "T": k * h,
                    "dt": h,
                    "steps": k,
                    "n_frozen": len(done),
                    "t_frozen_median": float(np.median(done)) if len(done) else math.nan,
                    "t_frozen_max": float(done.max()) if len(done) else math.nan,
                    **condition_row(classify(half, beta, cfg.eps), classify(end, beta, cfg.eps), n),
                }
            )
        return rows

    def summarize(self, cfg: MultiTokenConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        t = pd.DataFrame(rows).sort_values(["condition", "d", "n", "beta"]).reset_index(drop=True)
        r = t["runs"].to_numpy()
        z = z_for(cfg.level)
        cells = int((t["condition"] == "noisy").sum())
        zf = bonferroni_z(cfg.level, max(cells, 1))
        for col in ("collapsed", "antipodal"):
            k = t[f"n_{col}"].to_numpy()
            t[f"p_{col}"] = k / r
            for suffix, zz in (("", z), ("_band", zf)):
                lo, hi = wilson(k, r, zz)
                # exact ends: the closed form leaves rounding residue at k = 0 and k = runs
                t[f"{col}{suffix}_low"] = np.where(k == 0, 0.0, lo)
                t[f"{col}{suffix}_high"] = np.where(k == r, 1.0, hi)
            t[f"p_{col}_half"] = t[f"n_{col}_half"] / r
        t["p_other"] = t["n_other"] / r
        quiet = t[t["condition"] == "noiseless"].set_index(["n", "d", "beta"])
        t["fisher_p"] = math.nan
        for i, row in t[t["condition"] == "noisy"].iterrows():
            q = quiet.loc[(row["n"], row["d"], row["beta"])]
            table = [
                [row["n_collapsed"], row["runs"] - row["n_collapsed"]],
                [q["n_collapsed"], q["runs"] - q["n_collapsed"]],
            ]
            t.loc[i, "fisher_p"] = float(sstats.fisher_exact(table, alternative="less")[1])
        return t

    # ----------------------------------------------------------------- verdict
    def verdict(self, cfg: MultiTokenConfig, table: pd.DataFrame) -> dict[str, Any]:
        level = cfg.level
        noisy = table[table["condition"] == "noisy"].set_index(["n", "d", "beta"])
        quiet = table[table["condition"] == "noiseless"].set_index(["n", "d", "beta"])
        above = noisy[noisy["above_beta_c"].astype(bool)]
        quiet_above = quiet.loc[above.index]
        checks: list[Check] = []

        def cell(idx: tuple[Any, ...]) -> str:
            return f"(n={idx[0]}, d={idx[1]}, beta={idx[2]:g})"

        # 1. the noiseless flow against its theorem: P(one cluster at T) = 1 (inside the band of 1 <=> all collapsed)
        c = binomial_cells(
            "the noiseless flow collapses in every cell",
            quiet["n_collapsed"].to_numpy(),
            quiet["runs"].to_numpy(),
            np.ones(len(quiet)),
            [cell(i) for i in quiet.index],
            level,
        )
        not_coll = quiet[quiet["n_collapsed"] < quiet["runs"]]
        if len(not_coll):
            c = dataclasses.replace(
                c,
                detail=c.detail
                + "; clusters at T: "
                + ", ".join(f"{cell(i)}: {r.cluster_counts}" for i, r in not_coll.iterrows()),
            )
        checks.append(c)

        # 2. antipodal endings above beta_c: P(antipodal) > 0, i.e. a lower Wilson bound > 0 (at any level: k >= 1)
        zf = bonferroni_z(level, max(len(above), 1))
        low = wilson(above["n_antipodal"].to_numpy(), above["runs"].to_numpy(), zf)[0] if len(above) else np.zeros(0)
        none = [cell(i) for i, v in zip(above.index, low, strict=True) if not v > 0.0]
        checks.append(
            check(
                "noisy antipodal fraction > 0 above beta_c (family-wise lower Wilson bound)",
                bool(len(above)) and not none,
                f"{len(above) - len(none)}/{len(above)} cells with beta > beta_c(d) have a lower bound > 0; smallest "
                + (f"{low.min():.4f}" if len(low) else "n/a")
                + (f"; none antipodal: {', '.join(none)}" if none else ""),
                {"cells": len(above), "lower_bounds": dict(zip(map(cell, above.index), low, strict=True))},
                zf,
                f"Wilson bands, Bonferroni over the {len(above)} cells above beta_c at family-wise level {level:g}",
            )
        )

        # 3. noisy against noiseless collapse above beta_c: per cell (the noiseless rate is exactly 1: the noisy
        # family-wise upper bound < 1) and pooled per dimension (one-sided Fisher exact, Bonferroni over d)
        zf = bonferroni_z(level, max(len(above), 1))
        high = wilson(above["n_collapsed"].to_numpy(), above["runs"].to_numpy(), zf)[1] if len(above) else np.zeros(0)
        at_one = [cell(i) for i, v in zip(above.index, high, strict=True) if not v < 1.0]
        checks.append(
            check(
                "noisy runs do not end collapsed at the noiseless rate (1) above beta_c, per cell",
                bool(len(above)) and not at_one,
                f"{len(above) - len(at_one)}/{len(above)} cells with the noisy family-wise upper Wilson bound < 1; "
                "largest "
                + (f"{high.max():.4f}" if len(high) else "n/a")
                + (f"; all collapsed: {', '.join(at_one)}" if at_one else ""),
                {"cells": len(above), "upper_bounds": dict(zip(map(cell, above.index), high, strict=True))},
                zf,
                f"Wilson bands, Bonferroni over the {len(above)} cells above beta_c at family-wise level {level:g}; "
                "the noiseless rate 1 is the theorem (check 1)",
            )
        )
        ds = sorted(above.index.get_level_values("d").unique()) if len(above) else []
        alpha_d = (1.0 - level) / max(len(ds), 1)
        parts, pvals = [], {}
        for d in ds:
            sel = above.index.get_level_values("d") == d
            a, q = above[sel], quiet_above[sel]
            pooled = [
                [int(a["n_collapsed"].sum()), int((a["runs"] - a["n_collapsed"]).sum())],
                [int(q["n_collapsed"].sum()), int((q["runs"] - q["n_collapsed"]).sum())],
            ]
            pvals[int(d)] = float(sstats.fisher_exact(pooled, alternative="less")[1])
            parts.append(
                f"d={d}: noisy {pooled[0][0]}/{sum(pooled[0])} vs noiseless {pooled[1][0]}/{sum(pooled[1])} "
                f"collapsed over {int(sel.sum())} cells, p = {pvals[int(d)]:.3g}"
                + (" (below the smallest double)" if pvals[int(d)] == 0.0 else "")
            )
        checks.append(
            check(
                "noisy runs collapse less than the noiseless flow above beta_c, pooled per dimension",
                bool(pvals) and all(v < alpha_d for v in pvals.values()),
                "; ".join(parts) + f"; p < {alpha_d:.3g} required" if parts else "no cell above beta_c",
                {"p": pvals, "alpha": alpha_d},
                alpha_d,
                f"one-sided Fisher exact test of the summed 2 x 2 tables per d, at (1 - {level:g}) / {len(ds)} "
                "(Bonferroni over the dimensions)",
            )
        )

        # 4. collapse absorbing on the paths; 5. first stage finished (both stated tolerances)
        runs = noisy["runs"].to_numpy(float)
        frac_unc = noisy["uncollapsed"].to_numpy() / runs if len(noisy) else np.zeros(1)
        checks.append(
            at_most(
                "collapse is absorbing on the paths (collapsed at T/2 stays collapsed at T)",
                float(frac_unc.max()),
                0.005,
                "largest fraction of a cell's noisy systems collapsed at T/2 and not at T",
                "stated tolerance 0.5% of a cell (the exact law: 0; checks dt, eps and freezing)",
            )
        )
        frac3 = noisy["n_three_plus"].to_numpy() / runs if len(noisy) else np.ones(1)
        checks.append(
            at_most(
                f"noisy runs merged into at most two clusters (3+ clusters <= {cfg.undecided_max:g})",
                float(frac3.max()),
                cfg.undecided_max,
                "largest fraction of a cell's noisy systems with 3+ clusters at T",
                "config undecided_max",
            )
        )

        alpha_cell = (1.0 - level) / max(len(above), 1)
        unresolved = above[~(above["fisher_p"] < alpha_cell)]
        below = noisy[~noisy["above_beta_c"].astype(bool)]
        notes = [
            f"per cell, noisy vs noiseless collapse (one-sided Fisher, p < {alpha_cell:.2g}; reported, not checked): "
            f"{len(above) - len(unresolved)}/{len(above)} resolved"
            + (
                ""
                if unresolved.empty
                else "; not resolved: "
                + ", ".join(f"{cell(i)}: noisy {r.n_collapsed}/{r.runs}" for i, r in unresolved.iterrows())
            ),
            f"two clusters not (yet) antipodal: {int((noisy['n_two_clusters'] - noisy['n_antipodal']).sum())} "
            f"systems in all; metastable leak antipodal(T/2) -> collapsed(T): {int(noisy['leak'].sum())} systems "
            f"in all, max per cell {noisy['leak'].max() / cfg.runs:.3f}; max TV(T/2, T) = {noisy['tv_half'].max():.3f}",
            f"below beta_c (two-token theory: collapse; reported, not checked): "
            f"{int(below['n_collapsed'].sum())}/{int(below['runs'].sum())} noisy systems collapsed",
        ]
        return verdict(checks, notes)

    # ----------------------------------------------------------------- views
    def trajectory(self, cfg: MultiTokenConfig, device: str = "cpu") -> dict[str, Any]:
        """32 tokens of the noisy dynamics at the smallest ``d`` and the largest ``beta``, up to ``T``."""
        d, beta = cfg.d[0], cfg.beta[-1]
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "multi-token", "trajectory"))
        x0 = uniform((1, 32), d, gen, torch.float64).to(device)
        dt, steps = cell_steps(cfg, d)
        title = f"model A, 32 tokens, d = {d}, beta = {beta:g}, Vbar = 0, sigma = 1"
        return recorded(ValueNoise(beta=beta), x0, dt, steps, cfg.seed, ("multi-token", "trajectory"), title)

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The report's interactive (plotly) figures (beside the static ones of :meth:`figures`)."""
        return _interactive_figures(table, cfg)

    def figures(self, cfg: MultiTokenConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        noisy = table[table["condition"] == "noisy"]
        quiet = table[table["condition"] == "noiseless"]
        ds = sorted(noisy["d"].unique())
        fig, axes = plt.subplots(1, len(ds), figsize=(4.2 * len(ds), 3.8), squeeze=False, sharey=True)
        colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(cfg.n)))
        for ax, d in zip(axes[0], ds, strict=True):
            for color, n in zip(colors, cfg.n, strict=True):
                s = noisy[(noisy["d"] == d) & (noisy["n"] == n)].sort_values("beta")
                err = np.clip(
                    np.vstack([s["p_antipodal"] - s["antipodal_low"], s["antipodal_high"] - s["p_antipodal"]]),
                    0.0,
                    None,
                )
                ax.errorbar(s["beta"], s["p_antipodal"], yerr=err, fmt="o-", ms=3, color=color, capsize=2,
                            label=f"n = {n}")  # fmt: skip
                q = quiet[(quiet["d"] == d) & (quiet["n"] == n)].sort_values("beta")
                ax.plot(q["beta"], 1.0 - q["p_collapsed"], "x", color=color, ms=4)
            ax.axvline(theory_a.beta_c(int(d)), color="gray", ls="--", lw=0.8)
            ax.set_xlabel(r"$\beta$")
            ax.set_title(f"d = {d}", fontsize=9)
        axes[0][0].set_ylabel("antipodal fraction at T (99% Wilson)")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(r"Model A, $\bar V = 0$, $\sigma = 1$: two-cluster antipodal endings; x: noiseless not collapsed; "
                     r"dashed: $\beta_c(d)$", fontsize=9)  # fmt: skip
        fig.tight_layout()
        out = {"multi_token_antipodal": fig}

        fig, axes = plt.subplots(1, len(ds), figsize=(4.2 * len(ds), 3.8), squeeze=False, sharey=True)
        for ax, d in zip(axes[0], ds, strict=True):
            sub = noisy[noisy["d"] == d].sort_values(["n", "beta"])
            labels = [f"{n},{b:g}" for n, b in zip(sub["n"], sub["beta"], strict=True)]
            pos = np.arange(len(sub))
            bottom = np.zeros(len(sub))
            for k, color in ((1, "tab:blue"), (2, "tab:orange"), (3, "tab:green")):
                frac = []
                for c, runs in zip(sub["cluster_counts"], sub["runs"], strict=True):
                    cc = {int(a): v for a, v in json.loads(c).items()}
                    v = cc.get(k, 0) if k < 3 else sum(v for a, v in cc.items() if a >= 3)
                    frac.append(v / runs)
                f = np.array(frac)
                ax.bar(pos, f, bottom=bottom, color=color, label=f"{k}{'+' if k == 3 else ''} clusters")
                bottom += f
            ax.set_xticks(pos, labels, rotation=90, fontsize=6)
            ax.set_xlabel("n, beta")
            ax.set_title(f"d = {d}: number of clusters at T (noisy)", fontsize=9)
        axes[0][0].set_ylabel("fraction of systems")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        out["multi_token_clusters"] = fig
        return out


def _interactive_figures(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's interactive (plotly) figures, from the results table and the run's JSON config."""
    go = plotting.go()
    out: dict[str, Any] = {}
    noisy = t[t["condition"] == "noisy"]
    for col, title in (("antipodal", "antipodal two-cluster endings"), ("collapsed", "collapsed endings")):
        fig = go.Figure()
        for (d, n), s in noisy.groupby(["d", "n"]):
            s = s.sort_values("beta")
            fig.add_trace(
                go.Scatter(x=s["beta"], y=s[f"p_{col}"], mode="lines+markers", name=f"noisy d={d} n={n}",
                           error_y=plotting.error_bars(s, col))
            )  # fmt: skip
        if col == "collapsed":
            quiet = t[t["condition"] == "noiseless"]
            for d, s in quiet.groupby("d"):
                s = s.groupby("beta", as_index=False)["p_collapsed"].min()
                fig.add_trace(go.Scatter(x=s["beta"], y=s["p_collapsed"], mode="lines", line={"dash": "dash"},
                                         name=f"noiseless d={d} (min over n)"))  # fmt: skip
        for d in sorted(noisy["d"].unique()):
            fig.add_vline(x=float(noisy[noisy["d"] == d]["beta_c"].iloc[0]), line_dash="dot")
        fig.update_layout(title=f"model A, Vbar = 0, sigma = 1: {title} at T (99% Wilson); dotted: beta_c(d)",
                          xaxis_title="beta")  # fmt: skip
        out[col] = fig
    return out
