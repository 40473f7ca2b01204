"""Closed forms and numerics that need no simulation."""

from . import homogenized, synchronization, value_noise
from .two_point import BoundaryRates, TwoPointMotion

__all__ = ["TwoPointMotion", "BoundaryRates", "value_noise", "homogenized", "synchronization"]
