"""Figures of the ``probe`` experiment (static matplotlib and interactive plotly), from its results table.

Both read only the tidy table of :class:`tokensde.experiments.probe.Probe`: one row per
``(architecture, hidden, layer)`` with the network's metrics, the SDE's (``sde_``
prefix) and the cosine histograms ``hist`` / ``sde_hist`` (equal bins of ``[-1, 1]``).
:func:`static_figures` is drawn by ``Probe.figures``, :func:`interactive` by the report;
both return figures and write nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CURVES", "static_figures", "interactive"]

CURVES = (
    ("mean_cos", "mean pairwise cosine"),
    ("n_clusters", "clusters (eps)"),
    ("antipodal_pairs", "antipodal pairs (cos < -1 + eps)"),
    ("energy", "energy E_beta"),
    ("effective_rank", "effective rank"),
    ("coherence", "coherence of the token moves"),
)


def _units(t: pd.DataFrame) -> list[tuple[str, int, pd.DataFrame]]:
    out = []
    for (arch, d), s in t.groupby(["architecture", "hidden"], sort=False):
        out.append((str(arch), int(d), s.sort_values("layer")))
    return out


def _density(s: pd.DataFrame, col: str) -> np.ndarray:
    """``(layers + 1, bins)`` histogram densities (each layer sums to 1 / bin width)."""
    h = np.array([np.asarray(v, dtype=float) for v in s[col]])
    width = 2.0 / h.shape[1]
    return h / np.maximum(h.sum(1, keepdims=True), 1.0) / width


def _xrange(t: pd.DataFrame) -> tuple[float, float]:
    lo = float(min(t["q01"].min(), t["sde_q01"].min()))
    hi = float(max(t["q99"].max(), t["sde_q99"].max()))
    pad = 0.15 * (hi - lo) + 0.02
    return max(-1.0, lo - pad), min(1.0, hi + pad)


def static_figures(t: pd.DataFrame, bins: int) -> dict[str, Any]:
    """Heat maps layer x cosine (network | SDE per unit); metric-vs-layer curves (SDE dashed), W1 and the clock."""
    import matplotlib.pyplot as plt

    units = _units(t)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    x0, x1 = _xrange(t)
    fig_h, axes = plt.subplots(len(units), 2, figsize=(8.0, 2.3 * len(units) + 0.6), squeeze=False, sharex=True)
    vmax = max(float(np.log10(1.0 + _density(s, c)).max()) for _, _, s in units for c in ("hist", "sde_hist"))
    im = None
    for row, (arch, d, s) in zip(axes, units, strict=True):
        layers = s["layer"].to_numpy()
        for ax, col, who in zip(row, ("hist", "sde_hist"), ("network", "matched SDE"), strict=True):
            dens = np.log10(1.0 + _density(s, col))
            im = ax.pcolormesh(edges, np.append(layers, layers[-1] + 1) - 0.5, dens, vmin=0.0, vmax=vmax,
                               cmap="magma", shading="flat")  # fmt: skip
            ax.set_title(f"{arch}, d = {d}: {who}")
            ax.set_ylabel("layer")
            ax.set_xlim(x0, x1)
            ax.grid(False)
    for ax in axes[-1]:
        ax.set_xlabel(r"pairwise cosine $\langle u_i, u_j\rangle$")
    fig_h.tight_layout()
    if im is not None:
        fig_h.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="log10(1 + density)")

    fig_c, axc = plt.subplots(2, 4, figsize=(13.0, 6.0), squeeze=False)
    colors = plt.get_cmap("tab10")(np.arange(len(units)) % 10)
    panels = list(axc.ravel())
    for ax, (col, label) in zip(panels, CURVES, strict=False):
        for color, (arch, d, s) in zip(colors, units, strict=True):
            ax.plot(s["layer"], s[col], "-", color=color, label=f"{arch} d={d}")
            ax.plot(s["layer"], s[f"sde_{col}"], "--", color=color)
        ax.set_title(label)
    for color, (_, _, s) in zip(colors, units, strict=True):
        panels[-2].plot(s["layer"], s["w1"], "-o", ms=2.5, color=color)
        panels[-1].plot(s["layer"], s["t"], "-", color=color)
    panels[-2].set_title("W1(network, SDE) of the pooled cosines")
    panels[-1].set_title("matched SDE clock t_l")
    for ax in panels:
        ax.set_xlabel("layer")
    axc[0, 0].legend(title="solid: network, dashed: SDE", fontsize=7, title_fontsize=7)
    fig_c.tight_layout()
    return {"probe_histograms": fig_h, "probe_metrics": fig_c}


def interactive(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """Plotly: one heat map pair per unit and the metric curves (SDE dashed)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    out: dict[str, Any] = {}
    units = _units(t)
    if not units:
        return out
    bins = len(units[0][2]["hist"].iloc[0])
    centres = -1.0 + (np.arange(bins) + 0.5) * (2.0 / bins)
    x0, x1 = _xrange(t)
    for arch, d, s in units:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("network", "matched SDE"), shared_yaxes=True)
        for k, col in enumerate(("hist", "sde_hist"), start=1):
            fig.add_trace(
                go.Heatmap(x=centres, y=s["layer"], z=np.log10(1.0 + _density(s, col)), coloraxis="coloraxis"),
                row=1, col=k,
            )  # fmt: skip
        fig.update_xaxes(range=[x0, x1], title_text="pairwise cosine")
        fig.update_yaxes(title_text="layer", row=1, col=1)
        fig.update_layout(title=f"{arch}, d = {d}: log10(1 + density) of pairwise cosines per layer",
                          coloraxis={"colorscale": "Magma"})  # fmt: skip
        out[f"histograms {arch} d={d}"] = fig
    fig = make_subplots(rows=2, cols=3, subplot_titles=[lab for _, lab in CURVES])
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for i, (col, _) in enumerate(CURVES):
        r, c = divmod(i, 3)
        for j, (arch, d, s) in enumerate(units):
            color = palette[j % len(palette)]
            name = f"{arch} d={d}"
            fig.add_trace(go.Scatter(x=s["layer"], y=s[col], mode="lines", name=name, legendgroup=name,
                                     line={"color": color}, showlegend=i == 0), row=r + 1, col=c + 1)  # fmt: skip
            fig.add_trace(go.Scatter(x=s["layer"], y=s[f"sde_{col}"], mode="lines", name=f"{name} SDE",
                                     legendgroup=name, line={"color": color, "dash": "dash"}, showlegend=i == 0),
                          row=r + 1, col=c + 1)  # fmt: skip
    fig.update_layout(title="per-layer metrics: network (solid) and matched SDE (dashed)")
    out["metrics"] = fig
    return out
