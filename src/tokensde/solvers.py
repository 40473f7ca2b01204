r"""Integrators on the product of spheres for equation (*).

A model supplies, at a state ``X`` and standard normals ``xi``, the drift ``b``
(ambient, or ``None``), the diagonal ``C_ii`` of its noise kernel and the unit
noise ``dM / sqrt(dt)`` (:meth:`coefficients`), and for its discrete stack one
random layer (:meth:`layer`). Solvers declare their orders as diffrax and
torchsde do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from .noise import BLOCK, NoiseStream
from .sphere import normalize, tangent_project

__all__ = [
    "SphereModel",
    "LimitModel",
    "StackModel",
    "EulerMaruyama",
    "Stack",
    "SOLVERS",
    "simulate",
    "SimResult",
    "integrate_ode",
    "StratonovichHeun",
    "stratonovich_coefficients",
    "simulate_coupled",
    "Level",
    "simulate_levels",
]


class LimitModel(Protocol):
    """What an SDE integrator needs: the coefficients of (*) and the normals per step."""

    def coefficients(self, x: Tensor, xi: Tensor) -> tuple[Tensor | None, Tensor, Tensor]: ...

    def noise_shape(self, n: int, d: int, discrete: bool = False) -> tuple[int, ...]: ...


class StackModel(Protocol):
    """What the discrete stack needs: one random layer and the normals per layer."""

    def layer(self, x: Tensor, xi: Tensor, h: float) -> Tensor: ...

    def noise_shape(self, n: int, d: int, discrete: bool = False) -> tuple[int, ...]: ...


SphereModel = LimitModel | StackModel


@dataclass(frozen=True)
class EulerMaruyama:
    r"""Projected Itô Euler–Maruyama for (*).

    .. math::

        x_i' = N\Big(x_i + \big(P_{x_i} b_i - \tfrac{d-1}{2} C_{ii} x_i\big)\,\Delta t
               + P_{x_i} \Delta M_i\Big).

    Strong order 1/2 (the noise is multiplicative and non-commutative), weak order 1.
    """

    name: str = "euler"
    strong_order: float = 0.5
    weak_order: float = 1.0
    discrete: bool = False

    def step(self, model: LimitModel, x: Tensor, xi: Tensor, dt: float) -> Tensor:
        b, cdiag, m = model.coefficients(x, xi)
        incr = math.sqrt(dt) * m if b is None else torch.add(dt * b, m, alpha=math.sqrt(dt))
        # x shrink + P_x incr = incr + (shrink - <x, incr>) x: three passes over the tokens
        coef = 1.0 - (0.5 * (x.shape[-1] - 1) * dt) * cdiag.unsqueeze(-1) - torch.linalg.vecdot(x, incr).unsqueeze(-1)
        return normalize(torch.addcmul(incr, x, coef))


@dataclass(frozen=True)
class Stack:
    r"""The discrete random stack itself: one layer of step ``h = dt`` per step.

    With Gaussian entries, ``sqrt(h) Z_k`` are the Brownian increments of the
    limit, so a stack and an :class:`EulerMaruyama` run driven by the same
    normals are coupled; the stack converges to the limit weakly at rate ``h``.
    """

    name: str = "stack"
    strong_order: float = 0.5
    weak_order: float = 1.0
    discrete: bool = True

    def step(self, model: StackModel, x: Tensor, xi: Tensor, dt: float) -> Tensor:
        return model.layer(x, xi, dt)


def stratonovich_coefficients(model: LimitModel, x: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
    r"""Stratonovich drift ``f_S`` and tangent noise ``g = P m(X, xi)`` of equation (*) at ``x``.

    With noise fields ``g_k = P sigma_k`` (``sigma_k = m(X, e_k)``, the unit noise for the
    ``k``-th normal), the Itô drift ``P b - ((d-1)/2) C_ii x`` minus the Itô–Stratonovich
    correction ``(1/2) sum_k (D g_k) g_k`` simplifies, because ``sum_k sigma_k sigma_k^T = C_ii I``
    for each token, to

    .. math:: f_S = P\Big(b - \tfrac12 \sum_k D\sigma_k[g_k]\Big):

    the curvature term of the Itô form cancels; what is left is the dependence of
    the noise fields on the tokens (through the barycenters for model A). A model
    may give this sum in closed form (``model.stratonovich_correction(x)``, e.g.
    :meth:`ValueNoise.stratonovich_correction`); otherwise the sum
    runs over the step's normals, each directional derivative by a central
    difference of step ``h = eps^(1/3)`` (relative error ``~eps^(2/3)``: 4e-11 in
    float64, 2e-5 in float32; use float64 for order studies), so this is for
    systems with few normals per step. (Forward-mode AD is not available through
    the fused attention kernels.)
    """
    b, _, m = model.coefficients(x, xi)
    closed = getattr(model, "stratonovich_correction", None)
    corr = closed(x) if closed is not None else None
    if corr is None:
        corr = _correction_by_differences(model, x, xi)
    drift = -0.5 * corr if b is None else b - 0.5 * corr
    return tangent_project(x, drift), tangent_project(x, m)


def _correction_by_differences(model: LimitModel, x: Tensor, xi: Tensor) -> Tensor:
    """``sum_k D sigma_k[g_k]`` by central differences (see :func:`stratonovich_coefficients`)."""
    k = math.prod(xi.shape[1:])
    eye = torch.eye(k, dtype=x.dtype, device=x.device).reshape(k, *xi.shape[1:])
    h = torch.finfo(x.dtype).eps ** (1.0 / 3.0)
    bsz = x.shape[0]
    beta = getattr(model, "beta", None)
    if isinstance(beta, Tensor) and beta.dim() > 0:
        # per-system parameters: one direction at a time
        corr = torch.zeros_like(x)
        for e in eye:
            ek = e.expand(bsz, *e.shape)
            g_k = tangent_project(x, model.coefficients(x, ek)[2])
            plus = model.coefficients(x + h * g_k, ek)[2]
            minus = model.coefficients(x - h * g_k, ek)[2]
            corr = corr + (plus - minus) / (2.0 * h)
    else:
        # all k directions in one batch of k * B systems, then all 2k differences in one batch
        xs = x.unsqueeze(0).expand(k, *x.shape).reshape(k * bsz, *x.shape[1:])
        es = eye.unsqueeze(1).expand(k, bsz, *eye.shape[1:]).reshape(k * bsz, *eye.shape[1:])
        g = tangent_project(xs, model.coefficients(xs, es)[2])
        both = model.coefficients(torch.cat([xs + h * g, xs - h * g]), torch.cat([es, es]))[2]
        plus, minus = both[: k * bsz], both[k * bsz :]
        corr = ((plus - minus) / (2.0 * h)).reshape(k, *x.shape).sum(0)
    return corr


@dataclass(frozen=True)
class StratonovichHeun:
    r"""Stochastic Heun (predictor–corrector) for the Stratonovich form of (*), with normalisation.

    .. math::

        \tilde X = N\big(X + f_S(X)\,\Delta t + g(X)\,\Delta W\big), \qquad
        X' = N\Big(X + \tfrac{f_S(X) + f_S(\tilde X)}{2}\Delta t + \tfrac{g(X) + g(\tilde X)}{2}\Delta W\Big)

    (:func:`stratonovich_coefficients`). Strong order 1/2 for non-commutative
    noise (the models' noise fields do not commute: already Brownian motion on
    the sphere has non-commuting projected fields), strong order 1 for
    commutative noise, weak order 1. Needs a noise that is one fixed linear map of
    the step's normals at every state (model A's ``matrix`` route, model B's
    ``matrix`` route with shared attention): factor routes (QR, eigh) pick a
    state-dependent rotation and are refused.
    """

    name: str = "heun"
    strong_order: float = 0.5
    weak_order: float = 1.0
    strong_order_commutative: float = 1.0
    discrete: bool = False

    def step(self, model: LimitModel, x: Tensor, xi: Tensor, dt: float) -> Tensor:
        check = getattr(model, "linear_noise", None)
        if check is None or not check(x.shape[-2], x.shape[-1]):
            raise ValueError("the Heun scheme needs a noise linear in the normals at every state (a matrix route)")
        sq = math.sqrt(dt)
        f0, g0 = stratonovich_coefficients(model, x, xi)
        xt = normalize(x + dt * f0 + sq * g0)
        f1, g1 = stratonovich_coefficients(model, xt, xi)
        return normalize(x + (0.5 * dt) * (f0 + f1) + (0.5 * sq) * (g0 + g1))


SOLVERS: dict[str, EulerMaruyama | Stack | StratonovichHeun] = {
    "euler": EulerMaruyama(),
    "stack": Stack(),
    "heun": StratonovichHeun(),
}


@dataclass
class SimResult:
    """Final states ``x`` ``(B, n, d)`` and, if recorded, ``traj`` ``(K, B, n, d)`` at ``times``."""

    x: Tensor
    times: list[float] = field(default_factory=list)
    traj: Tensor | None = None


def simulate(
    model: SphereModel,
    x0: Tensor,
    dt: float,
    steps: int,
    seed: int,
    key: tuple[object, ...] = (),
    solver: str = "euler",
    record_every: int = 0,
    chunk: int | None = None,
    on_step: Callable[[int], None] | None = None,
    compile: bool = False,
) -> SimResult:
    """Integrate ``steps`` steps from ``x0`` ``(B, n, d)`` with reproducible common noise.

    Systems are processed in chunks of ``chunk`` systems (a multiple of the
    noise block, 256); each system's noise depends only on ``(seed, key,
    its index)``, so the result does not depend on ``chunk``.
    ``on_step(k)`` is called after every step of every chunk (progress bars).
    Two-token model-A systems use the fused step :func:`pair_euler_step`;
    ``compile=True`` runs it coordinate-major (:func:`pair_euler_slab`) as
    :func:`torch.compile`-d calls of up to 16 steps, each one vectorised loop
    over systems: about a minute to compile the first time for a new ``d``
    or chunk size (cached on disk afterwards), then a step costs about a sixth
    of the eager one, so it pays off for long runs. Other systems ignore
    ``compile`` (compiling their step measured no gain at ``n = 256``: the
    step is torch's fused attention kernel plus a few passes over the
    tokens). The numbers are those of the eager path up to floating-point
    rounding.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    scheme = SOLVERS[solver]
    bsz, n, d = x0.shape
    chunk = bsz if chunk is None else max(BLOCK, (chunk // BLOCK) * BLOCK)
    shape = model.noise_shape(n, d, discrete=scheme.discrete)
    outs, trajs = [], []
    times = [k * dt for k in range(0, steps + 1, record_every)] if record_every else []
    for start in range(0, bsz, chunk):
        stop = min(start + chunk, bsz)
        stream = NoiseStream(seed, key, bsz, shape, start, stop, x0.dtype, x0.device)
        x = x0[start:stop]
        rec = [x.clone()] if record_every else []
        sub = _restrict(model, start, stop, bsz)
        fused = _fused(sub, x) if scheme.name == "euler" else None
        multi = _compiled_slab(sub, x) if scheme.name == "euler" and compile and not record_every else None
        k = 0
        while k < steps:
            if multi is not None and steps - k >= stream.slab and stream.at_slab_start:
                x = multi(x, stream.next_slab(), dt)
                if on_step is not None:
                    for j in range(stream.slab):
                        on_step(k + j)
                k += stream.slab
                continue
            xi = stream.next()
            x = scheme.step(sub, x, xi, dt) if fused is None else fused(x, xi, dt)  # type: ignore[arg-type]
            k += 1
            if record_every and k % record_every == 0:
                rec.append(x.clone())
            if on_step is not None:
                on_step(k - 1)
        outs.append(x)
        if record_every:
            trajs.append(torch.stack(rec))
    traj = torch.cat(trajs, dim=1) if record_every else None
    return SimResult(torch.cat(outs), times, traj)


def simulate_coupled(
    model: LimitModel,
    x0: Tensor,
    dt: float,
    steps: int,
    seed: int,
    key: tuple[object, ...] = (),
    record_every: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> tuple[SimResult, SimResult]:
    """Euler–Maruyama at ``dt`` and at ``2 dt`` driven by the same Brownian path.

    The coarse step uses ``(xi_{2k} + xi_{2k+1}) / sqrt(2)``, the normalised sum
    of the two fine steps' normals, so both runs are exact Euler–Maruyama runs
    of their step and strongly correlated: ``2 E f(X^dt) - E f(X^{2dt})``
    (Richardson) removes the ``O(dt)`` weak error at little variance cost.
    ``steps`` and ``record_every`` must be even; returns ``(fine, coarse)`` with
    the same recording times. The fine run gives the numbers of
    :func:`simulate` with the same arguments.
    """
    if steps % 2 or record_every % 2:
        raise ValueError(f"steps and record_every must be even, got {steps} and {record_every}")
    scheme = EulerMaruyama()
    bsz, n, d = x0.shape
    stream = NoiseStream(seed, key, bsz, model.noise_shape(n, d), 0, bsz, x0.dtype, x0.device)
    xf, xc = x0, x0
    recf, recc = ([x0.clone()], [x0.clone()]) if record_every else ([], [])
    for k in range(0, steps, 2):
        xi1 = stream.next().clone()
        xi2 = stream.next()
        xf = scheme.step(model, scheme.step(model, xf, xi1, dt), xi2, dt)
        xc = scheme.step(model, xc, (xi1 + xi2) * (2.0**-0.5), 2.0 * dt)
        if record_every and (k + 2) % record_every == 0:
            recf.append(xf.clone())
            recc.append(xc.clone())
        if on_step is not None:
            on_step(k + 1)
    times = [k * dt for k in range(0, steps + 1, record_every)] if record_every else []
    tf = torch.stack(recf) if record_every else None
    tc = torch.stack(recc) if record_every else None
    return SimResult(xf, times, tf), SimResult(xc, times, tc)


@dataclass(frozen=True)
class Level:
    """One scheme on a nested grid: ``step(x, xi, dt)`` advanced every ``ratio`` fine steps with step ``ratio * dt``."""

    name: str
    step: Callable[[Tensor, Tensor, float], Tensor]
    ratio: int


def simulate_levels(
    levels: list[Level],
    x0: Tensor,
    dt: float,
    steps: int,
    shape: tuple[int, ...],
    seed: int,
    key: tuple[object, ...] = (),
    record_every: int = 0,
    on_step: Callable[[int], None] | None = None,
    observe: Callable[[int, dict[str, Tensor]], None] | None = None,
) -> dict[str, SimResult]:
    r"""Several schemes and step sizes driven by one Brownian path.

    The path is given by the standard normals ``xi_k`` of ``steps`` fine steps
    of size ``dt`` (shape ``shape`` per system, from a :class:`NoiseStream`); a
    level of ratio ``r`` takes one step of size ``r dt`` with the normals
    ``(xi_{jr} + ... + xi_{jr+r-1}) / sqrt(r)``, i.e. exactly the Brownian
    increment of its step. This is the coupling of strong-error studies (and
    of a discrete stack to its limit: with Gaussian layer weights, ``sqrt(h) Z_k``
    *is* the increment). ``steps`` and ``record_every`` must be multiples of
    every ratio; states are recorded at the same times for all levels.
    """
    for lv in levels:
        if lv.ratio < 1 or steps % lv.ratio or (record_every and record_every % lv.ratio):
            raise ValueError(f"level {lv.name}: steps and record_every must be multiples of its ratio {lv.ratio}")
    bsz = x0.shape[0]
    stream = NoiseStream(seed, key, bsz, shape, 0, bsz, x0.dtype, x0.device)
    xs = {lv.name: x0 for lv in levels}
    sums = {lv.name: torch.zeros((bsz, *shape), dtype=x0.dtype, device=x0.device) for lv in levels}
    recs: dict[str, list[Tensor]] = {lv.name: [x0.clone()] for lv in levels} if record_every else {}
    for k in range(steps):
        xi = stream.next()
        for lv in levels:
            if lv.ratio == 1:
                xs[lv.name] = lv.step(xs[lv.name], xi, dt)
                continue
            sums[lv.name].add_(xi)
            if (k + 1) % lv.ratio == 0:
                xs[lv.name] = lv.step(xs[lv.name], sums[lv.name] / math.sqrt(lv.ratio), lv.ratio * dt)
                sums[lv.name].zero_()
        if record_every and (k + 1) % record_every == 0:
            for lv in levels:
                recs[lv.name].append(xs[lv.name].clone())
        if observe is not None:
            observe(k, xs)
        if on_step is not None:
            on_step(k)
    times = [k * dt for k in range(0, steps + 1, record_every)] if record_every else []
    return {
        lv.name: SimResult(xs[lv.name], times, torch.stack(recs[lv.name]) if record_every else None) for lv in levels
    }


def integrate_ode(field: Callable[[Tensor], Tensor], x0: Tensor, dt: float, steps: int) -> Tensor:
    r"""Classical Runge–Kutta (order 4) for ``dX/dt = field(X)`` on the product of spheres.

    ``field`` is tangent, so the exact flow stays on the spheres; each step is
    renormalised, which changes it by ``O(dt^5)`` and keeps the order. Returns the
    state after ``steps`` steps, ``(B, n, d)``.
    """
    x = x0
    for _ in range(steps):
        k1 = field(x)
        k2 = field(x + 0.5 * dt * k1)
        k3 = field(x + 0.5 * dt * k2)
        k4 = field(x + dt * k3)
        x = normalize(x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4))
    return x


Step = Callable[[Tensor, Tensor, float], Tensor]
_COMPILED: dict[str, Callable[..., Tensor]] = {}


def _pair_coefficients(model: SphereModel, x: Tensor) -> tuple[Tensor, float] | None:
    """``(beta as (B, 1), sigma^2)`` when the fused two-token step applies, else ``None``."""
    from .models.value_noise import ValueNoise

    if not (isinstance(model, ValueNoise) and model.fused_pair(x)):
        return None
    beta = model.beta
    if isinstance(beta, Tensor):
        b = beta.to(x).reshape(-1, 1)
    else:
        b = torch.full((x.shape[0], 1), float(beta), dtype=x.dtype, device=x.device)
    return b, float(model.sigma) ** 2


def _fused(model: SphereModel, x: Tensor) -> Step | None:
    """The fused two-token Euler step when it applies (:func:`pair_euler_step`), else ``None``."""
    from .models.value_noise import pair_euler_step

    coef = _pair_coefficients(model, x)
    if coef is None:
        return None
    b, s2 = coef
    return lambda x, xi, dt: pair_euler_step(x, xi, b, dt, s2)


COMPILED_STEP_COORDS = 64
"""Steps per compiled call times ``d``: bounds the unrolled graph (compile time grows with it)."""


def _to_coords(t: Tensor) -> Tensor:
    """``(B, m)`` -> ``(m, B)`` contiguous (compiled: a vectorised tiled transpose)."""
    return t.t().contiguous()


def _compiled_slab(model: SphereModel, x: Tensor) -> Callable[[Tensor, Tensor, float], Tensor] | None:
    """A whole noise slab of fused two-token steps in compiled calls, or ``None``.

    The slab ``(S, B, 2, d)`` is a view of the stream's system-major buffer; it is
    transposed once to the coordinate-major layout of :func:`pair_euler_slab`,
    whose compiled form is one vectorised loop over systems for ``steps``
    steps (``steps`` divides ``S``; ``steps * d <= COMPILED_STEP_COORDS``).
    """
    from .models.value_noise import pair_euler_slab

    coef = _pair_coefficients(model, x)
    if coef is None:
        return None
    b, s2 = coef
    beta = b.reshape(-1).contiguous()
    bsz, _, d = x.shape
    if "pair_slab" not in _COMPILED:
        _COMPILED["pair_slab"] = torch.compile(pair_euler_slab, dynamic=False, options={"max_fusion_size": 4096})
        _COMPILED["to_coords"] = torch.compile(_to_coords, dynamic=False)
    step, to_coords = _COMPILED["pair_slab"], _COMPILED["to_coords"]

    def run(x: Tensor, slab: Tensor, dt: float) -> Tensor:
        n_steps = slab.shape[0]
        per_call = math.gcd(n_steps, max(1, COMPILED_STEP_COORDS // d))
        xi = to_coords(slab.transpose(0, 1).reshape(bsz, -1)).view(n_steps, 2, d, bsz)
        xc = x.permute(1, 2, 0).contiguous()
        for k in range(0, n_steps, per_call):
            xc = step(xc, xi[k : k + per_call], beta, dt, s2)
        return xc.permute(2, 0, 1).contiguous()

    return run


def _restrict(model: SphereModel, start: int, stop: int, total: int) -> SphereModel:
    """The model restricted to systems ``start..stop`` (per-system parameters are sliced)."""
    beta = getattr(model, "beta", None)
    if isinstance(beta, Tensor) and beta.dim() == 1 and beta.shape[0] == total and (start, stop) != (0, total):
        return dataclasses.replace(model, beta=beta[start:stop])  # type: ignore[type-var]
    return model
