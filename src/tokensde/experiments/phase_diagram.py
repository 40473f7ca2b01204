r"""``phase-diagram``: two tokens of model A, Monte Carlo against the exact exit law.

For every cell ``(d, beta)``, ``runs`` independent pairs start at overlap
``rho0`` and follow the limit SDE (projected Itô Euler–Maruyama, kernel noise
route, step ``dt = step / (d - 1)``). At the horizon a pair is *antipodal* if
``rho < -1 + eps``, *collapsed* if ``rho > 1 - eps``, *undecided* otherwise.
The antipodal fraction is compared with ``P(rho_t -> -1 | rho0)`` of
:mod:`tokensde.theory.value_noise`.

Horizon. Near ``beta_c`` the antipodal boundary is almost neutral and runs
decide slowly: the log-distance ``log|x_1 + x_2|`` moves like a Brownian
motion with drift ``lambda_a`` (the antipodal exponent) and variance rate
``D_-``, whose memory of the start decays on the time scale
``tau_a = D_- / (2 lambda_a^2)``. Each cell therefore runs to
``T_cell = clip(horizon_factor * tau_a, T, T_max)``. Cells with
``horizon_factor * tau_a > T_max`` are *critical*: no affordable horizon
resolves them; they are reported but not part of the agreement check.

Biases measured, not assumed: the time bias is ``P(T_cell) - P(T_cell/2)`` on
the same paths; the step-size bias is ``P(dt) - P(2 dt)`` from a coarse run
driven by the same Brownian path (increments summed pairwise), which for a
weak-order-1 scheme estimates the bias of the ``dt`` run.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from ..models.value_noise import pair_euler_step
from ..noise import NoiseStream, derive_seed
from ..sphere import pair_with_overlap
from ..stats import bonferroni_z, interval_errors, wilson, z_for
from ..theory import value_noise as theory_a
from .base import Experiment, ExperimentConfig, Progress, each_in, recorded

__all__ = ["PhaseDiagram", "PhaseDiagramConfig", "simulate_pairs"]

DEFAULT_BETAS = [round(0.25 * i, 2) for i in range(17)]


class PhaseDiagramConfig(ExperimentConfig):
    """Configuration of ``phase-diagram`` (every field has a default)."""

    d: list[int] = Field(default=[3, 4, 6, 10, 20], min_length=1, description="dimensions, each in [2, 512]")
    beta: list[float] = Field(default=DEFAULT_BETAS, min_length=1, description="inverse temperatures, each in [0, 50]")
    rho0: float = Field(default=0.0, gt=-1.0, lt=1.0, description="initial overlap, in (-1, 1)")
    runs: int = Field(default=2000, ge=10, le=10_000_000, description="pairs per cell, in [10, 1e7]")
    T: float = Field(default=25.0, gt=0.0, le=1e5, description="minimal horizon, in (0, 1e5]")
    T_max: float = Field(default=150.0, gt=0.0, le=1e5, description="maximal horizon, in (0, 1e5], >= T")
    horizon_factor: float = Field(default=8.0, ge=0.0, le=1e3, description="horizon in units of tau_a, in [0, 1000]")
    step: float = Field(default=0.05, gt=0.0, le=0.5, description="time step times (d - 1), in (0, 0.5]")
    eps: float = Field(default=1e-2, gt=0.0, lt=0.5, description="classification threshold, in (0, 0.5)")
    level: float = Field(default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level, in (0.5, 1)")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")
    dtype: Literal["float32", "float64"] = Field(default="float32", description="float32 or float64")
    collapse_tol: float = Field(
        default=1e-8, ge=0.0, le=1e-4, description="freeze pairs with 1 - rho below it, in [0, 1e-4]"
    )

    @field_validator("d")
    @classmethod
    def _d_range(cls, v: list[int]) -> list[int]:
        return each_in(v, 2, 512, "d")

    @field_validator("beta")
    @classmethod
    def _beta_range(cls, v: list[float]) -> list[float]:
        return each_in(v, 0.0, 50.0, "beta")

    @field_validator("T_max")
    @classmethod
    def _tmax(cls, v: float, info: Any) -> float:
        t = info.data.get("T")
        if t is not None and v < t:
            raise ValueError(f"T_max must be >= T = {t}, got {v}")
        return v


def relaxation_time(d: int, beta: float) -> float:
    """``tau_a = D_- / (2 lambda_a^2)`` of the antipodal boundary (``inf`` at ``beta_c``)."""
    m = theory_a.two_point_motion(d, beta)
    lam = m.exponent_antipodal
    return math.inf if lam == 0.0 else m.lower.D / (2.0 * lam * lam)


def cell_dt(cfg: PhaseDiagramConfig, d: int) -> float:
    """``dt = step / (d - 1)``: a token's squared displacement per step is ``~ (d - 1) dt``."""
    return cfg.step / max(d - 1, 1)


def cell_steps(cfg: PhaseDiagramConfig, d: int, beta: float) -> tuple[int, bool, float]:
    """``(steps, critical, tau_a)``: an even number of steps covering ``T_cell``.

    Critical cells (``horizon_factor * tau_a > T_max``) run to ``T`` only: no
    affordable horizon would resolve them.
    """
    tau = relaxation_time(d, beta)
    # horizon_factor = 0 asks for the minimal horizon T in every cell, also at beta_c where tau_a is infinite
    want = 0.0 if cfg.horizon_factor == 0.0 else cfg.horizon_factor * tau
    critical = bool(want > cfg.T_max)
    horizon = cfg.T if critical else min(max(want, cfg.T), cfg.T_max)
    steps = 2 * math.ceil(horizon / (2.0 * cell_dt(cfg, d)))
    return steps, critical, tau


def simulate_pairs(
    d: int,
    betas: list[float],
    steps: list[int],
    runs: int,
    rho0: float,
    dt: float,
    seed: int,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    progress: Progress | None = None,
    collapse_tol: float = 1e-8,
) -> dict[str, np.ndarray]:
    r"""Final overlaps of ``runs`` pairs per ``beta``, at ``steps`` and ``steps/2``, and of the coupled ``2 dt`` run.

    Each cell's noise and initial pairs depend only on ``(seed, d, beta, rho0)``.
    Returns arrays of shape ``(len(betas), runs)``: ``rho`` (at ``steps``),
    ``rho_half`` (at ``steps/2``), ``rho_coarse`` (the ``2 dt`` run, same horizon).

    Collapsed pairs are frozen: every ``SLAB`` steps, pairs with
    ``(1 - rho) = |x_1 - x_2|^2 / 2 < collapse_tol`` leave the batch (their
    noise blocks stop being drawn once all their pairs have left). By the scale
    function near ``rho = 1`` (``s' ~ (1 - r)^{(d-3)/2}``), a pair at gap
    ``delta`` ever reaches gap ``eps`` with probability ``~ (delta/eps)^{(d-1)/2}``,
    ``<= 1e-6`` for ``d >= 3``, ``delta = 1e-8``, ``eps = 1e-2``: far below the
    Monte-Carlo error. ``collapse_tol = 0`` disables freezing.
    """
    if any(s % 2 for s in steps):
        raise ValueError("steps must be even (the coarse run takes pairs of steps)")
    x0 = []
    for b in betas:
        g = torch.Generator().manual_seed(derive_seed(seed, "phase-diagram", "x0", d, b, rho0))
        x0.append(pair_with_overlap(runs, d, rho0, g, torch.float64).to(dtype))
    x = torch.cat(x0).to(device)
    xc = x.clone()
    beta = torch.tensor(betas, dtype=dtype, device=device).repeat_interleave(runs).unsqueeze(1)
    horizon = torch.tensor(steps, device=device).repeat_interleave(runs)
    stream = NoiseStream.for_cells(seed, [(("phase-diagram", d, b, rho0), runs) for b in betas], (2, d), dtype, device)
    ends: dict[int, list[int]] = {}
    halves: dict[int, list[int]] = {}
    for i, s in enumerate(steps):
        ends.setdefault(s, []).append(i)
        halves.setdefault(s // 2, []).append(i)
    out = {k: np.empty((len(betas), runs)) for k in ("rho", "rho_half", "rho_coarse")}

    def overlap(z: torch.Tensor, i: int) -> np.ndarray:
        zz = z[i * runs : (i + 1) * runs]
        return (zz[:, 0] * zz[:, 1]).sum(-1).double().cpu().numpy()

    def keep(z: torch.Tensor, idx: torch.Tensor, k: int) -> torch.Tensor:
        zz = z[idx]
        gap = 0.5 * ((zz[:, 0] - zz[:, 1]) ** 2).sum(-1)
        return idx[(horizon[idx] > k) & (gap >= collapse_tol)]

    total = x.shape[0]
    alive = torch.arange(total, device=device)
    alive_c = alive.clone()
    records = set(ends) | set(halves)

    def gather(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return z if len(idx) == total else z[idx]

    def scatter(z: torch.Tensor, idx: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        if len(idx) == total:
            return part
        z[idx] = part
        return z

    k_end = max(steps)
    chunk = max(1024, CHUNK_ENTRIES // d)
    for k0 in range(0, k_end, stream.slab):
        # slab boundaries are even: a coarse pair of steps never straddles a refill. The systems
        # still running are gathered once per slab into contiguous working sets (xa, xca).
        alive, alive_c = keep(x, alive, k0), keep(xc, alive_c, k0)
        needed = torch.zeros(len(stream.blocks), dtype=torch.bool, device=device)
        needed[stream.block_of[alive]] = True
        needed[stream.block_of[alive_c]] = True
        stream.retire(needed)
        running = sum(runs for s in steps if s > k0)
        slab = stream.next_slab()
        n_here = min(stream.slab, k_end - k0)
        xa, ba = gather(x, alive), gather(beta, alive)
        xca, bca = gather(xc, alive_c), gather(beta, alive_c)
        # the slab is a view of a system-major buffer: gather along that (contiguous) axis
        by_system = slab.transpose(0, 1)
        noise = slab if len(alive) == total else by_system[alive].transpose(0, 1)
        noise_c = slab if len(alive_c) == total else by_system[alive_c].transpose(0, 1)
        if not any(k0 < r <= k0 + n_here for r in records):
            # no state is read inside this slab: run all its steps on one cache-sized chunk of
            # pairs after the other (the step is elementwise per pair: the same numbers)
            for lo in range(0, len(alive), chunk):
                hi = lo + chunk
                xa[lo:hi] = _pair_steps(xa[lo:hi], noise[:n_here, lo:hi], ba[lo:hi], dt, 1)
            for lo in range(0, len(alive_c), chunk):
                hi = lo + chunk
                xca[lo:hi] = _pair_steps(xca[lo:hi], noise_c[:n_here, lo:hi], bca[lo:hi], dt, 2)
            if progress is not None:
                for _ in range(n_here):
                    progress(running)
            x, xc = scatter(x, alive, xa), scatter(xc, alive_c, xca)
            continue
        for j in range(n_here):
            if len(alive):
                xa = _pair_steps(xa, noise[j : j + 1], ba, dt, 1)
            if j % 2 == 1 and len(alive_c):
                xca = _pair_steps(xca, noise_c[j - 1 : j + 1], bca, dt, 2)
            done = k0 + j + 1
            if done in records:
                x, xc = scatter(x, alive, xa), scatter(xc, alive_c, xca)
                for i in halves.get(done, []):
                    out["rho_half"][i] = overlap(x, i)
                for i in ends.get(done, []):
                    out["rho"][i] = overlap(x, i)
                    out["rho_coarse"][i] = overlap(xc, i)
            if progress is not None:
                progress(running)
        x, xc = scatter(x, alive, xa), scatter(xc, alive_c, xca)
    return out


#: coordinates per token in a cache-sized chunk of pairs (a chunk's state is ``2 * CHUNK_ENTRIES`` numbers)
CHUNK_ENTRIES = 2**17


def _pair_steps(x: torch.Tensor, noise: torch.Tensor, beta: torch.Tensor, dt: float, every: int) -> torch.Tensor:
    """``len(noise) // every`` fused steps of size ``every * dt``; a step of size ``2 dt`` takes the
    normalised sum of two consecutive normals (the coarse run of :func:`simulate_pairs`)."""
    if every == 1:
        for k in range(noise.shape[0]):
            x = pair_euler_step(x, noise[k], beta, dt, 1.0)
        return x
    sq2 = 1.0 / math.sqrt(2.0)
    for k in range(1, noise.shape[0], 2):
        x = pair_euler_step(x, (noise[k - 1] + noise[k]) * sq2, beta, 2.0 * dt, 1.0)
    return x


#: pair-steps (runs x steps) per unit above which a dimension's betas are split into several units
UNIT_WORK = 64e6


def _balanced_groups(work: list[float], parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous index ranges of ``work`` whose sums are close to ``sum(work) / parts``."""
    total, acc, bounds = sum(work), 0.0, [0]
    for i, w in enumerate(work):
        acc += w
        if len(bounds) < parts and acc >= total * len(bounds) / parts and i + 1 < len(work):
            bounds.append(i + 1)
    bounds.append(len(work))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class PhaseDiagram(Experiment):
    name = "phase-diagram"
    summary = "Model A, two tokens: Monte-Carlo P(antipodal) over (d, beta) against the exact exit law"
    Config = PhaseDiagramConfig
    quick = {"d": [4, 10], "beta": [0.0, 1.0, 2.0, 3.0, 4.0], "runs": 500, "T": 20.0, "T_max": 60.0, "step": 0.1}

    def plan(self, cfg: PhaseDiagramConfig) -> list[dict[str, Any]]:
        """One unit per ``d``, split into groups of consecutive ``beta`` of at most about ``UNIT_WORK``
        pair-steps each (``d=20:0``, ``d=20:1``, ...), so that workers share the large dimensions.

        Cells do not depend on their neighbours (each has its own noise), so the grouping
        changes nothing in the results.
        """
        units: list[dict[str, Any]] = []
        for d in cfg.d:
            work = [float(cell_steps(cfg, d, b)[0] * cfg.runs) for b in cfg.beta]
            parts = max(1, min(len(work), math.ceil(sum(work) / UNIT_WORK)))
            groups = _balanced_groups(work, parts)
            for k, (lo, hi) in enumerate(groups):
                uid = f"d={d}" if len(groups) == 1 else f"d={d}:{k}"
                units.append({"id": uid, "d": d, "beta": cfg.beta[lo:hi]})
        return units

    def unit_cost(self, cfg: PhaseDiagramConfig, unit: dict[str, Any]) -> float:
        return float(sum(cell_steps(cfg, unit["d"], b)[0] for b in unit["beta"]) * cfg.runs)

    def unit_memory(self, cfg: PhaseDiagramConfig, unit: dict[str, Any], device: str) -> int:
        """:func:`simulate_pairs` on ``len(beta) * runs`` pairs, with ``S`` the bytes of one state of all of them:
        the initial pairs (list and concatenation), the coarse state (3 S); the noise stream's ``SLAB``-step
        buffer (16 S); once pairs have frozen or finished, the slab gathered for the alive fine and coarse pairs
        (2 x 16 S) and their working sets (2 S); one fused step on all of them (about 12 S and some 48 per-pair
        scalars: measured 16 S at ``d = 3``); per pair the results, ``beta``, ``horizon``, the alive indices and
        the stream's block index. Upper: assumes some pairs have left (about 2.5 times the peak when none has)."""
        from ..sizes import itemsize

        item = itemsize(cfg.dtype)
        pairs = len(unit["beta"]) * cfg.runs
        state = pairs * 2 * int(unit["d"]) * item
        return int(65 * state + pairs * (48 * item + 84))

    def run_unit(
        self, cfg: PhaseDiagramConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        d, betas = unit["d"], list(unit["beta"])
        info = [cell_steps(cfg, d, b) for b in betas]
        steps = [s for s, _, _ in info]
        dtype = getattr(torch, cfg.dtype)
        tick = None if progress is None else (lambda active: progress(float(active)))
        dt = cell_dt(cfg, d)
        sim = simulate_pairs(d, betas, steps, cfg.runs, cfg.rho0, dt, cfg.seed, dtype, device, tick, cfg.collapse_tol)
        lo, hi = -1.0 + cfg.eps, 1.0 - cfg.eps
        rows = []
        for i, beta in enumerate(betas):
            rho, half, coarse = sim["rho"][i], sim["rho_half"][i], sim["rho_coarse"][i]
            m = theory_a.two_point_motion(d, beta)
            rows.append(
                {
                    "d": d,
                    "beta": beta,
                    "rho0": cfg.rho0,
                    "runs": cfg.runs,
                    "n_antipodal": int((rho < lo).sum()),
                    "n_collapsed": int((rho > hi).sum()),
                    "n_undecided": int(((rho >= lo) & (rho <= hi)).sum()),
                    "n_antipodal_half": int((half < lo).sum()),
                    "n_antipodal_coarse": int((coarse < lo).sum()),
                    "n_undecided_coarse": int(((coarse >= lo) & (coarse <= hi)).sum()),
                    "T_cell": steps[i] * dt,
                    "dt": dt,
                    "steps": steps[i],
                    "critical": info[i][1],
                    "tau_antipodal": info[i][2],
                    "p_antipodal_theory": m.p_antipodal(cfg.rho0),
                    "beta_c": theory_a.beta_c(d),
                    "exponent_antipodal": m.exponent_antipodal,
                    "exponent_collapse": m.exponent_collapse,
                }
            )
        return rows

    def summarize(self, cfg: PhaseDiagramConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        t = pd.DataFrame(rows).sort_values(["d", "beta"]).reset_index(drop=True)
        n = t["runs"].to_numpy()
        t["p_antipodal_mc"] = t["n_antipodal"] / n
        t["undecided"] = t["n_undecided"] / n
        z = z_for(cfg.level)
        t["ci_low"], t["ci_high"] = wilson(t["n_antipodal"], n, z)
        checked = ~t["critical"]
        zf = bonferroni_z(cfg.level, int(checked.sum()))
        # family-wise band; undecided runs may still end antipodal, so they widen the upper side
        t["band_low"], _ = wilson(t["n_antipodal"], n, zf)
        _, t["band_high"] = wilson(t["n_antipodal"] + t["n_undecided"], n, zf)
        t["agrees"] = (t["p_antipodal_theory"] >= t["band_low"]) & (t["p_antipodal_theory"] <= t["band_high"])
        t["time_bias"] = (t["n_antipodal"] - t["n_antipodal_half"]) / n
        t["step_bias"] = (t["n_antipodal"] - t["n_antipodal_coarse"]) / n
        # statistical resolution of a bias estimate: the 99% half-width at the larger of the counts compared
        k_max = t[["n_antipodal", "n_antipodal_half", "n_antipodal_coarse"]].max(axis=1)
        lo_k, hi_k = wilson(k_max, n, z)
        t["half_width"] = (hi_k - lo_k) / 2.0
        return t

    def verdict(self, cfg: PhaseDiagramConfig, table: pd.DataFrame) -> dict[str, Any]:
        checked = table[~table["critical"]]
        crit = table[table["critical"]]
        bad = checked[~checked["agrees"]]
        checks = [
            {
                "name": "theory inside the family-wise Wilson band of every non-critical cell",
                "passed": bool(bad.empty) and not checked.empty,
                "detail": f"{len(checked) - len(bad)}/{len(checked)} cells agree at family-wise level {cfg.level}"
                + (
                    ""
                    if bad.empty
                    else "; disagree: "
                    + ", ".join(
                        f"(d={r.d}, beta={r.beta}: mc={r.p_antipodal_mc:.4f}, theory={r.p_antipodal_theory:.4f})"
                        for r in bad.itertuples()
                    )
                ),
            },
            {
                "name": "undecided fraction small",
                "passed": bool((checked["undecided"] <= 0.01).all()),
                "detail": f"max undecided over checked cells = {checked['undecided'].max():.4f} (limit 0.01)",
            },
            {
                "name": "step-size bias within the statistical error",
                "passed": bool((checked["step_bias"].abs() <= checked["half_width"]).all()),
                "detail": f"max |P(dt) - P(2dt)| = {checked['step_bias'].abs().max():.4f}; "
                "each within its cell's 99% half-width",
            },
            {
                "name": "time bias within the statistical error",
                "passed": bool((checked["time_bias"].abs() <= checked["half_width"]).all()),
                "detail": f"max |P(T) - P(T/2)| = {checked['time_bias'].abs().max():.4f}",
            },
            {
                "name": "critical cells are few and next to beta_c",
                "passed": bool(len(crit) <= max(1, len(table) // 10)),
                "detail": f"{len(crit)} of {len(table)} cells critical"
                + (
                    ""
                    if crit.empty
                    else ": "
                    + ", ".join(
                        f"(d={r.d}, beta={r.beta}, beta_c={r.beta_c:.3f}, tau_a={r.tau_antipodal:.0f})"
                        for r in crit.itertuples()
                    )
                ),
            },
        ]
        return {"verdict": "PASS" if all(c["passed"] for c in checks) else "FAIL", "checks": checks}

    def trajectory(self, cfg: PhaseDiagramConfig, device: str = "cpu") -> dict[str, Any]:
        """16 tokens of model A at the smallest ``d`` and the largest ``beta``, up to time ``T``."""
        from ..models.value_noise import ValueNoise
        from ..sphere import uniform

        d, beta = cfg.d[0], cfg.beta[-1]
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "trajectory"))
        x0 = uniform((1, 16), d, gen, torch.float64).to(device)
        dt = cell_dt(cfg, d)
        title = f"model A, 16 tokens, d = {d}, beta = {beta:g}"
        return recorded(ValueNoise(beta=beta), x0, dt, round(cfg.T / dt), cfg.seed, ("trajectory",), title)

    def figures(self, cfg: PhaseDiagramConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.0, 4.5))
        colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(cfg.d)))
        # the exit law is smooth in beta except at beta_c, where it leaves 0: a grid of step
        # max(beta)/80 plus beta_c itself draws it (each point is a few Gauss-Jacobi integrals)
        base = np.linspace(0.0, max(cfg.beta), 81)
        for color, d in zip(colors, cfg.d, strict=True):
            bc = theory_a.beta_c(d)
            grid = np.union1d(base, [bc] if 0.0 < bc < max(cfg.beta) else [])
            curve = [theory_a.p_antipodal(d, b, cfg.rho0) for b in grid]
            ax.plot(grid, curve, color=color, lw=1.5, label=f"d = {d}")
            sub = table[table["d"] == d]
            err = interval_errors(sub["p_antipodal_mc"], sub["ci_low"], sub["ci_high"])
            ok = ~sub["critical"].to_numpy()
            ax.errorbar(
                sub["beta"][ok], sub["p_antipodal_mc"][ok], yerr=err[:, ok], fmt="o", ms=3.5, color=color, capsize=2
            )
            if (~ok).any():
                ax.errorbar(
                    sub["beta"][~ok],
                    sub["p_antipodal_mc"][~ok],
                    yerr=err[:, ~ok],
                    fmt="x",
                    ms=5,
                    color=color,
                    capsize=2,
                )
            ax.axvline(theory_a.beta_c(d), color=color, ls="--", lw=0.8)
        ax.set_xlabel(r"$\beta$")
        ax.set_ylabel(r"$P(\rho_t \to -1)$")
        ax.set_title(
            rf"Model A, two tokens, $\rho_0 = {cfg.rho0}$: Monte Carlo (99% Wilson) vs exit law; dashed: $\beta_c(d)$"
        )
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8, loc="upper left")
        ax.set_ylim(-0.01, None)
        fig.tight_layout()
        return {"phase_diagram": fig}
