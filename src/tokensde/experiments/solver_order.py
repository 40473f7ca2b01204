r"""``solver-order``: strong and weak orders of the integrators of (*) on one Brownian path.

For each *case* (a model's limit SDE and an integrator), one Brownian path per
system is fixed by the normals of ``ref_steps`` fine steps over ``[0, T]``; the
scheme is run with ``K`` steps for every ``K`` in ``steps`` and with
``ref_steps`` steps (the reference), each coarse step driven by the exact
Brownian increment of its interval (:func:`tokensde.solvers.simulate_levels`).
At ``h = T / K``:

* strong error ``e_s(h) = sqrt(E (1/n) sum_i |x_i^h(T) - x_i^ref(T)|^2)``;
* weak error ``e_w(h) = E phi(X^h(T)) - E phi(X^ref(T))`` with
  ``phi(X) = (1/n) sum_i <x_i, x_i(0)>`` (how far the tokens travelled),
  estimated from the coupled differences (their variance is of the order of
  ``e_s^2``, far below that of ``phi``). Pairwise functionals such as
  ``<x_1, x_2>^2`` have a weak-error constant close to zero for some cases
  (model A with Euler at ``d = 3``), which makes their slope unmeasurable at a
  reasonable cost; travelled distance has a clear ``O(h)`` bias in every case.

Cases: model A (``ValueNoise``, matrix route) with Euler–Maruyama and the
stochastic Heun scheme (closed-form Itô–Stratonovich correction); model B's
diffusive limit with deterministic attention (``sigma_A = 0``, ``Abar = abar I``,
``Vbar = vbar I``, one head, fixed ``alpha``) with Euler; model C's limit (exact
Gaussian-field route, attention ``V = c I``) with Euler. The noise of all
these is non-commutative, so both schemes have strong order 1/2 (the most a
scheme using only the increments can have: Clark–Cameron) and weak order 1.

Verdict (:mod:`.verdict`): for every case the log-log slopes of ``e_s`` and
``|e_w|`` against ``h`` (the former's standard error from the fit's residuals,
the latter weighted by the standard errors of the points) are within
``max(tol, z se)`` of the scheme's declared orders: ``tol`` the model part
(pre-asymptotic terms), ``z`` the two-sided Bonferroni quantile at ``level`` over
the ``2 x cases`` slopes. The reference's own error biases the measured
errors at the finest steps; keep ``ref_steps >= 4 max(steps)``.

What it can and cannot see: every case is measured against a fine run of the
*same* scheme, so the check is about the rate at which a scheme converges, not
about which equation it converges to. A broken coupling of the coarse steps to
the path (the increment of a coarse step built as the mean ``sum / r`` of the
fine normals instead of ``sum / sqrt(r)``) gives slopes near 0.2 (strong) and
0.12 (weak) and fails every check; a consistent scheme of another equation
keeps orders 1/2 and 1 against itself and passes (the stochastic Heun scheme
without its Itô–Stratonovich correction: slopes 0.548 and 0.948 at 4096
systems, the same as with it). Those are checked elsewhere (tests/test_heun.py:
the Heun drift against Euler's, and the Heun strong order against an Euler
reference on the same path). With few systems the weak slopes of A-euler and
C-euler are noisy (``se`` 0.2 to 0.7 at 4096 systems: their weak-error constant
for ``phi`` is small) and their tolerance is then the statistical part, 0.5 to 2.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator

from ..models.mlp_noise import MLPNoise
from ..models.multihead import Multihead, MultiheadLimit
from ..models.value_noise import ValueNoise
from ..noise import derive_seed
from ..solvers import SOLVERS, Level, simulate_levels
from ..sphere import uniform
from ..stats import loglog_slope
from . import plotting
from .base import Experiment, ExperimentConfig, Progress, recorded
from .verdict import slope_within, verdict

__all__ = ["SolverOrder", "SolverOrderConfig", "CASES"]

Case = Literal["A-euler", "A-heun", "B-euler", "C-euler"]
CASES: tuple[Case, ...] = ("A-euler", "A-heun", "B-euler", "C-euler")


class SolverOrderConfig(ExperimentConfig):
    """Configuration of ``solver-order`` (every field has a default)."""

    cases: list[Case] = Field(default=list(CASES), min_length=1, description=f"cases, a subset of {list(CASES)}")
    n: int = Field(default=2, ge=2, le=16, description="tokens, in [2, 16]")
    d: int = Field(default=3, ge=2, le=16, description="dimension, in [2, 16]")
    beta: float = Field(default=1.0, ge=0.0, le=20.0, description="inverse temperature, in [0, 20]")
    T: float = Field(default=0.25, gt=0.0, le=4.0, description="horizon, in (0, 4]")
    steps: list[int] = Field(
        default=[4, 8, 16, 32, 64],
        min_length=3,
        description="coarse step counts over T, >= 3 values, each divides ref_steps",
    )
    ref_steps: int = Field(default=512, ge=16, le=65536, description="reference step count, in [16, 65536]")
    systems: int = Field(default=65536, ge=256, le=1_048_576, description="systems (Brownian paths), in [256, 2^20]")
    alpha: float = Field(default=0.5, gt=0.0, le=10.0, description="model B: alpha, in (0, 10]")
    vbar: float = Field(default=1.0, ge=-10.0, le=10.0, description="model B: Vbar = vbar I, in [-10, 10]")
    abar: float = Field(default=1.0, ge=-10.0, le=10.0, description="model B: Abar = abar I, in [-10, 10]")
    activation: Literal["relu", "tanh", "silu", "sigmoid", "gelu"] = Field(
        default="tanh", description="model C: activation (relu, tanh, silu, sigmoid, gelu)"
    )
    c: float = Field(default=1.0, ge=-1.0, le=1.0, description="model C: value scale V = c I, in [-1, 1]")
    tol: float = Field(default=0.25, gt=0.0, le=1.0, description="allowed |slope - declared order|, in (0, 1]")
    level: float = Field(
        default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level of the slope checks, in (0.5, 1)"
    )
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")

    @field_validator("cases")
    @classmethod
    def _cases(cls, v: list[str]) -> list[str]:
        return [c for c in CASES if c in v]

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        v = sorted(set(v))
        if len(v) < 3 or v[0] < 1:
            raise ValueError("steps needs at least 3 distinct values, each >= 1")
        return v

    @model_validator(mode="after")
    def _divides(self) -> SolverOrderConfig:
        for k in self.steps:
            if self.ref_steps % k or k >= self.ref_steps:
                raise ValueError(f"steps: each value must divide ref_steps = {self.ref_steps} and be smaller, got {k}")
        return self


def _model(cfg: SolverOrderConfig, case: str, dtype: torch.dtype) -> Any:
    family = case.split("-")[0]
    if family == "A":
        return ValueNoise(beta=cfg.beta, route="matrix")
    if family == "B":
        eye = torch.eye(cfg.d, dtype=dtype)
        eta = 0.1  # the diffusive limit depends on alpha only
        law = Multihead(
            beta=cfg.beta,
            heads=1,
            sigma_v=math.sqrt(cfg.alpha / (eta * (cfg.d - 1))),
            sigma_a=0.0,
            vbar=cfg.vbar * eye,
            abar=cfg.abar * eye,
            route="matrix",
        )
        return MultiheadLimit(law, eta=eta, kind="diffusive", samples=1)
    return MLPNoise(beta=cfg.beta, c=cfg.c, activation=cfg.activation, route="exact")


def phi(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``(1/n) sum_i <x_i, x_i(0)>`` per system, ``(B,)``."""
    return (x * x0).sum(-1).mean(-1)


class SolverOrder(Experiment):
    name = "solver-order"
    summary = "strong and weak orders of Euler-Maruyama and stochastic Heun on one Brownian path (models A, B, C)"
    Config = SolverOrderConfig
    quick = {"systems": 16384, "steps": [4, 8, 16, 32], "ref_steps": 128}

    def plan(self, cfg: SolverOrderConfig) -> list[dict[str, Any]]:
        return [{"id": case, "case": case} for case in cfg.cases]

    def unit_cost(self, cfg: SolverOrderConfig, unit: dict[str, Any]) -> float:
        return (7.0 if unit["case"].endswith("heun") else 1.0) * cfg.ref_steps

    def unit_memory(self, cfg: SolverOrderConfig, unit: dict[str, Any], device: str) -> int:
        """:func:`simulate_levels` of ``systems`` systems in float64: ``x0``, per level (every coarse step count
        and the reference) the state and the sum of its normals, the noise stream (``SLAB`` steps of the
        case's normals: ``d x d`` for A and B, ``n x d`` for C) with the step's copy and a level's scaled sum,
        and one step of the case's scheme (Heun: two evaluations of the Stratonovich coefficients with the
        closed-form correction's ``n x n`` arrays)."""
        from ..sizes import (
            mlp_kernel_bytes,
            mlp_step_bytes,
            stream_bytes,
            uniform_bytes,
            value_noise_step_bytes,
        )

        family, scheme = unit["case"].split("-")
        bsz, n, d = cfg.systems, cfg.n, cfg.d
        bnd, bnn = bsz * n * d * 8, bsz * n * n * 8
        shape = {"A": (d, d), "B": (d * d,), "C": (n, d)}[family]
        per = 8 * bsz * math.prod(shape)
        levels = len(cfg.steps) + 1
        kernel = 0
        if family == "A":
            step = value_noise_step_bytes(bsz, n, d, 8, device, False)
            if scheme == "heun":
                step = 2 * step + 17 * bnd + 8 * bnn
        elif family == "B":
            step = 10 * bnd + 3 * bnn
        else:
            step = mlp_step_bytes(bsz, n, d, 8, device, cfg.c != 0.0)
            kernel = mlp_kernel_bytes(cfg.activation)
        run = bnd + levels * (bnd + per) + stream_bytes(bsz, shape, 8, copies=2) + step
        return int(max(uniform_bytes(bsz * cfg.n, d, 8), run) + kernel)

    def run_unit(
        self, cfg: SolverOrderConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        dtype = torch.float64
        case = unit["case"]
        solver = SOLVERS[case.split("-")[1]]
        model = _model(cfg, case, dtype)
        x0 = uniform((cfg.systems, cfg.n), cfg.d, torch.Generator().manual_seed(derive_seed(cfg.seed, "x0")), dtype).to(
            device
        )
        dt = cfg.T / cfg.ref_steps

        def stepper(x: torch.Tensor, xi: torch.Tensor, h: float) -> torch.Tensor:
            return solver.step(model, x, xi, h)

        levels = [Level(str(k), stepper, cfg.ref_steps // k) for k in cfg.steps] + [Level("ref", stepper, 1)]
        on_step = (lambda k: progress((k + 1) / cfg.ref_steps)) if progress else None
        res = simulate_levels(
            levels, x0, dt, cfg.ref_steps, model.noise_shape(cfg.n, cfg.d), cfg.seed, ("path", case), on_step=on_step
        )
        ref = res["ref"].x
        f_ref = phi(ref, x0)
        rows = []
        for k in cfg.steps:
            x = res[str(k)].x
            sq = ((x - ref) ** 2).sum(-1).mean(-1)
            ms, ms_se = sq.mean().item(), sq.std().item() / math.sqrt(cfg.systems)
            rms = math.sqrt(ms)
            diff = phi(x, x0) - f_ref
            rows.append(
                {
                    "case": case,
                    "model": case.split("-")[0],
                    "solver": solver.name,
                    "steps": k,
                    "h": cfg.T / k,
                    "strong": rms,
                    "strong_se": ms_se / (2.0 * rms) if rms > 0 else 0.0,
                    "weak": diff.mean().item(),
                    "weak_se": diff.std().item() / math.sqrt(cfg.systems),
                    "strong_order": solver.strong_order,
                    "weak_order": solver.weak_order,
                }
            )
        return rows

    def summarize(self, cfg: SolverOrderConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return pd.DataFrame(rows).sort_values(["case", "steps"]).reset_index(drop=True)

    @staticmethod
    def slopes(table: pd.DataFrame) -> dict[str, dict[str, tuple[float, float]]]:
        """Per case: fitted (slope, se) of the strong error and of ``|weak|`` (weighted) against ``h``."""
        out = {}
        for case, sub in table.groupby("case", sort=False):
            h = sub["h"].to_numpy(float)
            out[str(case)] = {
                "strong": loglog_slope(h, sub["strong"].to_numpy(float)),
                "weak": loglog_slope(h, sub["weak"].to_numpy(float), sub["weak_se"].to_numpy(float)),
            }
        return out

    def verdict(self, cfg: SolverOrderConfig, table: pd.DataFrame) -> dict[str, Any]:
        fits = self.slopes(table)
        n_slopes = 2 * len(fits)  # strong and weak per case share the family-wise level
        checks = []
        for case, sl in fits.items():
            sub = table[table["case"] == case]
            for kind in ("strong", "weak"):
                slope, se = sl[kind]
                checks.append(
                    slope_within(
                        f"{case}: {kind} order",
                        slope,
                        se,
                        float(sub[f"{kind}_order"].iloc[0]),
                        model_tol=cfg.tol,
                        level=cfg.level,
                        m=n_slopes,
                        what=f"fitted {kind}-error slope in h (declared order)",
                    )
                )
        return verdict(checks)

    def trajectory(self, cfg: SolverOrderConfig, device: str = "cpu") -> dict[str, Any]:
        """Model A's limit with the Heun scheme at the finest coarse step."""
        x0 = uniform((1, cfg.n), cfg.d, torch.Generator().manual_seed(derive_seed(cfg.seed, "x0")), torch.float64)
        k = max(cfg.steps)
        title = f"model A, stochastic Heun, n = {cfg.n}, d = {cfg.d}, beta = {cfg.beta:g}, h = T/{k}"
        return recorded(
            _model(cfg, "A-heun", torch.float64),
            x0.to(device),
            cfg.T / k,
            k,
            cfg.seed,
            ("trajectory",),
            title,
            solver="heun",
        )

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The report's interactive (plotly) figures (beside the static ones of :meth:`figures`)."""
        return _interactive_figures(table, cfg)

    def figures(self, cfg: SolverOrderConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        sl = self.slopes(table)
        fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8))
        for ax, kind in zip(axes, ("strong", "weak"), strict=True):
            for case, sub in table.groupby("case", sort=False):
                y = sub[kind].abs() if kind == "weak" else sub[kind]
                se = sub[f"{kind}_se"]
                ax.errorbar(
                    sub["h"],
                    y,
                    yerr=2 * se,
                    marker="o",
                    capsize=2,
                    label=f"{case} ({sl[str(case)][kind][0]:.2f}; declared {sub[f'{kind}_order'].iloc[0]:g})",
                )
            h = np.sort(table["h"].unique())
            order = float(table[f"{kind}_order"].iloc[0])
            y0 = float(table[kind].abs().max())
            ax.plot(h, y0 * (h / h[-1]) ** order, "k:", lw=1, label=f"slope {order:g}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("step h")
            ax.set_title(
                "strong error (RMS at T)" if kind == "strong" else r"weak error $|E\phi(X^h) - E\phi(X^{ref})|$"
            )
            ax.legend(fontsize=7)
        fig.tight_layout()
        return {"solver_order": fig}


def _interactive_figures(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's interactive (plotly) figures, from the results table and the run's JSON config."""
    go = plotting.go()
    out = {}
    for kind, title in (("strong", "strong error (RMS at T)"), ("weak", "weak error |E phi(X^h) - E phi(X^ref)|")):
        fig = go.Figure()
        for case, s in t.groupby("case", sort=False):
            s = s.sort_values("h")
            y = s[kind].abs() if kind == "weak" else s[kind]
            fig.add_trace(
                go.Scatter(
                    x=s["h"], y=y, mode="lines+markers", name=str(case),
                    error_y={"type": "data", "array": 2 * s[f"{kind}_se"]},
                )
            )  # fmt: skip
        out[kind] = plotting.loglog(fig, title=f"{title} vs step h (error bars 2 se)", xaxis_title="h")
    return out
