"""The experiment catalogue, registered by name."""

from __future__ import annotations

from .base import Experiment, ExperimentConfig
from .phase_diagram import PhaseDiagram

REGISTRY: dict[str, Experiment] = {e.name: e for e in (PhaseDiagram(),)}

__all__ = ["REGISTRY", "Experiment", "ExperimentConfig"]
