r"""``convergence``: each discrete random stack against its limit SDE, on coupled randomness.

For every series the stack with ``L`` layers (``h = T / L``) and a fine
reference of the limit (``L_ref`` Euler steps) are driven by one randomness:

* **A** (model A, Gaussian value matrices): ``sqrt(h) Z_k`` *is* the Brownian
  increment of the limit over the layer, ``Z_k = (xi_{kr} + ... + xi_{kr+r-1})/sqrt(r)``
  with ``xi`` the reference's normals (``r = L_ref / L``; :func:`tokensde.engine.integrate_runs`).
* **B** (model B, one head, deterministic attention ``sigma_A = 0``,
  ``Abar = abar I``, ``Vbar = vbar I``, ``sigma_V^2 = alpha H / (eta (d-1))``,
  residual step ``eta = T / L`` in layer time): the head's ``G`` is built the
  same way from the reference's normals; the limit is the diffusive SDE with drift
  ``P Vbar m`` and kernel ``(alpha/(d-1)) <m_i, m_j>``.
* **C-depth** (model C at infinite width): the layer ``Y = N(X + h Attn(X))``,
  ``X' = N(Y + sqrt(h) G(Y))`` with ``G`` the Gaussian field of kernel ``kappa``.
  At every fine step one field increment is drawn *jointly* at the reference's
  tokens and at every stack's current ``Y`` (a ``P x P`` kernel, ``P = n`` times the
  number of stacks plus one); a stack's layer noise is the sum of the increments
  of its layer at its ``Y``: exactly a Brownian field's increment.
* **C-width** (model C, depth ``L_width``, width ``m``): the width-``m`` stack
  against the infinite-width stack of the same depth. Given the layer's features
  ``U, b_U`` (shared: the width-``m`` stack uses the first ``m``), the width-``m``
  field at the stack's ``n`` points is Gaussian with kernel
  ``K_m(y_i, y_j) = (1/m) sum_k phi_k(y_i) phi_k(y_j) + sigma_W^2`` (``W``, ``b_W``
  integrated out exactly); both stacks use the same normals ``z``:
  ``F_m = chol(K_m(Y_m)) z``, ``F_inf = chol(kappa(Y_inf)) z``. Each stack has
  its exact law, and the Cholesky factor being Lipschitz at positive-definite
  kernels, ``E |F_m - F_inf|^2 = O(1/m + |Y_m - Y_inf|^2)``.

Measured at the final time ``T`` (a grid time of every stack): the weak error
``E phi(<x_1, x_2>) - E phi(<xbar_1, xbar_2>)`` with ``phi(u) = u`` (coupled
differences; expected slope -1 in ``L``), and the mean-square error
``E (1/n) sum_i |x_i - xbar_i|^2`` (expected slope -1 in ``L``: ``1/L`` at grid
times; for C-width, slope -1 in ``m``). Reported, not checked: ``E sup_k`` of the
same over each stack's own layer times ``t_k = k T / L`` (the theorem bounds
it by ``c log L / L``; over ``L = 8..64`` its fitted slope is about -1, the
``log L`` not visible). Verdict: each fitted slope (weighted by the standard
errors, :func:`tokensde.stats.loglog_slope`) within ``max(tol, z se)`` of -1,
``tol`` the model part (pre-asymptotic terms), ``z se`` the statistical part with
``z`` the two-sided Bonferroni quantile at ``level`` over all slopes checked
(:func:`~tokensde.experiments.verdict.slope_within`). A limit that does not
match its stack makes the error level off at the mismatch: model B's limit
kernel normalised by ``d`` instead of ``d - 1`` (noise 6.5% too small at ``d = 8``)
gives a mean-square slope of about -0.3. Defaults ``n = 2``, ``d = 8``,
``T = 0.25``: at ``d = 3`` model A's weak-error constant for ``<x_1, x_2>``
nearly vanishes (its slope is then unmeasurable at a reasonable cost), and at
larger ``T`` the mean square is not yet in its asymptotic regime at ``L = 8``.
The reference's own error (strong order 1/2) adds ``O(1/L_ref)`` to the mean
square: keep ``L_ref >= 8 max(L)``.

Not covered: model B with random attention (``sigma_A > 0``): its heads make the
layer noise a Gaussian *mixture*, which no Brownian increment reproduces
pathwise; its weak convergence is what ``homogenized`` tests.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from ..engine import BrownianPath, Hooks, Run, integrate_runs
from ..models.mlp_noise import MLPNoise, factor
from ..models.multihead import Multihead, MultiheadLimit
from ..models.value_noise import ValueNoise
from ..noise import derive_seed
from ..solvers import EulerMaruyama
from ..sphere import normalize, uniform
from ..stats import loglog_slope
from . import plotting
from .base import Experiment, ExperimentConfig, Progress, recorded
from .verdict import slope_within, verdict

__all__ = ["Convergence", "ConvergenceConfig", "SERIES"]

Series = Literal["A", "B", "C-depth", "C-width"]
SERIES: tuple[Series, ...] = ("A", "B", "C-depth", "C-width")


class ConvergenceConfig(ExperimentConfig):
    """Configuration of ``convergence`` (every field has a default)."""

    series: list[Series] = Field(default=list(SERIES), min_length=1, description=f"a subset of {list(SERIES)}")
    n: int = Field(default=2, ge=2, le=16, description="tokens, in [2, 16]")
    d: int = Field(default=8, ge=2, le=16, description="dimension, in [2, 16]")
    beta: float = Field(default=1.0, ge=0.0, le=20.0, description="inverse temperature, in [0, 20]")
    T: float = Field(default=0.25, gt=0.0, le=4.0, description="horizon (layer time), in (0, 4]")
    depths: list[int] = Field(
        default=[8, 16, 32, 64], min_length=3, description="depths L, >= 3 values, each divides ref_depth"
    )
    ref_depth: int = Field(default=512, ge=16, le=65536, description="Euler steps of the reference, in [16, 65536]")
    widths: list[int] = Field(
        default=[4, 8, 16, 32, 64], min_length=3, description="C-width: MLP widths m, >= 3 values, each in [1, 4096]"
    )
    width_depth: int = Field(default=16, ge=1, le=4096, description="C-width: depth of the stacks, in [1, 4096]")
    systems: int = Field(default=65536, ge=256, le=1_048_576, description="A and B: systems, in [256, 2^20]")
    c_systems: int = Field(default=8192, ge=256, le=1_048_576, description="C series: systems, in [256, 2^20]")
    vbar: float = Field(default=1.0, ge=-10.0, le=10.0, description="B: Vbar = vbar I, in [-10, 10]")
    abar: float = Field(default=1.0, ge=-10.0, le=10.0, description="B: Abar = abar I, in [-10, 10]")
    alpha: float = Field(default=0.5, gt=0.0, le=10.0, description="B: alpha = eta varsigma^2 / H, in (0, 10]")
    activation: Literal["relu", "tanh", "silu", "sigmoid", "gelu"] = Field(
        default="tanh", description="C: activation (relu, tanh, silu, sigmoid, gelu)"
    )
    sigma_u: float = Field(default=0.5, ge=0.0, le=10.0, description="C: bias std of b_U, in [0, 10]")
    c: float = Field(default=1.0, ge=-1.0, le=1.0, description="C: value scale V = c I, in [-1, 1]")
    tol: float = Field(default=0.25, gt=0.0, le=1.0, description="allowed |slope - expected|, in (0, 1]")
    level: float = Field(
        default=0.99, gt=0.5, lt=1.0, description="family-wise confidence level of the slope checks, in (0.5, 1)"
    )
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")

    @field_validator("series")
    @classmethod
    def _series(cls, v: list[str]) -> list[str]:
        return [s for s in SERIES if s in v]

    @field_validator("depths", "widths")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        v = sorted(set(v))
        if len(v) < 3 or v[0] < 1 or v[-1] > 65536:
            raise ValueError("needs at least 3 distinct values, each in [1, 65536]")
        return v

    @model_validator(mode="after")
    def _divides(self) -> ConvergenceConfig:
        for k in self.depths:
            if self.ref_depth % k or k >= self.ref_depth:
                raise ValueError(f"depths: each value must divide ref_depth = {self.ref_depth} and be smaller, got {k}")
        if max(self.widths) > 4096:
            raise ValueError(f"widths: each value must be in [1, 4096], got {max(self.widths)}")
        return self


def _phi(x: Tensor) -> Tensor:
    """``<x_1, x_2>`` per system."""
    return (x[:, 0] * x[:, 1]).sum(-1)


class _SupTracker:
    """Running ``sup_k (1/n) sum_i |x_i(t_k) - xbar_i(t_k)|^2`` over each stack's own layer times ``t_k``."""

    def __init__(self, ratios: dict[str, int], bsz: int, device: torch.device) -> None:
        self.ratios = ratios
        self.sup = {name: torch.zeros(bsz, dtype=torch.float64, device=device) for name in ratios}

    def update(self, k: int, xs: dict[str, Tensor], ref: Tensor) -> None:
        for name, r in self.ratios.items():
            if (k + 1) % r == 0:
                err = ((xs[name] - ref) ** 2).sum(-1).mean(-1).double()
                torch.maximum(self.sup[name], err, out=self.sup[name])

    def stats(self, name: str) -> dict[str, float]:
        s = self.sup[name]
        return {"ms_sup": s.mean().item(), "ms_sup_se": s.std().item() / math.sqrt(s.numel())}


def _errors(x: Tensor, ref: Tensor) -> dict[str, float]:
    """Weak error of ``phi`` and mean-square error at the final time, with standard errors."""
    bsz = x.shape[0]
    diff = _phi(x) - _phi(ref)
    sq = ((x - ref) ** 2).sum(-1).mean(-1)
    out = {
        "weak": diff.mean().item(),
        "weak_se": diff.std().item() / math.sqrt(bsz),
        "ms": sq.mean().item(),
        "ms_se": sq.std().item() / math.sqrt(bsz),
    }
    return out


def _mlp(cfg: ConvergenceConfig, width: int = 1) -> MLPNoise:
    return MLPNoise(beta=cfg.beta, c=cfg.c, activation=cfg.activation, sigma_u=cfg.sigma_u, width=width)


class _CDepth:
    """Model C's limit and its stacks of depths ``L`` as one system driven by one Gaussian field.

    The state is ``[ref | x_L for L in depths]`` along the token axis. Each fine step of ``dt`` draws the
    field at the reference tokens and at every stack's attention outputs ``y_L`` (one kernel over all these
    points, so the stacks' fields are the limit's field); the reference takes an Euler–Maruyama step, and a
    stack of ratio ``r = ref_depth / L`` sums its field over ``r`` fine steps into the layer's
    ``sqrt(h) G(y)`` with ``h = T / L``.
    """

    def __init__(self, model: MLPNoise, n: int, T: float, ref_depth: int, depths: list[int], x0: Tensor) -> None:
        self.model, self.n, self.T, self.ref_depth, self.depths = model, n, T, ref_depth, depths
        self.kappa_1 = float(model.torch_kernel(x0).kappa_1)
        self.k = 0
        self.ys = {L: _attend(model, x0, T / L) for L in depths}
        self.acc = {L: torch.zeros_like(x0) for L in depths}

    def split(self, state: Tensor) -> dict[Any, Tensor]:
        parts = state.split(self.n, dim=1)
        return {"ref": parts[0], **dict(zip(self.depths, parts[1:], strict=True))}

    def __call__(self, state: Tensor, xi: Tensor | None, dt: float) -> Tensor:
        assert xi is not None
        n, parts = self.n, self.split(state)
        pts = torch.cat([parts["ref"], *(self.ys[L] for L in self.depths)], dim=1)
        field = factor(self.model.kernel(pts)) @ xi
        ref = parts["ref"]
        cdiag = torch.full(ref.shape[:-1], self.kappa_1, dtype=ref.dtype, device=ref.device)
        out = [EulerMaruyama.update(ref, self.model.drift(ref), cdiag, field[:, :n], dt)]
        for j, L in enumerate(self.depths):
            self.acc[L] += field[:, n * (j + 1) : n * (j + 2)]
            r = self.ref_depth // L
            x = parts[L]
            if (self.k + 1) % r == 0:
                h = self.T / L
                x = normalize(self.ys[L] + math.sqrt(h / r) * self.acc[L])
                self.acc[L].zero_()
                self.ys[L] = _attend(self.model, x, h)
            out.append(x)
        self.k += 1
        return torch.cat(out, dim=1)


def _attend(model: MLPNoise, x: Tensor, h: float) -> Tensor:
    att = model.drift(x)
    return x if att is None else normalize(x + h * att)


def _features(model: MLPNoise, y: Tensor, u: Tensor, b_u: Tensor) -> Tensor:
    """``phi(d^{-1/2} U y + b_U)`` for ``y`` ``(B, P, d)``, ``u`` ``(B, m, d)``, ``b_u`` ``(B, m)``: ``(B, P, m)``."""
    pre = (y @ u.transpose(-1, -2)) * (1.0 / math.sqrt(y.shape[-1])) + model.sigma_u * b_u.unsqueeze(-2)
    return model.act.torch_fn(pre)


class Convergence(Experiment):
    name = "convergence"
    summary = "discrete stacks A, B, C vs their limit SDEs on coupled randomness: weak and mean-square rates in L and m"
    Config = ConvergenceConfig
    quick = {
        "systems": 16384,
        "c_systems": 2048,
        "depths": [8, 16, 32],
        "ref_depth": 256,
        "widths": [4, 8, 16, 32],
        "width_depth": 8,
    }

    def plan(self, cfg: ConvergenceConfig) -> list[dict[str, Any]]:
        return [{"id": s, "series": s} for s in cfg.series]

    def unit_cost(self, cfg: ConvergenceConfig, unit: dict[str, Any]) -> float:
        s = unit["series"]
        if s == "C-width":
            return cfg.c_systems / 4096 * cfg.width_depth * len(cfg.widths)
        if s == "C-depth":
            return cfg.c_systems / 512 * cfg.ref_depth
        return cfg.systems / 16384 * cfg.ref_depth

    def unit_memory(self, cfg: ConvergenceConfig, unit: dict[str, Any], device: str) -> int:
        """In float64. A, B: :func:`tokensde.engine.integrate_runs` (``x0``, per depth and the reference a state
        and a sum of normals, the ``d x d`` noise stream, one Euler step, the sup trackers). C-depth: the states, layer
        inputs and accumulated fields of every depth, the stream of ``n (depths + 1)`` points' normals and per
        step the joint kernel of all points and its factor. C-width: the states of every width, the stream of
        the features, biases and normals of a layer (``max(widths) (d + 1) + n d`` per system), the features'
        copy and per width the ``n x m`` activations and the ``n x n`` kernel and factor. C also builds the
        kernel tables (:func:`~tokensde.sizes.mlp_kernel_bytes`)."""
        from ..sizes import (
            attention_bytes,
            mlp_kernel_bytes,
            stream_bytes,
            uniform_bytes,
            value_noise_step_bytes,
        )

        s, n, d, depths = unit["series"], cfg.n, cfg.d, len(cfg.depths)
        bsz = cfg.c_systems if s.startswith("C") else cfg.systems
        bnd, bnn = bsz * n * d * 8, bsz * n * n * 8
        draw = uniform_bytes(bsz * n, d, 8)
        sup = 8 * bsz * depths + 2 * bnd
        if s in ("A", "B"):
            shape = (d, d) if s == "A" else (d * d,)
            step = value_noise_step_bytes(bsz, n, d, 8, device, False) if s == "A" else 10 * bnd + 3 * bnn
            per = 8 * bsz * math.prod(shape)
            run = bnd + (depths + 1) * (bnd + per) + stream_bytes(bsz, shape, 8, copies=2) + step + sup
            return int(max(draw, run))
        att = 3 * bnd + attention_bytes(bsz, n, d, 8, device) if cfg.c != 0.0 else 0
        if s == "C-depth":
            npts = n * (depths + 1)
            step = 20 * bsz * npts * npts * 8 + 3 * bsz * npts * d * 8 + 6 * bnd + att
            run = (2 + 3 * depths) * bnd + stream_bytes(bsz, (npts, d), 8) + step + sup
        else:
            mmax = max(cfg.widths)
            step = bsz * mmax * d * 8 + 4 * bsz * n * mmax * 8 + 25 * bnn + 11 * bnd + att
            run = (2 + len(cfg.widths)) * bnd + stream_bytes(bsz, (mmax * (d + 1) + n * d,), 8) + step
        return int(max(draw, run) + mlp_kernel_bytes(cfg.activation))

    def run_unit(
        self, cfg: ConvergenceConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        s = unit["series"]
        bsz = cfg.c_systems if s.startswith("C") else cfg.systems
        x0 = uniform((bsz, cfg.n), cfg.d, torch.Generator().manual_seed(derive_seed(cfg.seed, "x0")), torch.float64).to(
            device
        )
        if s == "C-width":
            return self._width(cfg, x0, progress)
        if s == "C-depth":
            return self._c_depth(cfg, x0, progress)
        return self._ab(cfg, s, x0, progress)

    # ------------------------------------------------------------------ A and B
    def _ab(self, cfg: ConvergenceConfig, s: str, x0: Tensor, progress: Progress | None) -> list[dict[str, Any]]:
        dt = cfg.T / cfg.ref_depth
        runs = []
        if s == "A":
            limit: Any = ValueNoise(beta=cfg.beta, route="matrix")
            stack = ValueNoise(beta=cfg.beta, route="matrix")
            for L in cfg.depths:
                runs.append(Run(stack, "stack", cfg.ref_depth // L, str(L)))
        else:
            eye = torch.eye(cfg.d, dtype=x0.dtype, device=x0.device)

            def law(eta: float) -> Multihead:
                return Multihead(
                    beta=cfg.beta,
                    heads=1,
                    sigma_v=math.sqrt(cfg.alpha / (eta * (cfg.d - 1))),
                    sigma_a=0.0,
                    vbar=cfg.vbar * eye,
                    abar=cfg.abar * eye,
                    route="matrix",
                )

            limit = MultiheadLimit(law(cfg.T / cfg.ref_depth), eta=cfg.T / cfg.ref_depth, kind="diffusive", samples=1)
            for L in cfg.depths:
                runs.append(Run(law(cfg.T / L), "stack", cfg.ref_depth // L, str(L)))
        runs.append(Run(limit, "euler", 1, "ref"))
        sup = _SupTracker({str(L): cfg.ref_depth // L for L in cfg.depths}, x0.shape[0], x0.device)
        hooks = Hooks(
            observe=lambda k, xs: sup.update(k, xs, xs["ref"]),
            progress=(lambda k, a: progress((k + 1) / cfg.ref_depth)) if progress else None,
        )
        path = BrownianPath(
            cfg.seed, ("path", s), x0.shape[0], limit.noise_shape(cfg.n, cfg.d), x0.dtype, str(x0.device)
        )
        res = integrate_runs(runs, x0, path, dt, cfg.ref_depth, hooks=hooks)
        ref = res["ref"].x
        return [{"series": s, "L": L, "m": 0, **_errors(res[str(L)].x, ref), **sup.stats(str(L))} for L in cfg.depths]

    # ------------------------------------------------------------------ C, depth
    def _c_depth(self, cfg: ConvergenceConfig, x0: Tensor, progress: Progress | None) -> list[dict[str, Any]]:
        model = _mlp(cfg)
        n, bsz = cfg.n, x0.shape[0]
        dt = cfg.T / cfg.ref_depth
        depths = cfg.depths
        npts = n * (len(depths) + 1)
        joint = _CDepth(model, n, cfg.T, cfg.ref_depth, depths, x0)
        sup = _SupTracker({str(L): cfg.ref_depth // L for L in depths}, bsz, x0.device)

        def observe(k: int, states: dict[str, Tensor]) -> None:
            parts = joint.split(states["joint"])
            sup.update(k, {str(L): parts[L] for L in depths}, parts["ref"])

        hooks = Hooks(
            observe=observe, progress=None if not progress else (lambda k, a: progress((k + 1) / cfg.ref_depth))
        )
        path = BrownianPath(cfg.seed, ("path", "C-depth"), bsz, (npts, cfg.d), x0.dtype, str(x0.device))
        start = torch.cat([x0] * (len(depths) + 1), dim=1)
        parts = joint.split(
            integrate_runs([Run(step=joint, name="joint")], start, path, dt, cfg.ref_depth, hooks=hooks)["joint"].x
        )
        return [
            {"series": "C-depth", "L": L, "m": 0, **_errors(parts[L], parts["ref"]), **sup.stats(str(L))}
            for L in depths
        ]

    # ------------------------------------------------------------------ C, width
    def _width(self, cfg: ConvergenceConfig, x0: Tensor, progress: Progress | None) -> list[dict[str, Any]]:
        model = _mlp(cfg)
        n, d, bsz, L = cfg.n, cfg.d, x0.shape[0], cfg.width_depth
        h = cfg.T / L
        widths = cfg.widths
        mmax = max(widths)

        def layer(state: Tensor, xi: Tensor | None, h: float) -> Tensor:
            # per layer: the features U (mmax x d), b_U (mmax) and the normals z (n x d) of the fields
            assert xi is not None
            u = xi[:, : mmax * d].reshape(bsz, mmax, d)
            b_u = xi[:, mmax * d : mmax * (d + 1)]
            z = xi[:, mmax * (d + 1) :].reshape(bsz, n, d)
            xs = state.split(n, dim=1)
            yinf = _attend(model, xs[0], h)
            out = [normalize(yinf + math.sqrt(h) * (factor(model.kernel(yinf)) @ z))]
            for m, x in zip(widths, xs[1:], strict=True):
                y = _attend(model, x, h)
                f = _features(model, y, u[:, :m], b_u[:, :m])
                km = (f @ f.transpose(-1, -2)) / m + model.sigma_w**2
                out.append(normalize(y + math.sqrt(h) * (factor(km) @ z)))
            return torch.cat(out, dim=1)

        hooks = Hooks(progress=None if not progress else (lambda k, a: progress((k + 1) / L)))
        path = BrownianPath(cfg.seed, ("width", L), bsz, (mmax * (d + 1) + n * d,), x0.dtype, str(x0.device))
        start = torch.cat([x0] * (len(widths) + 1), dim=1)
        xs = integrate_runs([Run(step=layer, name="joint")], start, path, h, L, hooks=hooks)["joint"].x.split(n, dim=1)
        return [{"series": "C-width", "L": L, "m": m, **_errors(x, xs[0])} for m, x in zip(widths, xs[1:], strict=True)]

    # ------------------------------------------------------------------ table, verdict, figures
    def summarize(self, cfg: ConvergenceConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        t = pd.DataFrame(rows)
        if "ms_sup" not in t:
            t["ms_sup"], t["ms_sup_se"] = np.nan, np.nan
        return t.sort_values(["series", "L", "m"]).reset_index(drop=True)

    @staticmethod
    def slopes(table: pd.DataFrame) -> dict[str, dict[str, tuple[float, float]]]:
        """Per series: fitted (slope, se) of ``|weak|`` and of the mean square against ``L`` (``m`` for C-width)."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for s, sub in table.groupby("series", sort=False):
            x = sub["m" if s == "C-width" else "L"].to_numpy(float)
            out[str(s)] = {
                "weak": loglog_slope(x, sub["weak"].to_numpy(float), sub["weak_se"].to_numpy(float)),
                "ms": loglog_slope(x, sub["ms"].to_numpy(float), sub["ms_se"].to_numpy(float)),
            }
            if s != "C-width":
                out[str(s)]["ms_sup"] = loglog_slope(x, sub["ms_sup"].to_numpy(float), sub["ms_sup_se"].to_numpy(float))
        return out

    def verdict(self, cfg: ConvergenceConfig, table: pd.DataFrame) -> dict[str, Any]:
        sl = self.slopes(table)
        kinds = {s: ("ms",) if s == "C-width" else ("weak", "ms") for s in sl}
        n_slopes = sum(len(k) for k in kinds.values())  # every slope checked shares the family-wise level
        checks = []
        for s, fits in sl.items():
            var = "m" if s == "C-width" else "L"
            for kind in kinds[s]:
                slope, se = fits[kind]
                what = "weak error of E<x1,x2>" if kind == "weak" else "mean-square error at T"
                c = slope_within(
                    f"{s}: {what} ~ {var}^-1",
                    slope,
                    se,
                    -1.0,
                    model_tol=cfg.tol,
                    level=cfg.level,
                    m=n_slopes,
                    what=f"fitted slope in {var}",
                )
                if kind == "ms" and "ms_sup" in fits:
                    sup = fits["ms_sup"][0]
                    c = replace(
                        c,
                        detail=f"{c.detail}; reported: E sup over layer times, slope {sup:.3f} (bound: log L / L)",
                        values={**c.values, "ms_sup_slope": sup},
                    )
                checks.append(c)
        return verdict(checks)

    def trajectory(self, cfg: ConvergenceConfig, device: str = "cpu") -> dict[str, Any]:
        """Model A's discrete stack at the largest depth."""
        x0 = uniform((1, cfg.n), cfg.d, torch.Generator().manual_seed(derive_seed(cfg.seed, "x0")), torch.float64)
        L = max(cfg.depths)
        title = f"model A stack, L = {L} layers, n = {cfg.n}, d = {cfg.d}, beta = {cfg.beta:g}"
        return recorded(
            ValueNoise(beta=cfg.beta, route="matrix"),
            x0.to(device),
            cfg.T / L,
            L,
            cfg.seed,
            ("trajectory",),
            title,
            solver="stack",
        )

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The report's interactive (plotly) figures (beside the static ones of :meth:`figures`)."""
        return _interactive_figures(table, cfg)

    def figures(self, cfg: ConvergenceConfig, table: pd.DataFrame) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        sl = self.slopes(table)
        fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.8))
        depth = table[table["series"] != "C-width"]
        for s, sub in depth.groupby("series", sort=False):
            axes[0].errorbar(
                sub["L"],
                sub["weak"].abs(),
                yerr=2 * sub["weak_se"],
                marker="o",
                capsize=2,
                label=f"{s} ({sl[str(s)]['weak'][0]:.2f})",
            )
            axes[1].errorbar(
                sub["L"],
                sub["ms"],
                yerr=2 * sub["ms_se"],
                marker="o",
                capsize=2,
                label=f"{s} ({sl[str(s)]['ms'][0]:.2f})",
            )
        width = table[table["series"] == "C-width"]
        if len(width):
            axes[2].errorbar(
                width["m"],
                width["ms"],
                yerr=2 * width["ms_se"],
                marker="s",
                capsize=2,
                label=f"C-width, L = {int(width['L'].iloc[0])} ({sl['C-width']['ms'][0]:.2f})",
            )
        titles = (
            r"weak error $|E\langle x_1,x_2\rangle - E\langle \bar x_1,\bar x_2\rangle|$",
            "mean-square error at T vs depth",
            "mean-square error vs width",
        )
        for ax, title, xl in zip(axes, titles, ("depth L", "depth L", "width m"), strict=True):
            lines = ax.get_lines()
            if lines:
                xs = np.array(sorted(set(np.concatenate([ln.get_xdata() for ln in lines]))), dtype=float)
                ys = [float(np.nanmax(np.abs(ln.get_ydata()))) for ln in lines]
                ax.plot(xs, max(ys) * xs[0] / xs, "k:", lw=1, label="slope -1")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xl)
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        return {"convergence": fig}


def _interactive_figures(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's interactive (plotly) figures, from the results table and the run's JSON config."""
    go = plotting.go()
    out = {}
    depth, width = t[t["series"] != "C-width"], t[t["series"] == "C-width"]
    for col, title in (
        ("weak", "weak error of E<x1,x2>"),
        ("ms", "mean-square error at T"),
        ("ms_sup", "E sup over layer times"),
    ):
        fig = go.Figure()
        for series, s in depth.groupby("series", sort=False):
            y = s[col].abs() if col == "weak" else s[col]
            err = {"type": "data", "array": 2 * s[f"{col}_se"]}
            fig.add_trace(go.Scatter(x=s["L"], y=y, mode="lines+markers", name=str(series), error_y=err))
        out[f"{col} vs depth"] = plotting.loglog(fig, title=f"{title} vs depth L (stack vs limit)", xaxis_title="L")
    if len(width):
        fig = go.Figure(go.Scatter(x=width["m"], y=width["ms"], mode="lines+markers", name="C-width",
                                   error_y={"type": "data", "array": 2 * width["ms_se"]}))  # fmt: skip
        out["ms vs width"] = plotting.loglog(fig, title="model C: mean-square error vs width m", xaxis_title="m")
    return out
