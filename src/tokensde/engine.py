r"""The engine: one integration routine for equation (*), driven by a Brownian path object.

Every simulation in tokensde is a call of :func:`integrate` (one run) or
:func:`integrate_runs` (several runs on one path); the loop over steps in
:func:`_integrate_chunk` is the only stepping loop in the package.

* A :class:`BrownianPath` is a *description* of the standard normals ``xi_k``
  (``k = 0, 1, ...``, shape ``(B, *shape)`` per step) that drive the systems:
  the seed, the key that identifies the stream, the number of systems. Two
  integrations on the same path see the same normals. Its coarsened view of
  ratio ``r`` (:meth:`BrownianPath.coarsen`) takes, for its ``j``-th step, the
  normalised sum ``(xi_{jr} + ... + xi_{jr+r-1}) / sqrt(r)``: exactly the
  Brownian increment of a step ``r dt`` of the same path. So a run at ``dt``
  and a run at ``2 dt`` on views of one path are coupled (strong-error studies,
  Richardson extrapolation, a discrete stack against its limit).
* A :class:`Run` is one numerical solution: a model stepped by a solver
  (:data:`tokensde.solvers.SOLVERS`) or by a custom step, every ``ratio``
  fine steps of the path, with step ``ratio * dt``.
* :class:`Hooks` carry what experiments need during the loop: retiring
  settled systems (their noise stops being drawn), observing (recording,
  renormalising) at chosen steps, progress.

Fast routes are capabilities of the model, asked once per slab of steps by
the solver's ``prepare`` (see :mod:`tokensde.models.base`); the engine only sees
a step function, optionally with a ``slab`` method (several steps at once) and a
``chunk`` size and a ``rows(lo, hi)`` method (the step is elementwise per
system, so it may be run on cache-sized chunks of systems).

Reproducibility: the normals are counter-based (:mod:`tokensde.rng`): normal
``c`` of step ``k`` of a system is a function of ``(seed, key, its index, k, c)``
alone, computed where it is needed (by the compiled kernel on the CPU, inside
the fused two-token step; by torch operations on other devices, with the same
bits), so results do not depend on how the systems are chunked, on threads, on
which systems retire, nor on other runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .noise import SLAB
from .rng import normals as counter_normals
from .rng import stream_keys

__all__ = ["BrownianPath", "Run", "Hooks", "Solution", "integrate", "integrate_runs", "coarse_normals"]

Step = Callable[[Tensor, Any, float], Tensor]


@dataclass(frozen=True)
class BrownianPath:
    r"""The standard normals driving ``systems`` systems, one ``(systems, *shape)`` draw per fine step.

    Parameters
    ----------
    seed : int
        Base seed.
    key : tuple
        Identifies the stream; different keys give independent paths.
    systems : int
        Number of systems ``B``.
    shape : tuple of int
        One system's normals per step (the model's ``noise_shape``).
    dtype, device
        Of the normals (those of the state they drive).
    cells : tuple of (key, systems), optional
        Several keyed streams concatenated (each cell's systems get exactly the
        numbers of a path with that key); then ``key`` and ``systems`` are ignored.
    ratio : int
        Coarsening of this view (:meth:`coarsen`).

    Examples
    --------
    >>> import torch
    >>> from tokensde.engine import BrownianPath
    >>> path = BrownianPath(seed=0, key=("demo",), systems=3, shape=(2, 4))
    >>> path.coarsen(2).ratio, path.total
    (2, 3)
    """

    seed: int
    key: tuple[Any, ...] = ()
    systems: int = 1
    shape: tuple[int, ...] = ()
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    cells: tuple[tuple[tuple[Any, ...], int], ...] | None = None
    ratio: int = 1

    @classmethod
    def for_model(
        cls, model: Any, x0: Tensor, seed: int, key: tuple[Any, ...] = (), discrete: bool = False
    ) -> BrownianPath:
        """The path of ``model``'s noise shape for the systems of ``x0`` ``(B, n, d)``, in its dtype and device."""
        bsz, n, d = x0.shape
        shape = tuple(model.noise_shape(n, d, discrete=discrete))
        return cls(int(seed), tuple(key), bsz, shape, x0.dtype, str(x0.device))

    @property
    def total(self) -> int:
        """Number of systems."""
        return self.systems if self.cells is None else sum(r for _, r in self.cells)

    def coarsen(self, r: int) -> BrownianPath:
        """The view whose step ``j`` is ``(xi_{jr} + ... + xi_{jr+r-1}) / sqrt(r)`` (ratios multiply)."""
        if int(r) < 1:
            raise ValueError(f"ratio must be >= 1, got {r}")
        return dataclasses.replace(self, ratio=self.ratio * int(r))

    def fine(self) -> BrownianPath:
        """The underlying path (ratio 1)."""
        return dataclasses.replace(self, ratio=1)

    def system_keys(self) -> tuple[Tensor, Tensor, Tensor]:
        """Per system: the two 32-bit words of its stream's Philox key and its index in the stream (int64 ``(total,)``).

        A single stream has key ``stream_keys(seed, *key)`` and indices ``0..systems-1``; with ``cells``, each
        cell's systems get their cell's key and indices ``0..runs-1`` (:mod:`tokensde.rng`).
        """
        parts = [(self.key, self.systems)] if self.cells is None else list(self.cells)
        k0, k1, idx = [], [], []
        for key, size in parts:
            w0, w1 = stream_keys(self.seed, *key)
            k0.append(torch.full((size,), w0, dtype=torch.int64))
            k1.append(torch.full((size,), w1, dtype=torch.int64))
            idx.append(torch.arange(size, dtype=torch.int64))
        return torch.cat(k0), torch.cat(k1), torch.cat(idx)

    def normals(self, step0: int, steps: int, systems: Tensor | None = None) -> Tensor:
        """The fine normals of steps ``step0 .. step0 + steps - 1``: ``(steps, B, *shape)`` in the path's dtype and
        device, for all systems or the given indices (:func:`tokensde.rng.normals`: any step, any subset).

        Examples
        --------
        >>> import torch
        >>> from tokensde.engine import BrownianPath
        >>> path = BrownianPath(seed=0, key=("demo",), systems=4, shape=(2, 3))
        >>> z = path.normals(0, 5)
        >>> tuple(z.shape), bool(torch.equal(path.normals(3, 2, torch.tensor([1, 3])), z[3:, [1, 3]]))
        ((5, 4, 2, 3), True)
        """
        return _Draw(self, 0, self.total).normals(step0, steps, systems)


class _Draw:
    """The normals of the systems ``start..stop`` of a path (their keys and indices, kept on the CPU)."""

    def __init__(self, path: BrownianPath, start: int, stop: int) -> None:
        k0, k1, idx = path.system_keys()
        self.key0, self.key1, self.index = k0[start:stop], k1[start:stop], idx[start:stop]
        self.shape, self.dtype, self.device = path.shape, path.dtype, torch.device(path.device)
        self.count = math.prod(path.shape)
        self._np: tuple[np.ndarray, ...] | None = None

    def numpy_keys(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The keys and indices as contiguous NumPy arrays (the kernels' inputs)."""
        if self._np is None:
            self._np = tuple(np.ascontiguousarray(k.numpy()) for k in (self.key0, self.key1, self.index))
        return self._np  # type: ignore[return-value]

    def keys(self, systems: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if systems is None:
            return self.key0, self.key1, self.index
        sel = systems.cpu()
        return self.key0[sel], self.key1[sel], self.index[sel]

    def normals(self, step0: int, steps: int, systems: Tensor | None = None) -> Tensor:
        k0, k1, idx = self.keys(systems)
        z = counter_normals(k0.to(self.device), k1.to(self.device), idx.to(self.device), step0, steps, self.count)
        return z.to(device=self.device, dtype=self.dtype).view(steps, len(idx), *self.shape)


def coarse_normals(group: Sequence[Tensor], r: int) -> Tensor:
    r"""``(xi_1 + ... + xi_r) / sqrt(r)``, summed left to right (the one formula of every coarse step).

    .. math:: \xi^{(r)} = \frac{1}{\sqrt r} \sum_{k=1}^{r} \xi_k

    If the ``xi_k`` are the standard normals of ``r`` consecutive steps of size
    ``dt``, ``sqrt(r dt) xi^(r)`` is exactly the Brownian increment over the
    step ``r dt``, and ``xi^(r)`` is again standard normal.

    Parameters
    ----------
    group : sequence of Tensor
        The ``r`` fine normals, all of one shape (e.g. ``(B, *noise_shape)``);
        the first one is not modified.
    r : int
        Their number (the coarsening ratio).

    Returns
    -------
    Tensor
        Same shape as each ``xi_k`` (a new tensor).

    Examples
    --------
    >>> import torch
    >>> from tokensde.engine import coarse_normals
    >>> g = torch.Generator().manual_seed(0)
    >>> xs = [torch.randn(10000, generator=g) for _ in range(4)]
    >>> z = coarse_normals(xs, 4)
    >>> bool(torch.allclose(z, sum(xs) / 2)), round(float(z.var()), 1)  # standard normal again
    (True, 1.0)
    """
    acc = group[0].clone()
    for xi in group[1:]:
        acc.add_(xi)
    return acc if r == 1 else acc.mul_(1.0 / math.sqrt(r))


@dataclass
class Run:
    r"""One solution on a path: ``model`` stepped by ``solver`` (or ``step``) every ``ratio`` fine steps.

    A run of ratio ``r`` takes, for its ``j``-th step, the step ``r dt`` with the
    normals ``(xi_{jr} + ... + xi_{jr+r-1}) / sqrt(r)`` (:func:`coarse_normals`).

    Parameters
    ----------
    model : object
        A model of the contract (:mod:`tokensde.models.base`); ignored when ``step`` is given.
    solver : str or solver
        A name of :data:`tokensde.solvers.SOLVERS` (``euler``, ``heun``, ``stack``) or a solver object.
    ratio : int
        Fine steps per step of this run.
    name : str
        Keys the result of :func:`integrate_runs` (default: the ratio, see :meth:`label`).
    step : callable, optional
        ``step(x, xi, h) -> x'`` on states ``(B, n, d)``, replacing model and solver:
        a step of size ``h`` from the (coarsened) normals ``xi`` (``None`` for a path-less run).
    compile : bool
        Passed to the solver's ``prepare`` (compiled fused routes).

    Examples
    --------
    A Brownian motion in ``R^2`` (the states need not be on a sphere for a
    custom step): its runs at ``dt`` and ``4 dt`` on one path end at the same
    point, since the coarse increments are sums of the fine ones.

    >>> import math
    >>> import torch
    >>> from tokensde.engine import BrownianPath, Run, integrate_runs
    >>> def brownian(w, xi, h):
    ...     return w + math.sqrt(h) * xi
    >>> runs = [Run(step=brownian, name="fine"), Run(step=brownian, ratio=4)]
    >>> [r.label() for r in runs]
    ['fine', '4']
    >>> path = BrownianPath(seed=0, systems=3, shape=(1, 2))
    >>> out = integrate_runs(runs, torch.zeros(3, 1, 2), path, dt=0.01, steps=64)
    >>> bool(torch.allclose(out["fine"].x, out["4"].x, atol=1e-6))
    True
    """

    model: Any = None
    solver: Any = "euler"
    ratio: int = 1
    name: str = ""
    step: Step | None = None
    compile: bool = False

    def label(self) -> str:
        return self.name or str(self.ratio)


@dataclass
class Hooks:
    """What an experiment does during the loop (all optional).

    Parameters
    ----------
    retire : callable ``(k, states, alive) -> alive``, optional
        At every slab start ``k`` (a multiple of the slab, 16 steps):
        ``states[name]`` the full ``(B, n, d)`` states, ``alive[name]`` the
        indices of the systems still stepped; returns the new index sets
        (subsets). Retired systems keep their last state; their normals are
        no longer computed once no run steps them (other systems' numbers are
        unchanged).
    observe : callable ``(k, states) -> None``, optional
        After fine step ``k`` (0-based) when ``observe_at(k)`` is true (every step
        if ``observe_at`` is ``None``), with the full states; may modify them in
        place (renormalisation).
    observe_at : callable ``(k) -> bool``, optional
        When ``observe`` is called (default: every step).
    progress : callable ``(k, active) -> None``, optional
        After every fine step, with the number of systems stepped.

    Examples
    --------
    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.engine import BrownianPath, Hooks, integrate
    >>> from tokensde.sphere import uniform
    >>> model = ValueNoise(beta=1.0)
    >>> x0 = uniform((2, 4), 3, torch.Generator().manual_seed(0))
    >>> path = BrownianPath.for_model(model, x0, seed=0)
    >>> seen = []
    >>> hooks = Hooks(observe=lambda k, states: seen.append(k), observe_at=lambda k: k % 5 == 4)
    >>> _ = integrate(model, x0, path, dt=0.01, steps=10, hooks=hooks)
    >>> seen
    [4, 9]

    Retiring system 0 at the start: it keeps its initial state, and system 1
    gets the numbers it gets without retirement.

    >>> def retire(k, states, alive):
    ...     return {name: idx[idx != 0] for name, idx in alive.items()}
    >>> kept = integrate(model, x0, path, dt=0.01, steps=10, hooks=Hooks(retire=retire))
    >>> full = integrate(model, x0, path, dt=0.01, steps=10)
    >>> bool(torch.equal(kept.x[0], x0[0])), bool(torch.allclose(kept.x[1], full.x[1]))
    (True, True)
    """

    retire: Callable[[int, dict[str, Tensor], dict[str, Tensor]], dict[str, Tensor]] | None = None
    observe: Callable[[int, dict[str, Tensor]], None] | None = None
    observe_at: Callable[[int], bool] | None = None
    progress: Callable[[int, int], None] | None = None


@dataclass
class Solution:
    """Final states ``x`` ``(B, n, d)`` and, if saved, ``xs`` ``(K, B, n, d)`` at times ``t``.

    Parameters
    ----------
    x : Tensor ``(B, n, d)``
        The states after the last step.
    t : list of float
        The times of the saved states (``K`` of them, starting at 0; empty if none saved).
    xs : Tensor ``(K, B, n, d)``, optional
        The saved states; ``xs[0]`` is the initial state and ``xs[-1]`` is ``x``.

    Examples
    --------
    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.engine import BrownianPath, integrate
    >>> from tokensde.sphere import uniform
    >>> model = ValueNoise(beta=1.0)
    >>> x0 = uniform((2, 3), 4, torch.Generator().manual_seed(0))
    >>> sol = integrate(model, x0, BrownianPath.for_model(model, x0, seed=0), dt=0.05, steps=4, save_every=2)
    >>> tuple(sol.x.shape), tuple(sol.xs.shape), sol.t
    ((2, 3, 4), (3, 2, 3, 4), [0.0, 0.1, 0.2])
    >>> bool(torch.equal(sol.xs[0], x0)), bool(torch.equal(sol.xs[-1], sol.x))
    (True, True)
    """

    x: Tensor
    t: list[float] = field(default_factory=list)
    xs: Tensor | None = None


def integrate(
    model: Any,
    x0: Tensor,
    path: BrownianPath | None,
    dt: float,
    steps: int,
    solver: Any = "euler",
    save_every: int = 0,
    hooks: Hooks | None = None,
    chunk: int | None = None,
    compile: bool = False,
) -> Solution:
    r"""Integrate ``model`` from ``x0`` ``(B, n, d)`` over ``steps`` fine steps of ``dt`` of ``path``.

    On a coarsened view of ratio ``r`` the run takes ``steps / r`` steps of
    ``r dt`` (``steps`` must be a multiple of ``r``). ``solver``: a name of
    :data:`tokensde.solvers.SOLVERS` (``euler``, ``heun``, ``stack``) or a
    solver object. ``save_every``: keep the states every that many fine steps
    (a multiple of ``r``). ``chunk``: integrate that many systems at a time (a
    multiple of 256; bounds memory, same numbers). ``path=None``: no noise
    (the step receives ``xi = None``). The model's contract is checked once here
    (:func:`tokensde.models.base.check_model`).

    Examples
    --------
    >>> import torch
    >>> from tokensde import ValueNoise, BrownianPath, integrate
    >>> from tokensde.sphere import uniform
    >>> model = ValueNoise(beta=1.0)
    >>> x0 = uniform((4, 8), 3, torch.Generator().manual_seed(0))
    >>> path = BrownianPath.for_model(model, x0, seed=1)
    >>> sol = integrate(model, x0, path, dt=0.01, steps=20, save_every=10)
    >>> tuple(sol.x.shape), tuple(sol.xs.shape), sol.t
    ((4, 8, 3), (3, 4, 8, 3), [0.0, 0.1, 0.2])
    >>> coarse = integrate(model, x0, path.coarsen(2), dt=0.01, steps=20)
    >>> bool((coarse.x - sol.x).norm(dim=-1).max() < 0.2)  # coupled: the same Brownian path
    True
    """
    ratio = 1 if path is None else path.ratio
    base = None if path is None else path.fine()
    run = Run(model=model, solver=solver, ratio=ratio, name="x", compile=compile)
    return integrate_runs([run], x0, base, dt, steps, save_every=save_every, hooks=hooks, chunk=chunk)["x"]


def integrate_runs(
    runs: Sequence[Run],
    x0: Tensor,
    path: BrownianPath | None,
    dt: float,
    steps: int,
    save_every: int = 0,
    hooks: Hooks | None = None,
    chunk: int | None = None,
) -> dict[str, Solution]:
    r"""Several runs from ``x0`` driven by one path (drawn once): ``{run name: Solution}``.

    A run of ratio ``r`` steps every ``r`` fine steps with step ``r dt`` and the
    normals ``(xi_{jr} + ... + xi_{jr+r-1}) / sqrt(r)``. ``steps`` and
    ``save_every`` must be multiples of every ratio; every run saves at the same
    times. See :func:`integrate` for the other arguments.

    Parameters
    ----------
    runs : sequence of Run
        With distinct names (:meth:`Run.label`).
    x0 : Tensor ``(B, n, d)``
        The common initial state.
    path : BrownianPath or None
        The fine path (ratio 1); ``None`` for path-less runs (ODEs).
    dt : float
        The fine step.
    steps : int
        Number of fine steps.

    Returns
    -------
    dict of str to Solution
        One :class:`Solution` per run, states ``(B, n, d)``.

    Examples
    --------
    Model A's limit at ``dt`` and ``2 dt``, and its discrete stack, on one path
    (with Gaussian entries the stack's ``sqrt(h) Z_k`` are the limit's Brownian
    increments): three coupled runs that stay close.

    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.engine import BrownianPath, Run, integrate, integrate_runs
    >>> from tokensde.sphere import uniform
    >>> model = ValueNoise(beta=1.0, route="matrix")
    >>> x0 = uniform((4, 3), 3, torch.Generator().manual_seed(0))
    >>> path = BrownianPath.for_model(model, x0, seed=0)
    >>> runs = [Run(model, "euler", 1, "fine"), Run(model, "euler", 2, "coarse"), Run(model, "stack", 1, "stack")]
    >>> out = integrate_runs(runs, x0, path, dt=1e-3, steps=64)
    >>> sorted(out), tuple(out["stack"].x.shape)
    (['coarse', 'fine', 'stack'], (4, 3, 3))
    >>> [bool((out[k].x - out["fine"].x).norm(dim=-1).max() < 0.05) for k in ("coarse", "stack")]
    [True, True]
    >>> bool(torch.equal(out["fine"].x, integrate(model, x0, path, dt=1e-3, steps=64).x))
    True
    """
    from .models.base import check_model
    from .solvers import resolve_solver

    hooks = hooks or Hooks()
    names = [r.label() for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be distinct, got {names}")
    for r in runs:
        if r.ratio < 1 or steps % r.ratio or (save_every and save_every % r.ratio):
            raise ValueError(f"run {r.label()}: steps and save_every must be multiples of its ratio {r.ratio}")
        if r.step is None:
            scheme = resolve_solver(r.solver)
            check_model(r.model, x0, path.shape if path is not None else None, scheme.discrete)
    bsz = x0.shape[0]
    if chunk is not None and (hooks.retire or hooks.observe) and chunk < bsz:
        raise ValueError("hooks that see the states need the systems in one chunk (chunk=None)")
    chunk = bsz if chunk is None else max(1, int(chunk))
    parts = [
        _integrate_chunk(runs, x0[lo : lo + chunk], path, lo, min(lo + chunk, bsz), bsz, dt, steps, save_every, hooks)
        for lo in range(0, bsz, chunk)
    ]
    times = [k * dt for k in range(0, steps + 1, save_every)] if save_every else []
    out = {}
    for name in names:
        x = torch.cat([p[name][0] for p in parts]) if len(parts) > 1 else parts[0][name][0]
        xs = None
        if save_every:
            saved = [p[name][1] for p in parts]
            xs = torch.cat([t for t in saved if t is not None], 1) if len(saved) > 1 else saved[0]
        out[name] = Solution(x, times, xs)
    return out


def _stepper(run: Run, x: Tensor, start: int, stop: int, total: int, idx: Tensor | None) -> Step:
    """The step of ``run`` for the systems ``start..stop`` of ``total`` (and among them ``idx``)."""
    if run.step is not None:
        return run.step
    from .solvers import resolve_solver

    model = run.model
    if (start, stop) != (0, total):
        model = model.select(torch.arange(start, stop, device=x.device), total)
    if idx is not None:
        model = model.select(idx, stop - start)
    return resolve_solver(run.solver).prepare(model, x, compile=run.compile)


def _integrate_chunk(
    runs: Sequence[Run],
    x0: Tensor,
    path: BrownianPath | None,
    start: int,
    stop: int,
    total: int,
    dt: float,
    steps: int,
    save_every: int,
    hooks: Hooks,
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """The stepping loop over the systems ``start..stop`` (the engine's only loop over steps).

    The path is drawn a slab (16 steps) at a time, for the systems some run still steps. A slab in which no
    hook reads a state and every coarse step lies inside is run by each run on one chunk of systems after
    the other (cache-sized chunks when the step says it is elementwise per system: the same numbers);
    otherwise step by step. When the runs share one model and its step can advance coupled runs at once
    drawing the normals itself (``levels``, on the CPU), such a slab is one call of it, and no normals are
    written out.
    """
    draw = None if path is None else _Draw(path, start, stop)
    slab_len = SLAB
    joint = _joint_step(runs, x0, start, stop, total) if draw is not None else None
    jacc = None if joint is None else torch.zeros(len(runs), x0.shape[0], math.prod(path.shape), dtype=torch.float64)  # type: ignore[union-attr]
    names = [r.label() for r in runs]
    size = x0.shape[0]
    if hooks.retire is not None and any(slab_len % r.ratio for r in runs):
        raise ValueError(f"retiring systems needs ratios that divide the slab ({slab_len} steps)")
    full = {name: x0.clone() for name in names}
    everyone = torch.arange(size, device=x0.device)
    alive: dict[str, Tensor] = dict.fromkeys(names, everyone)
    saved: dict[str, list[Tensor]] = {name: [x0.clone()] for name in names} if save_every else {}
    acc: dict[str, Tensor | None] = dict.fromkeys(names)
    observe_at = hooks.observe_at or (lambda k: True)

    def gather(name: str) -> Tensor:
        return full[name] if len(alive[name]) == size else full[name][alive[name]]

    def scatter(name: str, part: Tensor) -> None:
        if len(alive[name]) == size:
            full[name] = part
        else:
            full[name][alive[name]] = part

    k0 = 0
    while k0 < steps:
        if hooks.retire is not None:
            alive = hooks.retire(k0, full, dict(alive))
        n_here = min(slab_len, steps - k0)
        if hooks.observe is None and not save_every and not any(len(a) for a in alive.values()):
            break  # every system retired and nothing left to record
        active = max(len(a) for a in alive.values())
        ends = range(k0 + 1, k0 + n_here + 1)
        stepwise = (
            (hooks.observe is not None and any(observe_at(k - 1) for k in ends))
            or (save_every and any(k % save_every == 0 for k in ends))
            or any(n_here % r.ratio or k0 % r.ratio for r in runs)
        )
        everyone_alive = all(len(a) == size for a in alive.values())
        union = None if everyone_alive else _union(alive, size, x0.device)
        if joint is not None:
            # the whole slab in calls of the joint step, cut where a hook reads the states
            cuts = [
                k
                for k in ends
                if (hooks.observe is not None and observe_at(k - 1)) or (save_every and k % save_every == 0)
            ]
            if not cuts or cuts[-1] != ends[-1]:
                cuts.append(ends[-1])
            a = k0
            for b in cuts:
                _joint_slab(joint, runs, full, jacc, alive, union, size, draw, a, b - a, dt)  # type: ignore[arg-type]
                if hooks.progress is not None:
                    for k in range(a + 1, b):
                        hooks.progress(k - 1, active)
                if save_every and b % save_every == 0:
                    for name in names:
                        saved[name].append(full[name].clone())
                if hooks.observe is not None and observe_at(b - 1):
                    hooks.observe(b - 1, full)
                if hooks.progress is not None:
                    hooks.progress(b - 1, active)
                a = b
            k0 += n_here
            continue
        work = {name: gather(name) for name in names}
        step_of = {
            r.label(): _stepper(r, work[r.label()], start, stop, total, _subset(alive[r.label()], size)) for r in runs
        }
        noise: dict[str, Tensor] = {}
        if draw is not None:
            slab = draw.normals(k0, n_here, union)
            for name in names:
                if union is None or len(alive[name]) == len(union):
                    noise[name] = slab
                else:
                    noise[name] = slab[:, torch.searchsorted(union, alive[name])]
        if not stepwise:
            for r in runs:
                name = r.label()
                if len(work[name]):
                    work[name] = _run_slab(step_of[name], work[name], noise.get(name), n_here, r.ratio, dt)
            if hooks.progress is not None:
                for k in ends:
                    hooks.progress(k - 1, active)
        else:
            for k in ends:
                for r in runs:
                    name, ratio = r.label(), r.ratio
                    if not len(work[name]):
                        continue
                    xi = None
                    if draw is not None:
                        fine = noise[name][k - 1 - k0]
                        if ratio > 1:
                            # a running sum, the operations of coarse_normals (kept across slabs)
                            s = acc[name]
                            acc[name] = fine.clone() if s is None else s.add_(fine)
                            if k % ratio:
                                continue
                            xi, acc[name] = acc[name].mul_(1.0 / math.sqrt(ratio)), None  # type: ignore[union-attr]
                        else:
                            xi = fine.contiguous()
                    elif k % ratio:
                        continue
                    work[name] = step_of[name](work[name], xi, ratio * dt)
                due = hooks.observe is not None and observe_at(k - 1)
                keep = bool(save_every) and k % save_every == 0
                if due or keep:
                    for name in names:
                        scatter(name, work[name])
                    if keep:
                        for name in names:
                            saved[name].append(full[name].clone())
                    if due:
                        assert hooks.observe is not None
                        hooks.observe(k - 1, full)
                    work = {name: gather(name) for name in names}
                if hooks.progress is not None:
                    hooks.progress(k - 1, active)
        for name in names:
            scatter(name, work[name])
        k0 += n_here
    return {name: (full[name], torch.stack(saved[name]) if save_every else None) for name in names}


def _joint_step(runs: Sequence[Run], x0: Tensor, start: int, stop: int, total: int) -> Any:
    """The step that advances all ``runs`` at once (its ``levels`` capability), or ``None``.

    Only for runs of one model and one solver on the CPU, whose prepared step offers ``levels``.
    """
    if x0.device.type != "cpu" or not len(x0) or any(r.step is not None or r.model is not runs[0].model for r in runs):
        return None
    from .solvers import resolve_solver

    scheme = resolve_solver(runs[0].solver)
    if any(resolve_solver(r.solver) is not scheme and r.solver != runs[0].solver for r in runs):
        return None
    step = _stepper(runs[0], x0, start, stop, total, None)
    return step if getattr(step, "levels", None) is not None else None


def _union(alive: dict[str, Tensor], size: int, device: torch.device) -> Tensor:
    """The sorted indices of the systems some run steps."""
    if device.type != "cpu":
        return torch.unique(torch.cat(list(alive.values())))
    flags = np.zeros(size, dtype=bool)
    for idx in alive.values():
        flags[idx.numpy()] = True
    return torch.from_numpy(np.flatnonzero(flags))


def _joint_slab(
    joint: Any,
    runs: Sequence[Run],
    full: dict[str, Tensor],
    acc: Tensor,
    alive: dict[str, Tensor],
    union: Tensor | None,
    size: int,
    draw: _Draw,
    k0: int,
    n_here: int,
    dt: float,
) -> None:
    """``n_here`` fine steps from ``k0`` of every run through ``joint.levels`` on the systems some run steps;
    ``full`` and the coarse runs' sums of normals ``acc`` ``(R, B, m)`` updated in place."""
    names = [r.label() for r in runs]
    if union is not None and not len(union):
        return
    # NumPy, not torch, for the bookkeeping: no torch thread pool wakes up (and spins) between kernel calls
    fulls = [full[name].numpy() for name in names]
    sums_all = acc.numpy()
    k0_all, k1_all, idx_all = draw.numpy_keys()
    ratios = [r.ratio for r in runs]
    rows: slice | np.ndarray = slice(None) if union is None else union.numpy()
    count = size if union is None else len(union)
    states = np.stack([f[rows] for f in fulls]).astype(np.float64)
    flags = np.zeros((len(names), size), dtype=bool)
    for i, name in enumerate(names):
        flags[i, alive[name].numpy()] = True
    # between two multiples of every ratio no coarse step is pending: the sums start and end at zero
    period = math.lcm(*ratios)
    settled = k0 % period == 0 and (k0 + n_here) % period == 0
    sums = np.zeros((len(names), count, sums_all.shape[-1])) if settled else np.ascontiguousarray(sums_all[:, rows])
    keys = (k0_all[rows], k1_all[rows], idx_all[rows])
    joint.levels(states, sums, flags[:, rows], union, ratios, keys, k0, n_here, dt)
    if not settled:
        sums_all[:, rows] = sums
    for i in range(len(names)):
        fulls[i][rows] = states[i]


def _subset(idx: Tensor, size: int) -> Tensor | None:
    return None if len(idx) == size else idx


def _run_slab(step: Step, x: Tensor, noise: Tensor | None, n_here: int, ratio: int, dt: float) -> Tensor:
    """``n_here / ratio`` steps of ``ratio dt`` of ``x`` with the slab's normals ``noise`` ``(S, B, ...)``."""
    h = ratio * dt
    if noise is None:
        for _ in range(n_here // ratio):
            x = step(x, None, h)
        return x
    nz = noise[:n_here]
    if ratio > 1:
        nz = coarse_normals(list(nz.view(n_here // ratio, ratio, *nz.shape[1:]).unbind(1)), ratio)
    many = getattr(step, "slab", None)
    if many is not None:
        return many(x, nz, h)
    width = getattr(step, "chunk", None) or len(x)
    if width >= len(x):
        for g in range(nz.shape[0]):
            x = step(x, nz[g].contiguous(), h)
        return x
    for lo in range(0, len(x), width):
        part, sub = x[lo : lo + width], step.rows(lo, lo + width)  # type: ignore[attr-defined]
        for g in range(nz.shape[0]):
            part = sub(part, nz[g, lo : lo + width], h)
        x[lo : lo + width] = part
    return x
