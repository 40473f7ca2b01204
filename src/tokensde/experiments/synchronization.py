r"""``synchronization``: model C (fixed attention, random MLP), theory against Monte Carlo.

Four parts, each a set of independent units with their own seeds:

(a) **table** of ``kappa(1)``, ``kappa'(1)``, ``lambda_1``, ``lambda_bar`` and
    ``lambda_bar'`` (at ``beta``) over activations x ``d`` x bias
    (``sigma_U = sigma_W``), from :mod:`tokensde.theory.synchronization`; each
    row also carries the collapse exponent of the generic two-point motion,
    which must equal ``lambda_1``, and ``kappa'(1)`` without ``phi'``
    (:func:`kappa_prime_free`), which must equal Price's ``E[phi'(z)^2] / d``
    (also for the settings of (c) and (d)): the Monte Carlo below uses the
    theory's kernel, whose slope at collapse comes from ``phi'``, so it cannot
    see an error in the derivative.

(b) **MLP-only clustering on** ``S^3`` (``d = 4``, attention off, no biases):
    ``n`` uniform tokens follow the limit SDE (exact noise route). ReLU: the
    antipodal configuration is not a fixed point of the noise
    (``kappa(-1) + kappa(1) > 0``) and collapse attracts, so every system ends
    in one cluster, at a uniformly random point. tanh: the field is odd, so
    ``x -> -x`` of a single token maps solutions to solutions (in law) and both
    collapse and antipodality attract with the same exponent ``lambda_1 < 0``: a
    two-point random attractor. Each token ends at ``s_i X`` for a random point
    ``X`` and signs ``s_i``; as the uniform initial law is invariant under
    flipping any token, the sign pattern is uniform on ``{+-1}^n`` up to the
    global sign. Hence ``P(two antipodal clusters) = 1 - 2^{1-n}`` and the
    smaller cluster has ``k`` tokens with probability ``2 C(n, k) / 2^n``
    (``k < n/2``), ``C(n, n/2) / 2^n`` (``k = n/2``). Checked: Wilson bands
    (undecided systems widen them) and a chi-square test of the split sizes.

(c) **distance exponent at collapse**: pairs started at distance ``r0`` follow
    the limit SDE (attention off, exact two-token noise). The linearised
    log-distance is a Brownian motion with drift ``lambda_1`` and variance rate
    ``D = kappa(1) + kappa'(1)`` (isotropy of the kernel makes it exactly
    autonomous). To stay in the linear regime for the whole run, the pair is
    renormalised (Benettin's method): every 16 steps, a pair whose distance left
    ``[r_lo, r_hi]`` has its separation rescaled back to ``r0`` along its
    direction, the log of the factor being added to an offset. The per-pair
    slope ``(log r(T) + offset - log r(0)) / T`` has mean ``lambda_1`` (up to
    ``O(r_hi)`` nonlinear and ``O(dt)`` discretisation effects) and standard
    deviation ``sqrt(D / T)``. Discretisation: a coarse run with step ``2 dt``
    driven by the same Brownian path (pairs of increments summed); the
    Richardson slope ``2 slope(dt) - slope(2 dt)`` per pair removes the
    ``O(dt)`` bias (up to 0.5 % of ``lambda_1`` at the defaults), its standard
    error from these paired values. Checks: each setting's Richardson mean
    within ``max(|lambda_1| r_hi, z se)`` of ``lambda_1`` (Bonferroni over the
    settings), all settings pooled in units of ``|lambda_1|`` (a common
    relative bias of 1.3 % shows at the defaults), and the step bias below ``z se``.

(d) **energy decay**: ``E[E_beta(t)]`` (:func:`tokensde.metrics.interaction_energy`)
    under attractive, off and repulsive attention (``V = c I``, ``c = 1, 0, -1``;
    the same initial states and noise for the three) against
    ``exp(lambda_bar' t) E[E_beta(0)]``. docs/models.md states the bound for
    ``V = I``, so only ``c = 1`` is checked: at every recorded time the paired
    differences ``E_beta(t) - exp(lambda_bar' t) E_beta(0)`` (the bound holds for
    every initial state) must have a mean not above ``z se``. ``c = 0`` and
    ``c = -1`` are reported.

Default setting for (d): sigmoid, ``d = 5``, no biases, ``beta = 1``:
``lambda_bar = -0.477``, ``lambda_bar' = -0.313`` (infimum of ``F`` at ``u = -1``).
The sigmoid's mean ``E phi = 1/2`` acts as a common translation of all
tokens, which is what makes ``lambda_bar`` negative at small ``d``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import stats as sstats

from .. import metrics
from ..engine import BrownianPath, Hooks, Run, integrate_runs
from ..models.mlp_noise import MLPNoise
from ..noise import SLAB, derive_seed
from ..solvers import simulate
from ..sphere import normalize, tangent_project, uniform
from ..stats import bonferroni_z, wilson, z_for
from ..theory import synchronization as theory_c
from . import plotting
from .base import Experiment, ExperimentConfig, Progress, each_in, recorded
from .verdict import Check, at_least, at_most, binomial_cells, check, pooled_z, slope_within, verdict

__all__ = ["Synchronization", "SynchronizationConfig", "Setting", "distance_exponent", "kappa_prime_free"]

ActName = Literal["relu", "tanh", "silu", "sigmoid", "gelu"]


class Setting(BaseModel):
    """One MLP law: activation, dimension and bias standard deviations."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    activation: ActName = Field(description="relu, tanh, silu, sigmoid or gelu")
    d: int = Field(ge=2, le=512, description="integer in [2, 512]")
    sigma_u: float = Field(default=0.0, ge=0.0, le=1.0, description="number in [0, 1]")
    sigma_w: float = Field(default=0.0, ge=0.0, le=1.0, description="number in [0, 1]")

    def key(self) -> str:
        return f"{self.activation}-d{self.d}-su{self.sigma_u:g}-sw{self.sigma_w:g}"


DEFAULT_EXPONENT = [
    Setting(activation="relu", d=4),
    Setting(activation="tanh", d=5, sigma_u=0.1, sigma_w=0.1),
    Setting(activation="sigmoid", d=4),
    Setting(activation="gelu", d=16, sigma_u=0.1, sigma_w=0.1),
]


class SynchronizationConfig(ExperimentConfig):
    """Configuration of ``synchronization`` (every field has a default)."""

    table_activations: list[ActName] = Field(
        default=["relu", "tanh", "silu", "sigmoid"], min_length=1, description="activations of the table"
    )
    table_d: list[int] = Field(default=[5, 64, 128], min_length=1, description="dimensions, each in [2, 4096]")
    table_bias: list[float] = Field(
        default=[0.0, 0.1], min_length=1, description="sigma_U = sigma_W values, each in [0, 1]"
    )
    beta: float = Field(default=1.0, ge=0.0, le=50.0, description="inverse temperature, in [0, 50]")
    cluster_n: int = Field(default=8, ge=2, le=64, description="tokens per system in part (b), in [2, 64]")
    cluster_runs: int = Field(default=512, ge=10, le=1_000_000, description="systems per activation, in [10, 1e6]")
    cluster_T: float = Field(default=250.0, gt=0.0, le=1e5, description="horizon of part (b), in (0, 1e5]")
    cluster_dt: float = Field(default=0.1, gt=0.0, le=0.5, description="time step of part (b), in (0, 0.5]")
    undecided_max: float = Field(
        default=0.02, ge=0.0, le=1.0, description="largest undecided fraction in part (b), in [0, 1]"
    )
    exponent_settings: list[Setting] = Field(
        default=DEFAULT_EXPONENT, min_length=1, description="(activation, d, sigma_u, sigma_w) settings of part (c)"
    )
    exponent_runs: int = Field(default=2048, ge=10, le=1_000_000, description="pairs per setting, in [10, 1e6]")
    exponent_horizon: float = Field(default=6.0, gt=0.0, le=1e3, description="horizon times |lambda_1|, in (0, 1000]")
    exponent_step: float = Field(default=0.01, gt=0.0, le=0.2, description="dt (d-1) kappa(1), in (0, 0.2]")
    exponent_r0: float = Field(default=1e-6, ge=1e-10, le=1e-3, description="initial distance, in [1e-10, 1e-3]")
    exponent_r_lo: float = Field(
        default=1e-8, ge=1e-12, le=1e-2, description="renormalise below this distance, in [1e-12, 1e-2], < r0"
    )
    exponent_r_hi: float = Field(
        default=1e-4, ge=1e-12, le=1e-2, description="renormalise above this distance, in [1e-12, 1e-2], > r0"
    )
    energy_setting: Setting = Field(
        default=Setting(activation="sigmoid", d=5), description="setting of part (d), with lambda_bar' < 0"
    )
    energy_c: list[float] = Field(default=[1.0, 0.0, -1.0], min_length=1, description="value scales, each in [-5, 5]")
    energy_n: int = Field(default=8, ge=2, le=256, description="tokens per system in part (d), in [2, 256]")
    energy_runs: int = Field(default=1024, ge=10, le=1_000_000, description="systems, in [10, 1e6]")
    energy_T: float = Field(default=8.0, gt=0.0, le=1e4, description="horizon of part (d), in (0, 1e4]")
    energy_dt: float = Field(default=0.01, gt=0.0, le=0.5, description="time step of part (d), in (0, 0.5]")
    energy_records: int = Field(default=32, ge=2, le=1000, description="recorded times in part (d), in [2, 1000]")
    eps: float = Field(default=1e-2, gt=0.0, lt=0.5, description="cluster threshold, in (0, 0.5)")
    level: float = Field(default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level, in (0.5, 1)")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")

    @field_validator("table_d")
    @classmethod
    def _d_range(cls, v: list[int]) -> list[int]:
        return each_in(v, 2, 4096, "d")

    @field_validator("table_bias")
    @classmethod
    def _bias_range(cls, v: list[float]) -> list[float]:
        return each_in(v, 0.0, 1.0, "bias")

    @field_validator("energy_c")
    @classmethod
    def _c_range(cls, v: list[float]) -> list[float]:
        for x in v:
            if not -5.0 <= x <= 5.0:
                raise ValueError(f"each c must be in [-5, 5], got {x}")
        return list(dict.fromkeys(v))

    @field_validator("exponent_r_lo")
    @classmethod
    def _r_lo(cls, v: float, info: Any) -> float:
        r0 = info.data.get("exponent_r0")
        if r0 is not None and not v < r0:
            raise ValueError(f"must be < exponent_r0 = {r0}, got {v}")
        return v

    @field_validator("exponent_r_hi")
    @classmethod
    def _r_hi(cls, v: float, info: Any) -> float:
        r0 = info.data.get("exponent_r0")
        if r0 is not None and not v > r0:
            raise ValueError(f"must be > exponent_r0 = {r0}, got {v}")
        return v

    @field_validator("energy_setting")
    @classmethod
    def _decaying(cls, v: Setting, info: Any) -> Setting:
        beta = info.data.get("beta", 1.0)
        rate = theory_c.lambda_bar_prime(v.activation, v.d, v.sigma_u, v.sigma_w, beta)
        if not rate < 0.0:
            raise ValueError(f"lambda_bar' = {rate:.4g} >= 0 for {v.key()} at beta = {beta}: the bound does not decay")
        return v


# --------------------------------------------------------------------- part (c)
def distance_exponent(
    setting: Setting,
    runs: int,
    horizon: float,
    step: float,
    r0: float,
    band: tuple[float, float],
    seed: int,
    records: int = 24,
    progress: Progress | None = None,
) -> dict[str, Any]:
    r"""Monte-Carlo distance exponent at collapse for one setting (attention off), at ``dt`` and ``2 dt``.

    ``dt = step / ((d - 1) kappa(1))`` (a token's mean squared displacement per
    step is ``(d - 1) kappa(1) dt``), ``T = horizon / |lambda_1|`` rounded up to
    an even number of steps. Returns per-pair slopes ``slope`` (step ``dt``)
    and ``slope_coarse`` (step ``2 dt``, same Brownian path) as arrays, the
    mean and standard error of the accumulated log-distance at ``records``
    times, and ``dt``, ``T``. Float64 throughout. Pairs, initial states and
    noise depend only on ``(seed, setting)``.
    """
    k = theory_c.kernel(setting.activation, setting.d, setting.sigma_u, setting.sigma_w)
    d = setting.d
    dt = step / ((d - 1) * k.kappa_1)
    steps = 2 * math.ceil(horizon / abs(k.lambda_1) / (2.0 * dt))
    model = MLPNoise(activation=setting.activation, sigma_u=setting.sigma_u, sigma_w=setting.sigma_w)
    g = torch.Generator().manual_seed(derive_seed(seed, "synchronization", "exponent-x0", setting.key()))
    x1 = uniform((runs,), d, g, torch.float64)
    u = normalize(tangent_project(x1, torch.randn(runs, d, generator=g, dtype=torch.float64)))
    x = torch.stack([x1, normalize(x1 + r0 * u)], 1)
    log0 = torch.log(torch.linalg.vector_norm(x[:, 0] - x[:, 1], dim=-1))
    path = BrownianPath(seed, ("synchronization", "exponent", setting.key()), runs, (2, d), torch.float64)
    lo, hi = band
    offsets = {"fine": torch.zeros(runs, dtype=torch.float64), "coarse": torch.zeros(runs, dtype=torch.float64)}

    def renormalise(z: torch.Tensor, offset: torch.Tensor) -> None:
        r = torch.linalg.vector_norm(z[:, 0] - z[:, 1], dim=-1)
        out = (r < lo) | (r > hi)
        if bool(out.any()):
            a = z[out, 0]
            b = normalize(a + (r0 / r[out]).unsqueeze(-1) * (z[out, 1] - a))
            offset[out] += torch.log(r[out]) - torch.log(torch.linalg.vector_norm(a - b, dim=-1))
            z[out, 1] = b

    every = max(2, 2 * ((steps // records) // 2))
    times, means, ses = [0.0], [0.0], [0.0]

    def observe(i: int, states: dict[str, torch.Tensor]) -> None:
        if i % SLAB == SLAB - 1:  # slab boundaries are even: never inside a coarse pair of steps
            for name, z in states.items():
                renormalise(z, offsets[name])
        if (i + 1) % every == 0:
            ell = torch.log(torch.linalg.vector_norm(states["fine"][:, 0] - states["fine"][:, 1], dim=-1))
            ell = ell + offsets["fine"] - log0
            times.append((i + 1) * dt)
            means.append(ell.mean().item())
            ses.append(ell.std().item() / math.sqrt(runs))

    hooks = Hooks(
        observe=observe,
        observe_at=lambda i: i % SLAB == SLAB - 1 or (i + 1) % every == 0,
        progress=None if progress is None else (lambda k, active: progress(float(runs))),
    )
    res = integrate_runs(
        [Run(model, "euler", 1, "fine"), Run(model, "euler", 2, "coarse")], x, path, dt, steps, hooks=hooks
    )
    x, xc = res["fine"].x, res["coarse"].x
    off, off_c = offsets["fine"], offsets["coarse"]
    horizon_t = steps * dt
    ell = torch.log(torch.linalg.vector_norm(x[:, 0] - x[:, 1], dim=-1)) + off - log0
    ell_c = torch.log(torch.linalg.vector_norm(xc[:, 0] - xc[:, 1], dim=-1)) + off_c - log0
    return {
        "slope": (ell / horizon_t).numpy(),
        "slope_coarse": (ell_c / horizon_t).numpy(),
        "times": times,
        "mean_log_distance": means,
        "se_log_distance": ses,
        "dt": dt,
        "T": horizon_t,
        "steps": steps,
    }


PRICE_DELTA = 1e-10
PRICE_TOL = 1e-5


def kappa_prime_free(k: theory_c.Kernel) -> float:
    r"""``kappa'(1)`` without ``phi'``: ``gap(delta) / delta`` at ``delta = PRICE_DELTA``.

    ``gap(delta) = kappa(1) - kappa(1 - delta) = E[(phi(z_1) - phi(z_2))^2] / 2`` is
    its own quadrature of ``phi`` alone, so this is independent of the activation's
    derivative, which Price's theorem ``kappa'(1) = E[phi'(z)^2] / d`` (the theory's
    ``kappa'`` and ``lambda_1``) and the model's tabulated kernel near collapse
    (the slopes of its Hermite interpolant) both use. Truncation: ``O(delta)``
    relative for smooth activations (below ``3e-10`` for the named ones), ``O(sqrt(delta))``
    for ReLU (``3e-6``); rounding ``~1e-16 / sqrt(delta)``.
    """
    return float(k.gap(np.array([PRICE_DELTA]))[0]) / PRICE_DELTA


# --------------------------------------------------------------------- part (b)
def split_law(n: int) -> np.ndarray:
    r"""``P(smaller cluster has k tokens)``, ``k = 0..n//2``, for uniform sign patterns modulo the global sign."""
    k = np.arange(n // 2 + 1)
    p = np.array([math.comb(n, int(j)) for j in k], dtype=float) * 2.0 / 2.0**n
    if n % 2 == 0:
        p[-1] /= 2.0
    return p


def _chi_square(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson chi-square p-value, bins with expected count < 5 merged (from the small-k end)."""
    total = counts.sum()
    exp = probs * total
    c_bins, e_bins = [], []
    c_acc = e_acc = 0.0
    for c, e in zip(counts, exp, strict=True):
        c_acc += c
        e_acc += e
        if e_acc >= 5.0:
            c_bins.append(c_acc)
            e_bins.append(e_acc)
            c_acc = e_acc = 0.0
    if e_acc > 0 and e_bins:
        c_bins[-1] += c_acc
        e_bins[-1] += e_acc
    if len(e_bins) < 2:
        return 1.0, 0
    cb, eb = np.array(c_bins), np.array(e_bins)
    stat = float(((cb - eb) ** 2 / eb).sum())
    df = len(eb) - 1
    return float(sstats.chi2.sf(stat, df)), df


class Synchronization(Experiment):
    name = "synchronization"
    summary = "Model C: kappa and the synchronization constants; MLP clustering; lambda_1; energy decay bound"
    Config = SynchronizationConfig
    quick = {
        "cluster_n": 6,
        "cluster_runs": 128,
        "cluster_T": 200.0,
        "exponent_settings": [
            {"activation": "relu", "d": 4},
            {"activation": "tanh", "d": 5, "sigma_u": 0.1, "sigma_w": 0.1},
        ],
        "exponent_runs": 512,
        "exponent_horizon": 4.0,
        "exponent_step": 0.02,
        "energy_runs": 256,
        "energy_T": 6.0,
        "energy_dt": 0.02,
        "energy_records": 12,
    }

    # ----------------------------------------------------------------- plan
    def plan(self, cfg: SynchronizationConfig) -> list[dict[str, Any]]:
        units: list[dict[str, Any]] = [{"id": "table", "part": "table"}]
        units += [{"id": f"cluster-{a}", "part": "cluster", "activation": a} for a in ("relu", "tanh")]
        units += [
            {"id": f"exponent-{s.key()}", "part": "exponent", "setting": s.model_dump()} for s in cfg.exponent_settings
        ]
        units += [{"id": f"energy-c{c:g}", "part": "energy", "c": c} for c in cfg.energy_c]
        return units

    def unit_cost(self, cfg: SynchronizationConfig, unit: dict[str, Any]) -> float:
        part = unit["part"]
        if part == "table":
            return float(len(cfg.table_activations) * len(cfg.table_d) * len(cfg.table_bias))
        if part == "cluster":
            return float(math.ceil(cfg.cluster_T / cfg.cluster_dt))
        if part == "exponent":
            s = Setting(**unit["setting"])
            k = theory_c.kernel(s.activation, s.d, s.sigma_u, s.sigma_w)
            dt = cfg.exponent_step / ((s.d - 1) * k.kappa_1)
            return float(cfg.exponent_runs * 2 * math.ceil(cfg.exponent_horizon / abs(k.lambda_1) / (2.0 * dt)))
        return float(math.ceil(cfg.energy_T / cfg.energy_dt))

    def unit_memory(self, cfg: SynchronizationConfig, unit: dict[str, Any], device: str) -> int:
        """Per part, in float64. ``table``: the theory's quadratures (measured, below 64 MB for the default
        table). ``cluster``/``energy``: :func:`simulate` of ``runs`` systems (``x0``, the noise stream, the
        state, the recorded states as a list, stacked and concatenated, one step of the exact route) and the
        metrics of the recorded states. ``exponent``: the pairs and their coarse copy, the noise stream with
        the two steps' normals kept for the coarse step, the closed-form two-token step. Each model-C unit
        also builds its kernel tables (:func:`~tokensde.sizes.mlp_kernel_bytes`)."""
        from ..sizes import metrics_bytes, mlp_kernel_bytes, mlp_step_bytes, stream_bytes, uniform_bytes

        part = unit["part"]
        if part == "table":
            return 128 * 2**20
        if part == "exponent":
            s = Setting(**unit["setting"])
            state = cfg.exponent_runs * 2 * s.d * 8
            stream = stream_bytes(cfg.exponent_runs, (2, s.d), 8, copies=4)
            return int(stream + 12 * state + mlp_kernel_bytes(s.activation))
        if part == "cluster":
            n, d, bsz, act, attention = cfg.cluster_n, 4, cfg.cluster_runs, str(unit["activation"]), False
            rec = 3
        else:
            s = cfg.energy_setting
            n, d, bsz, act, attention = cfg.energy_n, s.d, cfg.energy_runs, s.activation, float(unit["c"]) != 0.0
            steps = max(1, round(cfg.energy_T / cfg.energy_dt))
            rec = steps // max(1, steps // cfg.energy_records) + 1
        bnd = bsz * n * d * 8
        sim = bnd + stream_bytes(bsz, (n, d), 8) + (rec + 1) * bnd + mlp_step_bytes(bsz, n, d, 8, device, attention)
        end = bnd + 3 * rec * bnd
        post = bnd + rec * bnd + metrics_bytes(bsz, n, d, 8)
        return int(max(uniform_bytes(bsz * n, d, 8), sim, end, post) + mlp_kernel_bytes(act))

    # ----------------------------------------------------------------- units
    def run_unit(
        self, cfg: SynchronizationConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        part = unit["part"]
        if part == "table":
            return self._table(cfg, progress)
        if part == "cluster":
            return self._cluster(cfg, unit["activation"], device, progress)
        if part == "exponent":
            return self._exponent(cfg, Setting(**unit["setting"]), progress)
        return self._energy(cfg, float(unit["c"]), device, progress)

    def _table(self, cfg: SynchronizationConfig, progress: Progress | None) -> list[dict[str, Any]]:
        rows = []
        for act in cfg.table_activations:
            for d in cfg.table_d:
                for b in cfg.table_bias:
                    rows.append(
                        {
                            "part": "table",
                            "activation": act,
                            "d": d,
                            "sigma_u": b,
                            "sigma_w": b,
                            "beta": cfg.beta,
                            **dataclasses.asdict(theory_c.constants(act, d, b, b, cfg.beta)),
                            "exponent_two_point": theory_c.two_point_motion(d, act, b, b).exponent_collapse,
                            "kappa_prime_1_gap": kappa_prime_free(theory_c.kernel(act, d, b, b)),
                            "odd": theory_c.is_odd(act, b, b),
                            "gh_order": theory_c.kernel(act, d, b, b).order,
                        }
                    )
                    if progress is not None:
                        progress(1.0)
        return rows

    def _cluster(
        self, cfg: SynchronizationConfig, act: str, device: str, progress: Progress | None
    ) -> list[dict[str, Any]]:
        d, n, runs = 4, cfg.cluster_n, cfg.cluster_runs
        steps = 2 * math.ceil(cfg.cluster_T / (2.0 * cfg.cluster_dt))
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "synchronization", "cluster-x0", act, n))
        x0 = uniform((runs, n), d, g, torch.float64).to(device)
        model = MLPNoise(activation=act)
        tick = None if progress is None else (lambda _k: progress(1.0))
        res = simulate(
            model,
            x0,
            cfg.cluster_dt,
            steps,
            seed=cfg.seed,
            key=("synchronization", "cluster", act, n),
            record_every=steps // 2,
            on_step=tick,
        )
        assert res.xs is not None
        out = []
        for label, x in (("half", res.xs[1]), ("end", res.xs[2])):
            coll = metrics.is_collapsed(x, cfg.eps)
            anti = metrics.is_antipodal(x, cfg.eps)
            row: dict[str, Any] = {
                "part": "cluster",
                "activation": act,
                "d": d,
                "n": n,
                "runs": runs,
                "at": label,
                "T_cell": float(res.t[1 if label == "half" else 2]),
                "dt": cfg.cluster_dt,
                "n_collapsed": int(coll.sum()),
                "n_antipodal": int(anti.sum()),
                "theory_target": "collapsed" if act == "relu" else "antipodal",
                "p_theory": 1.0 if act == "relu" else 1.0 - 2.0 ** (1 - n),
            }
            if act == "relu":
                row["n_undecided"] = int((~coll).sum())
                centres = normalize(x[torch.as_tensor(coll, device=x.device)].sum(-2)).cpu().numpy()
                if len(centres) > 1:
                    se = centres.std(axis=0, ddof=1) / math.sqrt(len(centres))
                    row["centre_z_max"] = float(np.max(np.abs(centres.mean(axis=0)) / se))
                    row["centre_dims"] = d
            else:
                row["n_undecided"] = int((~anti & ~coll).sum())
                labels = metrics.cluster_labels(x, cfg.eps)
                counts = np.zeros(n // 2 + 1, dtype=np.int64)
                for b in range(runs):
                    if anti[b]:
                        counts[min(int((labels[b] == 0).sum()), int((labels[b] == 1).sum()))] += 1
                    elif coll[b]:
                        counts[0] += 1
                for j, c in enumerate(counts):
                    row[f"split_{j}"] = int(c)
            out.append(row)
        return out

    def _exponent(self, cfg: SynchronizationConfig, s: Setting, progress: Progress | None) -> list[dict[str, Any]]:
        k = theory_c.kernel(s.activation, s.d, s.sigma_u, s.sigma_w)
        sim = distance_exponent(
            s,
            cfg.exponent_runs,
            cfg.exponent_horizon,
            cfg.exponent_step,
            cfg.exponent_r0,
            (cfg.exponent_r_lo, cfg.exponent_r_hi),
            cfg.seed,
            progress=None if progress is None else (lambda a: progress(2.0 * a)),
        )
        slope, coarse = sim["slope"], sim["slope_coarse"]
        rich = 2.0 * slope - coarse
        n = len(slope)
        base = {"activation": s.activation, "d": s.d, "sigma_u": s.sigma_u, "sigma_w": s.sigma_w, "setting": s.key()}
        rows: list[dict[str, Any]] = [
            {
                "part": "exponent",
                **base,
                "runs": n,
                "T_cell": sim["T"],
                "dt": sim["dt"],
                "steps": sim["steps"],
                "lambda_1": k.lambda_1,
                "D": k.kappa_1 + k.kappa_prime_1,
                "estimate": float(slope.mean()),
                "se": float(slope.std(ddof=1) / math.sqrt(n)),
                "estimate_coarse": float(coarse.mean()),
                "step_bias": float((slope - coarse).mean()),
                "step_bias_se": float((slope - coarse).std(ddof=1) / math.sqrt(n)),
                # Richardson: Euler's O(dt) bias removed, standard error from the paired per-pair values
                "estimate_richardson": float(rich.mean()),
                "se_richardson": float(rich.std(ddof=1) / math.sqrt(n)),
                "kappa_prime_1": k.kappa_prime_1,
                "kappa_prime_1_gap": kappa_prime_free(k),
            }
        ]
        for t, m, se in zip(sim["times"], sim["mean_log_distance"], sim["se_log_distance"], strict=True):
            rows.append({"part": "exponent_path", **base, "t": t, "mean": m, "se": se, "lambda_1": k.lambda_1})
        return rows

    def _energy(
        self, cfg: SynchronizationConfig, c: float, device: str, progress: Progress | None
    ) -> list[dict[str, Any]]:
        s = cfg.energy_setting
        n, runs, beta = cfg.energy_n, cfg.energy_runs, cfg.beta
        steps = max(1, round(cfg.energy_T / cfg.energy_dt))
        every = max(1, steps // cfg.energy_records)
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "synchronization", "energy-x0", s.key(), n))
        x0 = uniform((runs, n), s.d, g, torch.float64).to(device)
        model = MLPNoise(activation=s.activation, c=c, beta=beta, sigma_u=s.sigma_u, sigma_w=s.sigma_w)
        tick = None if progress is None else (lambda _k: progress(1.0))
        # the same noise for every c (common random numbers): the key does not contain c
        res = simulate(
            model,
            x0,
            cfg.energy_dt,
            steps,
            seed=cfg.seed,
            key=("synchronization", "energy", s.key(), n),
            record_every=every,
            on_step=tick,
        )
        assert res.xs is not None
        rate = theory_c.lambda_bar_prime(s.activation, s.d, s.sigma_u, s.sigma_w, beta)
        kern = theory_c.kernel(s.activation, s.d, s.sigma_u, s.sigma_w)
        e0 = metrics.interaction_energy(res.xs[0], beta).cpu().double().numpy()
        rows = []
        for t, x in zip(res.t, res.xs, strict=True):
            e = metrics.interaction_energy(x, beta).cpu().double().numpy()
            diff = e - math.exp(rate * t) * e0
            rows.append(
                {
                    "part": "energy",
                    "activation": s.activation,
                    "d": s.d,
                    "sigma_u": s.sigma_u,
                    "sigma_w": s.sigma_w,
                    "c": c,
                    "n": n,
                    "runs": runs,
                    "dt": cfg.energy_dt,
                    "t": float(t),
                    "mean": float(e.mean()),
                    "se": float(e.std(ddof=1) / math.sqrt(runs)),
                    "mean_0": float(e0.mean()),
                    "bound": float(math.exp(rate * t) * e0.mean()),
                    "excess": float(diff.mean()),
                    "excess_se": float(diff.std(ddof=1) / math.sqrt(runs)),
                    "lambda_bar_prime": rate,
                    "lambda_bar": theory_c.lambda_bar(s.activation, s.d, s.sigma_u, s.sigma_w),
                    "kappa_prime_1": kern.kappa_prime_1,
                    "kappa_prime_1_gap": kappa_prime_free(kern),
                }
            )
        return rows

    # ----------------------------------------------------------------- summary
    def summarize(self, cfg: SynchronizationConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        t = pd.DataFrame(rows)
        order = {"table": 0, "cluster": 1, "exponent": 2, "exponent_path": 3, "energy": 4}
        t["_order"] = t["part"].map(order)
        t = t.sort_values(["_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
        z = z_for(cfg.level)
        cl = t["part"] == "cluster"
        if cl.any():
            k = np.where(t.loc[cl, "activation"] == "relu", t.loc[cl, "n_collapsed"], t.loc[cl, "n_antipodal"])
            n = t.loc[cl, "runs"].to_numpy()
            t.loc[cl, "fraction"] = k / n
            lo, hi = wilson(k, n, z)
            t.loc[cl, "ci_low"], t.loc[cl, "ci_high"] = lo, hi
            # undecided systems may still end in the target class: they widen the upper side
            t.loc[cl, "band_low"] = lo
            t.loc[cl, "band_high"] = wilson(k + t.loc[cl, "n_undecided"].to_numpy(), n, z)[1]
            t.loc[cl, "undecided"] = t.loc[cl, "n_undecided"] / n
        ex = t["part"] == "exponent"
        if ex.any():
            t.loc[ex, "ci_low"] = t.loc[ex, "estimate"] - z * t.loc[ex, "se"]
            t.loc[ex, "ci_high"] = t.loc[ex, "estimate"] + z * t.loc[ex, "se"]
        return t

    def verdict(self, cfg: SynchronizationConfig, table: pd.DataFrame) -> dict[str, Any]:
        """Checks (every one from :mod:`tokensde.experiments.verdict`), part by part.

        (a) the generic two-point collapse exponent equals ``lambda_1`` and
        ``lambda_bar' >= lambda_bar`` (rounding); Price's theorem for every
        kernel used (table, exponent and energy settings): ``kappa'(1)`` from
        ``phi'`` equals ``gap(delta)/delta`` from ``phi`` alone
        (:func:`kappa_prime_free`), since nothing else sees a wrong derivative.
        (b) per activation: the fraction in the predicted state in its Wilson
        band (undecided systems widen the upper side), few undecided, the
        cluster point isotropic (ReLU), the split sizes (tanh, chi-square).
        (c) the Richardson exponent of every setting within ``max(|lambda_1| r_hi,
        z se)`` of ``lambda_1`` (Bonferroni over the settings), all settings pooled
        in units of ``|lambda_1|``, and the step bias below the resolution.
        (d) the energy bound at every recorded time for ``c = 1``.
        """
        checks: list[Check] = []
        tab = table[table["part"] == "table"]
        if not tab.empty:
            rel = float(((tab["exponent_two_point"] - tab["lambda_1"]).abs() / tab["lambda_1"].abs()).max())
            checks.append(
                at_most(
                    "(a) table: generic two-point collapse exponent equals lambda_1",
                    rel,
                    1e-9,
                    f"max relative difference over {len(tab)} rows",
                    "the same constants by two routes: rounding",
                    ".1e",
                )
            )
            gap = float((tab["lambda_bar_prime"] - tab["lambda_bar"]).min())
            c = at_least(
                "(a) table: lambda_bar' >= lambda_bar (inf F <= F(1) = -lambda_bar)",
                gap,
                -1e-9,
                "min of lambda_bar' - lambda_bar",
                "rounding of the minimisation of F",
                ".3g",
            )
            checks.append(
                replace(
                    c,
                    detail=c.detail + f"; lambda_bar < 0 in {int((tab['lambda_bar'] < 0).sum())} rows, "
                    f"lambda_bar' < 0 in {int((tab['lambda_bar_prime'] < 0).sum())} rows (beta = {cfg.beta})",
                )
            )
        kp = table[table["part"].isin(["table", "exponent", "energy"])]
        price = "(a) Price's theorem: kappa'(1) from phi' equals gap(delta)/delta from phi alone"
        if "kappa_prime_1_gap" not in kp:
            checks.append(check(price, False, "column kappa_prime_1_gap absent (a table of an older version)"))
        else:
            kp = kp[kp["kappa_prime_1_gap"].notna()].drop_duplicates(["activation", "d", "sigma_u", "sigma_w"])
        if "kappa_prime_1_gap" in kp and not kp.empty:
            err = (kp["kappa_prime_1"] - kp["kappa_prime_1_gap"]).abs() / kp["kappa_prime_1_gap"].abs()
            worst = kp.loc[err.idxmax()]
            c = at_most(
                price,
                float(err.max()),
                PRICE_TOL,
                f"max relative difference over {len(kp)} kernels",
                f"truncation O(delta) (smooth), O(sqrt(delta)) (relu: 3e-6) at delta = {PRICE_DELTA:g}",
                ".1e",
            )
            checks.append(
                replace(
                    c,
                    detail=c.detail + f"; worst {worst['activation']}, d = {int(worst['d'])}, "
                    f"sigma_u = {worst['sigma_u']:g}: {worst['kappa_prime_1']:.6g} vs {worst['kappa_prime_1_gap']:.6g}",
                )
            )
        cl = table[(table["part"] == "cluster") & (table["at"] == "end")]
        for act, what in (("relu", "one cluster"), ("tanh", "two antipodal clusters")):
            r = cl[cl["activation"] == act]
            if r.empty:
                continue
            row = r.iloc[0]
            n = int(row["n"])
            k = int(row["n_collapsed"] if act == "relu" else row["n_antipodal"])
            c = binomial_cells(
                f"(b) d = 4, attention off, {act}: {what}",
                [k],
                [int(row["runs"])],
                [float(row["p_theory"])],
                [f"{act}, n = {n}, T = {row['T_cell']:g}"],
                cfg.level,
                extra_high=[int(row["n_undecided"])],
            )
            head = f"{k}/{int(row['runs'])} end in {what}, theory {row['p_theory']:.4f}; "
            checks.append(replace(c, detail=head + c.detail))
            checks.append(
                at_most(
                    f"(b) {act}: systems undecided at T",
                    float(row["undecided"]),
                    cfg.undecided_max,
                    "undecided fraction",
                    "undecided_max (config)",
                )
            )
            if act == "relu" and not math.isnan(row.get("centre_z_max", math.nan)):
                zc = bonferroni_z(cfg.level, int(row["centre_dims"]))
                checks.append(
                    at_most(
                        "(b) relu: the cluster point is isotropic",
                        float(row["centre_z_max"]),
                        zc,
                        "max over coordinates of |mean| / se",
                        f"Bonferroni over {int(row['centre_dims'])} coordinates at level {cfg.level:g}",
                        ".2f",
                    )
                )
            if act == "tanh":
                counts = np.array([int(row[f"split_{j}"]) for j in range(n // 2 + 1)])
                pval, df = _chi_square(counts, split_law(n))
                checks.append(
                    check(
                        "(b) tanh: split sizes follow uniform sign patterns",
                        pval >= 1.0 - cfg.level,
                        f"split sizes {counts.tolist()} vs {np.round(split_law(n) * counts.sum(), 1).tolist()}: "
                        f"chi-square p = {pval:.3f} (df {df}; fails below {1.0 - cfg.level:.3g})",
                        {"counts": counts, "expected": split_law(n) * counts.sum(), "p_value": pval, "df": df},
                        1.0 - cfg.level,
                        f"Pearson chi-square at level {cfg.level:g}, bins with expected count < 5 merged",
                    )
                )
        ex = table[table["part"] == "exponent"]
        if not ex.empty and "estimate_richardson" not in ex:
            checks.append(check("(c) exponents", False, "column estimate_richardson absent (an older version's table)"))
        elif not ex.empty:
            m = len(ex)
            for r in ex.itertuples():
                c = slope_within(
                    f"(c) {r.setting}: distance exponent at collapse equals lambda_1",
                    r.estimate_richardson,
                    r.se_richardson,
                    r.lambda_1,
                    abs(r.lambda_1) * cfg.exponent_r_hi,
                    cfg.level,
                    m,
                    what=f"Richardson exponent ({int(r.runs)} pairs, dt = {r.dt:.4f})",
                )
                checks.append(
                    replace(
                        c,
                        source=c.source + "; model tolerance |lambda_1| r_hi: the O(r_hi) nonlinear correction",
                    )
                )
            inv = 1.0 / ex["lambda_1"].abs().to_numpy()
            checks.append(
                pooled_z(
                    "(c) exponents pooled over the settings, in units of |lambda_1|",
                    ex["estimate_richardson"],
                    ex["se_richardson"],
                    ex["lambda_1"],
                    ["all"] * m,
                    cfg.level,
                    "settings",
                    scale=inv,
                )
            )
            zf = bonferroni_z(cfg.level, m)
            okb = (ex["step_bias"].abs() <= zf * ex["se"]).to_numpy()
            checks.append(
                check(
                    "(c) discretisation bias below the statistical resolution",
                    bool(okb.all()),
                    "; ".join(
                        f"{r.setting}: slope(dt) - slope(2dt) = {r.step_bias:+.5f} (its se {r.step_bias_se:.5f}) "
                        f"vs z se = {zf * r.se:.5f}, dt = {r.dt:.4f}"
                        for r in ex.itertuples()
                    ),
                    {"step_bias": ex["step_bias"].to_numpy(), "limit": zf * ex["se"].to_numpy()},
                    zf,
                    f"Bonferroni over {m} settings at level {cfg.level:g}: the Richardson correction is small",
                )
            )
        en = table[table["part"] == "energy"]
        if not en.empty:
            att = en[(en["c"] == 1.0) & (en["t"] > 0)]
            zt = bonferroni_z(cfg.level, max(len(att), 1))
            viol = att[att["excess"] > zt * att["excess_se"]]
            info = []
            for c_ in sorted(en["c"].unique(), reverse=True):
                sub = en[(en["c"] == c_) & (en["t"] > 0)]
                worst = sub.loc[(sub["excess"] / sub["bound"]).idxmax()]
                above = int((sub["excess"] > zt * sub["excess_se"]).sum())
                info.append(
                    f"c = {c_:g}: E[E(T)]/E[E(0)] = {sub['mean'].iloc[-1] / sub['mean_0'].iloc[-1]:.3g} "
                    f"(bound {math.exp(sub['lambda_bar_prime'].iloc[-1] * sub['t'].iloc[-1]):.3g}), "
                    f"largest excess/bound {worst['excess'] / worst['bound']:+.3g} at t = {worst['t']:.2f}, "
                    f"{above}/{len(sub)} times significantly above"
                )
            s = cfg.energy_setting
            ratio = (att["excess"] / att["excess_se"]).to_numpy() if len(att) else np.array([np.nan])
            checks.append(
                check(
                    "(d) E[E_beta(t)] <= exp(lambda_bar' t) E[E_beta(0)] for V = I (c = 1)",
                    bool(viol.empty and not att.empty),
                    f"{s.key()}, beta = {cfg.beta}, lambda_bar' = {en['lambda_bar_prime'].iloc[0]:.4f}, "
                    f"{int(en['runs'].iloc[0])} systems of {int(en['n'].iloc[0])} tokens; checked only for c = 1 "
                    f"(where docs/models.md states it), paired excess <= {zt:.2f} se at each of {len(att)} times; "
                    + "; ".join(info),
                    {"max_excess_over_se": float(np.max(ratio)), "times": len(att), "violations": len(viol)},
                    zt,
                    f"one-sided, Bonferroni over {len(att)} recorded times at level {cfg.level:g}",
                )
            )
        notes = [
            "(c) the exponents are Richardson estimates 2 slope(dt) - slope(2 dt) on one Brownian path",
            "(a) the Monte Carlo of (b)-(d) uses the theory's kernel (near collapse its slope kappa'(1) from phi'), "
            "so only the Price check sees an error in phi'",
        ]
        return verdict(checks, notes)

    # ----------------------------------------------------------------- figures
    def trajectory(self, cfg: SynchronizationConfig, device: str = "cpu") -> dict[str, Any]:
        """MLP-only dynamics (tanh, no biases) of 16 tokens on ``S^3``: two antipodal clusters form."""
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "trajectory"))
        x0 = uniform((1, 16), 4, gen, torch.float64).to(device)
        title = "model C, MLP noise only (tanh, no biases), 16 tokens on S^3"
        steps = round(cfg.cluster_T / cfg.cluster_dt)
        return recorded(MLPNoise(activation="tanh"), x0, cfg.cluster_dt, steps, cfg.seed, ("trajectory",), title)

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The report's interactive (plotly) figures (beside the static ones of :meth:`figures`)."""
        return _interactive_figures(table, cfg)

    def figures(self, cfg: SynchronizationConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        figs: dict[str, Any] = {}
        cmap = plt.get_cmap("tab10")
        colors = {a: cmap(i) for i, a in enumerate(["relu", "tanh", "silu", "sigmoid", "gelu"])}
        tab = table[table["part"] == "table"]
        if not tab.empty:
            fig, axes = plt.subplots(1, 3, figsize=(12.0, 4.0))
            for ax, col, lab in zip(
                axes,
                ("lambda_1", "lambda_bar", "lambda_bar_prime"),
                (r"$\lambda_1$", r"$\bar\lambda$", rf"$\bar\lambda'$ ($\beta = {cfg.beta:g}$)"),
                strict=True,
            ):
                for (act, b), sub in tab.groupby(["activation", "sigma_u"]):
                    sub = sub.sort_values("d")
                    ax.plot(
                        sub["d"], sub[col], marker="o", ms=3.5, color=colors.get(str(act), "k"),
                        ls="-" if b == 0 else "--", label=f"{act}, bias {b:g}",
                    )  # fmt: skip
                ax.axhline(0.0, color="0.6", lw=0.8)
                ax.set_xscale("log")
                ax.set_yscale("symlog", linthresh=1e-2)
                ax.set_xlabel("d")
                ax.set_title(lab)
            axes[0].legend(fontsize=7)
            fig.suptitle("Model C: synchronization constants (solid: no bias, dashed: sigma_U = sigma_W)", fontsize=9)
            fig.tight_layout()
            figs["sync_table"] = fig
        cl = table[(table["part"] == "cluster") & (table["at"] == "end")]
        if not cl.empty:
            fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.0))
            ax = axes[0]
            for i, r in enumerate(cl.itertuples()):
                what = "collapsed" if r.activation == "relu" else "antipodal"
                ax.bar(i, r.fraction, color=colors.get(str(r.activation), "k"), alpha=0.7)
                err = [[max(r.fraction - r.ci_low, 0.0)], [max(r.ci_high - r.fraction, 0.0)]]
                ax.errorbar(i, r.fraction, yerr=err, color="k", capsize=4)
                ax.plot([i - 0.4, i + 0.4], [r.p_theory, r.p_theory], color="r", lw=2)
                ax.text(i, 0.05, f"{r.activation}\nP({what})", ha="center", fontsize=8)
            ax.set_xticks([])
            ax.set_ylim(0.0, 1.05)
            ax.set_title(
                f"d = 4, attention off, n = {int(cl['n'].iloc[0])}: fractions ({cfg.level:.0%} Wilson), theory red"
            )
            ax.title.set_fontsize(8)
            th = cl[cl["activation"] == "tanh"]
            ax = axes[1]
            if not th.empty:
                r = th.iloc[0]
                n = int(r["n"])
                counts = np.array([int(r[f"split_{j}"]) for j in range(n // 2 + 1)])
                ks = np.arange(n // 2 + 1)
                ax.bar(ks, counts, color=colors["tanh"], alpha=0.7, label="Monte Carlo")
                ax.plot(ks, split_law(n) * counts.sum(), "ro", label="uniform sign pattern")
                ax.set_xlabel("size of the smaller cluster")
                ax.set_ylabel("systems")
                ax.set_title("tanh, no biases: split of the two antipodal clusters", fontsize=8)
                ax.legend(fontsize=8)
            fig.tight_layout()
            figs["clustering"] = fig
        ex = table[table["part"] == "exponent"]
        if not ex.empty:
            paths = table[table["part"] == "exponent_path"]
            fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.0))
            z = z_for(cfg.level)
            for i, r in enumerate(ex.itertuples()):
                p = paths[paths["setting"] == r.setting]
                colour = cmap(i % 10)
                band = (p["mean"] - z * p["se"], p["mean"] + z * p["se"])
                axes[0].plot(p["t"], p["mean"], color=colour, label=r.setting)
                axes[0].fill_between(p["t"], *band, color=colour, alpha=0.25)
                axes[0].plot(p["t"], r.lambda_1 * p["t"], color=colour, ls="--", lw=0.9)
                axes[1].errorbar(r.lambda_1, r.estimate, yerr=z * r.se, fmt="o", color=colour, capsize=3)
            lims = [ex["lambda_1"].min() * 1.1, ex["lambda_1"].max() * 0.9]
            axes[1].plot(lims, lims, color="0.5", lw=0.8)
            axes[0].set_xlabel("t")
            axes[0].set_ylabel(r"mean $\log|x_1 - x_2| - \log|x_1 - x_2|_0$ (renormalised)")
            axes[0].set_title(r"log-distance near collapse; dashed: $\lambda_1 t$", fontsize=9)
            axes[0].legend(fontsize=7)
            axes[1].set_xlabel(r"$\lambda_1$ (theory)")
            axes[1].set_ylabel(f"Monte-Carlo slope ({cfg.level:.0%})")
            axes[1].set_title("distance exponent at collapse", fontsize=9)
            fig.tight_layout()
            figs["exponent"] = fig
        en = table[table["part"] == "energy"]
        if not en.empty:
            fig, ax = plt.subplots(figsize=(7.0, 4.5))
            z = z_for(cfg.level)
            names = {1.0: "attractive (c = 1)", 0.0: "off (c = 0)", -1.0: "repulsive (c = -1)"}
            for c in sorted(en["c"].unique(), reverse=True):
                sub = en[en["c"] == c].sort_values("t")
                lo = np.clip(sub["mean"] - z * sub["se"], 1e-300, None)
                line = ax.plot(sub["t"], sub["mean"], marker="o", ms=3, label=names.get(float(c), f"c = {c:g}"))
                ax.fill_between(sub["t"], lo, sub["mean"] + z * sub["se"], color=line[0].get_color(), alpha=0.25)
            sub = en[en["c"] == en["c"].iloc[0]].sort_values("t")
            ax.plot(sub["t"], sub["bound"], "k--", label=r"$e^{\bar\lambda' t}\,E[E_\beta(0)]$")
            ax.set_yscale("log")
            ax.set_xlabel("t")
            ax.set_ylabel(r"$E[E_\beta(t)]$")
            s = cfg.energy_setting
            ax.set_title(
                f"Model C energy, {s.activation}, d = {s.d}, beta = {cfg.beta:g}, "
                f"lambda_bar' = {en['lambda_bar_prime'].iloc[0]:.3f} (bound stated for V = I)",
                fontsize=8,
            )
            ax.legend(fontsize=8)
            fig.tight_layout()
            figs["energy"] = fig
        return figs


def _interactive_figures(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's interactive (plotly) figures, from the results table and the run's JSON config."""
    go = plotting.go()
    out: dict[str, Any] = {}
    tab = t[t["part"] == "table"]
    cols = ["activation", "d", "sigma_u", "kappa_1", "kappa_prime_1", "lambda_1", "lambda_bar", "lambda_bar_prime"]
    cells = [tab[c].map(lambda v: f"{v:.5g}" if isinstance(v, float) else str(v)) for c in cols]
    out["constants"] = go.Figure(
        data=[go.Table(header={"values": cols}, cells={"values": cells})],
        layout={"title": "synchronization constants", "height": 120 + 22 * len(tab)},
    )
    ex = t[t["part"] == "exponent"]
    if not ex.empty:
        fig = go.Figure()
        lim = [float(ex["lambda_1"].min()) * 1.1, float(ex["lambda_1"].max()) * 0.9]
        fig.add_trace(go.Scatter(x=lim, y=lim, mode="lines", name="y = x"))
        fig.add_trace(
            go.Scatter(
                x=ex["lambda_1"],
                y=ex["estimate"],
                mode="markers",
                text=ex["setting"],
                error_y={"type": "data", "array": ex["ci_high"] - ex["estimate"]},
                name="Monte Carlo",
            )
        )
        fig.update_layout(title="distance exponent at collapse vs lambda_1", xaxis_title="lambda_1")
        out["exponent"] = fig
    en = t[t["part"] == "energy"]
    if not en.empty:
        fig = go.Figure()
        for c, s in en.groupby("c"):
            fig.add_trace(go.Scatter(x=s["t"], y=s["mean"], mode="lines+markers", name=f"c = {c:g}"))
        s = en[en["c"] == en["c"].iloc[0]]
        fig.add_trace(go.Scatter(x=s["t"], y=s["bound"], mode="lines", line={"dash": "dash"}, name="bound"))
        fig.update_yaxes(type="log")
        fig.update_layout(title="E[E_beta(t)] and exp(lambda_bar' t) E[E_beta(0)]", xaxis_title="t")
        out["energy"] = fig
    return out
