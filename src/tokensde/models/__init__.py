"""Paper models, each as a discrete random stack and as its limit SDE."""

from .mlp_noise import MLPNoise
from .multihead import Multihead, MultiheadLimit
from .value_noise import ValueNoise

__all__ = ["ValueNoise", "Multihead", "MultiheadLimit", "MLPNoise"]
