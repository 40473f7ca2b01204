"""Figures of the ``accuracy`` experiment, static and interactive, from its results table.

:func:`accuracy_figures` (matplotlib, drawn by ``Accuracy.figures``): accuracy with intervals,
clustering through depth; :func:`interactive` (plotly, drawn by the report). Both return
figures and write nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["accuracy_figures"]

PROFILE_PANELS = (
    ("mean_overlap", "mean overlap"),
    ("effective_rank", "effective rank"),
    ("energy", "interaction energy"),
)


def accuracy_figures(table: pd.DataFrame, summary: pd.DataFrame) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    summary_all = summary
    summary = summary[summary["metric"] == "test_accuracy"]
    datasets = list(dict.fromkeys(table["dataset"]))
    conditions = list(dict.fromkeys(table["condition"]))
    colors = dict(zip(conditions, plt.get_cmap("tab10")(np.arange(len(conditions)) % 10), strict=True))

    fig, axes = plt.subplots(len(datasets), 2, figsize=(10.5, 3.6 * len(datasets)), squeeze=False)
    for (ax, dax), ds in zip(axes, datasets, strict=True):
        for i, cond in enumerate(conditions):
            runs = table[(table["dataset"] == ds) & (table["condition"] == cond)]
            jitter = np.linspace(-0.12, 0.12, max(len(runs), 1))[: len(runs)]
            ax.plot(i + jitter, runs["test_accuracy"], "o", ms=3.5, alpha=0.6, color=colors[cond])
            s = summary[(summary["dataset"] == ds) & (summary["condition"] == cond)]
            if len(s):
                r = s.iloc[0]
                err = None if np.isnan(r["low"]) else [[r["mean"] - r["low"]], [r["high"] - r["mean"]]]
                ax.errorbar([i + 0.3], [r["mean"]], yerr=err, fmt="s", color=colors[cond], capsize=3, ms=5)
        chance = float(table[table["dataset"] == ds]["chance"].iloc[0])
        ax.set_xticks(range(len(conditions)), conditions, rotation=20, ha="right")
        ax.set_title(f"{ds} (chance {chance:.3f})")
        ax.set_ylabel("test accuracy")
        # paired differences to standard, in percentage points, for accuracy and learning speed
        rows = [r for r in summary_all[summary_all["dataset"] == ds].itertuples() if not np.isnan(r.diff)]
        for j, metric in enumerate(("test_accuracy", "loss_auc")):
            pts = [r for r in rows if r.metric == metric]
            for k, r in enumerate(pts):
                y = k + (0.15 if j else -0.15)
                scale = 100.0 if metric == "test_accuracy" else 1.0
                lo, hi = (r.diff_low * scale, r.diff_high * scale) if not np.isnan(r.diff_low) else (r.diff, r.diff)
                dax.plot([lo, hi], [y, y], "-", color=colors[r.condition], lw=2)
                dax.plot([r.diff * scale], [y], "o" if j == 0 else "D", color=colors[r.condition], ms=5,
                         mfc="white" if j else colors[r.condition])  # fmt: skip
            if j == 0:
                dax.set_yticks(range(len(pts)), [r.condition for r in pts])
        dax.axvline(0.0, color="0.5", lw=0.8)
        dax.set_title(f"{ds}: paired difference to standard (95%)")
        dax.set_xlabel("test accuracy, points (filled)  |  mean training loss (open)")
    fig.suptitle("test accuracy per seed (dots), mean and 95% interval (squares)")
    fig.tight_layout()

    prof, paxes = plt.subplots(
        len(datasets), len(PROFILE_PANELS), figsize=(4.0 * len(PROFILE_PANELS), 3.2 * len(datasets)), squeeze=False
    )
    for row, ds in zip(paxes, datasets, strict=True):
        for ax, (key, label) in zip(row, PROFILE_PANELS, strict=True):
            for cond in conditions:
                runs = table[(table["dataset"] == ds) & (table["condition"] == cond)]
                if runs.empty:
                    continue
                for stage, ls in (("init", "-"), ("trained", "--")):
                    curves = np.array([np.asarray(v, dtype=float) for v in runs[f"{stage}_{key}"]])
                    lab = f"{cond} ({stage})" if key == "mean_overlap" else None
                    ax.plot(np.arange(curves.shape[1]), curves.mean(0), ls, color=colors[cond], lw=1.3, label=lab)
            ax.set_xlabel("layer")
            ax.set_ylabel(label)
            ax.set_title(f"{ds}: {label}")
        row[0].legend(fontsize=7)
    prof.suptitle("token clustering through depth: at initialisation (solid) and trained (dashed)")
    prof.tight_layout()

    sc, saxes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.8), squeeze=False)
    for ax, ds in zip(saxes[0], datasets, strict=True):
        for cond in conditions:
            runs = table[(table["dataset"] == ds) & (table["condition"] == cond)]
            ax.plot(runs["init_mean_overlap_last"], runs["test_accuracy"], "o", color=colors[cond], label=cond, ms=4)
        ax.set_xlabel("mean overlap at the last layer, at initialisation")
        ax.set_ylabel("test accuracy")
        ax.set_title(ds)
        ax.legend(fontsize=7)
    sc.tight_layout()
    return {"accuracy": fig, "accuracy_depth": prof, "accuracy_vs_clustering": sc}


def interactive(table: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """Plotly: test accuracy per seed and condition; the mean overlap through depth at initialisation."""
    import plotly.graph_objects as go

    acc = go.Figure()
    for cond, s in table.groupby("condition", sort=False):
        acc.add_trace(
            go.Box(x=s["dataset"], y=s["test_accuracy"], name=str(cond), boxpoints="all", jitter=0.4, pointpos=0)
        )
    acc.update_layout(boxmode="group", title="test accuracy per seed", yaxis_title="test accuracy")
    depth = go.Figure()
    for (ds, cond), s in table.groupby(["dataset", "condition"], sort=False):
        curves = np.array([np.asarray(v, dtype=float) for v in s["init_mean_overlap"]])
        depth.add_trace(go.Scatter(y=curves.mean(0), mode="lines+markers", name=f"{ds} / {cond}"))
    depth.update_layout(
        title="mean overlap of the tokens through depth at initialisation (mean over seeds)",
        xaxis_title="layer",
        yaxis_title="mean overlap",
    )
    return {"accuracy": acc, "clustering through depth": depth}
