r"""``homogenized``: model B's diffusive limit in the Gaussian setting against its comparison ODEs.

All runs integrate the homogenized limit in diffusive time ``tau``
(:class:`~tokensde.models.multihead.MultiheadLimit`, ``time="diffusive"``,
``K = samples`` heads per step, projected Euler–Maruyama). Four parts:

* **logistic** (``beta`` small against ``sqrt(d)``; ``beta = 0`` exactly): ``n``
  uniform tokens; the mean overlap ``u = |xbar|^2`` of each system against the
  solution of ``du/dtau = u (1 - u)`` from its own ``u(0)``. Theory: the
  deviation is a fluctuation of size ``sqrt(tau/d)`` with an ``O(1/d)`` mean, so
  its RMS decays like ``d^{-1/2}`` and its mean like ``d^{-1}``: both slopes are
  fitted over ``d``;
* **simplex**: tokens on a regular simplex (common overlap ``gamma0``) at a
  temperature where attention is far from uniform; the MC common overlap (mean
  off-diagonal overlap) against the comparison ODE with ``f, g`` estimated by
  Monte Carlo (their ``z``-band is shown); the mean deviation should shrink
  like ``1/d``;
* **frozen / logistic exit**: when tokens attend only to themselves
  (``Abar = I``, ``sigma_A = 0``, ``beta = beta_self`` large) the pair overlap is
  exactly ``-rho (1-rho^2) dtau/(d-1) + sqrt(2/(d-1)) (1-rho^2) dB``: frozen for
  ``tau << d`` (RMS displacement at ``tau = frozen_tau`` against
  ``sqrt(2 tau/(d-1)) (1 - u_0^2)``, slope ``-1/2`` in ``d - 1``; and exactly: the
  cotangent ``z = rho / sqrt(1 - rho^2)`` of the pair's angle has
  ``E(z_t - z_0)^2`` in closed form, :func:`cot_msd`, checked per cell and
  pooled per ``d``, Richardson-extrapolated), and on the time scale ``d - 1``
  the logistic SDE: ``P(u -> +1) = arcsin(u_0)/pi + 1/2``, checked per cell in
  family-wise Wilson intervals and pooled per ``d``, both against the exact exit
  law at the finite ``beta_self`` (:func:`exit_law_finite_beta`, 0.4 to 1.2 %
  above the arcsin law at ``beta = 1000``);
* **trade-off map**: the diffusive time for the simplex ODE to reach overlap
  ``1/2`` from ``gamma = 0``, over ``(n, beta)`` for each ``d`` (``f, g`` by Monte
  Carlo); at ``beta = 0`` it is checked against the closed form.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from ..models.multihead import Multihead, MultiheadLimit
from ..noise import derive_seed
from ..solvers import simulate, simulate_coupled
from ..sphere import gram, pair_with_overlap, simplex, uniform
from ..stats import loglog_slope
from ..theory import homogenized as th
from ..theory.two_point import TwoPointMotion
from . import plotting
from .base import Experiment, ExperimentConfig, Progress, each_in, recorded
from .verdict import Check, at_most, binomial_cells, check, pooled_z, slope_within, verdict

__all__ = ["Homogenized", "HomogenizedConfig", "cot_msd", "exit_law_finite_beta"]


class HomogenizedConfig(ExperimentConfig):
    """Configuration of ``homogenized`` (every field has a default)."""

    n: int = Field(default=16, ge=2, le=1024, description="tokens of the logistic part, in [2, 1024]")
    logistic_beta: list[float] = Field(default=[0.0, 1.0], min_length=1, description="betas, each in [0, 50]")
    logistic_d: list[int] = Field(default=[32, 64, 128, 256], min_length=3, description=">= 3 dims, each in [4, 1024]")
    tau_max: float = Field(default=3.0, gt=0.0, le=50.0, description="diffusive horizon, in (0, 50]")
    dtau: float = Field(default=0.02, gt=0.0, le=0.1, description="diffusive time step, in (0, 0.1]")
    samples: int = Field(default=4, ge=1, le=256, description="heads sampled per step, in [1, 256]")
    systems: int = Field(default=1024, ge=16, le=1_000_000, description="systems per logistic cell, in [16, 1e6]")
    simplex_n: int = Field(default=8, ge=2, le=256, description="tokens on the simplex, in [2, 256]")
    simplex_beta: float = Field(default=8.0, ge=0.0, le=100.0, description="simplex beta, in [0, 100]")
    simplex_systems: int = Field(default=512, ge=16, le=1_000_000, description="systems per simplex cell, [16, 1e6]")
    simplex_d: list[int] = Field(default=[32, 64, 128], min_length=3, description=">= 3 dims, each in [4, 1024]")
    gamma0: float = Field(default=0.0, ge=0.0, lt=1.0, description="initial simplex overlap, in [0, 1)")
    simplex_tau: float = Field(default=4.0, gt=0.0, le=50.0, description="simplex horizon, in (0, 50]")
    fg_samples: int = Field(default=4096, ge=64, le=10_000_000, description="heads for f and g, in [64, 1e7]")
    frozen_d: list[int] = Field(default=[8, 32, 128], min_length=3, description=">= 3 dims, each in [3, 1024]")
    exit_d: list[int] = Field(default=[4, 8], min_length=1, description="dims of the exit law, each in [3, 1024]")
    u0: list[float] = Field(default=[-0.6, -0.2, 0.2, 0.6], min_length=1, description="initial overlaps in (-1, 1)")
    pairs: int = Field(default=1000, ge=10, le=10_000_000, description="pairs per (d, u0), in [10, 1e7]")
    beta_self: float = Field(default=1000.0, ge=10.0, le=1e6, description="self-attending beta, in [10, 1e6]")
    frozen_tau: float = Field(default=1.0, gt=0.0, le=10.0, description="time of the frozen check, in (0, 10]")
    exit_horizon: float = Field(default=20.0, gt=0.0, le=100.0, description="exit horizon / (d-1), in (0, 100]")
    exit_dtau: float = Field(default=0.02, gt=0.0, le=0.1, description="exit time step, in (0, 0.1]")
    tradeoff_d: list[int] = Field(default=[32, 128], min_length=1, description="dims of the map, each in [4, 1024]")
    tradeoff_n: list[int] = Field(default=[4, 8, 16, 32], min_length=1, description="ns of the map, each in [2, 1024]")
    tradeoff_beta: list[float] = Field(
        default=[0.0, 2.0, 4.0, 8.0, 16.0, 32.0], min_length=1, description="betas of the map, each in [0, 100]"
    )
    tradeoff_samples: int = Field(default=1024, ge=64, le=10_000_000, description="heads per map point, [64, 1e7]")
    tol: float = Field(default=0.25, gt=0.0, le=1.0, description="allowed |slope - expected|, in (0, 1]")
    level: float = Field(default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level, in (0.5, 1)")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")
    dtype: Literal["float32", "float64"] = Field(default="float32", description="float32 or float64")

    @field_validator("logistic_d", "tradeoff_d")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        return each_in(v, 4, 1024, "d")

    @field_validator("simplex_d")
    @classmethod
    def _sdims(cls, v: list[int], info: Any) -> list[int]:
        v = each_in(v, 4, 1024, "d")
        n = info.data.get("simplex_n")
        if n is not None and n > v[0]:
            raise ValueError(f"each simplex_d must be >= simplex_n = {n} (a simplex of n points needs n <= d)")
        return v

    @field_validator("frozen_d", "exit_d")
    @classmethod
    def _fdims(cls, v: list[int]) -> list[int]:
        return each_in(v, 3, 1024, "d")

    @field_validator("tradeoff_n")
    @classmethod
    def _tn(cls, v: list[int]) -> list[int]:
        return each_in(v, 2, 1024, "n")

    @field_validator("logistic_beta")
    @classmethod
    def _lb(cls, v: list[float]) -> list[float]:
        return each_in(v, 0.0, 50.0, "beta")

    @field_validator("tradeoff_beta")
    @classmethod
    def _tb(cls, v: list[float]) -> list[float]:
        return each_in(v, 0.0, 100.0, "beta")

    @field_validator("u0")
    @classmethod
    def _u0(cls, v: list[float]) -> list[float]:
        for x in v:
            if not -1.0 < x < 1.0:
                raise ValueError(f"each u0 must be in (-1, 1), got {x}")
        return sorted(set(v))


def _offdiag_mean(g: torch.Tensor) -> torch.Tensor:
    n = g.shape[-1]
    return (g.sum((-1, -2)) - torch.diagonal(g, dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))


def _cot(rho: np.ndarray) -> np.ndarray:
    """The cotangent of the angle between two tokens, ``z = rho / sqrt(1 - rho^2)`` (``|rho|`` clipped below 1)."""
    r = np.clip(rho, -1.0 + 1e-12, 1.0 - 1e-12)
    return r / np.sqrt(1.0 - r * r)


def cot_msd(u0: float, t: float) -> float:
    r"""``E[(z_t - z_0)^2]`` for the cotangent ``z = u / sqrt(1 - u^2)`` of the logistic SDE at time ``t``.

    For ``du = -u (1 - u^2) dt + sqrt(2) (1 - u^2) dB`` Itô's formula gives
    ``dz = 2 z dt + sqrt(2 (1 + z^2)) dB``, whose generator maps polynomials
    in ``z`` to polynomials of the same degree: ``L z = 2 z``, ``L z^2 = 6 z^2 + 2``,
    so ``E z_t = z_0 e^{2t}``, ``E z_t^2 = (z_0^2 + 1/3) e^{6t} - 1/3`` and

    .. math:: E[(z_t - z_0)^2] = (z_0^2 + \tfrac13)(e^{6t} - 1) - 2 z_0^2 (e^{2t} - 1)
              = 2 (1 + z_0^2)\, t + O(t^2),

    exact at every ``t`` (the self-attending pair's overlap is this SDE at
    ``t = tau / (d - 1)``; its first-order form is the ``sqrt(2 tau / (d-1)) (1 - u_0^2)``
    RMS displacement of ``rho``).
    """
    z2 = u0 * u0 / (1.0 - u0 * u0)
    return float((z2 + 1.0 / 3.0) * math.expm1(6.0 * t) - 2.0 * z2 * math.expm1(2.0 * t))


def exit_law_finite_beta(d: int, beta: float) -> TwoPointMotion:
    r"""The overlap diffusion of a self-attending pair at finite ``beta`` (``Abar = I``, ``sigma_A = 0``).

    Token ``i`` attends to itself with weight ``p = sigmoid(beta (1 - rho))`` and
    to the other with ``q = 1 - p``, so ``m_1 = p x_1 + q x_2`` and the kernel is
    ``c_0 = |m_i|^2 = A + B rho``, ``c_1 = <m_1, m_2> = A rho + B`` with
    ``A = p^2 + q^2``, ``B = 2 p q`` (in units of ``1/(d-1)``, a time change that
    leaves the exit law alone). Then ``c_0 - rho c_1 = A (1 - rho^2)`` and
    ``mu / (c_0 - rho c_1) = -rho + (d - 2) B / A`` in closed form. At
    ``beta = infinity`` (``q = 0``) this is the logistic SDE, whose exit law is
    ``arcsin(u_0)/pi + 1/2``; at ``beta = 1000`` the leak ``q ~ e^{-beta (1 - rho)}``
    next to collapse adds 0.4 to 1.2 % (``d = 4, 8``) to ``P(rho -> 1)``, which a
    pooled test over a few thousand pairs resolves.
    """
    from scipy.special import expit

    def ab(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = beta * (1.0 - np.asarray(r, dtype=float))
        p, q = expit(x), expit(-x)
        return p * p + q * q, 2.0 * p * q

    def c0(r: np.ndarray) -> np.ndarray:
        a, b = ab(r)
        return a + b * np.asarray(r, dtype=float)

    def c1(r: np.ndarray) -> np.ndarray:
        a, b = ab(r)
        return a * np.asarray(r, dtype=float) + b

    def mu_over_g(r: np.ndarray) -> np.ndarray:
        a, b = ab(r)
        return -np.asarray(r, dtype=float) + (d - 2) * b / a

    return TwoPointMotion(d=d, c0=c0, c1=c1, mu_over_g=mu_over_g)


def _limit_step_numbers(bsz: int, n: int, d: int, k: int, shared: bool, abar: bool = False) -> int:
    """Numbers one Euler step of :class:`MultiheadLimit` (compressed route, ``k`` heads) holds at once: the
    score normals' copy, ``W^T X^T`` and ``W'^T X^T``, the scores, their softmax, the QR of ``X^T``, the
    barycenters and their squares, ``[pi_h R^T]`` and its factor, the value normals' copy, the update."""
    r = min(n, d)
    ke = 1 if shared else k
    nn_, bnd = bsz * n * n, bsz * n * d
    e = nn_ + (bnd if abar else 0)  # base scores
    e += 2 * nn_ if shared else 2 * bsz * k * d * r + 2 * bsz * k * d * n + 3 * k * nn_
    e += 2 * bsz * d * n + bsz * r * n  # gram_root
    e += 2 * ke * bnd + 2 * bsz * n * ke * r  # m, m * m, f and its transposed copy
    if ke * r > n:
        e += 2 * bsz * ke * r * n + nn_  # gram_factor's QR
    return e + bsz * min(n, ke * r) * d + 7 * bnd


def _fg_bytes(samples: int, n: int, d: int) -> int:
    """:func:`tokensde.theory.homogenized.simplex_fg` (float64): the ``2 d n`` normals per sample, ``W^T R`` and
    ``W'^T R``, and the scores, softmax and ``pi pi^T`` with their diagonal and off-diagonal parts."""
    return 8 * samples * (4 * d * n + 6 * n * n)


class Homogenized(Experiment):
    name = "homogenized"
    summary = "model B: mean overlap vs the logistic ODE, simplex ODE, frozen overlaps and the logistic exit law"
    Config = HomogenizedConfig
    quick = {
        "n": 8,
        "logistic_beta": [0.0],
        "logistic_d": [32, 64, 128],
        "systems": 2048,
        "simplex_systems": 256,
        "simplex_d": [16, 32, 64],
        "simplex_tau": 3.0,
        "fg_samples": 1024,
        "tradeoff_samples": 256,
        "frozen_d": [8, 16, 32],
        "exit_d": [4],
        "pairs": 400,
        "tradeoff_d": [32],
        "tradeoff_n": [4, 16],
        "tradeoff_beta": [0.0, 4.0, 16.0],
    }

    def plan(self, cfg: HomogenizedConfig) -> list[dict[str, Any]]:
        units: list[dict[str, Any]] = []
        units += [
            {"id": f"logistic-b{b:g}-d{d}", "part": "logistic", "beta": b, "d": d}
            for b in cfg.logistic_beta
            for d in cfg.logistic_d
        ]
        units += [{"id": f"simplex-d{d}", "part": "simplex", "d": d} for d in cfg.simplex_d]
        units += [{"id": f"frozen-d{d}", "part": "frozen", "d": d} for d in cfg.frozen_d]
        units += [{"id": f"exit-d{d}", "part": "exit", "d": d} for d in cfg.exit_d]
        units += [{"id": f"tradeoff-d{d}", "part": "tradeoff", "d": d} for d in cfg.tradeoff_d]
        return units

    def unit_cost(self, cfg: HomogenizedConfig, unit: dict[str, Any]) -> float:
        part, d = unit["part"], unit["d"]
        if part == "logistic":
            k = 1 if unit["beta"] == 0 else cfg.samples
            return cfg.systems * cfg.n * d * k * cfg.tau_max / cfg.dtau * 1e-6
        if part == "simplex":
            return cfg.simplex_systems * cfg.simplex_n * d * cfg.samples * cfg.simplex_tau / cfg.dtau * 1e-6
        if part == "frozen":
            return len(cfg.u0) * cfg.pairs * d * cfg.frozen_tau / cfg.dtau * 1e-6
        if part == "exit":
            return len(cfg.u0) * cfg.pairs * d * cfg.exit_horizon * (d - 1) / cfg.exit_dtau * 1e-6
        return len(cfg.tradeoff_n) * len(cfg.tradeoff_beta) * cfg.tradeoff_samples * d * 1e-6

    def unit_memory(self, cfg: HomogenizedConfig, unit: dict[str, Any], device: str) -> int:
        """Per part. ``logistic``/``simplex``: :func:`simulate_coupled` of ``B`` systems (``x0``, the fine and
        coarse states, both runs' recorded states as lists and stacked, the noise stream with the step's
        normals, the coarse normals and their sum, one step of the limit), then the Gram matrices of the
        recorded states; ``simplex`` first estimates ``f, g`` (``fg_samples`` heads). ``exit``: :func:`simulate`
        of the pairs; ``frozen``: :func:`simulate_coupled` of the pairs. ``tradeoff``: :func:`simplex_fg` for the
        largest ``n``."""
        from ..sizes import itemsize, stream_bytes, uniform_bytes

        part, d, item = unit["part"], int(unit["d"]), itemsize(cfg.dtype)
        if part == "tradeoff":
            ns = [n for n in cfg.tradeoff_n if n <= d]
            return max((_fg_bytes(cfg.tradeoff_samples, n, d) for n in ns), default=0)
        if part in ("frozen", "exit"):
            bsz = len(cfg.u0) * cfg.pairs
            bnd = bsz * 2 * d * item
            step = _limit_step_numbers(bsz, 2, d, 1, True, abar=True) * item
            if part == "frozen":  # coupled: the coarse state besides, the two steps' normals and their sum
                return int(6 * bnd + stream_bytes(bsz, (2 * d,), item, copies=4) + step)
            return int(4 * bnd + stream_bytes(bsz, (2 * d,), item) + step)
        if part == "logistic":
            bsz, n, beta, tau, fg = cfg.systems, cfg.n, float(unit["beta"]), cfg.tau_max, 0
            draw = uniform_bytes(bsz * n, d, item, item)
        else:
            bsz, n, beta, tau = cfg.simplex_systems, cfg.simplex_n, cfg.simplex_beta, cfg.simplex_tau
            fg, draw = _fg_bytes(cfg.fg_samples, n, d), 0
        law = Multihead(beta=beta)
        model = MultiheadLimit(law, samples=cfg.samples, time="diffusive")
        steps, every = self._record(cfg, tau)
        rec = steps // every + 1
        bnd = bsz * n * d * item
        stream = stream_bytes(bsz, model.noise_shape(n, d), item, copies=4, steps=steps)
        step = _limit_step_numbers(bsz, n, d, cfg.samples, law.shared_attention(d)) * item
        sim = 3 * bnd + 2 * rec * bnd + stream + step
        end = bnd + 4 * rec * bnd
        grams = bnd + 2 * rec * bnd + rec * bsz * n * n * item
        return int(max(draw, fg, sim, end, grams))

    def run_unit(
        self, cfg: HomogenizedConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        part = unit["part"]
        if part == "logistic":
            return self._logistic(cfg, unit["beta"], unit["d"], device, progress)
        if part == "simplex":
            return self._simplex(cfg, unit["d"], device, progress)
        if part in ("frozen", "exit"):
            return self._pairs(cfg, part, unit["d"], device, progress)
        return self._tradeoff(cfg, unit["d"], progress)

    # ------------------------------------------------------------------ parts
    def _record(self, cfg: HomogenizedConfig, tau_max: float) -> tuple[int, int]:
        """Even step count and recording interval (the coupled ``2 dtau`` run needs both even)."""
        steps = 2 * max(1, round(tau_max / cfg.dtau / 2))
        every = 2 * max(1, steps // 40)
        return steps, every

    def _logistic(
        self, cfg: HomogenizedConfig, beta: float, d: int, device: str, progress: Progress | None
    ) -> list[dict[str, Any]]:
        dtype = getattr(torch, cfg.dtype)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "logistic-x0", d))
        x0 = uniform((cfg.systems, cfg.n), d, gen, dtype).to(device)
        model = MultiheadLimit(Multihead(beta=beta), samples=cfg.samples, time="diffusive")
        steps, every = self._record(cfg, cfg.tau_max)
        fine, coarse = simulate_coupled(
            model, x0, cfg.dtau, steps, cfg.seed, ("logistic", beta, d), every, **_cb(progress, steps)
        )
        assert fine.xs is not None and coarse.xs is not None
        u = gram(fine.xs).mean((-1, -2)).double().cpu().numpy()  # (K, B)
        uc = gram(coarse.xs).mean((-1, -2)).double().cpu().numpy()
        tau = np.asarray(fine.t)
        ode = th.logistic_overlap(u[0][None, :], tau[:, None])
        dev = 2.0 * u - uc - ode  # Richardson: the O(dtau) bias of Euler-Maruyama removed
        rows = []
        for k, t in enumerate(tau):
            rows.append(
                {
                    "part": "logistic",
                    "beta": beta,
                    "d": d,
                    "tau": float(t),
                    "mc": float(u[k].mean()),
                    "ode": float(ode[k].mean()),
                    "mean_dev": float(dev[k].mean()),
                    "se_dev": float(dev[k].std() / math.sqrt(dev.shape[1])),
                    "rms_dev": float(np.sqrt(((u[k] - ode[k]) ** 2).mean())),
                    "step_bias": float((u[k] - uc[k]).mean()),
                }
            )
        return rows

    def _simplex(self, cfg: HomogenizedConfig, d: int, device: str, progress: Progress | None) -> list[dict[str, Any]]:
        dtype = getattr(torch, cfg.dtype)
        n, beta = cfg.simplex_n, cfg.simplex_beta
        grid = np.linspace(cfg.gamma0, 1.0, 41)
        rates = th.simplex_fg(n, d, beta, grid, cfg.fg_samples, derive_seed(cfg.seed, "fg", d))
        x0 = simplex(n, d, cfg.gamma0, dtype).expand(cfg.simplex_systems, n, d).contiguous().to(device)
        model = MultiheadLimit(Multihead(beta=beta), samples=cfg.samples, time="diffusive")
        steps, every = self._record(cfg, cfg.simplex_tau)
        fine, coarse = simulate_coupled(
            model, x0, cfg.dtau, steps, cfg.seed, ("simplex", d), every, **_cb(progress, steps)
        )
        assert fine.xs is not None and coarse.xs is not None
        gf = _offdiag_mean(gram(fine.xs).double()).cpu().numpy()  # (K, B)
        gc = _offdiag_mean(gram(coarse.xs).double()).cpu().numpy()
        gm = 2.0 * gf - gc  # Richardson
        tau = np.asarray(fine.t)
        from ..stats import z_for

        z = z_for(cfg.level)
        ode = th.simplex_overlap(rates, cfg.gamma0, tau)
        lo = th.simplex_overlap(rates, cfg.gamma0, tau, z=-z)
        hi = th.simplex_overlap(rates, cfg.gamma0, tau, z=z)
        rows = []
        for k, t in enumerate(tau):
            dev = gm[k] - ode[k]
            rows.append(
                {
                    "part": "simplex",
                    "beta": beta,
                    "d": d,
                    "tau": float(t),
                    "mc": float(gm[k].mean()),
                    "ode": float(ode[k]),
                    "ode_low": float(lo[k]),
                    "ode_high": float(hi[k]),
                    "mean_dev": float(dev.mean()),
                    "se_dev": float(dev.std() / math.sqrt(dev.size)),
                    "rms_dev": float(np.sqrt(((gf[k] - ode[k]) ** 2).mean())),
                    "step_bias": float((gf[k] - gc[k]).mean()),
                    "f0": float(rates.f[0]),
                    "g0": float(rates.g[0]),
                }
            )
        return rows

    def _pairs(
        self, cfg: HomogenizedConfig, part: str, d: int, device: str, progress: Progress | None
    ) -> list[dict[str, Any]]:
        """Self-attending pairs: displacement at ``frozen_tau`` (``frozen``) or the exit law (``exit``).

        Steps are small in absolute diffusive time: each token moves by about
        ``sqrt(dtau)`` per step (a near-rotation common to both), whatever ``d``.
        ``frozen`` also records the mean squared displacement of the cotangent
        ``z = rho / sqrt(1 - rho^2)``, whose exact value is :func:`cot_msd`.
        Euler's ``O(dtau)`` bias of it is about -1.5 % at ``dtau = 0.02`` for
        ``d >= 32`` (measured: ``fine - coarse`` = +1.3 ± 0.4 % at ``d = 32``,
        +1.8 ± 0.5 % at ``d = 128``), the size of the pooled resolution: a
        coupled ``2 dtau`` run on the same Brownian path
        (:func:`simulate_coupled`) removes it by Richardson extrapolation,
        ``2 fine - coarse`` per pair, the standard error from these paired values.
        ``exit`` also stores the exact exit law of the simulated model at
        ``beta_self`` (:func:`exit_law_finite_beta`).
        """
        dtype = getattr(torch, cfg.dtype)
        eye = torch.eye(d, dtype=dtype, device=device)
        model = MultiheadLimit(Multihead(beta=cfg.beta_self, sigma_a=0.0, abar=eye), samples=1, time="diffusive")
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, part, "x0", d))
        x0 = torch.cat([pair_with_overlap(cfg.pairs, d, u, gen, dtype) for u in cfg.u0]).to(device)
        u0 = np.repeat(np.asarray(cfg.u0), cfg.pairs)
        horizon = cfg.frozen_tau if part == "frozen" else cfg.exit_horizon * (d - 1)
        dtau = cfg.dtau if part == "frozen" else cfg.exit_dtau
        rho_c = None
        if part == "frozen":
            steps = 2 * max(5, math.ceil(horizon / dtau / 2))  # even, for the coupled 2 dtau run
            cb = _cb(progress, steps)
            fine, coarse = simulate_coupled(model, x0, horizon / steps, steps, cfg.seed, (part, d), **cb)
            x = fine.x
            rho_c = (coarse.x[:, 0] * coarse.x[:, 1]).sum(-1).double().cpu().numpy()
        else:
            steps = max(10, math.ceil(horizon / dtau))
            x = simulate(model, x0, horizon / steps, steps, cfg.seed, (part, d), **_cb(progress, steps)).x
        rho = (x[:, 0] * x[:, 1]).sum(-1).double().cpu().numpy()
        exact = exit_law_finite_beta(d, cfg.beta_self) if part == "exit" else None
        rows: list[dict[str, Any]] = []
        for u in cfg.u0:
            sel = u0 == u
            row: dict[str, Any] = {"part": part, "d": d, "u0": u, "tau": horizon, "runs": int(sel.sum())}
            if part == "frozen":
                assert rho_c is not None
                z0 = _cot(np.asarray(u))
                sq, sq_c = (_cot(rho[sel]) - z0) ** 2, (_cot(rho_c[sel]) - z0) ** 2
                rich = 2.0 * sq - sq_c  # Richardson, per pair
                row["rms_disp"] = float(np.sqrt(((rho[sel] - u) ** 2).mean()))
                row["rms_disp_theory"] = math.sqrt(2 * horizon / (d - 1)) * (1 - u * u)
                row["msd_cot"] = float(rich.mean())
                row["msd_cot_se"] = float(rich.std(ddof=1) / math.sqrt(len(rich)))
                row["msd_cot_fine"] = float(sq.mean())
                row["msd_cot_step_bias"] = float((sq - sq_c).mean())
                row["msd_cot_step_bias_se"] = float((sq - sq_c).std(ddof=1) / math.sqrt(len(sq)))
                row["msd_cot_theory"] = cot_msd(u, horizon / (d - 1))  # the logistic SDE at t = tau / (d - 1)
            else:
                assert exact is not None
                plus = int((rho[sel] > 0).sum())
                row["plus"] = plus
                row["p_plus_mc"] = plus / int(sel.sum())
                row["p_plus_theory"] = float(th.logistic_exit_plus(u))
                row["p_plus_exact"] = float(exact.p_collapse(u))
                row["undecided"] = float((np.abs(rho[sel]) < 0.99).mean())
            rows.append(row)
        return rows

    def _tradeoff(self, cfg: HomogenizedConfig, d: int, progress: Progress | None) -> list[dict[str, Any]]:
        rows = []
        ns = [n for n in cfg.tradeoff_n if n <= d]
        grid = np.linspace(0.0, 1.0, 21)
        total = len(ns) * len(cfg.tradeoff_beta)
        for i, n in enumerate(ns):
            for j, beta in enumerate(cfg.tradeoff_beta):
                rates = th.simplex_fg(n, d, beta, grid, cfg.tradeoff_samples, derive_seed(cfg.seed, "map", d, n, beta))
                t_half = th.half_time(rates)
                u0, u1 = 1.0 / n, 0.5 + 0.5 / n  # beta = 0: u = gamma + (1 - gamma)/n is logistic
                closed = math.log(u1 / (1 - u1)) - math.log(u0 / (1 - u0))
                rows.append(
                    {
                        "part": "tradeoff",
                        "d": d,
                        "n": n,
                        "beta": beta,
                        "tau_half": t_half,
                        "tau_half_beta0_closed": closed,
                        "f0": float(rates.f[0]),
                        "g0": float(rates.g[0]),
                    }
                )
                if progress:
                    progress((i * len(cfg.tradeoff_beta) + j + 1) / total)
        return rows

    # ------------------------------------------------------------------ verdict
    @staticmethod
    def _end(table: pd.DataFrame, part: str) -> pd.DataFrame:
        sub = table[table["part"] == part]
        return sub[sub["tau"] == sub.groupby(["beta", "d"])["tau"].transform("max")]

    def slopes(self, cfg: HomogenizedConfig, table: pd.DataFrame) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        end = self._end(table, "logistic")
        for b in cfg.logistic_beta:
            s = end[end["beta"] == b].sort_values("d")
            out[f"logistic_rms_b{b:g}"] = loglog_slope(s["d"], s["rms_dev"])
            out[f"logistic_mean_b{b:g}"] = loglog_slope(s["d"], s["mean_dev"], s["se_dev"])
        sim = table[table["part"] == "simplex"]
        sim = table[table["part"] == "simplex"]
        first = sim[sim["d"] == sim["d"].min()]
        t_star = float(first["tau"].to_numpy()[np.argmax(first["mean_dev"].abs().to_numpy())])
        at = sim[np.isclose(sim["tau"], t_star)].sort_values("d")
        out["simplex_mean"] = loglog_slope(at["d"], at["mean_dev"], at["se_dev"])
        out["simplex_tau_star"] = (t_star, float("nan"))
        fr = table[table["part"] == "frozen"].groupby("d")["rms_disp"].apply(lambda v: float(np.sqrt((v**2).mean())))
        out["frozen_rms"] = loglog_slope(fr.index.to_numpy() - 1, fr.to_numpy())
        return out

    def verdict(self, cfg: HomogenizedConfig, table: pd.DataFrame) -> dict[str, Any]:
        """Checks (every one from :mod:`tokensde.experiments.verdict`).

        * the four (or ``2 len(logistic_beta) + 2``) fitted slopes within
          ``max(tol, z se)`` of ``-1/2`` or ``-1``, ``z`` the Bonferroni quantile
          over all of them (``tol``: pre-asymptotic curvature over the ``d`` range);
        * frozen pairs: the mean squared displacement of the cotangent of their
          angle against its exact value :func:`cot_msd`, per ``(d, u_0)`` cell at
          the family-wise level and pooled per ``d`` (relative differences);
        * exit law: per cell in family-wise Wilson bands and pooled per ``d``,
          against the exact law of the simulated model at ``beta_self``
          (``arcsin(u_0)/pi + 1/2`` at ``beta = infinity``) (:func:`exit_law_finite_beta`), twice: the excess
          of exits to ``+1`` and the excess of exits to the side of ``sign(u_0)``
          (the symmetry ``u -> -u`` makes a defect that pulls ``P`` towards or
          away from ``1/2`` cancel in the first sum); undecided pairs at most 1 %;
        * the trade-off map at ``beta = 0`` equals its closed form to ``1e-5``.
        """
        sl = self.slopes(cfg, table)
        m = 2 * len(cfg.logistic_beta) + 2
        tol_src = f"; model tolerance tol = {cfg.tol:g} (config): pre-asymptotic curvature over the d range"

        def slope(name: str, key: str, expected: float, what: str, extra: str = "") -> Check:
            s, se = sl[key]
            c = slope_within(name, s, se, expected, cfg.tol, cfg.level, m, what=what)
            return replace(c, detail=c.detail + extra, source=c.source + tol_src)

        checks: list[Check] = []
        for b in cfg.logistic_beta:
            checks.append(
                slope(
                    f"beta={b:g}: fluctuation of u around the logistic curve ~ d^-1/2",
                    f"logistic_rms_b{b:g}",
                    -0.5,
                    f"RMS deviation at tau={cfg.tau_max:g}: slope in d",
                )
            )
            checks.append(
                slope(
                    f"beta={b:g}: mean of u follows the logistic curve up to O(1/d)",
                    f"logistic_mean_b{b:g}",
                    -1.0,
                    f"|E u - u_ode| at tau={cfg.tau_max:g} (Richardson): slope in d",
                )
            )
        sim = table[table["part"] == "simplex"]
        big = sim[sim["d"] == sim["d"].max()]
        checks.append(
            slope(
                "simplex overlap follows the comparison ODE up to O(1/d)",
                "simplex_mean",
                -1.0,
                f"|E gamma - gamma_ode| at tau={sl['simplex_tau_star'][0]:g} (largest at the smallest d): slope in d",
                f"; sup over tau at d={int(sim['d'].max())}: {big['mean_dev'].abs().max():.4f}",
            )
        )
        fr = table[table["part"] == "frozen"]
        checks.append(
            slope(
                "self-attending overlaps are frozen for tau << d",
                "frozen_rms",
                -0.5,
                f"RMS displacement at tau={cfg.frozen_tau:g}: slope in d-1",
                f"; measured/first-order theory {fr['rms_disp'].sum() / fr['rms_disp_theory'].sum():.3f}",
            )
        )
        if _have(fr, ("msd_cot", "msd_cot_se", "msd_cot_theory"), "frozen pairs: E(z_t - z_0)^2", checks):
            cells = [f"d={int(r.d)}, u0={r.u0:g}" for r in fr.itertuples()]
            inv = 1.0 / fr["msd_cot_theory"].to_numpy()
            msd = (fr["msd_cot"], fr["msd_cot_se"], fr["msd_cot_theory"])
            checks.append(
                pooled_z(
                    "frozen pairs: E(z_t - z_0)^2 of the cotangent z = rho/sqrt(1-rho^2) is exact, per cell",
                    *msd,
                    cells,
                    cfg.level,
                    "cell",
                    scale=inv,
                )
            )
            checks.append(
                pooled_z(
                    "frozen pairs: E(z_t - z_0)^2 of the cotangent, pooled per d (sum of measured/exact)",
                    *msd,
                    fr["d"].astype(int).tolist(),
                    cfg.level,
                    "d",
                    scale=inv,
                )
            )
        ex = table[table["part"] == "exit"]
        runs = ex["runs"].to_numpy(dtype=float)
        # per cell against the exact law of the simulated model (beta_self finite) where the table has it: the
        # beta = infinity law arcsin(u0)/pi + 1/2 is 0.3 to 0.85 standard errors away from it per cell
        finite = "p_plus_exact" in ex and bool(np.isfinite(ex["p_plus_exact"]).all())
        checks.append(
            binomial_cells(
                "exit law per (d, u0) cell: "
                + (
                    f"the exact law at beta_self = {cfg.beta_self:g} (arcsin(u0)/pi + 1/2 at beta = infinity)"
                    if finite
                    else "arcsin(u0)/pi + 1/2"
                ),
                ex["plus"].to_numpy(),
                runs,
                (ex["p_plus_exact"] if finite else ex["p_plus_theory"]).to_numpy(),
                [f"d={int(r.d)}, u0={r.u0:g}" for r in ex.itertuples()],
                cfg.level,
            )
        )
        if _have(ex, ("p_plus_exact",), "exit law pooled per d", checks):
            exact = ex["p_plus_exact"].to_numpy()
            gap = float(np.abs(exact - ex["p_plus_theory"].to_numpy()).max()) if len(ex) else float("nan")
            se_exact = np.sqrt(exact * (1.0 - exact) / runs)
            fams = ex["d"].astype(int).tolist()
            for name, w in (
                ("exits to +1", runs),
                ("exits to the side of sign(u0)", np.sign(ex["u0"].to_numpy()) * runs),
            ):
                c = pooled_z(
                    f"exit law pooled per d: {name} against the exact law at beta_self = {cfg.beta_self:g}",
                    ex["p_plus_mc"],
                    se_exact,
                    exact,
                    fams,
                    cfg.level,
                    "d",
                    scale=w,
                )
                checks.append(
                    replace(
                        c, detail=c.detail + f"; the finite-beta law differs from arcsin(u0)/pi + 1/2 by <= {gap:.4f}"
                    )
                )
        checks.append(
            at_most(
                "exit law: pairs still undecided at the horizon",
                float(ex["undecided"].max()) if len(ex) else float("nan"),
                0.01,
                "largest fraction with |rho| < 0.99",
                f"stated precision: 1 % of a cell (horizon {cfg.exit_horizon:g} (d-1))",
            )
        )
        tr = table[(table["part"] == "tradeoff") & (table["beta"] == 0.0)]
        if not tr.empty:
            err = float((tr["tau_half"] / tr["tau_half_beta0_closed"] - 1).abs().max())
            checks.append(
                at_most(
                    "trade-off map at beta = 0 equals the closed form",
                    err,
                    1e-5,
                    "max relative error of the half-overlap time",
                    "ODE solver and f, g = 1/n at beta = 0: exact up to the integrator's tolerance",
                    ".2e",
                )
            )
        notes = [
            "slopes: tolerance max(tol, z se), z Bonferroni over the fitted slopes",
            "exit law: cells and pooled tests use the exact law of the simulated model at beta_self (a leak of "
            "attention next to collapse, O(beta^-1/2), moves it from the beta = infinity law arcsin(u0)/pi + 1/2)",
        ]
        return verdict(checks, notes)

    def trajectory(self, cfg: HomogenizedConfig, device: str = "cpu") -> dict[str, Any]:
        """The homogenized limit (Gaussian setting) for ``n`` tokens at the smallest ``d`` and largest ``beta``."""
        d, beta = cfg.logistic_d[0], cfg.logistic_beta[-1]
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "trajectory"))
        x0 = uniform((1, cfg.n), d, gen, torch.float64).to(device)
        model = MultiheadLimit(Multihead(beta=beta), samples=cfg.samples, time="diffusive")
        title = f"model B (homogenized limit), {cfg.n} tokens, d = {d}, beta = {beta:g}"
        steps = round(cfg.tau_max / cfg.dtau)
        return recorded(model, x0, cfg.dtau, steps, cfg.seed, ("trajectory",), title, time_label="tau")

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The report's interactive (plotly) figures (beside the static ones of :meth:`figures`)."""
        return _interactive_figures(table, cfg)

    def figures(self, cfg: HomogenizedConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        figs: dict[str, Any] = {}
        lg = table[table["part"] == "logistic"]
        fig, axes = plt.subplots(1, len(cfg.logistic_beta) + 1, figsize=(4.2 * (len(cfg.logistic_beta) + 1), 3.8))
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(cfg.logistic_d)))
        for ax, b in zip(axes[:-1], cfg.logistic_beta, strict=True):
            for c, d in zip(colors, cfg.logistic_d, strict=True):
                s = lg[(lg["beta"] == b) & (lg["d"] == d)]
                ax.plot(s["tau"], s["ode"], color=c, ls="--", lw=1)
                ax.fill_between(s["tau"], s["mc"] - s["rms_dev"], s["mc"] + s["rms_dev"], color=c, alpha=0.15)
                ax.plot(s["tau"], s["mc"], color=c, label=f"d={d}")
            ax.set_title(rf"mean overlap, $\beta$={b:g} (dashed: logistic)")
            ax.set_xlabel(r"$\tau$")
            ax.legend(fontsize=7)
        ax = axes[-1]
        end = self._end(table, "logistic")
        for b in cfg.logistic_beta:
            s = end[end["beta"] == b].sort_values("d")
            ax.loglog(s["d"], s["rms_dev"], "o-", label=rf"RMS dev, $\beta$={b:g}")
            ax.loglog(s["d"], s["mean_dev"].abs(), "s--", label=rf"|mean dev|, $\beta$={b:g}")
        ax.set_xlabel("d")
        ax.set_title(r"deviation at $\tau_{max}$ (slopes -1/2, -1)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        figs["logistic"] = fig

        fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.8))
        sim = table[table["part"] == "simplex"]
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(cfg.simplex_d)))
        for c, d in zip(colors, cfg.simplex_d, strict=True):
            s = sim[sim["d"] == d]
            axes[0].plot(s["tau"], s["mc"], color=c, label=f"MC d={d}")
            axes[0].plot(s["tau"], s["ode"], color=c, ls="--", lw=1)
            axes[0].fill_between(s["tau"], s["ode_low"], s["ode_high"], color=c, alpha=0.3)
        axes[0].set_title(rf"simplex overlap, n={cfg.simplex_n}, $\beta$={cfg.simplex_beta:g} (dashed: ODE)")
        axes[0].set_xlabel(r"$\tau$")
        axes[0].legend(fontsize=7)
        fr = table[table["part"] == "exit"]
        for d in cfg.exit_d:
            s = fr[fr["d"] == d]
            axes[1].errorbar(
                s["u0"],
                s["p_plus_mc"],
                yerr=2.576 * np.sqrt(s["p_plus_mc"] * (1 - s["p_plus_mc"]) / s["runs"]),
                fmt="o",
                capsize=2,
                label=f"d={d}",
            )
        u = np.linspace(-0.99, 0.99, 200)
        axes[1].plot(u, th.logistic_exit_plus(u), "k-", lw=1, label=r"$\arcsin(u_0)/\pi + 1/2$")
        axes[1].set_xlabel(r"$u_0$")
        axes[1].set_title(r"self-attending pairs: $P(u \to +1)$")
        axes[1].legend(fontsize=7)
        tr = table[table["part"] == "tradeoff"]
        for d in cfg.tradeoff_d:
            for n in sorted(tr[tr["d"] == d]["n"].unique()):
                s = tr[(tr["d"] == d) & (tr["n"] == n)]
                axes[2].plot(s["beta"], s["tau_half"], "o-", label=f"d={d}, n={n}")
        axes[2].set_yscale("log")
        axes[2].set_xlabel(r"$\beta$")
        axes[2].set_title(r"trade-off: time to overlap 1/2 (simplex ODE)")
        axes[2].legend(fontsize=6)
        fig.tight_layout()
        figs["homogenized"] = fig
        return figs


def _have(part: pd.DataFrame, columns: tuple[str, ...], name: str, checks: list[Check]) -> bool:
    """Whether ``part`` has ``columns``; if not, a failed check saying so is appended (a table from an older
    version, whose units did not record them: rerun those units)."""
    missing = [c for c in columns if c not in part.columns]
    if missing:
        checks.append(check(name, False, f"columns {missing} absent from the table (recorded by an older version)"))
    return not missing


def _cb(progress: Progress | None, steps: int) -> dict[str, Any]:
    if progress is None:
        return {}
    every = max(1, steps // 50)
    return {"on_step": lambda k: progress((k + 1) / steps) if (k + 1) % every == 0 else None}


def _interactive_figures(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's interactive (plotly) figures, from the results table and the run's JSON config."""
    go = plotting.go()
    out: dict[str, Any] = {}
    lg = t[t["part"] == "logistic"]
    fig = go.Figure()
    for (b, d), s in lg.groupby(["beta", "d"]):
        fig.add_trace(go.Scatter(x=s["tau"], y=s["mc"], mode="lines", name=f"MC beta={b:g} d={d}"))
        fig.add_trace(
            go.Scatter(x=s["tau"], y=s["ode"], mode="lines", line={"dash": "dash"}, name=f"ODE beta={b:g} d={d}")
        )
    fig.update_layout(title="mean overlap u against the logistic curve", xaxis_title="tau")
    out["logistic"] = fig
    end = lg[lg["tau"] == lg.groupby(["beta", "d"])["tau"].transform("max")]
    fig = go.Figure()
    for b, s in end.groupby("beta"):
        s = s.sort_values("d")
        fig.add_trace(go.Scatter(x=s["d"], y=s["rms_dev"], mode="lines+markers", name=f"RMS deviation beta={b:g}"))
        fig.add_trace(
            go.Scatter(x=s["d"], y=s["mean_dev"].abs(), mode="lines+markers", name=f"|mean deviation| beta={b:g}")
        )
    out["logistic deviation"] = plotting.loglog(fig, title="deviation from the logistic curve (slopes -1/2 and -1)")
    sim = t[t["part"] == "simplex"]
    fig = go.Figure()
    for d, s in sim.groupby("d"):
        fig.add_trace(go.Scatter(x=s["tau"], y=s["mc"], mode="lines", name=f"MC d={d}"))
        fig.add_trace(go.Scatter(x=s["tau"], y=s["ode"], mode="lines", line={"dash": "dash"}, name=f"ODE d={d}"))
    fig.update_layout(title="simplex common overlap against the comparison ODE", xaxis_title="tau")
    out["simplex"] = fig
    ex = t[t["part"] == "exit"]
    fig = go.Figure()
    u = np.linspace(-0.99, 0.99, 200)
    fig.add_trace(go.Scatter(x=u, y=np.arcsin(u) / np.pi + 0.5, mode="lines", name="arcsin(u0)/pi + 1/2"))
    for d, s in ex.groupby("d"):
        fig.add_trace(go.Scatter(x=s["u0"], y=s["p_plus_mc"], mode="markers", name=f"MC d={d}"))
    fig.update_layout(title="self-attending pairs: P(u -> +1)", xaxis_title="u0")
    out["exit law"] = fig
    tr = t[t["part"] == "tradeoff"]
    if not tr.empty:
        fig = go.Figure()
        for (d, n), s in tr.groupby(["d", "n"]):
            fig.add_trace(go.Scatter(x=s["beta"], y=s["tau_half"], mode="lines+markers", name=f"d={d} n={n}"))
        fig.update_yaxes(type="log")
        fig.update_layout(title="trade-off: diffusive time to overlap 1/2", xaxis_title="beta")
        out["trade-off"] = fig
    return out
