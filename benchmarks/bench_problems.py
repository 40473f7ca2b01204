"""The benchmark problems (model A, ``A = I``, ``Vbar = 0``, ``sigma = 1``) and their statistics."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tokensde.sphere import pair_with_overlap, uniform

__all__ = [
    "ANTIPODAL_RHO",
    "LARGE_N",
    "LARGE_N_GOAL_BYTES",
    "LARGE_N_GOAL_N",
    "LARGE_N_GPU",
    "PROBLEMS",
    "Problem",
    "Statistic",
    "large_n_problems",
    "problems",
    "statistic",
]

ANTIPODAL_RHO = -0.99
"""A two-token system counts as antipodal at the end when ``rho < ANTIPODAL_RHO``."""


@dataclass(frozen=True)
class Problem:
    """One benchmark problem: ``systems`` independent systems of ``n`` tokens in ``R^d``."""

    key: str
    title: str
    n: int
    d: int
    systems: int
    steps: int
    dt: float
    init: str  # "pair" (two tokens with overlap rho0) or "uniform"
    beta: float = 1.0
    rho0: float = 0.0

    @property
    def horizon(self) -> float:
        return self.steps * self.dt

    @property
    def system_steps(self) -> int:
        return self.systems * self.steps

    def flops_per_system_step(self) -> float:
        """Flops of one Euler step of one system, counting only the dense work.

        scores ``X X^T``: ``2 n^2 d``; softmax: ``~5 n^2`` (max, subtract, exp, sum,
        divide, one flop each per weight); barycentres ``W X``: ``2 n^2 d``;
        noise ``dW a_i`` for all tokens: ``2 n d^2``. Projection, Itô drift and
        renormalisation are ``O(n d)`` and left out.
        """
        n, d = self.n, self.d
        return 2 * n * n * d + 5 * n * n + 2 * n * n * d + 2 * n * d * d

    def total_flops(self) -> float:
        return self.flops_per_system_step() * self.system_steps

    def initial_state(self, seed: int) -> Tensor:
        """Float32 CPU initial tokens ``(systems, n, d)``, the same for every implementation."""
        g = torch.Generator().manual_seed(seed)
        if self.init == "pair":
            return pair_with_overlap(self.systems, self.d, self.rho0, generator=g)
        if self.init == "uniform":
            return uniform((self.systems, self.n), self.d, generator=g)
        raise ValueError(f"unknown init {self.init!r}")

    def shrunk(self, steps_factor: int) -> Problem:
        """The same problem with ``steps_factor`` times fewer steps (same ``dt``, same shapes)."""
        return dataclasses.replace(self, steps=max(1, self.steps // steps_factor))


PROBLEMS: dict[str, Problem] = {
    "P1": Problem("P1", "2 tokens, d=4, rho0=0", n=2, d=4, systems=2000, steps=6000, dt=2e-3, init="pair"),
    "P2": Problem("P2", "256 tokens, d=16, uniform", n=256, d=16, systems=16, steps=200, dt=1e-2, init="uniform"),
}


def problems(quick: bool) -> list[Problem]:
    """The problems at full size, or with 10x fewer steps for ``--quick``."""
    return [p.shrunk(10) if quick else p for p in PROBLEMS.values()]


# Large n (section "large-n"): one system, timed steps after one warm-up step, each configuration in a fresh
# child process (bench_large.py) so that its peak memory is its own.
LARGE_N: dict[str, Problem] = {
    "L1": Problem("L1", "4096 tokens, d=32, uniform", n=4096, d=32, systems=1, steps=5, dt=1e-2, init="uniform"),
    "L2": Problem("L2", "65536 tokens, d=32, uniform", n=65536, d=32, systems=1, steps=5, dt=1e-2, init="uniform"),
}
LARGE_N_GPU = Problem(
    "L3", "100000 tokens, d=32, uniform (GPU)", n=100_000, d=32, systems=1, steps=5, dt=1e-2, init="uniform"
)
"""Mean-field scale, run only with ``--device cuda``."""
LARGE_N_GOAL_N = 65536
LARGE_N_GOAL_BYTES = 3 * 10**9
"""Goal: the ``n = LARGE_N_GOAL_N`` process (simulation and metrics) peaks below 3 GB (3e9 bytes) of RSS."""


def large_n_problems(quick: bool, gpu: bool) -> list[Problem]:
    """L1, L2 (and L3 with ``gpu``): 5 timed steps, or 1 for ``--quick``."""
    probs = [*LARGE_N.values(), *([LARGE_N_GPU] if gpu else [])]
    return [p.shrunk(5) if quick else p for p in probs]


@dataclass(frozen=True)
class Statistic:
    """A statistic of the final states, pooled over rounds, with its standard error."""

    name: str
    value: float
    se: float
    count: int

    def fmt(self) -> str:
        if self.value > 0.999:  # near full collapse: show the distance to 1
            return f"1 - {1.0 - self.value:.1e} ± {self.se:.0e}"
        return f"{self.value:.4f} ± {self.se:.4f}"


def statistic(problem: Problem, finals: list[np.ndarray]) -> Statistic:
    """P1 (two tokens): fraction of systems with ``rho < -0.99``, binomial standard error.
    Otherwise: mean pairwise overlap ``<x_i, x_j>`` (``i < j``) per system, mean and standard error over systems.
    ``finals``: final states ``(B, n, d)`` (float64, on the sphere), one array per round.
    """
    x = np.concatenate(finals, axis=0)
    if problem.n == 2:
        rho = np.einsum("bd,bd->b", x[:, 0], x[:, 1])
        frac = float(np.mean(rho < ANTIPODAL_RHO))
        se = math.sqrt(frac * (1.0 - frac) / rho.size)
        return Statistic(f"P(rho < {ANTIPODAL_RHO})", frac, se, rho.size)
    g = np.einsum("bid,bjd->bij", x, x)
    n = problem.n
    off = (g.sum(axis=(1, 2)) - np.trace(g, axis1=1, axis2=2)) / (n * (n - 1))
    se = float(off.std(ddof=1) / math.sqrt(off.size)) if off.size > 1 else float("nan")
    return Statistic("mean overlap", float(off.mean()), se, off.size)
