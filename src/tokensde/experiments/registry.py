"""The one experiment registry: the catalogue plus any experiment named in ``TOKENSDE_EXPERIMENTS``.

Every user-facing reader of experiments goes through :func:`available_experiments`:
``tokensde list``, ``tokensde schema``, ``tokensde run`` and the report (which asks an
experiment outside the catalogue for its interactive figures). The catalogue itself is
:data:`tokensde.experiments.REGISTRY`.

``TOKENSDE_EXPERIMENTS="pkg.module:Attr[,other.module:Attr]"`` adds experiments defined
outside the package (an :class:`~tokensde.experiments.base.Experiment` subclass or
instance; the module must be importable, e.g. through ``PYTHONPATH``, also on the
workers of a local pool or a Ray cluster). Importing a module runs its code: the
variable carries the same trust as ``PYTHONPATH``. Catalogue names cannot be replaced.
A bad entry raises :class:`~tokensde.errors.UsageError` with one line that starts with
the variable's name (the command line prints it and exits with status 2).

This module sits with the catalogue (below the runtime and the report, which both read
it); it writes nothing and starts no process.
"""

from __future__ import annotations

import importlib
import os

from ..errors import UsageError
from . import REGISTRY
from .base import Experiment

__all__ = ["ENV", "available_experiments"]

ENV = "TOKENSDE_EXPERIMENTS"


def available_experiments() -> dict[str, Experiment]:
    """The catalogue plus the experiments named in ``$TOKENSDE_EXPERIMENTS`` (``UsageError`` on a bad entry)."""
    found: dict[str, Experiment] = dict(REGISTRY)
    for spec in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        module, _, attr = spec.partition(":")
        if not module or not attr:
            raise UsageError(f"{ENV}: entries are module:attribute, got {spec!r}")
        try:
            obj = getattr(importlib.import_module(module), attr)
            exp = obj() if isinstance(obj, type) else obj
        except (ImportError, AttributeError) as e:
            raise UsageError(f"{ENV}: cannot load {spec!r}: {e}") from None
        except Exception as e:  # noqa: BLE001 - the user's module failed while importing or instantiating
            raise UsageError(f"{ENV}: cannot load {spec!r}: {type(e).__name__}: {e}") from None
        if not isinstance(exp, Experiment):
            raise UsageError(f"{ENV}: {spec!r} is not an Experiment")
        found.setdefault(exp.name, exp)
    return found
