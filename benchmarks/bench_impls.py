r"""The implementations being compared, all integrating model A's limit SDE

.. math::

    dx_i = P_{x_i} dW_t a_i - \tfrac{d-1}{2} |a_i|^2 x_i\,dt, \qquad a_i = m_{\beta, I}(x_i; X),

with Euler steps of size ``dt`` from the same initial tokens. Each ``run`` times
only the integration loop (inputs are converted before the clock starts) and
returns the final states as float64 NumPy arrays.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
import torchsde
from bench_problems import Problem
from torch import Tensor
from torchsde._brownian import BaseBrownian

from tokensde.attention import barycenters
from tokensde.models.value_noise import ValueNoise
from tokensde.solvers import simulate

__all__ = [
    "AttentionBound",
    "Implementation",
    "NumpyNaive",
    "PlainIncrements",
    "RunOutput",
    "TokensdeImpl",
    "TorchsdeImpl",
    "implementations",
    "sync",
]

WARMUP_STEPS = 20


@dataclass
class RunOutput:
    """Final states ``(B, n, d)`` float64 (renormalised), seconds of the integration,
    and ``max | |x| - 1 |`` before renormalising."""

    x: np.ndarray
    seconds: float
    off_sphere: float
    steps_taken: int


class Implementation(Protocol):
    device: str
    bound: bool
    """A reference that does part of the work of a step (its final states carry no statistic)."""

    @property
    def name(self) -> str: ...

    @property
    def label(self) -> str: ...

    def supports(self, problem: Problem) -> bool: ...

    def warmup(self, problem: Problem, x0: Tensor, seed: int) -> float:
        """Run a few steps (compiles, allocates, loads kernels); return its wall time."""
        ...

    def run(self, problem: Problem, x0: Tensor, seed: int) -> RunOutput: ...


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _finish(x: np.ndarray, seconds: float, steps: int) -> RunOutput:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return RunOutput(x / norms, seconds, float(np.abs(norms - 1.0).max()), steps)


def _short(problem: Problem) -> Problem:
    return problem.shrunk(max(1, problem.steps // WARMUP_STEPS))


# --------------------------------------------------------------------------- tokensde
@dataclass
class TokensdeImpl:
    """``tokensde.solvers.simulate(ValueNoise(beta), x0, dt, steps, seed)``, float32, optionally compiled."""

    compile: bool = False
    device: str = "cpu"
    bound: bool = False

    @property
    def name(self) -> str:
        return "tokensde_compiled" if self.compile else "tokensde"

    @property
    def label(self) -> str:
        return "tokensde torch.compile" if self.compile else "tokensde"

    def supports(self, problem: Problem) -> bool:
        # the torch.compile-d route is the fused two-token step off the CPU (on the CPU the numba kernel is the
        # default route, `compile` is ignored); larger systems ignore `compile`
        return (problem.n == 2 and self.device != "cpu") if self.compile else True

    def warmup(self, problem: Problem, x0: Tensor, seed: int) -> float:
        return self.run(_short(problem), x0, seed).seconds

    def run(self, problem: Problem, x0: Tensor, seed: int) -> RunOutput:
        x = x0.to(self.device)
        model = ValueNoise(beta=problem.beta)
        sync(self.device)
        t0 = time.perf_counter()
        res = simulate(model, x, problem.dt, problem.steps, seed=seed, compile=self.compile)
        sync(self.device)
        seconds = time.perf_counter() - t0
        return _finish(res.x.double().cpu().numpy(), seconds, problem.steps)


# --------------------------------------------------------------------------- naive NumPy
@dataclass
class NumpyNaive:
    """Float64 NumPy, batched over systems, a Python loop over steps, matrix noise ``dW`` (``d x d`` per system)."""

    name: str = "naive_numpy"
    label: str = "naive NumPy f64"
    device: str = "cpu"
    bound: bool = False

    def supports(self, problem: Problem) -> bool:
        return True

    def warmup(self, problem: Problem, x0: Tensor, seed: int) -> float:
        return self.run(_short(problem), x0, seed).seconds

    def run(self, problem: Problem, x0: Tensor, seed: int) -> RunOutput:
        x = x0.double().numpy().copy()
        rng = np.random.default_rng(seed)
        d, dt, beta = problem.d, problem.dt, problem.beta
        sqdt, ito = math.sqrt(dt), 0.5 * (d - 1) * dt
        t0 = time.perf_counter()
        for _ in range(problem.steps):
            s = beta * (x @ x.transpose(0, 2, 1))  # (B, n, n) scores
            s -= s.max(axis=-1, keepdims=True)
            w = np.exp(s)
            w /= w.sum(axis=-1, keepdims=True)
            a = w @ x  # barycentres (B, n, d)
            dw = rng.standard_normal((x.shape[0], d, d)) * sqdt
            m = a @ dw.transpose(0, 2, 1)  # m_i = dW a_i
            m -= (m * x).sum(axis=-1, keepdims=True) * x  # P_x
            y = x + m - ito * (a * a).sum(axis=-1, keepdims=True) * x
            x = y / np.linalg.norm(y, axis=-1, keepdims=True)
        seconds = time.perf_counter() - t0
        return _finish(x, seconds, problem.steps)


# --------------------------------------------------------------------------- torchsde
class ModelASDE:
    r"""Model A's limit as a torchsde Itô SDE with general noise on the flattened state ``(B, n d)``.

    The Brownian motion has ``d^2`` channels per system (the entries of ``W``);
    ``g_prod`` returns ``P_x (dW a_i)`` without materialising the ``(n d) x d^2``
    diffusion matrix. Coefficients are evaluated at ``N(x)``: torchsde cannot
    renormalise between steps, and with the coefficients taken at ``N(x)`` the
    continuous SDE keeps ``|x| = 1`` attracting (``d|x|^2 = (d-1) |a|^2 (1 - |x|) dt``),
    so the state only leaves the sphere by discretisation error (reported).
    ``f_and_g_prod`` shares the barycentres between drift and noise, which
    torchsde's Euler uses when it is defined.
    """

    noise_type = "general"
    sde_type = "ito"

    def __init__(self, n: int, d: int, beta: float) -> None:
        self.n, self.d, self.beta = n, d, beta
        self.ito = 0.5 * (d - 1)

    def _tokens(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y.view(y.shape[0], self.n, self.d)
        xh = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        a = F.scaled_dot_product_attention(self.beta * xh, xh, xh, scale=1.0)
        return xh, a

    def _drift(self, xh: Tensor, a: Tensor) -> Tensor:
        return (-self.ito * (a * a).sum(-1, keepdim=True) * xh).flatten(1)

    def _noise(self, xh: Tensor, a: Tensor, v: Tensor) -> Tensor:
        m = a @ v.view(v.shape[0], self.d, self.d).transpose(-1, -2)
        return (m - (m * xh).sum(-1, keepdim=True) * xh).flatten(1)

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return self._drift(*self._tokens(y))

    def g_prod(self, t: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self._noise(*self._tokens(y), v)

    def f_and_g_prod(self, t: Tensor, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        xh, a = self._tokens(y)
        return self._drift(xh, a), self._noise(xh, a, v)


class PlainIncrements(BaseBrownian):
    """A Brownian motion for fixed-step solvers: each call ``(ta, tb)`` returns fresh ``N(0, tb - ta)`` increments.

    Normals are drawn ``slab`` steps at a time (as tokensde's noise stream does).
    Only valid when every interval is queried once, in order — which is what a
    fixed-step ``sdeint`` does.
    """

    def __init__(self, size: tuple[int, int], dtype: torch.dtype, device: str, seed: int, slab: int = 16) -> None:
        self._size = size
        self._dtype, self._device = dtype, torch.device(device)
        self._gen = torch.Generator(device=self._device).manual_seed(seed)
        self._slab = slab
        self._buf = torch.empty((slab, *size), dtype=dtype, device=self._device)
        self._k = slab
        self.calls = 0

    def __call__(
        self, ta: Tensor | float, tb: Tensor | float | None = None, return_U: bool = False, return_A: bool = False
    ) -> Tensor:
        if tb is None or return_U or return_A:
            raise NotImplementedError("PlainIncrements only answers interval queries W(tb) - W(ta)")
        if self._k == self._slab:
            torch.randn(self._buf.shape, generator=self._gen, dtype=self._dtype, device=self._device, out=self._buf)
            self._k = 0
        out = self._buf[self._k] * math.sqrt(float(tb) - float(ta))
        self._k += 1
        self.calls += 1
        return out

    def __repr__(self) -> str:
        return f"PlainIncrements(size={self._size}, dtype={self._dtype}, device={self._device})"

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def shape(self) -> tuple[int, int]:
        return self._size

    @property
    def levy_area_approximation(self) -> str:
        return "none"


@dataclass
class TorchsdeImpl:
    """``torchsde.sdeint(ModelASDE, method='euler')``, float32, with torchsde's BrownianInterval or plain increments."""

    bm: str = "interval"  # "interval" (torchsde's default BrownianInterval) or "increments"
    device: str = "cpu"
    bound: bool = False

    @property
    def name(self) -> str:
        return "torchsde_default" if self.bm == "interval" else "torchsde_increments"

    @property
    def label(self) -> str:
        return "torchsde, BrownianInterval" if self.bm == "interval" else "torchsde, plain increments"

    def supports(self, problem: Problem) -> bool:
        return True

    def warmup(self, problem: Problem, x0: Tensor, seed: int) -> float:
        return self.run(_short(problem), x0, seed).seconds

    def run(self, problem: Problem, x0: Tensor, seed: int) -> RunOutput:
        b, n, d = x0.shape
        y0 = x0.reshape(b, n * d).to(self.device)
        # float64 times: float32 accumulation of 6000 steps would add or drop a step
        ts = torch.tensor([0.0, problem.horizon], dtype=torch.float64, device=self.device)
        size = (b, d * d)
        brownian: BaseBrownian
        if self.bm == "interval":
            brownian = torchsde.BrownianInterval(
                t0=0.0, t1=problem.horizon, size=size, dtype=y0.dtype, device=self.device, entropy=seed
            )
        else:
            brownian = PlainIncrements(size, y0.dtype, self.device, seed)
        sde = ModelASDE(n, d, problem.beta)
        sync(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            ys = torchsde.sdeint(sde, y0, ts, bm=brownian, method="euler", dt=problem.dt)
        sync(self.device)
        seconds = time.perf_counter() - t0
        steps = brownian.calls if isinstance(brownian, PlainIncrements) else problem.steps
        return _finish(ys[-1].view(b, n, d).double().cpu().numpy(), seconds, steps)


# --------------------------------------------------------------------------- attention bound
@dataclass
class AttentionBound:
    """Only the barycentres of every step (``tokensde.attention.barycenters``, torch's fused SDPA kernel).

    ``steps`` calls on the initial tokens, no noise and no update: the part of a
    step that no Euler implementation built on this kernel can avoid. Its time
    bounds what a full step can reach (the flop count is the full step's, so
    its ``% ceiling`` is the ceiling of such implementations).
    """

    name: str = "attention_bound"
    label: str = "bound: barycentres only"
    device: str = "cpu"
    bound: bool = True

    def supports(self, problem: Problem) -> bool:
        return problem.n > 2

    def warmup(self, problem: Problem, x0: Tensor, seed: int) -> float:
        return self.run(_short(problem), x0, seed).seconds

    def run(self, problem: Problem, x0: Tensor, seed: int) -> RunOutput:
        x = x0.to(self.device)
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(problem.steps):
            a = barycenters(x, problem.beta)
        sync(self.device)
        seconds = time.perf_counter() - t0
        del a
        return _finish(x0.double().numpy(), seconds, problem.steps)


def implementations(device: str) -> list[Implementation]:
    """All implementations, tokensde ones (and the attention bound) on ``device``, the others on the CPU."""
    return [
        TokensdeImpl(compile=False, device=device),
        TokensdeImpl(compile=True, device=device),
        NumpyNaive(),
        TorchsdeImpl(bm="interval"),
        TorchsdeImpl(bm="increments"),
        AttentionBound(device=device),
    ]
