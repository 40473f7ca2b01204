r"""Integrators on the product of spheres for equation (*).

A model (the contract of :mod:`tokensde.models.base`) supplies, at a state ``X``
and standard normals ``xi``, the drift ``b`` (ambient, or ``None``), the diagonal
``C_ii`` of its noise kernel and the unit noise ``dM / sqrt(dt)``
(:meth:`coefficients`), and for its discrete stack one random layer
(:meth:`layer`). A solver turns a model into a step ``step(x, xi, dt)``
(:meth:`prepare`, where a model's fast route is taken when it offers one); the
engine (:mod:`tokensde.engine`) drives the steps. Solvers declare their orders
as diffrax and torchsde do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from .engine import BrownianPath, Hooks, Run, Solution, integrate, integrate_runs
from .sphere import normalize, tangent_project

__all__ = [
    "SphereModel",
    "LimitModel",
    "StackModel",
    "EulerMaruyama",
    "Stack",
    "SOLVERS",
    "resolve_solver",
    "simulate",
    "integrate_ode",
    "StratonovichHeun",
    "stratonovich_coefficients",
    "simulate_coupled",
    "Level",
    "simulate_levels",
]


class LimitModel(Protocol):
    r"""What an SDE integrator needs: the coefficients of (*) and the normals per step.

    ``coefficients(x, xi) -> (b, C_ii, m)`` at states ``x`` ``(B, n, d)``: the
    ambient drift ``b`` ``(B, n, d)`` (or ``None``), the kernel diagonal ``C_ii``
    ``(B, n)`` and the unit-time noise ``m = dM / sqrt(dt)`` ``(B, n, d)`` for the
    normals ``xi`` ``(B, *noise_shape(n, d))`` (``None`` when ``xi`` is ``None``);
    ``noise_shape(n, d, discrete=False)``: the normals one system uses per step.
    Every model of :mod:`tokensde.models` satisfies it, and so does any object
    with these two methods (the protocol is structural).

    Examples
    --------
    Independent Brownian motions on ``S^2`` (``C = I``, ``m = xi``), for which
    ``E <x_t, x_0> = exp(-(d-1) t / 2)``:

    >>> import math
    >>> import torch
    >>> from tokensde.solvers import simulate
    >>> from tokensde.sphere import uniform
    >>> class Free:
    ...     def noise_shape(self, n, d, discrete=False):
    ...         return (n, d)
    ...     def coefficients(self, x, xi):
    ...         return None, torch.ones(x.shape[:-1]), xi
    >>> x0 = uniform((4000, 1), 3, torch.Generator().manual_seed(0))
    >>> overlap = (simulate(Free(), x0, dt=0.01, steps=100, seed=0).x * x0).sum(-1)
    >>> se = float(overlap.std()) / math.sqrt(4000)
    >>> bool(abs(float(overlap.mean()) - math.exp(-1.0)) < 3 * se)
    True
    """

    def coefficients(self, x: Tensor, xi: Tensor | None) -> tuple[Tensor | None, Tensor, Tensor | None]: ...

    def noise_shape(self, n: int, d: int, discrete: bool = False) -> tuple[int, ...]: ...


class StackModel(Protocol):
    """What the discrete stack needs: one random layer and the normals per layer.

    ``layer(x, xi, h) -> x'``: one random layer of step ``h`` applied to states
    ``x`` ``(B, n, d)`` from the normals ``xi`` ``(B, *noise_shape(n, d, discrete=True))``;
    the result is ``(B, n, d)`` on the spheres.

    Examples
    --------
    A random walk on the sphere, each token with its own normals:

    >>> import math
    >>> import torch
    >>> from tokensde.solvers import simulate
    >>> from tokensde.sphere import normalize, uniform
    >>> class Walk:
    ...     def noise_shape(self, n, d, discrete=False):
    ...         return (n, d)
    ...     def layer(self, x, xi, h):
    ...         return normalize(x + math.sqrt(h) * xi)
    >>> x0 = uniform((8, 2), 3, torch.Generator().manual_seed(0))
    >>> x = simulate(Walk(), x0, dt=0.01, steps=10, seed=0, solver="stack").x
    >>> tuple(x.shape), bool(torch.allclose(x.norm(dim=-1), torch.ones(8, 2)))
    ((8, 2, 3), True)
    """

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
    States ``x`` are ``(B, n, d)``; ``step(model, x, xi, dt)`` takes the normals
    ``xi`` ``(B, *model.noise_shape(n, d))`` and :meth:`update` the coefficients.

    Examples
    --------
    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.solvers import EulerMaruyama
    >>> from tokensde.sphere import uniform
    >>> em = EulerMaruyama()
    >>> em.name, em.strong_order, em.weak_order
    ('euler', 0.5, 1.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> model = ValueNoise(beta=2.0)  # two tokens in d = 4: the kernel route
    >>> x, xi = uniform((3, 2), 4, g), torch.randn(3, 2, 4, generator=g)
    >>> y = em.step(model, x, xi, 0.01)
    >>> bool(torch.allclose(y.norm(dim=-1), torch.ones(3, 2)))
    True

    :meth:`prepare` takes the model's fused two-token step: the same numbers up to rounding.

    >>> fused = em.prepare(model, x)
    >>> type(fused).__name__, bool(torch.allclose(fused(x, xi, 0.01), y, atol=1e-6))
    ('FusedPairStep', True)
    """

    name: str = "euler"
    strong_order: float = 0.5
    weak_order: float = 1.0
    discrete: bool = False

    def prepare(self, model: Any, x: Tensor, compile: bool = False) -> Step:
        """The step for states like ``x``: the model's fused route when it offers one, else :meth:`step`."""
        fused = model.fused_euler(x, compile) if callable(getattr(model, "fused_euler", None)) else None
        return fused if fused is not None else (lambda x, xi, dt: self.step(model, x, xi, dt))

    def step(self, model: LimitModel, x: Tensor, xi: Tensor | None, dt: float) -> Tensor:
        return self.update(x, *model.coefficients(x, xi), dt)

    @staticmethod
    def update(x: Tensor, b: Tensor | None, cdiag: Tensor, m: Tensor | None, dt: float) -> Tensor:
        """The step from the coefficients at ``x``: drift ``b``, ``C_ii`` ``(B, n)``, unit noise ``m`` (or ``None``)."""
        if m is None:  # no noise drawn (a path-less run)
            incr = dt * b if b is not None else torch.zeros_like(x)
        else:
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

    Examples
    --------
    With the same normals, a layer and an Euler–Maruyama step of the limit differ
    by ``O(h)`` (both are ``x + sqrt(h) P Z a + O(h)``):

    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.solvers import EulerMaruyama, Stack
    >>> from tokensde.sphere import uniform
    >>> g = torch.Generator().manual_seed(0)
    >>> model = ValueNoise(beta=1.0, route="matrix")
    >>> x, xi = uniform((3, 4), 3, g), torch.randn(3, 3, 3, generator=g)
    >>> def gap(h):
    ...     return float((Stack().step(model, x, xi, h) - EulerMaruyama().step(model, x, xi, h)).norm(dim=-1).max())
    >>> [round(gap(h) / h, 1) for h in (1e-2, 1e-3)]
    [1.1, 1.1]
    >>> Stack().prepare(model, x) == model.layer
    True
    """

    name: str = "stack"
    strong_order: float = 0.5
    weak_order: float = 1.0
    discrete: bool = True

    def prepare(self, model: Any, x: Tensor, compile: bool = False) -> Step:
        """The model's layer as the step."""
        return model.layer  # type: ignore[no-any-return]

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

    Parameters
    ----------
    model : LimitModel
        A model whose noise is linear in the normals.
    x : Tensor ``(B, n, d)``
        States on the spheres.
    xi : Tensor ``(B, *noise_shape)``
        The step's normals (their shape also sets the directions ``e_k``).

    Returns
    -------
    f_S, g : Tensor ``(B, n, d)``
        The Stratonovich drift and the noise for ``xi``, both tangent.

    Examples
    --------
    Model A's closed form against the central differences (a wrapper without
    ``stratonovich_correction``), in float64:

    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.solvers import stratonovich_coefficients
    >>> from tokensde.sphere import uniform
    >>> g = torch.Generator().manual_seed(0)
    >>> model = ValueNoise(beta=1.5, route="matrix")
    >>> x = uniform((2, 3), 3, g, dtype=torch.float64)
    >>> xi = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    >>> class ByDifferences:
    ...     def coefficients(self, x, xi):
    ...         return model.coefficients(x, xi)
    >>> f1, g1 = stratonovich_coefficients(model, x, xi)
    >>> f2, g2 = stratonovich_coefficients(ByDifferences(), x, xi)
    >>> bool(torch.allclose(f1, f2, atol=1e-8)), bool(torch.equal(g1, g2))
    (True, True)
    >>> bool((f1 * x).sum(-1).abs().max() < 1e-12), bool((g1 * x).sum(-1).abs().max() < 1e-12)  # tangent
    (True, True)
    """
    b, _, m = model.coefficients(x, xi)
    assert m is not None
    closed = getattr(model, "stratonovich_correction", None)
    corr = closed(x) if closed is not None else None
    if corr is None:
        corr = _correction_by_differences(model, x, xi)
    drift = -0.5 * corr if b is None else b - 0.5 * corr
    return tangent_project(x, drift), tangent_project(x, m)


def _noise(model: LimitModel, x: Tensor, xi: Tensor) -> Tensor:
    m = model.coefficients(x, xi)[2]
    assert m is not None
    return m


def _correction_by_differences(model: LimitModel, x: Tensor, xi: Tensor) -> Tensor:
    """``sum_k D sigma_k[g_k]`` by central differences (see :func:`stratonovich_coefficients`)."""
    k = math.prod(xi.shape[1:])
    eye = torch.eye(k, dtype=x.dtype, device=x.device).reshape(k, *xi.shape[1:])
    h = torch.finfo(x.dtype).eps ** (1.0 / 3.0)
    bsz = x.shape[0]
    # all k directions in one batch of k * B systems, then all 2k differences in one batch; a model with
    # per-system parameters is widened to the batch by its ``select`` (system b of every copy is system b)
    select = getattr(model, "select", None)
    once = torch.arange(bsz, device=x.device)
    wide = model if select is None else select(once.repeat(k), bsz)
    twice = model if select is None else select(once.repeat(2 * k), bsz)
    xs = x.unsqueeze(0).expand(k, *x.shape).reshape(k * bsz, *x.shape[1:])
    es = eye.unsqueeze(1).expand(k, bsz, *eye.shape[1:]).reshape(k * bsz, *eye.shape[1:])
    g = tangent_project(xs, _noise(wide, xs, es))
    both = _noise(twice, torch.cat([xs + h * g, xs - h * g]), torch.cat([es, es]))
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

    Examples
    --------
    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.engine import BrownianPath, integrate
    >>> from tokensde.solvers import StratonovichHeun
    >>> from tokensde.sphere import uniform
    >>> model = ValueNoise(beta=1.0, route="matrix")
    >>> x0 = uniform((4, 3), 3, torch.Generator().manual_seed(0))
    >>> path = BrownianPath.for_model(model, x0, seed=0)
    >>> heun = integrate(model, x0, path, dt=1e-3, steps=32, solver="heun")
    >>> euler = integrate(model, x0, path, dt=1e-3, steps=32, solver="euler")
    >>> bool((heun.x - euler.x).norm(dim=-1).max() < 0.05)  # two schemes for one SDE, one path
    True
    >>> StratonovichHeun().prepare(ValueNoise(route="kernel"), x0)
    Traceback (most recent call last):
    ...
    ValueError: the Heun scheme needs a noise linear in the normals at every state (a matrix route)
    """

    name: str = "heun"
    strong_order: float = 0.5
    weak_order: float = 1.0
    strong_order_commutative: float = 1.0
    discrete: bool = False

    def prepare(self, model: Any, x: Tensor, compile: bool = False) -> Step:
        """The step, once the model's noise is checked to be linear in the normals."""
        check = getattr(model, "linear_noise", None)
        if check is None or not check(x.shape[-2], x.shape[-1]):
            raise ValueError("the Heun scheme needs a noise linear in the normals at every state (a matrix route)")
        return lambda x, xi, dt: self.step(model, x, xi, dt)

    def step(self, model: LimitModel, x: Tensor, xi: Tensor | None, dt: float) -> Tensor:
        if xi is None:
            raise ValueError("the Heun scheme needs the step's normals")
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


def resolve_solver(solver: Any) -> Any:
    """A solver object from a name of :data:`SOLVERS` (or the object itself).

    Examples
    --------
    >>> from tokensde.solvers import SOLVERS, EulerMaruyama, resolve_solver
    >>> resolve_solver("heun") is SOLVERS["heun"], resolve_solver(EulerMaruyama()).name
    (True, 'euler')
    >>> resolve_solver("rk4")
    Traceback (most recent call last):
    ...
    ValueError: solver must be one of ['euler', 'heun', 'stack'], got 'rk4'
    """
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
        return SOLVERS[solver]
    if not callable(getattr(solver, "prepare", None)):
        raise ValueError(f"a solver needs a prepare(model, x, compile) method, got {type(solver).__name__}")
    return solver


def _progress(on_step: Callable[[int], None] | None) -> Hooks | None:
    return None if on_step is None else Hooks(progress=lambda k, active: on_step(k))


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
) -> Solution:
    """Integrate ``steps`` steps from ``x0`` ``(B, n, d)`` with reproducible common noise.

    A convenience over :func:`tokensde.engine.integrate`.
    The path is ``BrownianPath.for_model(model, x0, seed, key)``: each system's
    noise depends only on ``(seed, key, its index, the step)``, so the result does not
    depend on ``chunk`` (systems per pass). ``record_every``
    keeps the states every that many steps (``Solution.xs`` at ``Solution.t``);
    ``on_step(k)`` is called after every step (progress bars). Two-token model-A
    systems take the model's fused step: on the CPU its compiled kernel
    (:func:`tokensde.kernels.pair_levels`, normals drawn in place); elsewhere the
    torch form, which ``compile=True`` runs as :func:`torch.compile`-d calls of
    up to 16 steps (about a minute to compile the first time for a new ``d``).
    The numbers of all routes agree up to floating-point rounding.

    Returns
    -------
    Solution
        ``x`` ``(B, n, d)``; with ``record_every``, ``xs`` ``(K, B, n, d)`` at times ``t``.

    Examples
    --------
    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.solvers import simulate
    >>> from tokensde.sphere import uniform
    >>> model = ValueNoise(beta=2.0)
    >>> x0 = uniform((512, 2), 3, torch.Generator().manual_seed(0))
    >>> sol = simulate(model, x0, dt=0.01, steps=16, seed=0, record_every=8)
    >>> tuple(sol.xs.shape), sol.t
    ((3, 512, 2, 3), [0.0, 0.08, 0.16])
    >>> bool(torch.equal(simulate(model, x0, dt=0.01, steps=16, seed=0, chunk=256).x, sol.x))  # chunk-free
    True
    """
    scheme = resolve_solver(solver)
    path = BrownianPath.for_model(model, x0, seed, key, discrete=scheme.discrete)
    return integrate(model, x0, path, dt, steps, scheme, record_every, _progress(on_step), chunk, compile)


def simulate_coupled(
    model: LimitModel,
    x0: Tensor,
    dt: float,
    steps: int,
    seed: int,
    key: tuple[object, ...] = (),
    record_every: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> tuple[Solution, Solution]:
    """Euler–Maruyama at ``dt`` and at ``2 dt`` on one Brownian path: ``(fine, coarse)``.

    The coarse step uses ``(xi_{2k} + xi_{2k+1}) / sqrt(2)`` (the view
    ``path.coarsen(2)``), so both runs are exact Euler–Maruyama runs of their
    step and strongly correlated: ``2 E f(X^dt) - E f(X^{2dt})`` (Richardson)
    removes the ``O(dt)`` weak error at little variance cost. ``steps`` and
    ``record_every`` must be even; the fine run gives the numbers of
    :func:`simulate` with the same arguments.

    Examples
    --------
    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.solvers import simulate, simulate_coupled
    >>> from tokensde.sphere import uniform
    >>> model = ValueNoise(beta=1.0)
    >>> x0 = uniform((8, 4), 3, torch.Generator().manual_seed(0))
    >>> fine, coarse = simulate_coupled(model, x0, dt=1e-3, steps=64, seed=0)
    >>> bool(torch.equal(fine.x, simulate(model, x0, dt=1e-3, steps=64, seed=0).x))
    True
    >>> bool((fine.x - coarse.x).norm(dim=-1).max() < 0.05)  # coupled
    True
    """
    if steps % 2 or record_every % 2:
        raise ValueError(f"steps and record_every must be even, got {steps} and {record_every}")
    path = BrownianPath.for_model(model, x0, seed, key)
    runs = [Run(model, "euler", 1, "fine"), Run(model, "euler", 2, "coarse")]
    out = integrate_runs(runs, x0, path, dt, steps, record_every, _progress(on_step))
    return out["fine"], out["coarse"]


@dataclass(frozen=True)
class Level:
    """One scheme on a nested grid: ``step(x, xi, dt)`` advanced every ``ratio`` fine steps with step ``ratio * dt``.

    Examples
    --------
    >>> from tokensde import ValueNoise
    >>> from tokensde.solvers import Level
    >>> model = ValueNoise(beta=1.0, route="matrix")
    >>> lv = Level("stack", model.layer, ratio=2)
    >>> lv.name, lv.ratio
    ('stack', 2)
    """

    name: str
    step: Callable[[Tensor, Tensor, float], Tensor]
    ratio: int


def simulate_levels(
    levels: Sequence[Level],
    x0: Tensor,
    dt: float,
    steps: int,
    shape: tuple[int, ...],
    seed: int,
    key: tuple[object, ...] = (),
    record_every: int = 0,
    on_step: Callable[[int], None] | None = None,
    observe: Callable[[int, dict[str, Tensor]], None] | None = None,
) -> dict[str, Solution]:
    r"""Several schemes and step sizes driven by one Brownian path (:func:`tokensde.engine.integrate_runs`).

    The path has ``shape`` normals per system and step; a level of ratio ``r``
    takes one step of size ``r dt`` with the normals
    ``(xi_{jr} + ... + xi_{jr+r-1}) / sqrt(r)``, exactly the Brownian increment
    of its step: the coupling of strong-error studies (and of a discrete stack
    to its limit: with Gaussian layer weights, ``sqrt(h) Z_k`` *is* the
    increment). ``steps`` and ``record_every`` must be multiples of every
    ratio. ``observe(k, states)`` after every fine step.

    Returns
    -------
    dict of str to Solution
        One per level, keyed by its name; states ``(B, n, d)``.

    Examples
    --------
    Model A's Euler–Maruyama at ``dt`` and ``4 dt``, and its stack, on one path:

    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.solvers import EulerMaruyama, Level, simulate_levels
    >>> from tokensde.sphere import uniform
    >>> model = ValueNoise(beta=1.0, route="matrix")
    >>> def euler(x, xi, dt):
    ...     return EulerMaruyama().step(model, x, xi, dt)
    >>> levels = [Level("euler", euler, 1), Level("euler4", euler, 4), Level("stack", model.layer, 1)]
    >>> x0 = uniform((4, 3), 3, torch.Generator().manual_seed(0))
    >>> out = simulate_levels(levels, x0, dt=1e-3, steps=64, shape=(3, 3), seed=0)
    >>> sorted(out)
    ['euler', 'euler4', 'stack']
    >>> [bool((out[k].x - out["euler"].x).norm(dim=-1).max() < 0.05) for k in ("euler4", "stack")]
    [True, True]
    """
    path = BrownianPath(int(seed), tuple(key), x0.shape[0], tuple(shape), x0.dtype, str(x0.device))
    runs = [Run(step=lv.step, ratio=lv.ratio, name=lv.name) for lv in levels]
    hooks = Hooks(observe=observe, progress=None if on_step is None else (lambda k, active: on_step(k)))
    return integrate_runs(runs, x0, path, dt, steps, record_every, hooks)


def integrate_ode(field: Callable[[Tensor], Tensor], x0: Tensor, dt: float, steps: int) -> Tensor:
    r"""Classical Runge–Kutta (order 4) for ``dX/dt = field(X)`` on the product of spheres.

    ``field`` is tangent, so the exact flow stays on the spheres; each step is
    renormalised, which changes it by ``O(dt^5)`` and keeps the order. Returns the
    state after ``steps`` steps, ``(B, n, d)`` (a path-less run of the engine).

    .. math::

        k_1 = f(X),\ k_2 = f(X + \tfrac h2 k_1),\ k_3 = f(X + \tfrac h2 k_2),\ k_4 = f(X + h k_3), \qquad
        X' = N\Big(X + \tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4)\Big).

    Examples
    --------
    The rotation ``dx/dt = J x`` of the ``(e_1, e_2)`` plane takes ``e_1`` to
    ``e_2`` at ``t = pi/2``; halving the step divides the error by ``2^4``:

    >>> import math
    >>> import torch
    >>> from tokensde.solvers import integrate_ode
    >>> J = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    >>> x0 = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64)  # (B, n, d) = (1, 1, 3)
    >>> e2 = torch.tensor([[[0.0, 1.0, 0.0]]], dtype=torch.float64)
    >>> def error(steps):
    ...     x = integrate_ode(lambda x: x @ J.T, x0, math.pi / (2 * steps), steps)
    ...     return float((x - e2).abs().max())
    >>> bool(error(50) < 1e-7), round(error(50) / error(100))
    (True, 16)
    """

    def rk4(x: Tensor, xi: Tensor | None, h: float) -> Tensor:
        k1 = field(x)
        k2 = field(x + 0.5 * h * k1)
        k3 = field(x + 0.5 * h * k2)
        k4 = field(x + h * k3)
        return normalize(x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4))

    return integrate_runs([Run(step=rk4, name="x")], x0, None, dt, steps)["x"].x


Step = Callable[[Tensor, Tensor | None, float], Tensor]
