"""The experiment registry, re-exported for the runtime; it lives in :mod:`tokensde.experiments.registry`.

There is one registry (the catalogue plus the experiments named in ``TOKENSDE_EXPERIMENTS``)
and every command and the report read it through
:func:`~tokensde.experiments.registry.available_experiments`. It sits with the catalogue,
below the runtime and the report, so that both can read it without importing each other.
"""

from __future__ import annotations

from ..experiments.registry import ENV, available_experiments

__all__ = ["ENV", "available_experiments"]
