"""Interactive (plotly) figures of a run, drawn from its results table.

Every experiment draws its own (``interactive_figures(config, table)``, beside its static ``figures``; ``config``
the run's JSON config from its manifest), found through the registry
(:func:`tokensde.experiments.registry.available_experiments`, so also an experiment named in
``TOKENSDE_EXPERIMENTS``); an experiment without one gets a table of its results.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["interactive_figures"]


def _generic(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    import plotly.graph_objects as go

    cols = [c for c in t.columns if not t[c].map(lambda v: isinstance(v, list | tuple)).any()]
    return {"results": go.Figure(data=[go.Table(header={"values": cols}, cells={"values": [t[c] for c in cols]})])}


def interactive_figures(experiment: str, table: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The plotly figures of a run: the experiment's own, or a table of the results.

    Raises :class:`~tokensde.errors.UsageError` when ``$TOKENSDE_EXPERIMENTS`` has a bad entry.
    """
    from ..experiments.registry import available_experiments

    own = getattr(available_experiments().get(experiment), "interactive_figures", None)
    if callable(own):
        return dict(own(cfg, table))
    return _generic(table, cfg)
