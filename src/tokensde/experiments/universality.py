r"""``universality``: model A's two-token exit law does not depend on the entry law of the layers.

Claim (Fedorov et al., model A). The depth limit of the random stack
``x_i' = N(x_i + sigma sqrt(h) Z a_i)`` depends on the layer matrices ``Z`` only
through the covariance of their entries. Every law of :mod:`tokensde.laws` with
finite variance -- ``gaussian``, ``rademacher``, ``uniform``, ``student``
(``nu > 2``), ``sparse`` and ``haar`` (``sqrt(d) Q``, ``Q`` Haar: dependent
entries with the covariance of i.i.d. ones) -- therefore gives the same two-token
exit law, the exact ``P(rho -> -1 | rho0)`` of :mod:`tokensde.theory.value_noise`.
For ``student`` with ``nu <= 2`` the variance is infinite, single entries of
size ``h^{-1/2}`` move the tokens by ``O(1)`` in one layer, and nothing says
the limit is this diffusion: those laws are run and reported with intervals,
without an agreement check.

What it runs. Cells ``(law, d, beta)`` of the phase diagram: ``runs`` pairs at
overlap ``rho0`` (the same pairs for every law) go through the *discrete stack*
``ValueNoise(beta, sigma=1, law=...)`` (the engine's ``stack`` solver), step ``dt = step / (d - 1)``, to the horizon of
:func:`tokensde.experiments.phase_diagram.cell_steps` (``clip(horizon_factor
tau_a, T, T_max)``; cells beyond ``T_max`` are critical, reported and not
checked). A pair ends antipodal if ``rho < -1 + eps``, collapsed if
``rho > 1 - eps``. Two coupled runs on one Brownian path
(:func:`tokensde.engine.integrate_runs`): the stack of step ``dt`` and the stack
of step ``2 dt`` on the path's view of ratio 2, whose layer takes the law of the
normalised sum ``(xi_1 + xi_2)/sqrt 2`` of the two fine layers' normals (the
law's map is applied to it, so every coarse layer has exactly the law; for the
monotone entrywise maps the two levels are strongly correlated). Every law is driven by the same
normals (the law is not part of the noise key), so the laws are coupled too.
The reported estimate is the Richardson extrapolation ``2 P(dt) - P(2 dt)``
(the stack has weak order 1; its ``O(dt)`` bias depends on the law's higher
moments, the extrapolation removes it for each law).

Why a clock check. At ``Vbar = 0`` scaling ``Z`` is a time change: a law of
variance ``1.2`` has the same exit law, so the exit law alone cannot see a
wrong variance (the covariance scale). The verdict therefore also measures the
overlap's quadratic variation against its exact rate: along ``clock_steps``
layers from the start, ``q = (1/(K h)) sum_k (Delta rho_k)^2 / r(rho_k)`` with
``r(rho) = 2 (p^2 + q^2) (1 - rho^2)^2 sigma^2``, the diffusion coefficient of the
overlap (``p = sigmoid(beta (1 - rho))``; MODELS.md 4.2). ``E q = sigma^2 Var(Z)
(1 + O(h))``, the ``O(h)`` part mostly the normalisation (about ``-d |a|^2 h``:
``-1.2%`` at ``d = 3``, ``h = 0.005``) and, for heavy-tailed laws, large ``O(h^2)``
terms (a big entry saturates in ``N``). The clock therefore runs with its own
small step ``h = clock_step / (d - 1)`` over ``clock_steps`` layers from the start
(the same coupled pair of runs, the overlap read after every layer by a hook),
and the reported value is the Richardson ``2 q(h) - q(2 h)``, target 1.

Verdict (family-wise ``level``), finite-variance laws only:

1. every non-critical cell's exit law inside the Bonferroni Wilson band of its
   ``dt`` counts (:func:`~tokensde.experiments.verdict.binomial_cells`), the band
   widened on both sides by the measured step bias ``|P(dt) - P(2 dt)|`` (the
   ``O(dt)`` bias of ``P(dt)`` for a weak-order-1 scheme) and upwards by the
   undecided fraction;
2. pooled per law: the extrapolated antipodal counts summed over the cells
   against the theory's (:func:`~tokensde.experiments.verdict.pooled_z`, standard
   errors from the pairs' ``2 A_dt - A_2dt``, never below the binomial one under the
   theory), ``|z| <= z_fw`` over the laws;
3. pooled per law: the clock ``2 q(dt) - q(2 dt)`` against 1 (``pooled_z``);
4. per law, the time bias ``P(T) - P(T/2)`` (same paths) not shown to exceed one
   standard error of the pooled estimate (as in ``phase-diagram``);
5. undecided fraction <= 1%; at most 10% of the cells critical.

For the heavy-tailed laws the check is only that the runs are finite; their
pooled ``z`` and clock are in the notes and the tables.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator
from torch import Tensor

from ..engine import BrownianPath, Hooks, Run, integrate_runs
from ..models.value_noise import ValueNoise
from ..noise import derive_seed
from ..sphere import pair_with_overlap
from ..stats import bonferroni_z, interval_errors, z_for
from ..theory import value_noise as theory_a
from . import plotting
from . import verdict as V
from .base import Experiment, ExperimentConfig, Progress, each_in, recorded
from .phase_diagram import (
    PhaseDiagramConfig,
    _interval,
    _paired,
    cell_dt,
    cell_steps,
    horizon_checks,
    t_max_at_least_t,
)

__all__ = ["Universality", "UniversalityConfig", "clock_rate", "law_label"]

LawName = Literal["gaussian", "rademacher", "uniform", "student", "sparse", "haar"]


class UniversalityConfig(ExperimentConfig):
    """Configuration of ``universality`` (every field has a default)."""

    laws: list[LawName] = Field(
        default=["gaussian", "rademacher", "uniform", "student", "sparse", "haar"],
        min_length=1,
        description="finite-variance entry laws checked against the exit law (student with nu)",
    )
    nu: float = Field(default=5.0, gt=2.0, le=1e6, description="student law's degrees of freedom, in (2, 1e6]")
    heavy_nu: list[float] = Field(
        default=[1.5], description="student laws with infinite variance, reported only, each in [1, 2]"
    )
    p: float = Field(default=0.25, gt=0.0, le=1.0, description="sparse law's keep probability, in (0, 1]")
    d: list[int] = Field(default=[3, 6], min_length=1, description="dimensions, each in [2, 64]")
    beta: list[float] = Field(
        default=[1.5, 2.5, 4.0], min_length=1, description="inverse temperatures, each in [0, 50]"
    )
    rho0: float = Field(default=0.0, gt=-1.0, lt=1.0, description="initial overlap, in (-1, 1)")
    runs: int = Field(default=4000, ge=10, le=10_000_000, description="pairs per cell, in [10, 1e7]")
    T: float = Field(default=25.0, gt=0.0, le=1e5, description="minimal horizon, in (0, 1e5]")
    T_max: float = Field(default=60.0, gt=0.0, le=1e5, description="maximal horizon, in (0, 1e5], >= T")
    horizon_factor: float = Field(default=8.0, ge=0.0, le=1e3, description="horizon in units of tau_a, in [0, 1000]")
    step: float = Field(default=0.05, gt=0.0, le=0.5, description="time step times (d - 1), in (0, 0.5]")
    eps: float = Field(default=1e-2, gt=0.0, lt=0.5, description="classification threshold, in (0, 0.5)")
    clock_steps: int = Field(
        default=16, ge=2, le=1000, description="layers of the quadratic-variation clock, even, in [2, 1000]"
    )
    clock_step: float = Field(
        default=0.01, gt=0.0, le=0.5, description="the clock's time step times (d - 1), in (0, 0.5]"
    )
    level: float = Field(default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level, in (0.5, 1)")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")
    dtype: Literal["float32", "float64"] = Field(default="float32", description="float32 or float64")

    @field_validator("laws")
    @classmethod
    def _laws_unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @field_validator("heavy_nu")
    @classmethod
    def _heavy_range(cls, v: list[float]) -> list[float]:
        return each_in(v, 1.0, 2.0, "heavy_nu")

    @field_validator("d")
    @classmethod
    def _d_range(cls, v: list[int]) -> list[int]:
        return each_in(v, 2, 64, "d")

    @field_validator("beta")
    @classmethod
    def _beta_range(cls, v: list[float]) -> list[float]:
        return each_in(v, 0.0, 50.0, "beta")

    @field_validator("T_max")
    @classmethod
    def _tmax(cls, v: float, info: Any) -> float:
        return t_max_at_least_t(v, info)

    @field_validator("clock_steps")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"clock_steps must be even (the 2 dt run takes half as many), got {v}")
        return v


def law_label(law: str, nu: float, p: float) -> str:
    """``gaussian``, ``student(nu=5)``, ``sparse(p=0.25)``: the law with the parameters it reads."""
    if law == "student":
        return f"student(nu={nu:g})"
    if law == "sparse":
        return f"sparse(p={p:g})"
    return law


def _specs(cfg: UniversalityConfig) -> list[dict[str, Any]]:
    """The laws run: the checked ones, then the heavy-tailed student laws (``finite = False``)."""
    out = [
        {"law": law, "nu": cfg.nu, "p": cfg.p, "label": law_label(law, cfg.nu, cfg.p), "finite": True}
        for law in cfg.laws
    ]
    for nu in cfg.heavy_nu:
        out.append({"law": "student", "nu": nu, "p": cfg.p, "label": law_label("student", nu, cfg.p), "finite": False})
    return list({s["label"]: s for s in out}.values())


def _pd(cfg: UniversalityConfig) -> PhaseDiagramConfig:
    """The phase-diagram config whose horizon rules (``cell_steps``, ``cell_dt``) the cells follow."""
    return PhaseDiagramConfig(
        d=cfg.d,
        beta=cfg.beta,
        rho0=cfg.rho0,
        runs=cfg.runs,
        T=cfg.T,
        T_max=cfg.T_max,
        horizon_factor=cfg.horizon_factor,
        step=cfg.step,
        eps=cfg.eps,
        level=cfg.level,
        seed=cfg.seed,
        dtype=cfg.dtype,
    )


def clock_rate(rho: np.ndarray, beta: float) -> np.ndarray:
    """``2 (p^2 + q^2) (1 - rho^2)^2``: the overlap's diffusion coefficient (``sigma = 1``, ``A = I``, ``Vbar = 0``)."""
    p = 1.0 / (1.0 + np.exp(-beta * (1.0 - rho)))
    q = 1.0 - p
    return 2.0 * (p * p + q * q) * (1.0 - rho * rho) ** 2


def _overlap(x: Tensor) -> np.ndarray:
    return (x[:, 0] * x[:, 1]).sum(-1).double().cpu().numpy()


def _coupled(
    model: ValueNoise, x0: Tensor, dt: float, steps: int, seed: int, key: tuple[object, ...], observe: Any = None
) -> dict[str, Tensor]:
    """The stack at layer step ``dt`` and at ``2 dt`` on one path (coarse layers take ``(xi_1 + xi_2)/sqrt 2``,
    the law's map applied to it): final states ``{"fine", "coarse"}``; ``observe(k, states)`` after every step."""
    path = BrownianPath.for_model(model, x0, seed, key, discrete=True)
    runs = [Run(model, "stack", 1, "fine"), Run(model, "stack", 2, "coarse")]
    res = integrate_runs(runs, x0, path, dt, steps, hooks=Hooks(observe=observe) if observe is not None else None)
    return {name: sol.x for name, sol in res.items()}


def _clock(model: ValueNoise, x0: Tensor, dt: float, layers: int, seed: int, key: tuple[object, ...]) -> np.ndarray:
    """Per pair and level, ``(1/(K h)) sum_k (Delta rho_k)^2 / r(rho_k)`` over the ``K`` layers of step ``h`` of
    ``layers`` fine layers (``h = dt``) and of the coupled coarse run (``h = 2 dt``): shape ``(2, pairs)``."""
    beta = float(model.beta)
    rho = {name: _overlap(x0) for name in ("fine", "coarse")}
    acc = {name: np.zeros(len(rho["fine"])) for name in rho}

    def observe(k: int, states: dict[str, Tensor]) -> None:
        for name, every in (("fine", 1), ("coarse", 2)):
            if (k + 1) % every:
                continue
            new = _overlap(states[name])
            rate = clock_rate(rho[name], beta)
            acc[name] += np.where(rate > 1e-300, (new - rho[name]) ** 2 / np.maximum(rate, 1e-300), 0.0)
            rho[name] = new

    _coupled(model, x0, dt, layers, seed, key, observe)
    return np.stack([acc["fine"], acc["coarse"]]) / (layers * dt)


class Universality(Experiment):
    name = "universality"
    summary = "Model A, two tokens, discrete stack: the exit law is the same for every finite-variance entry law"
    Config = UniversalityConfig
    quick = {"d": [3], "beta": [2.0, 4.0], "runs": 1000, "T": 20.0, "T_max": 40.0, "step": 0.1, "clock_steps": 8}

    def plan(self, cfg: UniversalityConfig) -> list[dict[str, Any]]:
        """One unit per (law, d), with all the betas."""
        return [{"id": f"{s['label']}:d={d}", **s, "d": d} for s in _specs(cfg) for d in cfg.d]

    def unit_cost(self, cfg: UniversalityConfig, unit: dict[str, Any]) -> float:
        pd_cfg = _pd(cfg)
        d = unit["d"]
        return float(sum(cell_steps(pd_cfg, d, b)[0] for b in cfg.beta) * cfg.runs * d * d)

    def unit_memory(self, cfg: UniversalityConfig, unit: dict[str, Any], device: str) -> int:
        """Per cell, with ``E`` the bytes of one ``d x d`` matrix per pair: the noise slab of 16 two-level steps
        (32 E), the law's temporaries (the student table's four gathers and the Hermite terms, about 12 E), the
        layer's product and states (a few ``2 d`` per pair); the float64 copies of the overlaps per pair."""
        from ..sizes import itemsize

        item = itemsize(cfg.dtype)
        d = int(unit["d"])
        return int(cfg.runs * (item * (48 * d * d + 16 * d) + 64))

    def run_unit(
        self, cfg: UniversalityConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        d = int(unit["d"])
        pd_cfg = _pd(cfg)
        dt = cell_dt(pd_cfg, d)
        dtype = getattr(torch, cfg.dtype)
        lo, hi = -1.0 + cfg.eps, 1.0 - cfg.eps
        rows = []
        for beta in cfg.beta:
            steps, critical, tau = cell_steps(pd_cfg, d, beta)
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, "universality", "x0", d, beta, cfg.rho0))
            x0 = pair_with_overlap(cfg.runs, d, cfg.rho0, g, torch.float64).to(dtype).to(device)
            model = ValueNoise(beta=beta, sigma=1.0, law=unit["law"], nu=unit["nu"], p=unit["p"])
            key = ("universality", d, beta, cfg.rho0)
            kept: dict[str, np.ndarray] = {}

            def at_half(k: int, states: dict[str, Tensor], steps: int = steps, kept: dict = kept) -> None:
                if k + 1 == steps // 2:
                    kept["half"] = _overlap(states["fine"])

            ends = _coupled(model, x0, dt, steps, cfg.seed, key, at_half)
            if progress is not None:
                progress(float(steps * cfg.runs * d * d))
            half, rho, rho2 = kept["half"], _overlap(ends["fine"]), _overlap(ends["coarse"])
            finite = bool(np.isfinite(rho).all() and np.isfinite(rho2).all() and np.isfinite(half).all())
            a1, a2 = (rho < lo).astype(float), (rho2 < lo).astype(float)
            dt_c = cfg.clock_step / max(d - 1, 1)
            q1, q2 = _clock(model, x0, dt_c, cfg.clock_steps, cfg.seed, (*key, "clock"))
            m = theory_a.two_point_motion(d, beta)
            rows.append(
                {
                    "law": unit["law"],
                    "label": unit["label"],
                    "nu": unit["nu"] if unit["law"] == "student" else math.nan,
                    "p": unit["p"] if unit["law"] == "sparse" else math.nan,
                    "finite_variance": bool(unit["finite"]),
                    "d": d,
                    "beta": beta,
                    "rho0": cfg.rho0,
                    "runs": cfg.runs,
                    "n_antipodal": int(a1.sum()),
                    "n_collapsed": int((rho > hi).sum()),
                    "n_undecided": int(((rho >= lo) & (rho <= hi)).sum()),
                    "n_antipodal_half": int((half < lo).sum()),
                    "n_antipodal_coarse": int(a2.sum()),
                    "finite_states": finite,
                    **_paired("richardson", 2.0 * a1 - a2),
                    **_paired("step_bias", a1 - a2),
                    **_paired("time_bias", a1 - (half < lo).astype(float)),
                    **_paired("clock", 2.0 * q1 - q2),
                    "clock_fine": float(q1.mean()),
                    "clock_coarse": float(q2.mean()),
                    "T_cell": steps * dt,
                    "dt": dt,
                    "steps": steps,
                    "critical": critical,
                    "tau_antipodal": tau,
                    "p_antipodal_theory": m.p_antipodal(cfg.rho0),
                    "beta_c": theory_a.beta_c(d),
                }
            )
        return rows

    def summarize(self, cfg: UniversalityConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Per (law, d, beta): the plain fraction ``p_antipodal_fine`` at ``dt``, the Richardson estimate
        ``p_antipodal_mc = 2 P(dt) - P(2 dt)`` with its standard error ``se`` (pairs' spread, never below the
        binomial one) and 99% interval ``ci_low``/``ci_high`` (``phase_diagram._interval``: the Wilson interval of
        the ``dt`` counts moved by the extrapolation, at least ``z se`` wide), ``se_theory`` (the pooled test's,
        binomial under the theory), the clock ``2 q(dt) - q(2 dt)`` with ``clock_se``."""
        order = {s["label"]: i for i, s in enumerate(_specs(cfg))}
        t = pd.DataFrame(rows)
        t = t.assign(_o=t["label"].map(order)).sort_values(["_o", "d", "beta"]).drop(columns="_o")
        t = t.reset_index(drop=True)
        n = t["runs"].to_numpy()
        t["p_antipodal_fine"] = t["n_antipodal"] / n
        t["p_antipodal_coarse"] = t["n_antipodal_coarse"] / n
        t["p_antipodal_mc"] = t["richardson"]
        t["undecided"] = t["n_undecided"] / n
        p_est = t["p_antipodal_mc"].clip(0.0, 1.0)
        t["se"] = np.sqrt(np.maximum(t["richardson_se"] ** 2, p_est * (1.0 - p_est) / n))
        p_th = t["p_antipodal_theory"]
        t["se_theory"] = np.sqrt(np.maximum(t["richardson_se"] ** 2, p_th * (1.0 - p_th) / n))
        t["ci_low"], t["ci_high"] = _interval(t, z_for(cfg.level), 0.0)
        t["z_cell"] = (t["p_antipodal_mc"] - p_th) / t["se_theory"]
        return t

    def tables(self, cfg: UniversalityConfig, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """``laws``: per law, the pooled excess of extrapolated antipodal endings over the theory's with its ``z``,
        the pooled clock with its ``z`` against 1, and the largest undecided fraction."""
        out = []
        for label, g in table.groupby("label", sort=False):
            n = g["runs"].to_numpy(dtype=float)
            excess = float((n * (g["p_antipodal_mc"] - g["p_antipodal_theory"])).sum())
            s = float(np.sqrt((n**2 * g["se_theory"] ** 2).sum()))
            c_se = float(np.sqrt((g["clock_se"] ** 2).sum()))
            c_dev = float((g["clock"] - 1.0).sum())
            out.append(
                {
                    "label": label,
                    "finite_variance": bool(g["finite_variance"].iloc[0]),
                    "cells": len(g),
                    "excess_antipodal": excess,
                    "excess_se": s,
                    "z_exit": excess / s if s > 0 else math.nan,
                    "clock_mean": float(g["clock"].mean()),
                    "z_clock": c_dev / c_se if c_se > 0 else math.nan,
                    "undecided_max": float(g["undecided"].max()),
                }
            )
        return {"laws": pd.DataFrame(out)}

    def verdict(self, cfg: UniversalityConfig, table: pd.DataFrame) -> dict[str, Any]:
        """See the module docstring: per cell and pooled per law against the exit law, the clock per law, the time
        bias per law, undecided and critical cells; the heavy-tailed laws only for finite runs."""
        fin = table[table["finite_variance"]]
        heavy = table[~table["finite_variance"]]
        checked = fin[~fin["critical"]]
        crit = fin[fin["critical"]]
        labels = [f"({r.label}, d={r.d}, beta={r.beta:g})" for r in checked.itertuples()]
        n = checked["runs"].to_numpy(dtype=float)
        bias = np.abs(checked["step_bias"].to_numpy(dtype=float)) * n
        k_low = np.clip(checked["n_antipodal"].to_numpy(dtype=float) - bias, 0.0, n)
        extra = np.clip(2.0 * bias + checked["n_undecided"].to_numpy(dtype=float), 0.0, n - k_low)
        n_laws = max(checked["label"].nunique(), 1)
        checks = [
            V.binomial_cells(
                "exit law inside every finite-variance cell's family-wise Wilson band (dt counts +- step bias)",
                k_low,
                n,
                checked["p_antipodal_theory"],
                labels,
                cfg.level,
                extra_high=extra,
            ),
            V.pooled_z(
                "exit law pooled per law (sum of the extrapolated counts 2 P(dt) - P(2 dt) against the theory's)",
                checked["p_antipodal_mc"],
                checked["se_theory"],
                checked["p_antipodal_theory"],
                list(checked["label"]),
                cfg.level,
                "law",
                scale=checked["runs"],
            ),
            V.pooled_z(
                "covariance scale pooled per law: the overlap's quadratic variation over its exact rate is 1",
                fin["clock"],
                fin["clock_se"],
                np.ones(len(fin)),
                list(fin["label"]),
                cfg.level,
                "law",
            ),
            _time_bias_check(checked, bonferroni_z(cfg.level, n_laws)),
            *horizon_checks(checked, len(crit), len(fin), "critical cells are few"),
        ]
        notes = [
            f"critical (not checked): {r.label}, d={r.d}, beta={r.beta:g}, tau_a={r.tau_antipodal:.0f}"
            for r in crit.itertuples()
        ]
        if len(heavy):
            ok = bool(heavy["finite_states"].all() and np.isfinite(heavy["p_antipodal_mc"]).all())
            checks.append(
                V.check(
                    "heavy-tailed laws (infinite variance, reported only) ran to finite states",
                    ok,
                    f"{int(heavy['finite_states'].sum())}/{len(heavy)} cells with finite final overlaps",
                    {"cells": len(heavy), "finite": int(heavy["finite_states"].sum())},
                    None,
                    "no theory for nu <= 2: only that the stack ran",
                )
            )
            laws_table = self.tables(cfg, table)["laws"].set_index("label")
            for label in dict.fromkeys(heavy["label"]):
                row = laws_table.loc[label]
                notes.append(
                    f"{label} (infinite variance, not checked): extrapolated antipodal excess "
                    f"{row['excess_antipodal']:+.1f} ± {row['excess_se']:.1f} pairs over the exit law "
                    f"(z = {row['z_exit']:+.2f}); clock {row['clock_mean']:.3g} (1 for finite variance)"
                )
        return V.verdict(checks, notes)

    def trajectory(self, cfg: UniversalityConfig, device: str = "cpu") -> dict[str, Any]:
        """16 tokens through the stack of the last configured law at the smallest ``d`` and the largest ``beta``."""
        from ..sphere import uniform

        d, beta, law = cfg.d[0], cfg.beta[-1], cfg.laws[-1]
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "universality", "trajectory"))
        x0 = uniform((1, 16), d, gen, torch.float64).to(device)
        dt = cell_dt(_pd(cfg), d)
        model = ValueNoise(beta=beta, law=law, nu=cfg.nu, p=cfg.p)
        title = f"model A stack, {law_label(law, cfg.nu, cfg.p)} entries, 16 tokens, d = {d}, beta = {beta:g}"
        return recorded(model, x0, dt, round(cfg.T / dt), cfg.seed, ("trajectory",), title, solver="stack")

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """Per law, the extrapolated antipodal fraction of every cell (99% interval) against the exit law."""
        go = plotting.go()
        fig = go.Figure()
        t = table.sort_values(["d", "beta"])
        cells = [f"d={d}, beta={b:g}" for d, b in zip(t["d"], t["beta"], strict=True)]
        t = t.assign(cell=cells)
        theory = t.drop_duplicates("cell")
        fig.add_trace(go.Scatter(x=theory["cell"], y=theory["p_antipodal_theory"], mode="lines", name="exit law"))
        for label, s in t.groupby("label", sort=False):
            err = {"type": "data", "symmetric": False, "array": s["ci_high"] - s["p_antipodal_mc"],
                   "arrayminus": s["p_antipodal_mc"] - s["ci_low"]}  # fmt: skip
            fig.add_trace(go.Scatter(x=s["cell"], y=s["p_antipodal_mc"], mode="markers", name=str(label), error_y=err))
        fig.update_layout(title="the stack with each entry law: P(antipodal), 2P(dt) - P(2dt), 99%, vs the exit law")
        return {"universality": fig}

    def figures(self, cfg: UniversalityConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        ds = sorted(table["d"].unique())
        fig, axes = plt.subplots(1, len(ds), figsize=(4.2 * len(ds) + 1.5, 4.2), squeeze=False)
        labels = list(dict.fromkeys(table["label"]))
        colors = plt.get_cmap("tab10")(np.arange(len(labels)) % 10)
        span = max(cfg.beta) - min(cfg.beta)
        width = 0.04 * (span if span > 0 else 1.0)
        for ax, d in zip(axes[0], ds, strict=True):
            grid = np.linspace(0.0, max(cfg.beta) * 1.05, 61)
            bc = theory_a.beta_c(int(d))
            grid = np.union1d(grid, [bc] if 0.0 < bc < grid[-1] else [])
            ax.plot(
                grid, [theory_a.p_antipodal(int(d), b, cfg.rho0) for b in grid], color="k", lw=1.3, label="exit law"
            )
            for i, (label, color) in enumerate(zip(labels, colors, strict=True)):
                sub = table[(table["d"] == d) & (table["label"] == label)]
                if sub.empty:
                    continue
                err = interval_errors(sub["p_antipodal_mc"], sub["ci_low"], sub["ci_high"])
                shift = (i - (len(labels) - 1) / 2) * width
                fmt = "o" if bool(sub["finite_variance"].iloc[0]) else "x"
                ax.errorbar(
                    sub["beta"] + shift, sub["p_antipodal_mc"], yerr=err, fmt=fmt, ms=3.5, color=color, capsize=2,
                    label=label,
                )  # fmt: skip
            ax.set_xlabel(r"$\beta$")
            ax.set_title(f"d = {d}", fontsize=9)
        axes[0][0].set_ylabel(r"$P(\rho_T \to -1)$, $2P_{dt} - P_{2dt}$ (99%)")
        axes[0][-1].legend(fontsize=7, loc="lower right")
        fig.suptitle(
            rf"Model A stack, two tokens, $\rho_0 = {cfg.rho0}$: entry laws vs the exact exit law "
            r"(x: infinite variance, not checked)",
            fontsize=9,
        )
        fig.tight_layout()
        return {"universality": fig}


def _time_bias_check(checked: pd.DataFrame, zf: float) -> V.Check:
    """Per law: the pooled time bias ``b = sum n (P(T) - P(T/2))`` (paired standard error ``s_b``) is not shown
    to exceed one standard error ``s`` of the pooled estimate: ``|b| - zf s_b <= s`` (as ``phase-diagram``)."""
    name = "time bias P(T) - P(T/2) below one standard error, per law"
    parts, worst, ok = [], {}, not checked.empty
    for label, g in checked.groupby("label", sort=False):
        n = g["runs"].to_numpy(dtype=float)
        b = float((n * g["time_bias"]).sum())
        s_b = float(np.sqrt((n**2 * g["time_bias_se"] ** 2).sum()))
        s = float(np.sqrt((n**2 * g["se_theory"] ** 2).sum()))
        excess = abs(b) - zf * s_b
        ok = ok and excess <= s
        worst[str(label)] = excess / s if s > 0 else (0.0 if excess <= 0 else math.inf)
        parts.append(f"{label}: {b:+.1f} ± {s_b:.1f} pairs vs one se {s:.1f}")
    return V.check(
        name,
        ok,
        "; ".join(parts) + f" (|bias| - {zf:.2f} se_bias <= se)" if parts else "no non-critical cells",
        {"excess_over_se": worst, "z": zf},
        1.0,
        f"the same paths at T and T/2; one standard error of the pooled estimate, the bias's own noise at "
        f"{zf:.2f} se (family-wise over the laws)",
    )
