"""What every experiment provides; the runtime drives these pure pieces.

An experiment is a typed ``Config`` (pydantic, unknown keys refused), a
``plan`` that splits the work into independent *units* (each a JSON-able dict
with a stable ``id``), a pure seeded ``run_unit`` returning table rows,
``summarize`` (rows -> tidy table), ``verdict`` (table -> PASS/FAIL with the
checks behind it) and ``figures`` (table -> matplotlib figures). Nothing here
touches files, the CLI or an executor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

__all__ = ["Checkpoint", "ExperimentConfig", "Experiment", "Progress", "each_in", "recorded"]

Progress = Callable[[float], None]


class Checkpoint(Protocol):
    """Where a long unit keeps its state between interruptions (the runtime decides where that is).

    A unit that checkpoints saves a flat dictionary of NumPy arrays (no pickled objects)
    and, when started again, continues from what ``load`` returns; ``load`` returns
    ``None`` when there is nothing usable (absent, truncated or corrupt).
    """

    def load(self) -> dict[str, np.ndarray] | None: ...

    def save(self, arrays: dict[str, np.ndarray]) -> None: ...


def recorded(
    model: Any,
    x0: Any,
    dt: float,
    steps: int,
    seed: int,
    key: tuple[object, ...],
    title: str,
    time_label: str = "t",
    frames: int = 60,
    solver: str = "euler",
) -> dict[str, Any]:
    """One system's trajectory, about ``frames`` snapshots, in the form :meth:`Experiment.trajectory` returns."""
    import numpy as np

    from ..solvers import simulate

    every = max(1, steps // frames)
    res = simulate(model, x0, dt, steps, seed, key, solver=solver, record_every=every)
    assert res.xs is not None
    return {
        "x": res.xs[:, 0].double().cpu().numpy(),
        "times": np.asarray(res.t),
        "title": title,
        "time_label": time_label,
    }


def each_in(values: list[Any], lo: float, hi: float, what: str = "value") -> list[Any]:
    """Validator helper: every entry in ``[lo, hi]`` (else a ``ValueError`` naming the range); sorted, unique."""
    for x in values:
        if not lo <= x <= hi:
            raise ValueError(f"each {what} must be in [{lo:g}, {hi:g}], got {x}")
    return sorted(set(values))


class ExperimentConfig(BaseModel):
    """Base of every experiment's config: strict keys, finite numbers, common fields."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True, strict=True)


class Experiment:
    name: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type[ExperimentConfig]]
    quick: ClassVar[dict[str, Any]] = {}
    #: ``run_unit`` takes a keyword argument ``checkpoint: Checkpoint | None`` (long units that resume)
    checkpoints: ClassVar[bool] = False

    def plan(self, cfg: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def unit_cost(self, cfg: Any, unit: dict[str, Any]) -> float:
        """Relative cost of a unit (for progress bars)."""
        return 1.0

    def unit_memory(self, cfg: Any, unit: dict[str, Any], device: str) -> int:
        """Peak bytes a unit allocates beyond the interpreter and torch themselves (its tensors: state, noise,
        kernels, buffers); an upper estimate, within a factor ~2, from the config alone (nothing allocated).

        Checked against the available memory before a run starts (:mod:`tokensde.runtime.memory`). Every
        experiment of the catalogue overrides it; the default, ``0``, means unknown (an experiment from
        elsewhere that does not estimate its units is not refused).
        """
        return 0

    def run_unit(
        self, cfg: Any, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def summarize(self, cfg: Any, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return pd.DataFrame(rows)

    def tables(self, cfg: Any, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Further tidy tables derived from the results table, written as ``NAME.parquet`` beside it."""
        return {}

    def verdict(self, cfg: Any, table: pd.DataFrame) -> dict[str, Any]:
        raise NotImplementedError

    def figures(self, cfg: Any, table: pd.DataFrame) -> dict[str, Any]:
        return {}

    def trajectory(self, cfg: Any, device: str = "cpu") -> dict[str, Any] | None:
        """A few token trajectories of the experiment's model for the sphere viewer, or ``None``.

        ``{"x": (K, n, d) array, "times": (K,), "title": str, "time_label": str}``; small and seeded.
        """
        return None
