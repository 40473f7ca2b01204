r"""``phase-diagram``: two tokens of model A, Monte Carlo against the exact exit law.

For every cell ``(d, beta)``, ``runs`` independent pairs start at overlap
``rho0`` and follow the limit SDE (projected Itô Euler–Maruyama, kernel noise
route, step ``dt = step / (d - 1)``). At the horizon a pair is *antipodal* if
``rho < -1 + eps``, *collapsed* if ``rho > 1 - eps``, *undecided* otherwise.
The antipodal fraction is compared with ``P(rho_t -> -1 | rho0)`` of
:mod:`tokensde.theory.value_noise`.

Horizon. Near ``beta_c`` the antipodal boundary is almost neutral and runs
decide slowly: the log-distance ``log|x_1 + x_2|`` moves like a Brownian
motion with drift ``lambda_a`` (the antipodal exponent) and variance rate
``D_-``, whose memory of the start decays on the time scale
``tau_a = D_- / (2 lambda_a^2)``. Each cell therefore runs to
``T_cell = clip(horizon_factor * tau_a, T, T_max)``. Cells with
``horizon_factor * tau_a > T_max`` are *critical*: no affordable horizon
resolves them; they are reported but not part of the agreement check.

Biases measured, not assumed: the time bias is ``P(T_cell) - P(T_cell/2)`` on
the same paths; the step-size bias is ``P(dt) - P(2 dt)`` from a coarse run
driven by the same Brownian path (increments summed pairwise), which for a
weak-order-1 scheme estimates the bias of the ``dt`` run.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator

from ..engine import BrownianPath, Hooks, Run, integrate_runs
from ..models.kernel import load_model
from ..models.value_noise import ValueNoise
from ..noise import SLAB, derive_seed
from ..sphere import pair_with_overlap
from ..stats import bonferroni_z, interval_errors, wilson, z_for
from ..theory import value_noise as theory_a
from ..theory.two_point import TwoPointMotion
from . import plotting
from . import verdict as V
from .base import Experiment, ExperimentConfig, Progress, each_in, recorded

__all__ = ["PhaseDiagram", "PhaseDiagramConfig", "simulate_pairs"]

DEFAULT_BETAS = [round(0.25 * i, 2) for i in range(17)]


class PhaseDiagramConfig(ExperimentConfig):
    """Configuration of ``phase-diagram`` (every field has a default)."""

    d: list[int] = Field(default=[3, 4, 6, 10, 20], min_length=1, description="dimensions, each in [2, 512]")
    beta: list[float] = Field(default=DEFAULT_BETAS, min_length=1, description="inverse temperatures, each in [0, 50]")
    rho0: float = Field(default=0.0, gt=-1.0, lt=1.0, description="initial overlap, in (-1, 1)")
    runs: int = Field(default=2000, ge=10, le=10_000_000, description="pairs per cell, in [10, 1e7]")
    T: float = Field(default=25.0, gt=0.0, le=1e5, description="minimal horizon, in (0, 1e5]")
    T_max: float = Field(default=150.0, gt=0.0, le=1e5, description="maximal horizon, in (0, 1e5], >= T")
    horizon_factor: float = Field(default=8.0, ge=0.0, le=1e3, description="horizon in units of tau_a, in [0, 1000]")
    step: float = Field(default=0.05, gt=0.0, le=0.5, description="time step times (d - 1), in (0, 0.5]")
    eps: float = Field(default=1e-2, gt=0.0, lt=0.5, description="classification threshold, in (0, 0.5)")
    level: float = Field(default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level, in (0.5, 1)")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")
    dtype: Literal["float32", "float64"] = Field(default="float32", description="float32 or float64")
    collapse_tol: float = Field(
        default=1e-8, ge=0.0, le=1e-4, description="freeze pairs with 1 - rho below it, in [0, 1e-4]"
    )
    model: str | None = Field(
        default=None,
        description="MODULE:FACTORY of your own model, FACTORY(beta=...) returning it (imported and run: the "
        "trust of PYTHONPATH); default: model A",
    )

    @model_validator(mode="after")
    def _user_models_in_float64(self) -> PhaseDiagramConfig:
        # the generic route factors the 2 x 2 kernel: in float32 its Schur complement is rounding noise within
        # 1e-7 of either boundary, a floor from which pairs leave a weakly attracting boundary again
        if self.model is not None and self.dtype == "float32":
            if "dtype" in self.model_fields_set:
                raise ValueError(
                    "dtype: a user model runs in float64 (its kernel factor is not accurate near the boundaries "
                    "in float32)"
                )
            self.dtype = "float64"
        return self

    @field_validator("model")
    @classmethod
    def _model_loads(cls, v: str | None) -> str | None:
        if v is not None:
            model = load_model(v, what="model", beta=1.0)
            if not callable(getattr(model, "two_point", None)):
                raise ValueError(f"{v!r}: the model needs a two_point(d) method (its theory), e.g. a KernelModel")
        return v

    @field_validator("d")
    @classmethod
    def _d_range(cls, v: list[int]) -> list[int]:
        return each_in(v, 2, 512, "d")

    @field_validator("beta")
    @classmethod
    def _beta_range(cls, v: list[float]) -> list[float]:
        return each_in(v, 0.0, 50.0, "beta")

    @field_validator("T_max")
    @classmethod
    def _tmax(cls, v: float, info: Any) -> float:
        return t_max_at_least_t(v, info)


def motion(cfg: PhaseDiagramConfig, d: int, beta: float) -> TwoPointMotion:
    """The two-point motion of the cell: model A's (:mod:`tokensde.theory.value_noise`) or, with ``model``
    set, the user model's ``FACTORY(beta=beta).two_point(d)``."""
    if cfg.model is None:
        return theory_a.two_point_motion(d, beta)
    return _user_motion(cfg.model, d, beta)


@functools.lru_cache(maxsize=256)
def _user_motion(spec: str, d: int, beta: float) -> TwoPointMotion:
    return load_model(spec, what="model", beta=beta).two_point(d)  # type: ignore[no-any-return]


def model_fingerprint(spec: str | None) -> str | None:
    """sha256 (16 hex digits) of the source file of a user model's module: units record the code they ran."""
    if spec is None:
        return None
    module = importlib.import_module(spec.partition(":")[0])
    path = getattr(module, "__file__", None)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else "no-source-file"


def t_max_at_least_t(v: float, info: Any) -> float:
    """The ``T_max`` validator of the configs whose cells run between ``T`` and ``T_max``."""
    t = info.data.get("T")
    if t is not None and v < t:
        raise ValueError(f"T_max must be >= T = {t}, got {v}")
    return v


def relaxation_time(d: int, beta: float, m: TwoPointMotion | None = None) -> float:
    """``tau_a = D_- / (2 lambda_a^2)`` of the antipodal boundary (``inf`` at ``beta_c``); model A unless ``m``."""
    m = theory_a.two_point_motion(d, beta) if m is None else m
    lam = m.exponent_antipodal
    return math.inf if lam == 0.0 else m.lower.D / (2.0 * lam * lam)


def cell_dt(cfg: PhaseDiagramConfig, d: int) -> float:
    """``dt = step / (d - 1)``: a token's squared displacement per step is ``~ (d - 1) dt``."""
    return cfg.step / max(d - 1, 1)


#: steps per cell are a multiple of the coarsest level (the ``4 dt`` run takes groups of four steps)
GROUP = 4
#: the step levels run per cell: ``dt`` (reported after extrapolation), ``2 dt``, ``4 dt`` (checks it)
LEVELS = (1, 2, 4)


def cell_steps(cfg: PhaseDiagramConfig, d: int, beta: float) -> tuple[int, bool, float]:
    """``(steps, critical, tau_a)``: a multiple of ``GROUP`` steps covering ``T_cell``.

    Critical cells (``horizon_factor * tau_a > T_max``) run to ``T`` only: no
    affordable horizon would resolve them.
    """
    tau = relaxation_time(d, beta, motion(cfg, d, beta))
    # horizon_factor = 0 asks for the minimal horizon T in every cell, also at beta_c where tau_a is infinite
    want = 0.0 if cfg.horizon_factor == 0.0 else cfg.horizon_factor * tau
    critical = bool(want > cfg.T_max)
    horizon = cfg.T if critical else min(max(want, cfg.T), cfg.T_max)
    steps = GROUP * math.ceil(horizon / (GROUP * cell_dt(cfg, d)))
    return steps, critical, tau


def simulate_pairs(
    d: int,
    betas: list[float],
    steps: list[int],
    runs: int,
    rho0: float,
    dt: float,
    seed: int,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    progress: Progress | None = None,
    collapse_tol: float = 1e-8,
    levels: tuple[int, ...] = (1, 2),
    factory: Callable[[float], Any] | None = None,
) -> dict[str, np.ndarray]:
    r"""Final overlaps of ``runs`` pairs per ``beta``, at ``steps`` and ``steps/2``, and of coupled coarser runs.

    Each cell's noise and initial pairs depend only on ``(seed, d, beta, rho0)``.
    Returns arrays of shape ``(len(betas), runs)``: ``rho`` (at ``steps``),
    ``rho_half`` (at ``steps/2``), and for every coarser level ``r`` in
    ``levels`` (``1`` is the run itself) the run of step ``r dt`` to the same
    horizon, driven by the same Brownian path (each coarse increment is the
    normalised sum ``(xi_1 + ... + xi_r)/sqrt(r)`` of ``r`` fine normals):
    ``rho_coarse`` for ``r = 2``, ``rho_coarse4`` for ``r = 4``. ``steps`` must
    be even and multiples of ``max(levels)``.

    Collapsed pairs are frozen: every ``SLAB`` steps, pairs with
    ``(1 - rho) = |x_1 - x_2|^2 / 2 < collapse_tol`` leave the batch (their
    normals are no longer computed once no level steps them). By the scale
    function near ``rho = 1`` (``s' ~ (1 - r)^{(d-3)/2}``), a pair at gap
    ``delta`` ever reaches gap ``eps`` with probability ``~ (delta/eps)^{(d-1)/2}``,
    ``<= 1e-6`` for ``d >= 3``, ``delta = 1e-8``, ``eps = 1e-2``: far below the
    Monte-Carlo error. ``collapse_tol = 0`` disables freezing.

    Model A (the default) runs all the cells in one batch with one ``beta`` per
    pair (its fused two-token step). ``factory(beta)`` gives another model per
    cell (a user's model): each cell is then its own batch through the engine's
    generic Euler step, with the same pairs, noise keys and freezing.
    """
    if 1 not in levels or any(r not in (1, 2, 4) for r in levels):
        raise ValueError(f"levels must contain 1 and be among 1, 2, 4, got {levels}")
    top = max(levels + (2,))
    if any(s % top for s in steps):
        raise ValueError(f"steps must be multiples of {top} (the coarse runs take groups of steps)")
    x0 = []
    for b in betas:
        g = torch.Generator().manual_seed(derive_seed(seed, "phase-diagram", "x0", d, b, rho0))
        x0.append(pair_with_overlap(runs, d, rho0, g, torch.float64).to(dtype))
    x_start = torch.cat(x0).to(device)
    horizon = torch.tensor(steps, device=device).repeat_interleave(runs)
    if factory is None:
        beta = torch.tensor(betas, dtype=dtype, device=device).repeat_interleave(runs)
        batches = [(list(range(len(betas))), ValueNoise(beta=beta, route="kernel"))]
    else:
        batches = [([i], factory(b)) for i, b in enumerate(betas)]
    names = {1: "rho", 2: "rho_coarse", 4: "rho_coarse4"}
    out = {k: np.empty((len(betas), runs)) for k in ["rho_half", *(names[r] for r in levels)]}

    def overlap(z: torch.Tensor, i: int) -> np.ndarray:
        zz = z[i * runs : (i + 1) * runs]
        return (zz[:, 0] * zz[:, 1]).sum(-1).double().cpu().numpy()

    for cells, model in batches:
        first, last = cells[0] * runs, (cells[-1] + 1) * runs
        h = horizon[first:last]
        keyed = tuple((("phase-diagram", d, betas[i], rho0), runs) for i in cells)
        shape = tuple(model.noise_shape(2, d))
        path = BrownianPath(seed, (), 0, shape, dtype, str(device), cells=keyed)
        cell_steps_ = [steps[i] for i in cells]
        ends: dict[int, list[int]] = {}
        halves: dict[int, list[int]] = {}
        for j, s in enumerate(cell_steps_):
            ends.setdefault(s, []).append(j)
            halves.setdefault(s // 2, []).append(j)
        records = set(ends) | set(halves)

        def retire(
            k: int, states: dict[str, torch.Tensor], alive: dict[str, torch.Tensor], h: torch.Tensor = h
        ) -> dict[str, torch.Tensor]:
            # pairs past their cell's horizon or collapsed leave the batch (checked every slab of steps); on the
            # CPU in NumPy, so that no torch thread pool wakes up (and spins) beside the compiled kernel's threads
            for name, idx in alive.items():
                cpu = idx.device.type == "cpu"
                i, x, hh = (idx.numpy(), states[name].numpy(), h.numpy()) if cpu else (idx, states[name], h)
                z = x[i]
                diff = z[:, 0] - z[:, 1]
                keep = (hh[i] > k) & (0.5 * (diff * diff).sum(-1) >= collapse_tol)
                alive[name] = torch.from_numpy(i[keep]) if cpu else idx[keep]
            return alive

        def observe(
            k: int, states: dict[str, torch.Tensor], cells: list[int] = cells, ends: dict = ends, halves: dict = halves
        ) -> None:
            done = k + 1
            for j in halves.get(done, []):
                out["rho_half"][cells[j]] = overlap(states[names[1]], j)
            for j in ends.get(done, []):
                for r in levels:
                    out[names[r]][cells[j]] = overlap(states[names[r]], j)

        def tick(k: int, active: int, cell_steps_: list[int] = cell_steps_) -> None:
            if progress is not None:
                progress(sum(runs for s in cell_steps_ if s > k - k % SLAB))

        runs_ = [Run(model, "euler", r, names[r]) for r in levels]

        def due(k: int, records: set[int] = records) -> bool:
            return k + 1 in records

        hooks = Hooks(retire=retire, observe=observe, observe_at=due, progress=tick)
        integrate_runs(runs_, x_start[first:last], path, dt, max(cell_steps_), hooks=hooks)
    return out


def _interval(t: pd.DataFrame, z: float, undecided_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the extrapolated estimate at quantile ``z``: the Wilson interval of the ``dt`` counts moved by
    the extrapolation ``R - P(dt)``, each side at least ``z se``; the upper side widened by
    ``undecided_weight`` times the undecided fraction. Clipped to ``[0, 1]``."""
    n = t["runs"].to_numpy()
    wl, wh = wilson(t["n_antipodal"].to_numpy(), n, z)
    fine = t["p_antipodal_fine"].to_numpy()
    est = t["p_antipodal_mc"].to_numpy()
    zse = z * t["se"].to_numpy()
    low = est - np.maximum(fine - wl, zse)
    high = est + np.maximum(wh - fine, zse) + undecided_weight * t["undecided"].to_numpy()
    return np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)


def _band_check(checked: pd.DataFrame, labels: list[str], level: float) -> V.Check:
    """The exit law inside every checked cell's family-wise band."""
    name = "exit law inside the family-wise band of every non-critical cell"
    if checked.empty:
        return V.check(name, False, "no non-critical cells", source=f"family-wise {level:g}")
    ok = checked["agrees"].to_numpy()
    bad = [
        f"{labels[i]}: mc {checked['p_antipodal_mc'].iloc[i]:.4f} "
        f"[{checked['band_low'].iloc[i]:.4f}, {checked['band_high'].iloc[i]:.4f}], "
        f"theory {checked['p_antipodal_theory'].iloc[i]:.4f}"
        for i in np.flatnonzero(~ok)
    ]
    zf = bonferroni_z(level, len(checked))
    return V.check(
        name,
        bool(ok.all()),
        f"{int(ok.sum())}/{len(ok)} cells agree (Bonferroni z = {zf:.3f})"
        + ("; disagree: " + ", ".join(bad) if bad else ""),
        {"cells": len(ok), "agree": int(ok.sum()), "z": zf, "disagree": bad},
        zf,
        f"Wilson/normal band at family-wise level {level:g} over {len(ok)} cells, upper side + undecided fraction",
    )


def _bias_check(name: str, checked: pd.DataFrame, col: str, zf: float, what: str) -> V.Check:
    """Per ``d``: the pooled bias estimate ``b`` (runs-weighted sum over cells, with its paired standard error
    ``s_b``) is not shown to exceed one standard error ``s`` of the pooled estimate: ``|b| - zf s_b <= s``."""
    parts, worst, ok = [], {}, not checked.empty
    for d, g in checked.groupby("d"):
        n = g["runs"].to_numpy(dtype=float)
        b = float((n * g[col]).sum())
        s_b = float(np.sqrt((n**2 * g[f"{col}_se"] ** 2).sum()))
        s = float(np.sqrt((n**2 * g["se_theory"] ** 2).sum()))
        excess = abs(b) - zf * s_b
        ok = ok and excess <= s
        worst[str(d)] = excess / s if s > 0 else (0.0 if excess <= 0 else math.inf)
        parts.append(f"d={d}: {b:+.1f} ± {s_b:.1f} pairs vs one se {s:.1f}")
    return V.check(
        name,
        ok,
        "; ".join(parts) + f" (|bias| - {zf:.2f} se_bias <= se)" if parts else "no non-critical cells",
        {"excess_over_se": worst, "z": zf},
        1.0,
        f"{what}; one standard error of the pooled estimate, the bias's own noise at {zf:.2f} se (family-wise)",
    )


def horizon_checks(checked: pd.DataFrame, critical: int, cells: int, name: str) -> list[V.Check]:
    """The horizon was long enough: the undecided fraction of the checked cells at most 1%, and at most 10% of the
    ``cells`` (at least one) critical."""
    return [
        V.at_most(
            "undecided fraction small",
            float(checked["undecided"].max()) if len(checked) else math.nan,
            0.01,
            "max undecided fraction over checked cells",
            "stated: 1% of the runs (they may end either way)",
        ),
        V.at_most(
            name,
            critical,
            max(1, cells // 10),
            "critical cells",
            "stated: at most 10% of the cells (at least one)",
            fmt="d",
        ),
    ]


def _paired(name: str, y: np.ndarray) -> dict[str, float]:
    """Mean and standard error of a per-pair statistic (``name``, ``name_se``)."""
    n = len(y)
    return {name: float(y.mean()), f"{name}_se": float(y.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan}


#: pair-steps (runs x steps) per unit above which a dimension's betas are split into several units
UNIT_WORK = 64e6


def _balanced_groups(work: list[float], parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous index ranges of ``work`` whose sums are close to ``sum(work) / parts``."""
    total, acc, bounds = sum(work), 0.0, [0]
    for i, w in enumerate(work):
        acc += w
        if len(bounds) < parts and acc >= total * len(bounds) / parts and i + 1 < len(work):
            bounds.append(i + 1)
    bounds.append(len(work))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class PhaseDiagram(Experiment):
    name = "phase-diagram"
    summary = "Model A, two tokens: Monte-Carlo P(antipodal) over (d, beta) against the exact exit law"
    Config = PhaseDiagramConfig
    quick = {"d": [4, 10], "beta": [0.0, 1.0, 2.0, 3.0, 4.0], "runs": 500, "T": 20.0, "T_max": 60.0, "step": 0.1}

    def plan(self, cfg: PhaseDiagramConfig) -> list[dict[str, Any]]:
        """One unit per ``d``, split into groups of consecutive ``beta`` of at most about ``UNIT_WORK``
        pair-steps each (``d=20:0``, ``d=20:1``, ...), so that workers share the large dimensions.

        Cells do not depend on their neighbours (each has its own noise), so the grouping
        changes nothing in the results.
        """
        units: list[dict[str, Any]] = []
        code = {} if cfg.model is None else {"model_sha": model_fingerprint(cfg.model)}
        for d in cfg.d:
            work = [float(cell_steps(cfg, d, b)[0] * cfg.runs) for b in cfg.beta]
            parts = max(1, min(len(work), math.ceil(sum(work) / UNIT_WORK)))
            groups = _balanced_groups(work, parts)
            for k, (lo, hi) in enumerate(groups):
                uid = f"d={d}" if len(groups) == 1 else f"d={d}:{k}"
                units.append({"id": uid, "d": d, "beta": cfg.beta[lo:hi], **code})
        return units

    def unit_cost(self, cfg: PhaseDiagramConfig, unit: dict[str, Any]) -> float:
        return float(sum(cell_steps(cfg, unit["d"], b)[0] for b in unit["beta"]) * cfg.runs)

    def unit_memory(self, cfg: PhaseDiagramConfig, unit: dict[str, Any], device: str) -> int:
        """:func:`simulate_pairs` on ``len(beta) * runs`` pairs at the three levels ``dt, 2 dt, 4 dt``, with ``e``
        the numbers of one state of all of them (``pairs * 2 d``) and ``S`` its bytes.

        On the CPU (the compiled joint step): the three states (3 S), the coarse runs' sums of normals in
        float64 (24 e), and per slab the states stacked and widened to float64 (3 S + 24 e), the sums of the
        alive pairs (24 e) and one state written back (S): ``7 S + 72 e``. Elsewhere (the torch step): the
        initial pairs, the two coarse states (4 S), the slab of normals (16 S, drawn in float64 and cast: 48 S
        in all), once pairs have frozen the slab gathered per level (3 x 16 S), their working sets (3 S) and
        one fused step on all of them (about 12 S): ``87 S`` (an upper bound). Per pair in both: the results,
        ``beta``, ``horizon``, the alive indices, the keys and indices of its normals."""
        from ..sizes import itemsize

        item = itemsize(cfg.dtype)
        pairs = len(unit["beta"]) * cfg.runs
        numbers = pairs * 2 * int(unit["d"])
        state = numbers * item
        per_pair = pairs * (48 * item + 140)
        if device == "cpu":
            return int(7 * state + 72 * numbers + per_pair)
        return int(87 * state + 16 * 8 * numbers + per_pair)

    def run_unit(
        self, cfg: PhaseDiagramConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        d, betas = unit["d"], list(unit["beta"])
        info = [cell_steps(cfg, d, b) for b in betas]
        steps = [s for s, _, _ in info]
        dtype = getattr(torch, cfg.dtype)
        tick = None if progress is None else (lambda active: progress(float(active)))
        dt = cell_dt(cfg, d)
        spec = cfg.model
        factory = None if spec is None else (lambda b: load_model(spec, what="model", beta=b))
        sim = simulate_pairs(
            d, betas, steps, cfg.runs, cfg.rho0, dt, cfg.seed, dtype, device, tick, cfg.collapse_tol, LEVELS, factory
        )
        lo, hi = -1.0 + cfg.eps, 1.0 - cfg.eps
        rows = []
        for i, beta in enumerate(betas):
            rho, half = sim["rho"][i], sim["rho_half"][i]
            a1, a2, a4 = ((sim[k][i] < lo).astype(float) for k in ("rho", "rho_coarse", "rho_coarse4"))
            m = motion(cfg, d, beta)
            rows.append(
                {
                    "d": d,
                    "beta": beta,
                    "rho0": cfg.rho0,
                    "runs": cfg.runs,
                    "n_antipodal": int(a1.sum()),
                    "n_collapsed": int((rho > hi).sum()),
                    "n_undecided": int(((rho >= lo) & (rho <= hi)).sum()),
                    "n_antipodal_half": int((half < lo).sum()),
                    "n_antipodal_coarse": int(a2.sum()),
                    "n_antipodal_coarse4": int(a4.sum()),
                    "n_undecided_coarse": int(((sim["rho_coarse"][i] >= lo) & (sim["rho_coarse"][i] <= hi)).sum()),
                    # per-pair statistics of the coupled levels (their means and standard errors need the pairs)
                    **_paired("richardson", 2.0 * a1 - a2),
                    **_paired("remainder", -(2.0 * a1 - 3.0 * a2 + a4) / 3.0),
                    **_paired("time_bias", a1 - (half < lo).astype(float)),
                    "T_cell": steps[i] * dt,
                    "dt": dt,
                    "steps": steps[i],
                    "critical": info[i][1],
                    "tau_antipodal": info[i][2],
                    "p_antipodal_theory": m.p_antipodal(cfg.rho0),
                    "beta_c": theory_a.beta_c(d) if cfg.model is None else math.nan,
                    "exponent_antipodal": m.exponent_antipodal,
                    "exponent_collapse": m.exponent_collapse,
                }
            )
        return rows

    def summarize(self, cfg: PhaseDiagramConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Per cell: the reported estimate ``p_antipodal_mc`` (the Richardson extrapolation ``2 P(dt) - P(2 dt)``
        of the coupled runs), its standard error ``se`` (from the pairs' ``2 A_dt - A_2dt``, never below the
        binomial one at the estimate), its 99% interval (``ci_low``, ``ci_high``: the Wilson interval of the
        ``dt`` counts moved by the extrapolation, widened to ``z se`` where that is larger), the family-wise
        band ``band_low``/``band_high`` (the same at the Bonferroni quantile over the checked cells, the upper
        side widened by the undecided fraction) and the plain fraction ``p_antipodal_fine`` at ``dt``."""
        t = pd.DataFrame(rows).sort_values(["d", "beta"]).reset_index(drop=True)
        n = t["runs"].to_numpy()
        t["p_antipodal_fine"] = t["n_antipodal"] / n
        t["p_antipodal_mc"] = t["richardson"]
        t["undecided"] = t["n_undecided"] / n
        p_est = t["p_antipodal_mc"].clip(0.0, 1.0)
        t["se"] = np.sqrt(np.maximum(t["richardson_se"] ** 2, p_est * (1.0 - p_est) / n))
        checked = ~t["critical"]
        zf = bonferroni_z(cfg.level, int(checked.sum()))
        t["ci_low"], t["ci_high"] = _interval(t, z_for(cfg.level), 0.0)
        t["band_low"], t["band_high"] = _interval(t, zf, 1.0)
        t["agrees"] = (t["p_antipodal_theory"] >= t["band_low"]) & (t["p_antipodal_theory"] <= t["band_high"])
        t["step_bias"] = (t["n_antipodal"] - t["n_antipodal_coarse"]) / n
        # the standard error used by the pooled test: the pairs' spread, or the binomial one under the theory
        p_th = t["p_antipodal_theory"]
        t["se_theory"] = np.sqrt(np.maximum(t["richardson_se"] ** 2, p_th * (1.0 - p_th) / n))
        return t

    def verdict(self, cfg: PhaseDiagramConfig, table: pd.DataFrame) -> dict[str, Any]:
        """Per cell and pooled per ``d``: the extrapolated estimate against the exit law; the remaining step
        bias and the time bias each within one standard error of the pooled estimate; undecided and critical
        cells few. Critical cells are reported, not checked."""
        checked = table[~table["critical"]]
        crit = table[table["critical"]]
        labels = [f"(d={r.d}, beta={r.beta:g})" for r in checked.itertuples()]
        n_d = checked["d"].nunique()
        zf_d = bonferroni_z(cfg.level, max(n_d, 1))
        checks = [
            _band_check(checked, labels, cfg.level),
            V.pooled_z(
                "exit law pooled per d (sum of the extrapolated counts against the theory's)",
                checked["p_antipodal_mc"],
                checked["se_theory"],
                checked["p_antipodal_theory"],
                list(checked["d"]),
                cfg.level,
                "d",
                scale=checked["runs"],
            ),
            _bias_check(
                "remaining step bias of the extrapolation (from the 4 dt run) below one standard error, per d",
                checked,
                "remainder",
                zf_d,
                "-(R(dt) - R(2 dt))/3 with R(h) = 2 P(h) - P(2h): the O(dt^2) term left in the estimate",
            ),
            _bias_check(
                "time bias P(T) - P(T/2) below one standard error, per d",
                checked,
                "time_bias",
                zf_d,
                "the same paths at the cell's horizon and half of it (the horizon's own bias is smaller still)",
            ),
            *horizon_checks(checked, len(crit), len(table), "critical cells are few and next to beta_c"),
        ]
        notes = [
            f"critical (not checked): d={r.d}, beta={r.beta:g}, beta_c={r.beta_c:.3f}, tau_a={r.tau_antipodal:.0f}"
            for r in crit.itertuples()
        ]
        return V.verdict(checks, notes)

    def trajectory(self, cfg: PhaseDiagramConfig, device: str = "cpu") -> dict[str, Any]:
        """16 tokens of model A at the smallest ``d`` and the largest ``beta``, up to time ``T``."""
        from ..models.value_noise import ValueNoise
        from ..sphere import uniform

        d, beta = cfg.d[0], cfg.beta[-1]
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "trajectory"))
        x0 = uniform((1, 16), d, gen, torch.float64).to(device)
        dt = cell_dt(cfg, d)
        model = ValueNoise(beta=beta) if cfg.model is None else load_model(cfg.model, what="model", beta=beta)
        name = "model A" if cfg.model is None else cfg.model
        title = f"{name}, 16 tokens, d = {d}, beta = {beta:g}"
        return recorded(model, x0, dt, round(cfg.T / dt), cfg.seed, ("trajectory",), title)

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The report's interactive (plotly) figures (beside the static ones of :meth:`figures`)."""
        return _interactive_figures(table, cfg)

    def figures(self, cfg: PhaseDiagramConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.0, 4.5))
        colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(cfg.d)))
        # the exit law is smooth in beta except at beta_c, where it leaves 0: a grid of step
        # max(beta)/80 plus beta_c itself draws it (each point is a few Gauss-Jacobi integrals)
        # (a user's model: its theory at the configured betas and halfway between them)
        base = np.linspace(0.0, max(cfg.beta), 81)
        for color, d in zip(colors, cfg.d, strict=True):
            bc = theory_a.beta_c(d) if cfg.model is None else math.nan
            if cfg.model is None:
                grid = np.union1d(base, [bc] if 0.0 < bc < max(cfg.beta) else [])
            else:
                bs = np.asarray(sorted(cfg.beta), float)
                grid = np.union1d(bs, 0.5 * (bs[1:] + bs[:-1]))
            curve = [motion(cfg, d, float(b)).p_antipodal(cfg.rho0) for b in grid]
            ax.plot(grid, curve, color=color, lw=1.5, label=f"d = {d}")
            sub = table[table["d"] == d]
            err = interval_errors(sub["p_antipodal_mc"], sub["ci_low"], sub["ci_high"])
            ok = ~sub["critical"].to_numpy()
            ax.errorbar(
                sub["beta"][ok], sub["p_antipodal_mc"][ok], yerr=err[:, ok], fmt="o", ms=3.5, color=color, capsize=2
            )
            if (~ok).any():
                ax.errorbar(
                    sub["beta"][~ok],
                    sub["p_antipodal_mc"][~ok],
                    yerr=err[:, ~ok],
                    fmt="x",
                    ms=5,
                    color=color,
                    capsize=2,
                )
            if math.isfinite(bc):
                ax.axvline(bc, color=color, ls="--", lw=0.8)
        ax.set_xlabel(r"$\beta$")
        ax.set_ylabel(r"$P(\rho_t \to -1)$")
        who = "Model A" if cfg.model is None else cfg.model.replace("_", r"\_")
        ax.set_title(
            rf"{who}, two tokens, $\rho_0 = {cfg.rho0}$: Monte Carlo ($2P_{{dt}} - P_{{2dt}}$, 99%) vs exit law; "
            r"dashed: $\beta_c(d)$"
        )
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8, loc="upper left")
        ax.set_ylim(-0.01, None)
        fig.tight_layout()
        return {"phase_diagram": fig}


def _interactive_figures(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's interactive (plotly) figures, from the results table and the run's JSON config."""
    go = plotting.go()
    fig = go.Figure()
    for d in sorted(t["d"].unique()):
        s = t[t["d"] == d].sort_values("beta")
        fig.add_trace(go.Scatter(x=s["beta"], y=s["p_antipodal_theory"], mode="lines", name=f"theory d={d}"))
        fig.add_trace(
            go.Scatter(
                x=s["beta"],
                y=s["p_antipodal_mc"],
                mode="markers",
                name=f"MC d={d}",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": s["ci_high"] - s["p_antipodal_mc"],
                    "arrayminus": s["p_antipodal_mc"] - s["ci_low"],
                },
            )
        )
    fig.update_layout(title="P(antipodal): Monte Carlo (99% Wilson) vs the exact exit law", xaxis_title="beta")
    return {"phase diagram": fig}
