"""The experiment catalogue, registered by name."""

from __future__ import annotations

from .accuracy import Accuracy
from .accuracy_map import AccuracyMap
from .base import Experiment, ExperimentConfig
from .chaos import Chaos
from .convergence import Convergence
from .homogenized import Homogenized
from .mean_field import MeanField
from .multi_token import MultiToken
from .noise_sweep import NoiseSweep
from .phase_diagram import PhaseDiagram
from .probe import Probe
from .scaling_regimes import ScalingRegimes
from .solver_order import SolverOrder
from .synchronization import Synchronization
from .universality import Universality

REGISTRY: dict[str, Experiment] = {
    e.name: e
    for e in (
        PhaseDiagram(),
        Homogenized(),
        ScalingRegimes(),
        Synchronization(),
        Chaos(),
        SolverOrder(),
        Convergence(),
        MultiToken(),
        NoiseSweep(),
        Accuracy(),
        AccuracyMap(),
        Probe(),
        MeanField(),
        Universality(),
    )
}

__all__ = ["REGISTRY", "Experiment", "ExperimentConfig"]
