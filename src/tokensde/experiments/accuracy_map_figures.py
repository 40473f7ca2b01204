"""Figures of the ``accuracy-map`` experiment (matplotlib), from its results table and its map table.

* ``accuracy_map``: per task, the paired difference of test accuracy to the standard initialisation over
  (depth, condition), colour-coded, with the difference and the interval's half-width written in each cell;
* ``accuracy_map_curves``: learning curves (test accuracy after every epoch, mean over seeds) per task and
  depth, one line per condition;
* ``accuracy_map_mediator``: does accuracy follow the clustering at initialisation? The overlap gained
  through depth at initialisation against the test accuracy, every run, per task; and the mean overlap
  through depth at initialisation per condition in the deepest model.

Nothing is written here; the runtime saves what :func:`map_figures` returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["map_figures"]


def _order(summ: pd.DataFrame) -> list[str]:
    """Conditions in grid order: Vbar=0 first, then by sigma."""
    keys = summ[["vbar", "sigma", "condition"]].drop_duplicates()
    keys = keys.assign(v=(keys["vbar"] != "zero").astype(int)).sort_values(["v", "sigma"])
    return list(keys["condition"])


def map_figures(table: pd.DataFrame, summ: pd.DataFrame) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    if table.empty or summ.empty:
        return {}
    tasks = list(dict.fromkeys(table["dataset"]))
    depths = sorted({int(d) for d in table["depth"]})
    conds = _order(summ)
    others = [c for c in conds if not summ[summ["condition"] == c]["reference"].any()]
    colors = dict(zip(conds, plt.get_cmap("tab10")(np.arange(len(conds)) % 10), strict=True))
    out: dict[str, Any] = {}

    # the map
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.0 + 1.3 * len(depths) * len(tasks), 0.5 * len(others) + 2.4),
                             squeeze=False, layout="constrained")  # fmt: skip
    cells = summ[~summ["reference"]]
    vmax = max(1.0, float(np.nanmax(np.abs(cells["diff"]))) * 100 if len(cells) else 1.0)
    for ax, ds in zip(axes[0], tasks, strict=True):
        grid = np.full((len(others), len(depths)), np.nan)
        for i, c in enumerate(others):
            for j, depth in enumerate(depths):
                r = cells[(cells["dataset"] == ds) & (cells["condition"] == c) & (cells["depth"] == depth)]
                if len(r):
                    rr = r.iloc[0]
                    grid[i, j] = 100 * rr["diff"]
                    hw = "" if np.isnan(rr["half_width"]) else f"\n±{100 * rr['half_width']:.1f}"
                    ink = "white" if abs(100 * rr["diff"]) > 0.6 * vmax else "black"
                    ax.text(j, i, f"{100 * rr['diff']:+.1f}{hw}", ha="center", va="center", fontsize=7, color=ink)
        im = ax.imshow(grid, cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(depths)), [f"L={d}" for d in depths])
        ax.set_yticks(range(len(others)), others if ax is axes[0][0] else [""] * len(others))
        ref = summ[(summ["dataset"] == ds) & summ["reference"]]
        accs = ", ".join(f"{100 * a:.0f}" for a in ref.sort_values("depth")["mean"])
        ax.set_title(f"{ds}\nstandard init: {accs}%", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), label="paired accuracy difference to standard (points)", shrink=0.9)
    fig.suptitle("test accuracy minus the standard initialisation's (same seeds), ± 95% half-width", fontsize=10)
    out["accuracy_map"] = fig

    # learning curves
    fig, axes = plt.subplots(len(tasks), len(depths), figsize=(3.2 * len(depths), 2.6 * len(tasks)), squeeze=False,
                             sharey="row")  # fmt: skip
    for row, ds in zip(axes, tasks, strict=True):
        for ax, depth in zip(row, depths, strict=True):
            for c in conds:
                runs = table[(table["dataset"] == ds) & (table["depth"] == depth) & (table["condition"] == c)]
                if runs.empty:
                    continue
                curves = np.array([np.asarray(v, dtype=float) for v in runs["curve_accuracy"]])
                epochs = np.arange(1, curves.shape[1] + 1)
                style = "-" if runs["vbar"].iloc[0] == "zero" else "--"
                lw = 2.2 if c == "Vbar=0, sigma=1" else 1.2
                ax.plot(epochs, curves.mean(axis=0), style, color=colors[c], lw=lw, label=c)
            chance = float(table[table["dataset"] == ds]["chance"].iloc[0])
            ax.axhline(chance, color="0.6", lw=0.8, ls=":")
            ax.set_title(f"{ds}, L={depth}", fontsize=9)
            ax.set_xlabel("epoch")
        row[0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    out["accuracy_map_curves"] = fig

    # mediator: accuracy against the overlap gained at initialisation; overlap through depth
    deepest = max(depths)
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.6 * len(tasks), 6.4), squeeze=False)
    markers = dict(zip(depths, "os^Dv<>p", strict=False))
    for j, ds in enumerate(tasks):
        ax, dax = axes[0][j], axes[1][j]
        runs = table[table["dataset"] == ds]
        for c in conds:
            for depth in depths:
                r = runs[(runs["condition"] == c) & (runs["depth"] == depth)]
                if r.empty:
                    continue
                gained = [float(v[-1]) - float(v[0]) for v in r["init_mean_overlap"]]
                ax.plot(gained, r["test_accuracy"], markers.get(depth, "o"), color=colors[c], ms=3.5, alpha=0.7,
                        label=c if depth == deepest else None)  # fmt: skip
            deep = runs[(runs["condition"] == c) & (runs["depth"] == deepest)]
            if len(deep):
                prof = np.array([np.asarray(v, dtype=float) for v in deep["init_mean_overlap"]]).mean(axis=0)
                style = "-" if deep["vbar"].iloc[0] == "zero" else "--"
                dax.plot(np.arange(len(prof)), prof, style, color=colors[c], lw=1.4, label=c)
        ax.set_xlabel("mean overlap gained through depth at init")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{ds} ({', '.join(f'{markers[d]} L={d}' for d in depths if d in markers)})", fontsize=9)
        dax.set_xlabel(f"layer (L = {deepest})")
        dax.set_ylabel("mean overlap at init")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    out["accuracy_map_mediator"] = fig
    return out
