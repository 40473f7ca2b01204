r"""``scaling-regimes``: model B's discrete stack against its three limits.

Non-zero mean weights ``Vbar = v I``, ``Abar = a I`` and deterministic attention
(``sigma_A = 0``), ``n`` tokens in dimension ``d``, layer time ``T = eta L``.
Three series of ``(eta, L, H)``, each inside one regime as ``eta -> 0``:

* **ballistic**: ``H = ceil(h_ballistic / eta)`` heads, so that the noise
  (``sqrt(alpha eta L)``) and the Euler bias are both ``O(eta)``; limit: the ODE
  ``dX/dt = P b``; expected error slope 1;
* **modified**: ``H = ceil(h_modified / eta^3)`` heads (noise ``O(eta^2)``);
  limit: the modified ODE ``P b + eta (c - (1/2) grad_b b)`` (see
  :mod:`tokensde.models.multihead`); expected slope 2, while the ballistic ODE
  stays at slope 1;
* **diffusive**: one head and ``sigma_V^2 = alpha H / (eta (d - 1))``, i.e. fixed
  ``alpha``: the noise stays of order one; limit: the SDE with drift ``P b`` and
  kernel ``(alpha/(d-1)) <m_i, m_j>``, solved with a fine Euler–Maruyama step
  ``dt_ref = min(eta) / ref_factor`` on the *same* Brownian path (the stack's
  ``G`` of a layer is the normalised sum of the fine increments): pathwise error,
  expected slope 1/2 (strong order of the stack); the ballistic ODE's error does
  not shrink.

The error is the root-mean-square distance at time ``T`` over tokens and
systems, ``sqrt(E (1/n) sum_i |x_i - xbar_i|^2)``. ODE limits are integrated with
RK4 at step ``min(eta) / 2`` (its error, ``O(dt^4)``, is orders of magnitude below
the smallest error measured). Verdict (:mod:`.verdict`): in each series the
fitted log-log slope of the error to its own limit is within ``max(tol, z se)``
of the expected one (``tol`` the model part, pre-asymptotic terms; ``se`` the
slope's standard error from the fit's residuals; ``z`` the two-sided Bonferroni
quantile at ``level`` over the five slopes checked), and the other limit is
visibly wrong where it should be: in the modified series the ballistic ODE's
error has slope 1 (same tolerance) and is at least twice the modified ODE's at
the smallest ``eta``; in the diffusive series the ballistic ODE's error does not
shrink (slope at most ``max(tol, z se)``). Dropping the normalisation term ``c``
from the modified ODE makes the modified series' slope about 1 and fails both
modified-series checks.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from ..engine import BrownianPath, Run, integrate, integrate_runs
from ..models.multihead import Multihead, MultiheadLimit, classify_regime, scales
from ..noise import derive_seed
from ..solvers import integrate_ode
from ..sphere import uniform
from ..stats import loglog_slope
from . import plotting
from .base import Experiment, ExperimentConfig, Progress, recorded
from .verdict import at_least, slope_within, verdict

__all__ = ["ScalingRegimes", "ScalingRegimesConfig"]

SERIES = ("ballistic", "modified", "diffusive")
EXPECTED = {"ballistic": 1.0, "modified": 2.0, "diffusive": 0.5}


class ScalingRegimesConfig(ExperimentConfig):
    """Configuration of ``scaling-regimes`` (every field has a default)."""

    n: int = Field(default=6, ge=2, le=256, description="tokens, in [2, 256]")
    d: int = Field(default=4, ge=2, le=256, description="dimension, in [2, 256]")
    beta: float = Field(default=1.0, ge=0.0, le=50.0, description="inverse temperature, in [0, 50]")
    vbar: float = Field(default=1.0, ge=-10.0, le=10.0, description="Vbar = vbar * I, in [-10, 10], not 0")
    abar: float = Field(default=1.0, ge=-10.0, le=10.0, description="Abar = abar * I, in [-10, 10]")
    T: float = Field(default=2.0, gt=0.0, le=20.0, description="layer time eta * L, in (0, 20]")
    eta: list[float] = Field(
        default=[0.2, 0.1, 0.05, 0.025], min_length=3, description="residual steps, >= 3 values, each in (0, 0.5]"
    )
    h_ballistic: float = Field(default=1.0, gt=0.0, le=1e3, description="ballistic series: H = ceil(h / eta), (0, 1e3]")
    h_modified: float = Field(default=1.0, gt=0.0, le=1e3, description="modified series: H = ceil(h / eta^3), (0, 1e3]")
    alpha: float = Field(default=0.5, gt=0.0, le=10.0, description="diffusive series: alpha, in (0, 10]")
    ref_factor: int = Field(default=8, ge=2, le=64, description="reference step = min(eta) / ref_factor, [2, 64]")
    systems: int = Field(default=256, ge=16, le=1_000_000, description="systems, in [16, 1e6]")
    tol: float = Field(default=0.25, gt=0.0, le=1.0, description="allowed |slope - expected|, in (0, 1]")
    level: float = Field(
        default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level of the slope checks, in (0.5, 1)"
    )
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")
    dtype: Literal["float32", "float64"] = Field(default="float64", description="float32 or float64")

    @field_validator("eta")
    @classmethod
    def _eta(cls, v: list[float], info: Any) -> list[float]:
        t = info.data.get("T")
        for x in v:
            if not 0.0 < x <= 0.5:
                raise ValueError(f"each eta must be in (0, 0.5], got {x}")
            if t is not None and t / x > 1e7:
                raise ValueError(f"each eta must give at most 1e7 layers (T / eta), got {x}")
            if t is not None and not math.isclose(round(t / x) * x, t, rel_tol=1e-9):
                raise ValueError(f"each eta must divide T = {t} (an integer number of layers), got {x}")
        v = sorted(set(v), reverse=True)
        if len(v) < 3:
            raise ValueError("eta needs at least 3 distinct values")
        return v

    @field_validator("vbar")
    @classmethod
    def _vbar(cls, v: float) -> float:
        if v == 0.0:
            raise ValueError("vbar must be non-zero (the regimes need a non-zero mean), in [-10, 10]")
        return v


def _steps(cfg: ScalingRegimesConfig, eta: float) -> int:
    L = round(cfg.T / eta)
    if not math.isclose(L * eta, cfg.T, rel_tol=1e-9):
        raise ValueError(f"eta: T / eta must be an integer, got T={cfg.T}, eta={eta}")
    return L


def _law(cfg: ScalingRegimesConfig, series: str, eta: float, dtype: torch.dtype) -> Multihead:
    eye = torch.eye(cfg.d, dtype=dtype)
    if series == "ballistic":
        heads, sigma_v = math.ceil(cfg.h_ballistic / eta), None
    elif series == "modified":
        heads, sigma_v = math.ceil(cfg.h_modified / eta**3), None
    else:
        heads, sigma_v = 1, math.sqrt(cfg.alpha / (eta * (cfg.d - 1)))
    return Multihead(
        beta=cfg.beta,
        heads=heads,
        sigma_v=sigma_v,
        sigma_a=0.0,
        vbar=cfg.vbar * eye,
        abar=cfg.abar * eye,
        route="matrix",
    )


def _rms(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """RMS distance over tokens and systems and its standard error (delta method)."""
    per = ((a - b) ** 2).sum(-1).mean(-1).double()  # (B,)
    ms = per.mean().item()
    se_ms = per.std().item() / math.sqrt(per.numel())
    r = math.sqrt(ms)
    return r, se_ms / (2.0 * r) if r > 0 else 0.0


class ScalingRegimes(Experiment):
    name = "scaling-regimes"
    summary = "model B: discrete multi-head stack vs the ballistic, modified-ODE and diffusive limits"
    Config = ScalingRegimesConfig
    quick = {"eta": [0.2, 0.1, 0.05], "systems": 128}

    def plan(self, cfg: ScalingRegimesConfig) -> list[dict[str, Any]]:
        for eta in cfg.eta:
            _steps(cfg, eta)
        return [{"id": f"{s}-eta{eta:g}", "series": s, "eta": eta} for s in SERIES for eta in cfg.eta]

    def unit_cost(self, cfg: ScalingRegimesConfig, unit: dict[str, Any]) -> float:
        fine = cfg.ref_factor if unit["series"] == "diffusive" else 0
        return cfg.T / unit["eta"] + cfg.T / min(cfg.eta) * (fine + 10)

    def unit_memory(self, cfg: ScalingRegimesConfig, unit: dict[str, Any], device: str) -> int:
        """``systems`` systems of ``n x d``: the two ODE limits by RK4 (stages, the modified field's ``jvp``:
        attention scores ``n x n``, barycenters and their images) beside ``x0``; then the stack beside ``x0``
        and both ODE results, with its layer normals (``d^2`` per system, shared attention) and, in the
        diffusive series, the ``eta / dt_ref`` fine steps' normals of a layer held at once and the limit's step."""
        from ..sizes import itemsize, uniform_bytes

        item = itemsize(cfg.dtype)
        bsz, n, d = cfg.systems, cfg.n, cfg.d
        bnd, bnn = bsz * n * d * item, bsz * n * n * item
        field = 4 * bnd + 3 * bnn
        ode = 3 * bnd + 15 * bnd + 2 * field
        layer = bsz * d * d * item
        if unit["series"] == "diffusive":
            k = round(float(unit["eta"]) / (min(cfg.eta) / cfg.ref_factor))
            noise = (k + 2) * layer
        else:
            noise = layer
        sde = 5 * bnd + noise + field + 8 * bnd
        return int(max(uniform_bytes(bsz * n, d, item, item), ode, sde))

    def run_unit(
        self, cfg: ScalingRegimesConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        dtype = getattr(torch, cfg.dtype)
        series, eta = unit["series"], float(unit["eta"])
        n, d, bsz = cfg.n, cfg.d, cfg.systems
        L = _steps(cfg, eta)
        x0 = uniform((bsz, n), d, torch.Generator().manual_seed(derive_seed(cfg.seed, "x0")), dtype).to(device)
        law = _law(cfg, series, eta, dtype)
        dt_ref = min(cfg.eta) / cfg.ref_factor
        dt_ode = min(cfg.eta) / 2
        steps_ode = round(cfg.T / dt_ode)
        ball = integrate_ode(MultiheadLimit(law, eta=eta, kind="ballistic").field, x0, dt_ode, steps_ode)
        modi = integrate_ode(MultiheadLimit(law, eta=eta, kind="modified").field, x0, dt_ode, steps_ode)
        if progress:
            progress(0.3)
        sde_err, sde_se = float("nan"), float("nan")
        if series == "diffusive":
            # one fine Brownian path, shared by every eta of the series: the SDE at dt_ref, and the stack, whose
            # layer of step eta takes the normalised sum of the k = eta / dt_ref fine normals it spans
            k = round(eta / dt_ref)
            sde = MultiheadLimit(law, eta=eta, kind="diffusive", samples=1)
            path = BrownianPath.for_model(law, x0, derive_seed(cfg.seed, "diffusive-path"), discrete=True)
            runs = [
                Run(sde, "euler", 1, "sde"),
                Run(step=lambda x, xi, h: law.layer(x, xi, eta), ratio=k, name="stack"),
            ]
            res = integrate_runs(runs, x0, path, dt_ref, k * L)
            x = res["stack"].x
            sde_err, sde_se = _rms(x, res["sde"].x)
        else:
            path = BrownianPath.for_model(law, x0, derive_seed(cfg.seed, series, eta), discrete=True)
            x = integrate(law, x0, path, eta, L, solver="stack").x
        eb, eb_se = _rms(x, ball)
        em_, em_se = _rms(x, modi)
        sc = scales(eta, L, law.heads, d, law.sv(d))
        if progress:
            progress(1.0)
        return [
            {
                "series": series,
                "eta": eta,
                "L": L,
                "H": law.heads,
                "sigma_v": law.sv(d),
                "alpha": sc.alpha,
                "alpha_eta_L": sc.alpha_eta_L,
                "eta2_L": sc.eta2_L,
                "eta3_L": sc.eta3_L,
                "regime": classify_regime(eta, L, law.heads, d, law.sv(d)),
                "err_ballistic": eb,
                "se_ballistic": eb_se,
                "err_modified": em_,
                "se_modified": em_se,
                "err_sde": sde_err,
                "se_sde": sde_se,
            }
        ]

    def summarize(self, cfg: ScalingRegimesConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return pd.DataFrame(rows).sort_values(["series", "eta"], ascending=[True, False]).reset_index(drop=True)

    @staticmethod
    def slopes(table: pd.DataFrame) -> dict[str, dict[str, tuple[float, float]]]:
        """Fitted log-log slopes (and standard errors) of each error column, per series."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for s in SERIES:
            sub = table[table["series"] == s]
            out[s] = {}
            for col in ("err_ballistic", "err_modified", "err_sde"):
                y = sub[col].to_numpy(dtype=float)
                if np.all(np.isfinite(y)) and np.all(y > 0):
                    out[s][col] = loglog_slope(sub["eta"].to_numpy(dtype=float), y)
        return out

    def verdict(self, cfg: ScalingRegimesConfig, table: pd.DataFrame) -> dict[str, Any]:
        sl = self.slopes(table)
        own = {"ballistic": "err_ballistic", "modified": "err_modified", "diffusive": "err_sde"}
        n_slopes = len(SERIES) + 2  # each series' own slope, the ballistic ODE's in the modified and diffusive series
        checks = []
        for s in SERIES:
            slope, se = sl[s].get(own[s], (math.nan, math.nan))
            checks.append(
                slope_within(
                    f"{s} series: error to the {s} limit shrinks at its rate",
                    slope,
                    se,
                    EXPECTED[s],
                    model_tol=cfg.tol,
                    level=cfg.level,
                    m=n_slopes,
                    what="fitted slope in eta",
                )
            )
        mod = table[table["series"] == "modified"].sort_values("eta")
        b_slope, b_se = sl["modified"].get("err_ballistic", (math.nan, math.nan))
        checks.append(
            slope_within(
                "modified series: the ballistic ODE is only first order there",
                b_slope,
                b_se,
                1.0,
                model_tol=cfg.tol,
                level=cfg.level,
                m=n_slopes,
                what="ballistic-ODE error slope in eta",
            )
        )
        eta0 = float(mod["eta"].iloc[0])
        ratio = float(mod["err_ballistic"].iloc[0] / mod["err_modified"].iloc[0])
        checks.append(
            at_least(
                "modified series: the modified ODE is visibly closer than the ballistic one",
                ratio,
                2.0,
                f"ballistic / modified error at eta = {eta0:g}",
                "a stated factor 2 at the smallest eta (the O(eta) term the modified ODE removes)",
                fmt=".3g",
            )
        )
        dslope, dse = sl["diffusive"].get("err_ballistic", (math.nan, math.nan))
        diff = table[table["series"] == "diffusive"].sort_values("eta")
        d0 = float(diff["err_ballistic"].iloc[0])
        c = slope_within(
            "diffusive series: the ODE limit does not apply",
            dslope,
            dse,
            0.0,
            model_tol=cfg.tol,
            level=cfg.level,
            m=n_slopes,
            side="upper",
            what="error to the ballistic ODE: slope in eta",
        )
        checks.append(replace(c, detail=f"{c.detail} (does not shrink; {d0:.3f} at the smallest eta)"))
        return verdict(checks)

    def trajectory(self, cfg: ScalingRegimesConfig, device: str = "cpu") -> dict[str, Any]:
        """The discrete stack of the diffusive series at the smallest ``eta``."""
        dtype = getattr(torch, cfg.dtype)
        eta = min(cfg.eta)
        x0 = uniform((1, cfg.n), cfg.d, torch.Generator().manual_seed(derive_seed(cfg.seed, "x0")), dtype).to(device)
        law = _law(cfg, "diffusive", eta, dtype)
        title = f"model B stack, diffusive scaling (alpha = {cfg.alpha:g}), eta = {eta:g}, n = {cfg.n}, d = {cfg.d}"
        return recorded(law, x0, eta, _steps(cfg, eta), cfg.seed, ("trajectory",), title, solver="stack")

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The report's interactive (plotly) figures (beside the static ones of :meth:`figures`)."""
        return _interactive_figures(table, cfg)

    def figures(self, cfg: ScalingRegimesConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        sl = self.slopes(table)
        fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.8), sharey=False)
        labels = {"err_ballistic": "vs ballistic ODE", "err_modified": "vs modified ODE", "err_sde": "vs diffusive SDE"}
        markers = {"err_ballistic": "o", "err_modified": "s", "err_sde": "^"}
        for ax, s in zip(axes, SERIES, strict=True):
            sub = table[table["series"] == s]
            for col, lab in labels.items():
                if col not in sl[s]:
                    continue
                se = sub[col.replace("err", "se")]
                slope = sl[s][col][0]
                ax.errorbar(
                    sub["eta"], sub[col], yerr=2 * se, marker=markers[col], capsize=2, label=f"{lab} ({slope:.2f})"
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(r"$\eta$")
            ax.set_title(f"{s} series (expected slope {EXPECTED[s]})")
            ax.legend(fontsize=7)
        axes[0].set_ylabel("RMS error at time T")
        fig.tight_layout()
        return {"scaling_regimes": fig}


def _interactive_figures(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's interactive (plotly) figures, from the results table and the run's JSON config."""
    go = plotting.go()
    out = {}
    for series, s in t.groupby("series"):
        fig = go.Figure()
        for col, lab in (("err_ballistic", "ballistic ODE"), ("err_modified", "modified ODE"), ("err_sde", "SDE")):
            if s[col].notna().all():
                fig.add_trace(go.Scatter(x=s["eta"], y=s[col], mode="lines+markers", name=f"vs {lab}"))
        out[f"{series} series"] = plotting.loglog(fig, title=f"{series} series: RMS error at time T", xaxis_title="eta")
    return out
