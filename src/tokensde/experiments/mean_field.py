r"""``mean-field``: the conditional law ``mu_t`` of the tokens given the common noise, computed directly on ``S^1``.

In the large-``n`` limit the empirical measure of the tokens converges, given the common noise, to a random
measure ``mu_t`` that solves a stochastic transport equation (docs/meanfield.md). This experiment computes
``mu_t`` itself for models A and C on the circle (:mod:`tokensde.meanfield.circle`): an Eulerian spectral
density solver and a Lagrangian solver of deterministically quantised particles, both by one Wong–Zakai
scheme, both driven through the engine by the same :class:`~tokensde.engine.BrownianPath`.

Parts (one unit each, per model):

* ``snap``: the density for ``draws`` noise draws from a von Mises start: snapshots for the figure (``theta``
  across, time down), mass, positivity, the spectral tail and the time until the solution is flagged
  under-resolved, and the spread of ``mu_t`` (circular standard deviation ``sqrt(-2 log R)``,
  ``R = |int e^{i theta} mu|``).
* ``cross``: Eulerian and Lagrangian (``particles`` mid-quantiles) on one path: ``W_1`` between them at every
  saved time, against the quantisation error of the start.
* ``spectral``: at a short horizon, the Eulerian density on grids ``M`` against a fine reference on one path.
* ``order``: weak order in ``dt``: ``E[F(dt) - F(2 dt)]`` from coupled runs on ``path`` and
  ``path.coarsen(2)`` (``F = int cos theta mu_T``), over ``order_draws`` draws, at several ``dt``.
* ``chaos``: propagation of chaos against the limit: ``W_1`` between ``N`` i.i.d. tokens (the ``N``-token
  system itself: the particle velocity is the mean-field one on their empirical measure) and the Eulerian
  ``mu_t`` on the same noise, against ``N``.
* ``concentration`` (model C): the spread of ``mu_t`` on a long horizon (Lagrangian quantiles), against the
  synchronization exponent ``lambda_1`` of paper C.

Verdict (family-wise ``level``): mass conserved; Eulerian and Lagrangian agree while resolved; spectral
convergence in ``M``; weak order 1 in ``dt``; chaos slope ``-1/2``; model C's concentration rate ``lambda_1``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator
from scipy import special

from ..engine import BrownianPath
from ..meanfield import circle as mf
from ..noise import derive_seed
from ..stats import bonferroni_z, loglog_slope
from ..theory import synchronization as theory_c
from . import plotting
from . import verdict as V
from .base import Experiment, ExperimentConfig, Progress

__all__ = ["MeanField", "MeanFieldConfig"]

PARTS = ("snap", "cross", "spectral", "order", "chaos", "concentration", "sphere", "split")

#: the field of the weak-order study: ``K(delta) = 0.1 cos(3 delta)`` (``kappa(u) = 0.1 (4u^2 - 3)``), two noise
#: fields that do not commute, so that the scheme's ``O(dt)`` bias is large enough to measure (the biases for the
#: ReLU and tanh fields and model A are below the Monte-Carlo error of any affordable number of draws)
ORDER_MODEL = mf.CircleC(lambda u: 0.1 * (4.0 * np.asarray(u) ** 2 - 3.0), c=0.0, modes=3)


class MeanFieldConfig(ExperimentConfig):
    """Configuration of ``mean-field`` (every field has a default)."""

    models: list[Literal["A", "C"]] = Field(default=["A", "C"], min_length=1, description="models: A and/or C")
    beta_a: float = Field(default=1.0, ge=0.0, le=10.0, description="model A: inverse temperature, in [0, 10]")
    sigma_a: float = Field(default=1.0, gt=0.0, le=3.0, description="model A: noise scale, in (0, 3]")
    activation: Literal["relu", "tanh", "silu", "sigmoid", "gelu"] = Field(
        default="relu", description="model C: activation of the MLP blocks"
    )
    c: float = Field(default=0.0, ge=-2.0, le=2.0, description="model C: value scale of the attention, in [-2, 2]")
    beta_c: float = Field(
        default=1.0, ge=0.0, le=10.0, description="model C: attention inverse temperature, in [0, 10]"
    )
    modes: int = Field(default=32, ge=4, le=512, description="model C: Fourier modes of the noise field, in [4, 512]")
    kappa0: float = Field(default=1.0, ge=0.0, le=20.0, description="concentration of the von Mises start, in [0, 20]")
    grid: int = Field(default=384, ge=48, le=8192, description="Eulerian grid points M, in [48, 8192]")
    particles: int = Field(default=1024, ge=16, le=65536, description="Lagrangian quantile particles, in [16, 65536]")
    T: float = Field(default=3.0, gt=0.0, le=100.0, description="horizon of the snapshots, in (0, 100]")
    dt: float = Field(default=0.01, gt=0.0, le=0.1, description="time step, in (0, 0.1]")
    draws: int = Field(default=6, ge=1, le=256, description="noise draws of the snapshots, in [1, 256]")
    spectral_grids: list[int] = Field(
        default=[32, 40, 48, 56, 64], min_length=3, description="grids of the spectral study, each in [12, 1024]"
    )
    spectral_T: float = Field(default=0.5, gt=0.0, le=10.0, description="horizon of the spectral study, in (0, 10]")
    order_dt: list[float] = Field(
        default=[0.25, 0.125, 0.0625, 0.03125],
        min_length=3,
        description="steps of the weak-order study, each in (0, 0.5]",
    )
    order_T: float = Field(default=1.0, gt=0.0, le=10.0, description="horizon of the weak-order study, in (0, 10]")
    order_draws: int = Field(
        default=16384, ge=256, le=1_000_000, description="coupled pairs of runs of the order study, in [256, 1e6]"
    )
    chaos_n: list[int] = Field(
        default=[32, 64, 128, 256, 512], min_length=3, description="token counts N of the chaos study, each in [4, 1e5]"
    )
    chaos_reps: int = Field(default=64, ge=4, le=10_000, description="i.i.d. starts per N, in [4, 1e4]")
    chaos_T: float = Field(default=0.5, gt=0.0, le=10.0, description="time of the chaos study, in (0, 10]")
    conc_T: float = Field(default=30.0, gt=0.0, le=500.0, description="horizon of the concentration study, in (0, 500]")
    conc_dt: float = Field(default=0.025, gt=0.0, le=0.2, description="step of the concentration study, in (0, 0.2]")
    conc_spread0: float = Field(
        default=0.01, gt=0.0, le=0.5, description="spread of the concentration study's start, in (0, 0.5]"
    )
    conc_draws: int = Field(
        default=256, ge=4, le=4096, description="noise draws of the concentration study, in [4, 4096]"
    )
    split_T: float = Field(default=30.0, gt=0.0, le=500.0, description="model A: horizon of the splitting study")
    split_draws: int = Field(default=32, ge=4, le=4096, description="model A: noise draws of the splitting study")
    sphere_L: int = Field(
        default=32, ge=8, le=256, description="S^2: harmonic degree of the Eulerian grid, in [8, 256]"
    )
    sphere_noise_degree: int = Field(default=4, ge=1, le=64, description="S^2: noise field degree, in [1, 64]")
    sphere_particles: int = Field(default=800, ge=50, le=20000, description="S^2: quantised particles, in [50, 2e4]")
    sphere_conc_systems: int = Field(
        default=256, ge=8, le=8192, description="S^2: systems of the concentration study, in [8, 8192]"
    )
    sphere_conc_T: float = Field(default=4.0, gt=0.0, le=100.0, description="S^2: concentration horizon, in (0, 100]")
    level: float = Field(default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level, in (0.5, 1)")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")

    @field_validator("spectral_grids")
    @classmethod
    def _grids(cls, v: list[int]) -> list[int]:
        if any(not 12 <= m <= 1024 for m in v):
            raise ValueError(f"each in [12, 1024], got {v}")
        return _distinct(sorted(v))

    @field_validator("order_dt")
    @classmethod
    def _dts(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < x <= 0.5 for x in v):
            raise ValueError(f"each in (0, 0.5], got {v}")
        return _distinct(sorted(v, reverse=True))

    @field_validator("chaos_n")
    @classmethod
    def _ns(cls, v: list[int]) -> list[int]:
        if any(not 4 <= n <= 100_000 for n in v):
            raise ValueError(f"each in [4, 100000], got {v}")
        return _distinct(sorted(v))


def _distinct(v: list[Any]) -> list[Any]:
    if len(set(v)) != len(v):
        raise ValueError(f"values must be distinct (a slope is fitted through them), got {v}")
    return v


def model_of(cfg: MeanFieldConfig, name: str) -> mf.CircleModel:
    """The model on ``S^1``: A (``beta_a``, ``sigma_a``, no mean value matrix) or C (``activation``'s kernel, d = 2)."""
    if name == "A":
        return mf.CircleA(beta=cfg.beta_a, sigma=cfg.sigma_a, vbar=0.0)
    k = theory_c.kernel(cfg.activation, 2)
    return mf.CircleC(kappa=k.kappa, beta=cfg.beta_c, c=cfg.c, modes=cfg.modes)


def von_mises(cfg: MeanFieldConfig, m: int, systems: int = 1) -> torch.Tensor:
    """The start: the von Mises density of concentration ``kappa0`` about 0 on ``m`` grid points, ``(systems, m)``."""
    th = (2.0 * math.pi / m) * torch.arange(m, dtype=torch.float64)
    f = torch.exp(cfg.kappa0 * (torch.cos(th) - 1.0)) / (2.0 * math.pi * float(special.i0e(cfg.kappa0)))
    return f.expand(systems, m).contiguous()


def _path(cfg: MeanFieldConfig, model: mf.CircleModel, systems: int, *key: Any) -> BrownianPath:
    return BrownianPath(cfg.seed, ("mean-field", *key), systems, (model.noise_size,), torch.float64)


def spread(states: torch.Tensor, eulerian: bool) -> np.ndarray:
    """Spread of densities ``(..., M)`` (circular standard deviation ``sqrt(-2 log R)``, ``R = |int e^{i theta} f|``)
    or of particle angles ``(..., N)`` (root-mean-square angle to their circular mean, accurate however small)."""
    if eulerian:
        m = states.shape[-1]
        th = (2.0 * math.pi / m) * torch.arange(m, dtype=states.dtype)
        z = (states * torch.exp(1j * th)).sum(-1) * (2.0 * math.pi / m)
        r = z.abs().clamp(1e-300, 1.0)
        return np.sqrt(np.maximum(-2.0 * np.log(r.numpy()), 0.0))
    mean = torch.angle(torch.exp(1j * states).mean(-1, keepdim=True))
    d = torch.remainder(states - mean + math.pi, 2.0 * math.pi) - math.pi
    return np.sqrt((d * d).mean(-1).numpy())


def _split(f: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per density ``(B, M)``: the larger of the masses of the two antipodal half-circles centred on the densest point,
    and the mass within ``pi/8`` of that point or its antipode."""
    m = f.shape[-1]
    j = f.argmax(-1)
    th = (2.0 * math.pi / m) * torch.arange(m, dtype=f.dtype)
    d = torch.remainder(th.unsqueeze(0) - th[j].unsqueeze(-1) + math.pi, 2.0 * math.pi) - math.pi  # in [-pi, pi)
    w = f * (2.0 * math.pi / m)
    near = (w * (d.abs() < math.pi / 2)).sum(-1)
    atoms = (w * ((d.abs() < math.pi / 8) | (d.abs() > 7 * math.pi / 8))).sum(-1)
    return torch.maximum(near, 1.0 - near).numpy(), atoms.numpy()


class MeanField(Experiment):
    name = "mean-field"
    summary = "the conditional law mu_t given the common noise on S^1 (models A and C): Eulerian vs Lagrangian"
    Config = MeanFieldConfig
    quick = {
        "grid": 192,
        "particles": 256,
        "T": 1.5,
        "dt": 0.02,
        "draws": 2,
        "spectral_grids": [32, 40, 48],
        "order_draws": 4096,
        "chaos_n": [16, 32, 64, 128],
        "chaos_reps": 32,
        "conc_T": 20.0,
        "conc_draws": 128,
        "split_T": 20.0,
        "split_draws": 16,
        "sphere_L": 24,
        "sphere_particles": 400,
        "sphere_conc_systems": 128,
    }

    def plan(self, cfg: MeanFieldConfig) -> list[dict[str, Any]]:
        units = []
        for model in cfg.models:
            for part in PARTS:
                if (part in ("concentration", "sphere") and model != "C") or (part == "split" and model != "A"):
                    continue
                if part == "order":
                    continue
                units.append({"id": f"{part}:{model}", "part": part, "model": model})
        units.append({"id": "order", "part": "order", "model": "mode3"})
        return units

    def unit_cost(self, cfg: MeanFieldConfig, unit: dict[str, Any]) -> float:
        part = unit["part"]
        m = cfg.grid
        steps = cfg.T / cfg.dt
        return {
            "snap": cfg.draws * steps * m * math.log2(m),
            "cross": steps * (m * math.log2(m) + cfg.particles * 64),
            "spectral": len(cfg.spectral_grids) * cfg.spectral_T / cfg.dt * 512 * 9,
            "order": cfg.order_draws * 64 * sum(cfg.order_T / x for x in cfg.order_dt),
            "chaos": cfg.chaos_reps * sum(cfg.chaos_n) * 64 * cfg.chaos_T / cfg.dt,
            "concentration": cfg.conc_draws * 64 * 64 * cfg.conc_T / cfg.conc_dt,
            "split": cfg.split_draws * 128 * 15 * 64 * cfg.split_T / 0.02,
            "sphere": cfg.sphere_conc_systems * 28 * 225 * cfg.sphere_conc_T / 0.01 + cfg.sphere_L**4 * 16,
        }[part]

    def unit_memory(self, cfg: MeanFieldConfig, unit: dict[str, Any], device: str) -> int:
        """Float64 states and the particle exponential tables (``N x 2K`` complex per system), saved snapshots."""
        k = max(cfg.modes, 64)
        per = 16 * (cfg.particles * 2 * k + 40 * cfg.grid)
        return int(64 * per + 8 * cfg.draws * cfg.grid * (cfg.T / cfg.dt + 1))

    def run_unit(
        self, cfg: MeanFieldConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        part, name = unit["part"], unit["model"]
        model = ORDER_MODEL if name == "mode3" else model_of(cfg, name)
        rows = getattr(self, f"_{part}")(cfg, name, model)
        if progress is not None:
            progress(1.0)
        return [{"part": part, "model": name, **r} for r in rows]

    # ------------------------------------------------------------------ parts
    def _save_every(self, cfg: MeanFieldConfig, T: float, frames: int = 30) -> tuple[int, int]:
        steps = max(1, round(T / cfg.dt))
        every = max(1, steps // frames)
        return every * math.ceil(steps / every), every

    def _snap(self, cfg: MeanFieldConfig, name: str, model: mf.CircleModel) -> list[dict[str, Any]]:
        steps, every = self._save_every(cfg, cfg.T)
        f0 = von_mises(cfg, cfg.grid, cfg.draws)
        run = mf.eulerian(model, f0, _path(cfg, model, cfg.draws, "snap", name), cfg.dt, steps, save_every=every)
        sp = spread(run.states, True)
        rows = []
        ok = run.resolved()
        for i, t in enumerate(run.times):
            big, atoms = _split(run.states[i])
            for b in range(cfg.draws):
                row: dict[str, Any] = {
                    "draw": b,
                    "t": float(t),
                    "mass": float(run.mass[i, b]),  # type: ignore[index]
                    "min_density": float(run.min_density[i, b]),  # type: ignore[index]
                    "tail": float(run.tail[i, b]),  # type: ignore[index]
                    "resolved": bool(ok[i, b]),
                    "spread": float(sp[i, b]),
                    "half_mass": float(big[b]),
                    "antipodal_atoms_mass": float(atoms[b]),
                }
                if b < 3:
                    f = run.states[i, b]
                    row["density"] = f[:: max(1, cfg.grid // 128)].tolist()
                rows.append(row)
        return rows

    def _cross(self, cfg: MeanFieldConfig, name: str, model: mf.CircleModel) -> list[dict[str, Any]]:
        steps, every = self._save_every(cfg, cfg.T)
        f0 = von_mises(cfg, cfg.grid)
        path = _path(cfg, model, 1, "cross", name)
        e = mf.eulerian(model, f0, path, cfg.dt, steps, save_every=every)
        p = mf.lagrangian(
            model, mf.quantiles(f0, cfg.particles), path, cfg.dt, steps, save_every=every, modes=cfg.grid // 3
        )
        ok = e.resolved()
        n = cfg.particles
        return [
            {
                "t": float(t),
                "w1_eulerian_lagrangian": float(mf.w1_circle(p.states[i], f=e.states[i])[0]),
                "cell_mass_deviation": float((n * mf.cell_masses(e.states[i], p.states[i]) - 1.0).abs().max()),
                "resolved": bool(ok[i, 0]),
                "tail": float(e.tail[i, 0]),  # type: ignore[index]
                "mass": float(e.mass[i, 0]),  # type: ignore[index]
            }
            for i, t in enumerate(e.times)
        ]

    def _spectral(self, cfg: MeanFieldConfig, name: str, model: mf.CircleModel) -> list[dict[str, Any]]:
        steps = max(1, round(cfg.spectral_T / cfg.dt))
        if isinstance(model, mf.CircleC):
            # the spatial discretisation converges geometrically once the grid holds the noise field's modes: study
            # it on the field truncated at 8 modes (more modes only move the grids needed)
            model = mf.CircleC(model.kappa, beta=model.beta, c=model.c, modes=8)
        ref_m = 2 * max(cfg.spectral_grids)  # its error is below 1e-12 (the geometric rate measured on the grids)
        path = _path(cfg, model, 1, "spectral", name)
        # the same sub-steps for every grid: those the finest grid needs (the scheme in time is then identical)
        sub = max(1, math.ceil(6.0 * math.sqrt(cfg.dt) * (ref_m // 3) / 1.5))
        ref = mf.eulerian(model, von_mises(cfg, ref_m), path, cfg.dt, steps, substeps=sub, save_every=steps)
        fr = torch.fft.rfft(ref.states[-1, 0]) / ref_m
        rows = []
        for m in cfg.spectral_grids:
            run = mf.eulerian(model, von_mises(cfg, m), path, cfg.dt, steps, substeps=sub, save_every=steps)
            fm = torch.fft.rfft(run.states[-1, 0]) / m
            # the error on the fine grid: the coarse solution's trigonometric interpolant against the reference
            diff = fr.clone()
            diff[: m // 2] -= fm[: m // 2]
            err = float(diff.abs().sum() * 2.0)  # a bound on max |f_M - f_ref| (sum of |coefficients|)
            rows.append({"M": m, "error": err, "ref_M": ref_m, "substeps": sub})
        return rows

    def _order(self, cfg: MeanFieldConfig, name: str, model: mf.CircleModel) -> list[dict[str, Any]]:
        """The scheme's weak order on the field ``K(delta) = 0.1 cos(3 delta)`` (:data:`ORDER_MODEL`): one token from
        ``pi/2 + 0.3``, ``F = sin theta_T``, ``E[F(dt) - F(2 dt)]`` over ``order_draws`` coupled pairs of runs
        (``path`` and ``path.coarsen(2)``). One RK4 sub-step: the frozen-noise ODE moves a token by
        ``O(sqrt(dt))``, so RK4's error is ``O(dt^(3/2))`` in all, below the order measured."""
        b = cfg.order_draws
        th0 = torch.full((b, 1), math.pi / 2 + 0.3, dtype=torch.float64)
        rows = []
        for dt in cfg.order_dt:
            steps = 2 * max(1, round(cfg.order_T / (2.0 * dt)))
            path = _path(cfg, model, b, "order", dt)
            fine = mf.lagrangian(model, th0, path, dt, steps, substeps=1, save_every=steps)
            coarse = mf.lagrangian(model, th0, path.coarsen(2), dt, steps, substeps=1, save_every=steps)
            diff = (torch.sin(fine.states[-1]).mean(-1) - torch.sin(coarse.states[-1]).mean(-1)).numpy()
            rows.append(
                {"dt": dt, "diff": float(diff.mean()), "diff_se": float(diff.std(ddof=1) / math.sqrt(b)), "draws": b}
            )
        return rows

    def _chaos(self, cfg: MeanFieldConfig, name: str, model: mf.CircleModel) -> list[dict[str, Any]]:
        """``N`` i.i.d. tokens against the Eulerian ``mu_T``, ``chaos_reps`` independent starts per ``N``, all on
        one noise path (every system of the path driven by the normals of its system 0)."""
        steps = max(1, round(cfg.chaos_T / cfg.dt))
        reps = cfg.chaos_reps
        shared = _SharedNoise(model)
        path = _path(cfg, model, reps, "chaos", name)
        f0 = von_mises(cfg, cfg.grid)
        # the reference: ``particles`` quantiles of mu_0 on the same noise (their own quantisation error, about
        # pi / (2 particles), is far below the distances measured; an Eulerian reference would stop being resolved
        # early for rough fields)
        q0 = mf.quantiles(f0, cfg.particles).expand(reps, -1).contiguous()
        ref = mf.lagrangian(shared, q0, path, cfg.dt, steps, save_every=steps, modes=cfg.grid // 3)  # type: ignore[arg-type]
        rows = []
        for n in cfg.chaos_n:
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, "mean-field", "chaos-x0", name, n))
            th0 = _sample_von_mises(cfg.kappa0, (reps, n), g)
            th0 = torch.sort(th0, dim=-1).values
            out = mf.lagrangian(shared, th0, path, cfg.dt, steps, save_every=steps, modes=cfg.grid // 3)  # type: ignore[arg-type]
            w_t = mf.w1_circle(out.states[-1], theta_ref=ref.states[-1]).numpy()
            w_0 = mf.w1_circle(th0, f=f0.expand(reps, -1)).numpy()
            for r in range(reps):
                rows.append({"N": n, "rep": r, "w1_T": float(w_t[r]), "w1_0": float(w_0[r])})
        return rows

    def _concentration(self, cfg: MeanFieldConfig, name: str, model: mf.CircleModel) -> list[dict[str, Any]]:
        """The spread of ``mu_t`` from a start of spread ``conc_spread0`` (64 quantiles of a narrow von Mises law):
        the exponent ``lambda_1`` is the rate of the linearised flow, so the start is already concentrated."""
        dt = cfg.conc_dt
        steps = max(1, round(cfg.conc_T / dt))
        every = max(1, steps // 40)
        steps = every * math.ceil(steps / every)
        narrow = cfg.model_copy(update={"kappa0": 1.0 / cfg.conc_spread0**2})
        f0 = von_mises(narrow, 4096)
        th0 = mf.quantiles(f0, 64).expand(cfg.conc_draws, 64).contiguous()
        th0 = torch.where(th0 > math.pi, th0 - 2.0 * math.pi, th0)
        th0 = torch.sort(th0, dim=-1).values  # unwrapped, in order
        path = _path(cfg, model, cfg.conc_draws, "conc", name)
        run = mf.lagrangian(model, th0, path, dt, steps, substeps=1, save_every=every)
        sp = spread(run.states, False)
        return [
            {"t": float(t), "draw": b, "spread": float(sp[i, b])}
            for i, t in enumerate(run.times)
            for b in range(cfg.conc_draws)
        ]

    def _sphere(self, cfg: MeanFieldConfig, name: str, model: mf.CircleModel) -> list[dict[str, Any]]:
        """Model C on ``S^2`` (:mod:`tokensde.meanfield.sphere2`): the Eulerian density (degree ``sphere_L``) and
        ``sphere_particles`` particles quantising it on one path over 4 short steps (the ReLU field roughens the
        density fast), compared through the harmonic moments of degree <= 3; and the concentration of a small
        cluster (8 particles, ``sphere_conc_systems`` paths) against ``lambda_1 = -kappa(1) - c`` in ``d = 3``."""
        from ..meanfield import sphere2 as s2

        act = theory_c.kernel(cfg.activation, 3)
        sm = s2.SphereC(act.kappa, degree=cfg.sphere_noise_degree, c=cfg.c, beta=cfg.beta_c)
        grid = s2.get_grid(cfg.sphere_L)
        f0 = s2.von_mises_fisher(grid, 2.0, (1.0, 0.0, 0.3)).unsqueeze(0).contiguous()
        path = BrownianPath(cfg.seed, ("mean-field", "sphere"), 1, (sm.noise_size,), torch.float64)
        kw = {"dt": 0.01, "steps": 4, "substeps": 2, "save_every": 1}
        e = s2.eulerian(sm, f0, path, **kw)  # type: ignore[arg-type]
        p = s2.lagrangian(sm, s2.quantize(e.states[0], cfg.sphere_particles), path, **kw)  # type: ignore[arg-type]
        ok = e.resolved(1e-4)
        rows: list[dict[str, Any]] = []
        for k, t in enumerate(e.times):
            coef = grid.to_real(grid.analysis(e.states[k]))[..., :16]  # degrees <= 3
            moments = s2.real_sh(3, p.states[k]).mean(-2)
            moved = grid.to_real(grid.analysis(e.states[k] - e.states[0]))[..., :16]
            rows.append(
                {
                    "kind": "cross",
                    "t": float(t),
                    "moment_gap": float((coef - moments).abs().max()),
                    "moved": float(moved.abs().max()),
                    "resolved": bool(ok[k, 0]),
                    "mass": float(e.mass[k, 0]),  # type: ignore[index]
                }
            )
        systems = cfg.sphere_conc_systems
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "mean-field", "sphere-x0"))
        centre = torch.randn(systems, 1, 3, generator=g, dtype=torch.float64)
        centre = centre / centre.norm(dim=-1, keepdim=True)
        x0 = centre + 1e-3 * torch.randn(systems, 8, 3, generator=g, dtype=torch.float64)  # the linear regime
        x0 = x0 / x0.norm(dim=-1, keepdim=True)
        steps = round(cfg.sphere_conc_T / 0.01)
        cpath = BrownianPath(cfg.seed, ("mean-field", "sphere-conc"), systems, (sm.noise_size,), torch.float64)
        run = s2.lagrangian(sm, x0, cpath, 0.01, steps, substeps=1, save_every=steps)
        rate = ((_log_pairs(run.states[-1]) - _log_pairs(run.states[0])).mean(-1) / (steps * 0.01)).numpy()
        lam = -float(sm.kernel_truncated(np.array([1.0]))[0]) - cfg.c
        rows += [{"kind": "conc", "system": b, "rate": float(rate[b]), "lambda_1": lam} for b in range(systems)]
        return rows

    def _split(self, cfg: MeanFieldConfig, name: str, model: mf.CircleModel) -> list[dict[str, Any]]:
        """Model A's ``mu_t`` ends on two antipodal atoms: 128 quantile particles per draw to ``split_T``; per draw
        the mass within ``pi/8`` of the densest point (the particle with most neighbours there) and of its antipode."""
        b, n, dt = cfg.split_draws, 128, 0.02
        steps = round(cfg.split_T / dt)
        th0 = mf.quantiles(von_mises(cfg, 256), n).expand(b, n).contiguous()
        run = mf.lagrangian(model, th0, _path(cfg, model, b, "split", name), dt, steps, substeps=1, save_every=steps)
        th = run.states[-1]
        d = torch.remainder(th.unsqueeze(-1) - th.unsqueeze(-2) + math.pi, 2.0 * math.pi) - math.pi
        c = th.gather(-1, (d.abs() < math.pi / 8).sum(-1).argmax(-1, keepdim=True))
        dc = torch.remainder(th - c + math.pi, 2.0 * math.pi) - math.pi
        atom = (dc.abs() < math.pi / 8).double().mean(-1).numpy()
        anti = (dc.abs() > 7 * math.pi / 8).double().mean(-1).numpy()
        return [
            {"draw": i, "T": cfg.split_T, "atom_mass": float(atom[i]), "antipode_mass": float(anti[i])}
            for i in range(b)
        ]

    def trajectory(self, cfg: MeanFieldConfig, device: str = "cpu") -> dict[str, Any]:
        """64 particles of ``mu_t`` on ``S^2`` (model C, Lagrangian, one noise path) concentrating under the common
        noise: the report's sphere viewer animates the measure."""
        from ..meanfield import sphere2 as s2

        act = theory_c.kernel(cfg.activation, 3)
        sm = s2.SphereC(act.kappa, degree=cfg.sphere_noise_degree, c=cfg.c, beta=cfg.beta_c)
        x0 = s2.fibonacci(64)
        steps = 600
        path = BrownianPath(cfg.seed, ("mean-field", "trajectory"), 1, (sm.noise_size,), torch.float64)
        run = s2.lagrangian(sm, x0, path, 0.05, steps, substeps=1, save_every=10)
        return {
            "x": run.states[:, 0].numpy(),
            "times": np.asarray(run.times),
            "title": f"mu_t on S^2: 64 quantised particles, model C ({cfg.activation}), one noise path",
            "time_label": "t",
        }

    # ------------------------------------------------------------------ table, verdict, figures
    def summarize(self, cfg: MeanFieldConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return pd.DataFrame(rows)

    def verdict(self, cfg: MeanFieldConfig, table: pd.DataFrame) -> dict[str, Any]:
        checks: list[V.Check] = []
        notes: list[str] = []
        models = list(cfg.models)
        n_slopes = 1 + 2 * len(models) + (2 if "C" in models else 0)  # the slope checks (Bonferroni)
        zf = bonferroni_z(cfg.level, max(n_slopes, 1))
        snap = table[table["part"] == "snap"]
        checks.append(
            V.at_most(
                "mass conserved by the Eulerian solver",
                float((snap["mass"] - 1.0).abs().max()),
                1e-10,
                "max |int f - 1| over draws and saved times",
                "stated: rounding of the FFTs over the steps (the k = 0 mode of a derivative is zero)",
                fmt=".2e",
            )
        )
        for name in models:
            s = snap[snap["model"] == name]
            bad = ~s["resolved"].astype(bool)
            first_bad = s[bad].groupby("draw")["t"].min()
            until = float(first_bad.min()) if len(first_bad) else math.inf
            notes.append(
                f"model {name}: Eulerian grid M = {cfg.grid} resolved until t = {until:g} (first flag over draws)"
            )
            cross = table[(table["part"] == "cross") & (table["model"] == name)]
            floor = float(cross[cross["t"] == 0.0]["w1_eulerian_lagrangian"].iloc[0])
            res = cross[cross["resolved"].astype(bool)]
            checks.append(
                V.at_most(
                    f"model {name}: Eulerian and Lagrangian agree on one noise path while resolved (cell masses)",
                    float(res["cell_mass_deviation"].max()) if len(res) else math.inf,
                    1e-3,
                    "max over resolved times of |N int_{cell} f - 1|, the Eulerian mass between consecutive particles",
                    "stated: 1e-3 (a transport keeps every cell's mass 1/N; the two solvers' RK4 and quadrature "
                    "errors measured below 1e-4)",
                    fmt=".2e",
                )
            )
            checks.append(
                V.at_most(
                    f"model {name}: Eulerian and Lagrangian agree on one noise path while resolved (W1)",
                    float(res["w1_eulerian_lagrangian"].max()) if len(res) else math.inf,
                    1.5 * floor,
                    "max W1 over resolved times",
                    f"stated: 1.5 x the quantisation error of the start ({floor:.2e})",
                    fmt=".2e",
                )
            )
            spec = table[(table["part"] == "spectral") & (table["model"] == name)].sort_values("M")
            m_arr = spec["M"].to_numpy(float)
            err = np.maximum(spec["error"].to_numpy(float), 1e-300)
            slope, se = _lin_slope(m_arr, np.log(err))
            checks.append(
                V.check(
                    f"model {name}: spectral convergence in the number of modes",
                    bool(np.isfinite(slope) and slope < -zf * se and slope < 0),
                    f"d log(error) / dM = {slope:.3f} ± {se:.3f} (geometric decay: negative beyond {zf:.2f} se); "
                    f"errors {', '.join(f'{e:.1e}' for e in err)} at M = {', '.join(str(int(x)) for x in m_arr)}",
                    values={"slope": slope, "se": se},
                    tolerance=-zf * se,
                    source=f"the slope must be below -{zf:.2f} se: family-wise level over the slopes",
                )
            )
            chaos = table[(table["part"] == "chaos") & (table["model"] == name)]
            ns = np.asarray(sorted(chaos["N"].unique()), float)
            g = chaos.groupby("N")
            fit = {}
            for col in ("w1_0", "w1_T"):
                mean, sem = g[col].mean().loc[ns].to_numpy(float), g[col].sem().loc[ns].to_numpy(float)
                fit[col] = loglog_slope(ns, mean, sem)
            (s0, e0), (st, et) = fit["w1_0"], fit["w1_T"]
            checks.append(
                V.slope_within(
                    f"model {name}: chaos against the limit: E W1(mu^N_T, mu_T) falls with N as at t = 0",
                    st - s0,
                    math.hypot(et, e0),
                    0.0,
                    0.1,
                    cfg.level,
                    n_slopes,
                    what=f"slope at T ({st:.3f} ± {et:.3f}) minus slope at 0 ({s0:.3f} ± {e0:.3f}; sampling: -1/2)",
                )
            )
            checks.append(
                V.slope_within(
                    f"model {name}: chaos rate no worse than paper C's bound (W1 <= W2, E W2^2 <~ r_2(N) = N^(-1/2))",
                    st,
                    et,
                    -0.25,
                    0.05,
                    cfg.level,
                    n_slopes,
                    side="upper",
                    what="slope of E W1(mu^N_T, mu_T) against N",
                )
            )
        if "C" in models:
            sph = table[(table["part"] == "sphere") & (table["kind"] == "cross")]
            gap0 = float(sph[sph["t"] == 0.0]["moment_gap"].iloc[0])
            res = sph[sph["resolved"].astype(bool)]
            checks.append(
                V.at_most(
                    "S^2, model C: Eulerian and Lagrangian agree on one path while resolved (moments, degree <= 3)",
                    float(res["moment_gap"].max()) if len(res) else math.inf,
                    2.0 * gap0,
                    f"max over resolved times of the harmonic moment gap (moved: {float(sph['moved'].max()):.1e})",
                    f"stated: 2 x the quantisation error of the start ({gap0:.1e})",
                    fmt=".2e",
                )
            )
            sc = table[(table["part"] == "sphere") & (table["kind"] == "conc")]
            lam3 = float(sc["lambda_1"].iloc[0])
            checks.append(
                V.slope_within(
                    "S^2, model C: a small cluster contracts at lambda_1 = -kappa(1) - c (d = 3)",
                    float(sc["rate"].mean()),
                    float(sc["rate"].std(ddof=1) / math.sqrt(len(sc))),
                    lam3,
                    0.05 * abs(lam3),
                    cfg.level,
                    n_slopes,
                    what="mean rate of the pair log-distances",
                )
            )
        if "A" in models:
            sp = table[table["part"] == "split"]
            two = (sp["atom_mass"] + sp["antipode_mass"]).to_numpy(float)
            minor = np.minimum(sp["atom_mass"], sp["antipode_mass"]).to_numpy(float)
            checks.append(
                V.at_least(
                    "model A: mu_t ends on at most two antipodal atoms (mass within pi/8 of a point or its antipode)",
                    float(two.mean()),
                    0.95,
                    f"mean over {len(two)} draws at T = {cfg.split_T:g} (min {two.min():.2f})",
                    "stated: 95% of the mass on average (some draws are still merging at T)",
                )
            )
            notes.append(
                f"model A splitting at T = {cfg.split_T:g}: {int((minor >= 0.05).sum())} of {len(minor)} draws "
                f"split into two antipodal masses (smaller mass >= 5%); larger masses "
                + ", ".join(
                    f"{m:.2f}" for m in np.sort(np.maximum(sp["atom_mass"], sp["antipode_mass"]).to_numpy(float))
                )
            )
        order = table[table["part"] == "order"].sort_values("dt")
        osl, ose = loglog_slope(
            order["dt"].to_numpy(float), order["diff"].to_numpy(float), order["diff_se"].to_numpy(float)
        )
        checks.append(
            V.slope_within(
                "the scheme has weak order 1 in dt (coupled dt and 2 dt on one path, K = 0.1 cos 3 delta)",
                osl,
                ose,
                1.0,
                0.25,
                cfg.level,
                n_slopes,
                what="slope of |E F(dt) - F(2 dt)| against dt",
            )
        )
        if "C" in models:
            conc = table[table["part"] == "concentration"]
            lam = theory_c.kernel(cfg.activation, 2).lambda_1
            t = conc["t"].to_numpy(float)
            late = t >= t.max() / 6.0
            slopes = []
            for _, sub in conc[late].groupby("draw"):
                y = np.log(np.maximum(sub["spread"].to_numpy(float), 1e-300))
                slopes.append(np.polyfit(sub["t"].to_numpy(float), y, 1)[0])
            sl = np.asarray(slopes)
            checks.append(
                V.slope_within(
                    "model C: mu_t concentrates at the synchronization exponent lambda_1 (log spread, per draw)",
                    float(sl.mean()),
                    float(sl.std(ddof=1) / math.sqrt(len(sl))),
                    lam,
                    0.1 * abs(lam),  # the scheme's O(dt) bias (-0.223, -0.230, -0.233 at dt = 0.05, 0.025, 0.0125)
                    cfg.level,
                    n_slopes,
                    what="mean slope of log spread(mu_t)",
                )
            )
        return V.verdict(checks, notes)

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The density of ``mu_t`` (first draw, per model) as heat maps, and the chaos study in log-log axes."""
        go = plotting.go()
        out: dict[str, Any] = {}
        snap = table[(table["part"] == "snap") & table["density"].notna()] if "density" in table else table.iloc[:0]
        for name, s in snap[snap["draw"] == 0].groupby("model"):
            s = s.sort_values("t")
            img = np.stack(s["density"].to_numpy())
            theta = np.linspace(0.0, 2.0 * math.pi, img.shape[1], endpoint=False)
            fig = go.Figure(go.Heatmap(z=img, x=theta, y=s["t"], colorscale="Magma"))
            fig.update_layout(title=f"model {name}: density of mu_t given one noise path", xaxis_title="theta")
            fig.update_yaxes(title="t", autorange="reversed")
            out[f"density {name}"] = fig
        fig = go.Figure()
        for name, s in table[table["part"] == "chaos"].groupby("model"):
            g = s.groupby("N")["w1_T"].agg(["mean", "sem"])
            fig.add_trace(go.Scatter(x=g.index, y=g["mean"], error_y={"type": "data", "array": g["sem"]},
                                     mode="lines+markers", name=f"model {name}"))  # fmt: skip
        out["chaos"] = plotting.loglog(fig, title="E W1(mu^N_T, mu_T) against N (same noise)", xaxis_title="N")
        return out

    def figures(self, cfg: MeanFieldConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        out: dict[str, Any] = {}
        snap = table[(table["part"] == "snap") & table["density"].notna()] if "density" in table else table.iloc[:0]
        if len(snap):
            draws = sorted(snap["draw"].unique())
            fig, axes = plt.subplots(
                len(cfg.models), len(draws), figsize=(3.2 * len(draws), 3.0 * len(cfg.models)), squeeze=False
            )
            for i, name in enumerate(cfg.models):
                for j, b in enumerate(draws):
                    s = snap[(snap["model"] == name) & (snap["draw"] == b)].sort_values("t")
                    img = np.stack(s["density"].to_numpy())
                    ax = axes[i, j]
                    ax.imshow(
                        img,
                        aspect="auto",
                        origin="upper",
                        extent=(0.0, 2.0 * math.pi, float(s["t"].max()), 0.0),
                        cmap="magma",
                        vmax=np.quantile(img, 0.995),
                    )
                    bad = s[~s["resolved"].astype(bool)]["t"]
                    if len(bad):
                        ax.axhline(float(bad.min()), color="cyan", ls="--", lw=0.8)
                    ax.set_title(f"model {name}, draw {int(b)}", fontsize=8)
                    ax.set_xlabel(r"$\theta$")
                    ax.set_ylabel("t")
            fig.suptitle(
                r"density of $\mu_t$ given the noise (Eulerian, one path per panel); below the dashed line the grid "
                "no longer resolves it",
                fontsize=9,
            )
            fig.tight_layout()
            out["densities"] = fig
        fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.4))
        for name in cfg.models:
            ch = table[(table["part"] == "chaos") & (table["model"] == name)].groupby("N")["w1_T"].agg(["mean", "sem"])
            if len(ch):
                axes[0].errorbar(ch.index, ch["mean"], yerr=ch["sem"], fmt="o-", ms=3, label=f"model {name}")
            sp = table[(table["part"] == "spectral") & (table["model"] == name)]
            if len(sp):
                axes[2].semilogy(sp["M"], sp["error"], "o-", ms=3, label=f"model {name}")
        od = table[table["part"] == "order"]
        if len(od):
            axes[1].errorbar(
                od["dt"], od["diff"].abs(), yerr=od["diff_se"], fmt="o-", ms=3, label="K = 0.1 cos 3 delta"
            )
            x = od["dt"].to_numpy(float)
            axes[1].plot(x, float(od["diff"].abs().iloc[-1]) * x / x[-1], "k--", lw=0.8, label="slope 1")
        for ax, title in zip(
            axes, ("chaos: E W1 vs N", "weak order: |E F(dt) - F(2dt)|", "spectral: error vs M"), strict=True
        ):
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7)
        axes[0].set_xscale("log")
        axes[0].set_yscale("log")
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        fig.tight_layout()
        out["convergence"] = fig
        return out


class _SharedNoise:
    """``model`` with every system driven by the normals of system 0 (replicates of one noise path)."""

    def __init__(self, model: mf.CircleModel) -> None:
        self.model = model
        self.noise_size = model.noise_size

    def velocity(self, atoms: mf.Atoms, xi: torch.Tensor, dt: float) -> torch.Tensor:
        return self.model.velocity(atoms, xi[:1].expand_as(xi), dt)


def _log_pairs(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-2]
    iu = torch.triu_indices(n, n, 1)
    d = (x[:, :, None] - x[:, None]).norm(dim=-1)
    return torch.log(d[:, iu[0], iu[1]])


def _lin_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of ``y`` against ``x`` and its standard error from the residuals."""
    if len(x) < 3:
        return math.nan, math.nan
    (b, a), cov = np.polyfit(x, y, 1, cov=True)
    return float(b), float(math.sqrt(cov[0, 0]))


def _sample_von_mises(kappa: float, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """I.i.d. angles of the von Mises law of concentration ``kappa`` about 0 (inverse CDF on a fine grid)."""
    m = 1 << 14
    th = (2.0 * math.pi / m) * (torch.arange(m, dtype=torch.float64) + 0.5)
    pdf = torch.exp(kappa * (torch.cos(th) - 1.0))
    cdf = torch.cumsum(pdf, 0)
    cdf = cdf / cdf[-1]
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    j = torch.searchsorted(cdf, u.reshape(-1)).clamp(max=m - 1).reshape(shape)
    return th[j]
