"""Experiments the ``run`` command knows: the catalogue plus any named in ``TOKENSDE_EXPERIMENTS``.

``TOKENSDE_EXPERIMENTS="pkg.module:Attr[,other.module:Attr]"`` adds experiments defined
outside the package (an :class:`~tokensde.experiments.base.Experiment` subclass or
instance; the module must be importable, e.g. through ``PYTHONPATH``, also on the
workers of a local pool or a Ray cluster). Importing a module runs its code: the
variable carries the same trust as ``PYTHONPATH``. Catalogue names cannot be replaced.
"""

from __future__ import annotations

import importlib
import os

from ..experiments import REGISTRY, Experiment

__all__ = ["ENV", "available_experiments"]

ENV = "TOKENSDE_EXPERIMENTS"


def available_experiments() -> dict[str, Experiment]:
    """The catalogue plus the experiments named in ``$TOKENSDE_EXPERIMENTS`` (``ValueError`` on a bad entry)."""
    found: dict[str, Experiment] = dict(REGISTRY)
    for spec in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        module, _, attr = spec.partition(":")
        if not module or not attr:
            raise ValueError(f"{ENV}: entries are module:attribute, got {spec!r}")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"{ENV}: cannot load {spec!r}: {e}") from None
        exp = obj() if isinstance(obj, type) else obj
        if not isinstance(exp, Experiment):
            raise ValueError(f"{ENV}: {spec!r} is not an Experiment")
        found.setdefault(exp.name, exp)
    return found
