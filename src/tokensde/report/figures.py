"""Interactive (plotly) figures of each experiment, drawn from its results table.

Which figures a run gets (:func:`interactive_figures`): an experiment of the registry
(:func:`tokensde.experiments.registry.available_experiments`, so also one named in
``TOKENSDE_EXPERIMENTS``) that defines ``interactive_figures(config, table)`` (``config``
the run's JSON config from its manifest) draws its own; otherwise a catalogue experiment
gets its builder below; anything else a table of its results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["interactive_figures"]

Builder = Callable[[pd.DataFrame, dict[str, Any]], dict[str, Any]]


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _phase_diagram(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    go = _go()
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


def _loglog(fig: Any, **kw: Any) -> Any:
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    fig.update_layout(**kw)
    return fig


def _homogenized(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    go = _go()
    out: dict[str, Any] = {}
    lg = t[t["part"] == "logistic"]
    fig = go.Figure()
    for (b, d), s in lg.groupby(["beta", "d"]):
        fig.add_trace(go.Scatter(x=s["tau"], y=s["mc"], mode="lines", name=f"MC beta={b:g} d={d}"))
        fig.add_trace(
            go.Scatter(x=s["tau"], y=s["ode"], mode="lines", line={"dash": "dash"}, name=f"ODE beta={b:g} d={d}")
        )
    fig.update_layout(title="mean overlap u against the logistic curve", xaxis_title="tau")
    out["logistic"] = fig
    end = lg[lg["tau"] == lg.groupby(["beta", "d"])["tau"].transform("max")]
    fig = go.Figure()
    for b, s in end.groupby("beta"):
        s = s.sort_values("d")
        fig.add_trace(go.Scatter(x=s["d"], y=s["rms_dev"], mode="lines+markers", name=f"RMS deviation beta={b:g}"))
        fig.add_trace(
            go.Scatter(x=s["d"], y=s["mean_dev"].abs(), mode="lines+markers", name=f"|mean deviation| beta={b:g}")
        )
    out["logistic deviation"] = _loglog(fig, title="deviation from the logistic curve (slopes -1/2 and -1)")
    sim = t[t["part"] == "simplex"]
    fig = go.Figure()
    for d, s in sim.groupby("d"):
        fig.add_trace(go.Scatter(x=s["tau"], y=s["mc"], mode="lines", name=f"MC d={d}"))
        fig.add_trace(go.Scatter(x=s["tau"], y=s["ode"], mode="lines", line={"dash": "dash"}, name=f"ODE d={d}"))
    fig.update_layout(title="simplex common overlap against the comparison ODE", xaxis_title="tau")
    out["simplex"] = fig
    ex = t[t["part"] == "exit"]
    fig = go.Figure()
    u = np.linspace(-0.99, 0.99, 200)
    fig.add_trace(go.Scatter(x=u, y=np.arcsin(u) / np.pi + 0.5, mode="lines", name="arcsin(u0)/pi + 1/2"))
    for d, s in ex.groupby("d"):
        fig.add_trace(go.Scatter(x=s["u0"], y=s["p_plus_mc"], mode="markers", name=f"MC d={d}"))
    fig.update_layout(title="self-attending pairs: P(u -> +1)", xaxis_title="u0")
    out["exit law"] = fig
    tr = t[t["part"] == "tradeoff"]
    if not tr.empty:
        fig = go.Figure()
        for (d, n), s in tr.groupby(["d", "n"]):
            fig.add_trace(go.Scatter(x=s["beta"], y=s["tau_half"], mode="lines+markers", name=f"d={d} n={n}"))
        fig.update_yaxes(type="log")
        fig.update_layout(title="trade-off: diffusive time to overlap 1/2", xaxis_title="beta")
        out["trade-off"] = fig
    return out


def _scaling_regimes(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    go = _go()
    out = {}
    for series, s in t.groupby("series"):
        fig = go.Figure()
        for col, lab in (("err_ballistic", "ballistic ODE"), ("err_modified", "modified ODE"), ("err_sde", "SDE")):
            if s[col].notna().all():
                fig.add_trace(go.Scatter(x=s["eta"], y=s[col], mode="lines+markers", name=f"vs {lab}"))
        out[f"{series} series"] = _loglog(fig, title=f"{series} series: RMS error at time T", xaxis_title="eta")
    return out


def _synchronization(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    go = _go()
    out: dict[str, Any] = {}
    tab = t[t["part"] == "table"]
    cols = ["activation", "d", "sigma_u", "kappa_1", "kappa_prime_1", "lambda_1", "lambda_bar", "lambda_bar_prime"]
    cells = [tab[c].map(lambda v: f"{v:.5g}" if isinstance(v, float) else str(v)) for c in cols]
    out["constants"] = go.Figure(
        data=[go.Table(header={"values": cols}, cells={"values": cells})],
        layout={"title": "synchronization constants", "height": 120 + 22 * len(tab)},
    )
    ex = t[t["part"] == "exponent"]
    if not ex.empty:
        fig = go.Figure()
        lim = [float(ex["lambda_1"].min()) * 1.1, float(ex["lambda_1"].max()) * 0.9]
        fig.add_trace(go.Scatter(x=lim, y=lim, mode="lines", name="y = x"))
        fig.add_trace(
            go.Scatter(
                x=ex["lambda_1"],
                y=ex["estimate"],
                mode="markers",
                text=ex["setting"],
                error_y={"type": "data", "array": ex["ci_high"] - ex["estimate"]},
                name="Monte Carlo",
            )
        )
        fig.update_layout(title="distance exponent at collapse vs lambda_1", xaxis_title="lambda_1")
        out["exponent"] = fig
    en = t[t["part"] == "energy"]
    if not en.empty:
        fig = go.Figure()
        for c, s in en.groupby("c"):
            fig.add_trace(go.Scatter(x=s["t"], y=s["mean"], mode="lines+markers", name=f"c = {c:g}"))
        s = en[en["c"] == en["c"].iloc[0]]
        fig.add_trace(go.Scatter(x=s["t"], y=s["bound"], mode="lines", line={"dash": "dash"}, name="bound"))
        fig.update_yaxes(type="log")
        fig.update_layout(title="E[E_beta(t)] and exp(lambda_bar' t) E[E_beta(0)]", xaxis_title="t")
        out["energy"] = fig
    return out


def _chaos(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    go = _go()
    out: dict[str, Any] = {}
    names = {"common": "t = T, common noise", "t0": "t = 0 (i.i.d.)", "independent": "t = T, independent noise"}
    for m, sub in t.groupby("model"):
        fig = go.Figure()
        for s, lab in names.items():
            p = sub[sub["statistic"] == s].sort_values("N")
            if p.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=p["N"], y=p["mean"], mode="lines+markers", name=lab,
                    error_y={"type": "data", "array": 2 * p["se"]},
                )
            )  # fmt: skip
        c = sub[sub["statistic"] == "common"].sort_values("N")
        if not c.empty:
            ref = c["rate"] * (c["mean"].iloc[0] / c["rate"].iloc[0])
            fig.add_trace(go.Scatter(x=c["N"], y=ref, mode="lines", line={"dash": "dash"}, name="r_d(N) (scaled)"))
        out[f"model {m}"] = _loglog(
            fig, title=f"model {m}: E W2^2(mu^N, mu^N') vs N (error bars 2 se)", xaxis_title="N"
        )
    return out


def _solver_order(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    go = _go()
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
        out[kind] = _loglog(fig, title=f"{title} vs step h (error bars 2 se)", xaxis_title="h")
    return out


def _convergence(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    go = _go()
    out = {}
    depth, width = t[t["series"] != "C-width"], t[t["series"] == "C-width"]
    for col, title in (
        ("weak", "weak error of E<x1,x2>"),
        ("ms", "mean-square error at T"),
        ("ms_sup", "E sup over layer times"),
    ):
        fig = go.Figure()
        for series, s in depth.groupby("series", sort=False):
            y = s[col].abs() if col == "weak" else s[col]
            err = {"type": "data", "array": 2 * s[f"{col}_se"]}
            fig.add_trace(go.Scatter(x=s["L"], y=y, mode="lines+markers", name=str(series), error_y=err))
        out[f"{col} vs depth"] = _loglog(fig, title=f"{title} vs depth L (stack vs limit)", xaxis_title="L")
    if len(width):
        fig = go.Figure(go.Scatter(x=width["m"], y=width["ms"], mode="lines+markers", name="C-width",
                                   error_y={"type": "data", "array": 2 * width["ms_se"]}))  # fmt: skip
        out["ms vs width"] = _loglog(fig, title="model C: mean-square error vs width m", xaxis_title="m")
    return out


def _err(s: pd.DataFrame, col: str) -> dict[str, Any]:
    return {
        "type": "data",
        "symmetric": False,
        "array": s[f"{col}_high"] - s[f"p_{col}"],
        "arrayminus": s[f"p_{col}"] - s[f"{col}_low"],
    }


def _multi_token(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    go = _go()
    out: dict[str, Any] = {}
    noisy = t[t["condition"] == "noisy"]
    for col, title in (("antipodal", "antipodal two-cluster endings"), ("collapsed", "collapsed endings")):
        fig = go.Figure()
        for (d, n), s in noisy.groupby(["d", "n"]):
            s = s.sort_values("beta")
            fig.add_trace(
                go.Scatter(x=s["beta"], y=s[f"p_{col}"], mode="lines+markers", name=f"noisy d={d} n={n}",
                           error_y=_err(s, col))
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


def _noise_sweep(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    go = _go()
    fig = go.Figure()
    sweep = t[t["kind"] == "sweep"] if "kind" in t else t  # the two-token exit-law cells: the static figure's panel
    for k, s in sweep.groupby("setting", sort=False):
        s = s.sort_values("sigma")
        name = f"{k} (trend p = {s['trend_p'].iloc[0]:.2g}, sigma_c = {s['sigma_c'].iloc[0]:.3f})"
        fig.add_trace(go.Scatter(x=s["sigma"], y=s["p_antipodal"], mode="lines+markers", name=name,
                                 error_y=_err(s, "antipodal")))  # fmt: skip
    fig.update_layout(title="model A, Vbar = I: antipodal fraction at T vs sigma (99% Wilson)", xaxis_title="sigma")
    return {"noise sweep": fig}


def _accuracy(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    from ..experiments.accuracy_figures import interactive  # beside the experiment's static figures

    return interactive(t, cfg)


def _probe(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    from ..experiments.probe_figures import interactive  # beside the experiment's static figures

    return interactive(t, cfg)


BUILDERS: dict[str, Builder] = {
    "phase-diagram": _phase_diagram,
    "homogenized": _homogenized,
    "scaling-regimes": _scaling_regimes,
    "synchronization": _synchronization,
    "solver-order": _solver_order,
    "convergence": _convergence,
    "chaos": _chaos,
    "multi-token": _multi_token,
    "noise-sweep": _noise_sweep,
    "accuracy": _accuracy,
    "probe": _probe,
}


def _generic(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    go = _go()
    cols = list(t.columns)
    return {"results": go.Figure(data=[go.Table(header={"values": cols}, cells={"values": [t[c] for c in cols]})])}


def interactive_figures(experiment: str, table: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The plotly figures of a run: the experiment's own, its builder, or a table of the results.

    Raises :class:`~tokensde.errors.UsageError` when ``$TOKENSDE_EXPERIMENTS`` has a bad entry.
    """
    from ..experiments.registry import available_experiments

    own = getattr(available_experiments().get(experiment), "interactive_figures", None)
    if callable(own):
        return dict(own(cfg, table))
    return BUILDERS.get(experiment, _generic)(table, cfg)
