"""Small helpers of the experiments' interactive (plotly) figures; plotly is imported when a figure is drawn."""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["go", "loglog", "error_bars"]


def go() -> Any:
    """``plotly.graph_objects``, imported on first use (the report's figures only)."""
    import plotly.graph_objects as go

    return go


def loglog(fig: Any, **kw: Any) -> Any:
    """``fig`` with both axes logarithmic and ``kw`` set on its layout."""
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    fig.update_layout(**kw)
    return fig


def error_bars(s: pd.DataFrame, col: str) -> dict[str, Any]:
    """Asymmetric plotly error bars of the fraction ``p_{col}`` from its interval ``{col}_low, {col}_high``."""
    return {
        "type": "data",
        "symmetric": False,
        "array": s[f"{col}_high"] - s[f"p_{col}"],
        "arrayminus": s[f"p_{col}"] - s[f"{col}_low"],
    }
