"""The experiment catalogue, registered by name."""

from __future__ import annotations

from .base import Experiment, ExperimentConfig
from .homogenized import Homogenized
from .phase_diagram import PhaseDiagram
from .scaling_regimes import ScalingRegimes
from .synchronization import Synchronization

REGISTRY: dict[str, Experiment] = {
    e.name: e for e in (PhaseDiagram(), Homogenized(), ScalingRegimes(), Synchronization())
}

__all__ = ["REGISTRY", "Experiment", "ExperimentConfig"]
