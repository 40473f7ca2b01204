"""Paper models, each as a discrete random stack and as its limit SDE."""

from .base import Model, check_model
from .kernel import KernelModel, load_model
from .mlp_noise import MLPNoise
from .multihead import Multihead, MultiheadLimit
from .value_noise import ValueNoise

__all__ = ["Model", "check_model", "ValueNoise", "Multihead", "MultiheadLimit", "MLPNoise", "KernelModel", "load_model"]
