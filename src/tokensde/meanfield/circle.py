r"""The mean-field limit on the circle ``S^1`` (``d = 2``): the conditional law ``mu_t`` of a token given the noise.

A token is an angle ``theta`` (``x = (cos theta, sin theta)``, tangent ``e = (-sin theta, cos theta)``). In
angle coordinates equation (*) reads, for a token of the large-``n`` limit with law ``mu_t`` (docs/meanfield.md),

.. math::

    d\theta = v_I(\theta; \mu_t)\,dt + \sum_k s_k(\theta; \mu_t)\,dW_k, \qquad
    \mu_t = \text{the conditional law of } \theta_t \text{ given } (W_k),

and ``mu_t`` solves the stochastic transport equation ``d mu = -d_theta(mu u)`` with ``u`` the Stratonovich
velocity. Both solvers here integrate the **Stratonovich** form by the Wong–Zakai scheme: over a step ``dt`` the
noise increments are frozen and the transport is an ODE in a fictitious time ``s in [0, dt]``,

.. math::

    \partial_s \theta = u(\theta; \mu_s) = v_S(\theta; \mu_s) + \sum_k s_k(\theta; \mu_s)\,\Delta W_k / \Delta t,

taken by ``substeps`` classical Runge–Kutta steps; ``v_S = v_I - (1/2) sum_k D s_k[s_k]`` is the Itô drift minus
the Itô–Stratonovich correction, in which ``D`` moves both the point and the measure along ``s_k`` (the
measure's part ``D_mu s_k[-d_theta(mu s_k)]`` is what makes the noise *common*). The scheme has weak order 1
in ``dt``; the Eulerian and Lagrangian solvers share it step for step, so on one noise path they differ only
by their discretisation of ``mu``.

Models (the noise normals per step and system, ``noise_size``):

* :class:`CircleC` (paper C): a stationary tangential Gaussian field with covariance
  ``K(delta) = cos(delta) kappa(cos delta)``, expanded in Fourier modes
  ``G = sqrt(lambda_0) xi_0 + sum_{k<=K} sqrt(lambda_k) (xi_k cos k theta + eta_k sin k theta)``
  (``2K + 1`` normals; ``lambda_k`` the Fourier coefficients of ``K``); the attention drift
  ``c <e, m_beta(theta; mu)>``. The field does not depend on ``mu`` and ``K'(0) = 0``: no correction.
* :class:`CircleA` (paper A): ``dM(x) = sigma dW a(x; mu)`` with the ``2 x 2`` Brownian matrix ``W``
  (4 normals) and the barycenter ``a`` taken under ``mu``; drift ``vbar <e, a>``. The correction is
  ``(1/2) d_theta(sigma^2 |a|^2)`` plus the measure's part, in closed form (:meth:`CircleA.velocity`).

Integrals against ``mu`` are von Mises convolutions, computed from the measure's Fourier coefficients
``nu_k = int e^{-ik phi} g(phi) mu(d phi)`` up to the order where ``I_k(beta) / I_0(beta)`` is below
``1e-17`` (:func:`kernel_order`): a density on a grid (trapezoid rule, spectrally exact for band-limited
``f``) and weighted particles (direct sums) give the same integrals for the same measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from scipy import special
from torch import Tensor

__all__ = [
    "CircleA",
    "CircleC",
    "Atoms",
    "grid_atoms",
    "particle_atoms",
    "kernel_order",
    "wong_zakai_step",
    "CircleRun",
    "eulerian",
    "lagrangian",
    "quantiles",
    "w1_circle",
    "cell_masses",
    "spectral_tail",
    "drive",
]


def kernel_order(beta: float, tol: float = 1e-17) -> int:
    """Smallest ``K`` with ``I_k(beta) / I_0(beta) < tol`` for ``k > K`` (von Mises kernel band limit), at least 2."""
    k = 2
    i0 = special.ive(0, beta)
    while special.ive(k + 1, beta) / i0 >= tol and k < 4096:
        k += 1
    return k + 2  # the sin(2 delta) and cos(delta) factors shift the band by up to 2


@dataclass
class Atoms:
    """A measure on the circle as atoms: angles ``phi`` ``(B, Q)`` with weights ``w`` ``(B, Q)`` (mass ``sum w``).

    ``grid`` is ``True`` when the atoms are the ``Q`` equispaced points of a grid and ``w = f 2 pi / Q`` (then
    Fourier sums are FFTs).
    """

    phi: Tensor
    w: Tensor
    grid: bool

    def coefficients(self, g: Tensor, order: int) -> Tensor:
        """``nu_k = sum_l w_l g(phi_l) e^{-i k phi_l}`` for ``k = 0..order``: ``(B, order + 1)`` complex."""
        wg = self.w * g
        if self.grid:
            q = self.phi.shape[-1]
            c = torch.fft.rfft(wg, dim=-1)
            return c[..., : order + 1] if order + 1 <= q // 2 + 1 else _pad(c, order + 1)
        e = self._table(order)
        return torch.einsum("bq,bqk->bk", wg.to(e.dtype), e.conj())

    def evaluate(self, coef: Tensor) -> Tensor:
        """``sum_{|k| <= K} c_k e^{i k phi}`` at the atoms: a real function, ``c_0..c_K`` (``c_{-k} = conj c_k``)."""
        if self.grid:
            q = self.phi.shape[-1]
            full = torch.zeros(*coef.shape[:-1], q // 2 + 1, dtype=coef.dtype, device=coef.device)
            m = min(coef.shape[-1], q // 2 + 1)
            full[..., :m] = coef[..., :m]
            return torch.fft.irfft(full, n=q, dim=-1) * q
        e = self._table(coef.shape[-1] - 1)
        s = torch.einsum("bk,bqk->bq", coef.to(e.dtype), e)
        return 2.0 * s.real - coef[..., :1].real  # the k and -k terms, k = 0 once

    def _table(self, order: int) -> Tensor:
        """``e^{i k phi_l}``, ``k = 0..order``, ``(B, Q, order + 1)``: computed once per atoms and reused."""
        cache = self.__dict__.setdefault("_tables", {})
        if order not in cache:
            big = max(cache) if cache else -1
            cache[order] = cache[big][..., : order + 1] if big >= order else _powers(torch.exp(1j * self.phi), order)
        return cache[order]  # type: ignore[no-any-return]


def _powers(z: Tensor, order: int) -> Tensor:
    """``z^0, ..., z^order`` along a new last axis, by repeated squaring of the table (accurate for ``|z| = 1``)."""
    out = torch.empty(*z.shape, order + 1, dtype=z.dtype, device=z.device)
    out[..., 0] = 1.0
    if order >= 1:
        out[..., 1] = z
    n = 2
    while n <= order:
        m = min(n, order + 1 - n)
        out[..., n : n + m] = out[..., :m] * out[..., n - 1 : n] * z.unsqueeze(-1)
        n += m
    return out


def _pad(c: Tensor, n: int) -> Tensor:
    out = torch.zeros(*c.shape[:-1], n, dtype=c.dtype, device=c.device)
    out[..., : c.shape[-1]] = c
    return out


def grid_atoms(f: Tensor) -> Atoms:
    """The density ``f`` ``(B, M)`` on the grid ``theta_j = 2 pi j / M`` as atoms of weights ``f_j 2 pi / M``."""
    m = f.shape[-1]
    phi = (2.0 * math.pi / m) * torch.arange(m, dtype=f.dtype, device=f.device)
    return Atoms(phi.expand_as(f), f * (2.0 * math.pi / m), grid=True)


def particle_atoms(theta: Tensor, w: Tensor | None = None) -> Atoms:
    """Particles at angles ``theta`` ``(B, N)``, equal weights ``1/N`` unless ``w`` is given."""
    if w is None:
        w = torch.full_like(theta, 1.0 / theta.shape[-1])
    return Atoms(theta, w, grid=False)


@dataclass(frozen=True)
class _VonMises:
    """Fourier coefficients (``k = 0..K``) of ``K_beta = e^{beta (cos delta - 1)}`` and its companions."""

    beta: float
    order: int

    @cached_property
    def base(self) -> np.ndarray:
        k = np.arange(-2, self.order + 3)
        return special.ive(np.abs(k), self.beta)  # e^{-beta} I_|k|(beta), index k + 2

    def coef(self, which: str) -> np.ndarray:
        b, k = self.base, np.arange(self.order + 1)
        at = lambda j: b[j + 2]  # noqa: E731
        if which == "K":  # K_beta
            return at(k).astype(complex)
        if which == "Kcos":  # K_beta cos
            return (0.5 * (at(np.abs(k - 1)) + at(k + 1))).astype(complex)
        if which == "dK":  # d/d delta K_beta = -beta sin K_beta: i k K_k
            return 1j * k * at(k)
        if which == "Kcs":  # beta K_beta cos sin = (beta / 2) K_beta sin(2 delta)
            return (self.beta / 2.0) * (at(np.abs(k - 2)) - at(k + 2)) / 2j
        raise ValueError(which)


def _conv(atoms: Atoms, g: Tensor, kernel: np.ndarray) -> Tensor:
    """``int k(theta - phi) g(phi) mu(d phi)`` at the atoms, for a kernel of coefficients ``kernel`` (``k = 0..K``)."""
    nu = atoms.coefficients(g, len(kernel) - 1)
    kt = torch.as_tensor(kernel, dtype=nu.dtype, device=nu.device)
    return atoms.evaluate(kt * nu)


def _barycenter(atoms: Atoms, vm: _VonMises) -> tuple[Tensor, Tensor, Tensor]:
    """``(a_1, a_2, Z)`` at the atoms: ``a = int K_beta(theta - phi) y(phi) mu / int K_beta mu``."""
    one = torch.ones_like(atoms.phi)
    kc = vm.coef("K")
    z = _conv(atoms, one, kc)
    a1 = _conv(atoms, torch.cos(atoms.phi), kc) / z
    a2 = _conv(atoms, torch.sin(atoms.phi), kc) / z
    return a1, a2, z


@dataclass(frozen=True)
class CircleC:
    """Model C on ``S^1``: noise field of covariance ``cos(delta) kappa(cos delta)`` in ``modes`` Fourier modes.

    Parameters
    ----------
    kappa : callable
        ``kappa(u)`` on NumPy arrays (e.g. ``tokensde.theory.synchronization.kernel(act, 2).kappa``).
    beta, c : float
        Attention inverse temperature and value scale (drift ``c m_beta``; ``c = 0``: noise only).
    modes : int
        Fourier modes ``K`` of the noise field (``2K + 1`` normals per step).
    """

    kappa: Callable[[np.ndarray], np.ndarray]
    beta: float = 1.0
    c: float = 0.0
    modes: int = 32
    lam: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = max(4096, 8 * self.modes)
        delta = 2.0 * math.pi * np.arange(n) / n
        kk = np.cos(delta) * np.asarray(self.kappa(np.cos(delta)), float)
        c = np.fft.rfft(kk).real / n  # K = c_0 + sum_k 2 c_k cos(k delta)
        lam = np.concatenate([[c[0]], 2.0 * c[1 : self.modes + 1]])
        # rounding relative to K's size (not to lam_0, which vanishes for a field of mean-zero covariance)
        if (lam < -1e-12 * float(np.abs(kk).max())).any():
            raise ValueError("kappa: cos(delta) kappa(cos delta) is not a covariance (negative Fourier coefficient)")
        object.__setattr__(self, "lam", np.clip(lam, 0.0, None))

    @property
    def noise_size(self) -> int:
        return 2 * self.modes + 1

    def field_truncation(self) -> float:
        """Variance of the field left out by the ``modes`` truncation, relative to ``K(0)``."""
        k0 = float(self.kappa(np.array([1.0]))[0])
        return max(0.0, 1.0 - float(self.lam.sum()) / k0)

    def noise(self, atoms: Atoms, xi: Tensor) -> Tensor:
        """``G(theta)`` at the atoms for the step's normals ``xi`` ``(B, 2K + 1)`` (variance ``K(0)`` per unit time)."""
        lam = torch.as_tensor(np.sqrt(self.lam), dtype=atoms.phi.dtype, device=atoms.phi.device)
        coef = torch.zeros(xi.shape[0], self.modes + 1, dtype=torch.complex128, device=xi.device)
        coef = coef.to(torch.complex64 if atoms.phi.dtype == torch.float32 else torch.complex128)
        coef[:, 0] = lam[0] * xi[:, 0]
        # sqrt(l_k) (xi cos + eta sin) = Re[sqrt(l_k) (xi - i eta) e^{ik theta}]: c_k = sqrt(l_k) (xi - i eta) / 2
        coef[:, 1:] = 0.5 * lam[1:] * (xi[:, 1 : self.modes + 1] - 1j * xi[:, self.modes + 1 :])
        return atoms.evaluate(coef)

    def velocity(self, atoms: Atoms, xi: Tensor, dt: float) -> Tensor:
        """The Wong–Zakai velocity ``u = c <e, m_beta> + G / sqrt(dt)`` at the atoms."""
        u = self.noise(atoms, xi) / math.sqrt(dt)
        if self.c != 0.0:
            a1, a2, _ = _barycenter(atoms, _VonMises(self.beta, kernel_order(self.beta)))
            u = u + self.c * (-torch.sin(atoms.phi) * a1 + torch.cos(atoms.phi) * a2)
        return u


@dataclass(frozen=True)
class CircleA:
    r"""Model A on ``S^1``: ``dM(x) = sigma dW a(x; mu)``, drift ``vbar a`` (``A = I``, ``Vbar = vbar I``).

    Velocity (Stratonovich) at ``theta``, with ``a = a(theta; mu)``, ``q = <e, a>``, ``h = <x, a>``:

    .. math::

        u = \bar v q - \tfrac12\Big[\tfrac12 \partial_\theta(\sigma^2|a|^2)
            + \frac{\sigma^2}{Z}\Big((K_\beta\cos) * (q\mu) + (\beta K_\beta \cos\sin) * (h\mu)
            - \sum_c a_c\,(\beta K_\beta\cos\sin) * (a_c\mu)\Big)\Big]
            + \sigma\, e^\top \frac{\Delta W}{\Delta t} a,

    ``Z = K_beta * mu``: the measure's part of the correction, ``D_mu a[-d_phi(mu s_k)]`` summed over the four
    noise directions, integrated by parts (docs/meanfield.md).
    """

    beta: float = 1.0
    sigma: float = 1.0
    vbar: float = 0.0

    noise_size = 4

    def velocity(self, atoms: Atoms, xi: Tensor, dt: float) -> Tensor:
        vm = _VonMises(self.beta, kernel_order(self.beta))
        phi = atoms.phi
        cos, sin = torch.cos(phi), torch.sin(phi)
        a1, a2, z = _barycenter(atoms, vm)
        q = -sin * a1 + cos * a2
        h = cos * a1 + sin * a2
        # d_theta a = (dN - a dZ) / Z with dN, dZ the convolutions with dK_beta
        dk = vm.coef("dK")
        one = torch.ones_like(phi)
        dz = _conv(atoms, one, dk)
        da1 = (_conv(atoms, cos, dk) - a1 * dz) / z
        da2 = (_conv(atoms, sin, dk) - a2 * dz) / z
        s2 = self.sigma**2
        own = s2 * (a1 * da1 + a2 * da2)  # (1/2) d_theta (sigma^2 |a|^2)
        kcs = vm.coef("Kcs")
        measure = (
            _conv(atoms, q, vm.coef("Kcos"))
            + _conv(atoms, h, kcs)
            - a1 * _conv(atoms, a1, kcs)
            - a2 * _conv(atoms, a2, kcs)
        ) * (s2 / z)
        drift = self.vbar * q - 0.5 * (own + measure)
        w = xi.reshape(-1, 2, 2) / math.sqrt(dt)  # dW / dt, rows r, columns c
        # e^T W a = sum_rc e_r W_rc a_c, e = (-sin, cos)
        wa1 = w[:, 0, 0, None] * a1 + w[:, 0, 1, None] * a2
        wa2 = w[:, 1, 0, None] * a1 + w[:, 1, 1, None] * a2
        return drift + self.sigma * (-sin * wa1 + cos * wa2)


CircleModel = CircleA | CircleC


def wong_zakai_step(
    model: CircleModel, state: Tensor, xi: Tensor, dt: float, eulerian: bool, substeps: int | None, modes: int = 0
) -> Tensor:
    """One step of the Wong–Zakai scheme: RK4 steps of the frozen-noise transport over ``[0, dt]``.

    ``eulerian``: ``state`` is the grid density ``f`` ``(B, M)`` and ``d_s f = -d_theta(f u)`` pseudo-spectrally
    (modes above ``M/3`` of the flux are dropped, the 2/3 rule); else ``state`` holds particle angles ``(B, N)``
    and ``d_s theta = u(theta)``. ``substeps=None``: as many as the transport of the highest kept mode ``k``
    (``M/3``, or ``modes`` for particles) needs for RK4's stability, ``max|u| (dt/substeps) k <= 1.5``, from the
    velocity at the step's start (the same rule for both solvers when ``modes`` is the paired grid's ``M/3``).
    """
    if substeps is None:
        atoms = grid_atoms(state) if eulerian else particle_atoms(state)
        k = state.shape[-1] // 3 if eulerian else max(modes, 1)
        umax = float(model.velocity(atoms, xi, dt).abs().max())
        substeps = max(1, math.ceil(umax * dt * k / 1.5))
    h = dt / substeps

    def rhs(s: Tensor) -> Tensor:
        if eulerian:
            u = model.velocity(grid_atoms(s), xi, dt)
            return -_spectral_dx(s * u)
        return model.velocity(particle_atoms(s), xi, dt)

    for _ in range(substeps):
        k1 = rhs(state)
        k2 = rhs(state + 0.5 * h * k1)
        k3 = rhs(state + 0.5 * h * k2)
        k4 = rhs(state + h * k3)
        state = state + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return state


def _spectral_dx(g: Tensor) -> Tensor:
    """``d_theta g`` on the grid, keeping the modes ``|k| <= M/3`` (2/3 rule)."""
    m = g.shape[-1]
    c = torch.fft.rfft(g, dim=-1)
    k = torch.arange(c.shape[-1], dtype=g.dtype, device=g.device)
    keep = (k <= m // 3).to(g.dtype)
    return torch.fft.irfft(1j * k * keep * c, n=m, dim=-1)


# ----------------------------------------------------------------------------- solvers through the engine
@dataclass
class CircleRun:
    """A solution on ``S^1``: ``states`` ``(K, B, Q)`` (densities on the grid, or particle angles) at ``times``.

    Eulerian runs also carry, per saved time and system, ``mass`` (``int f``), ``min_density`` (``min f``
    relative to the mean ``1/2pi``) and ``tail`` (the largest ``|f_k| / |f_0|`` over the top fifth of the kept
    modes, ``4M/15 < k <= M/3``): the solution is *resolved* while ``tail <= tail_tol``.
    """

    times: np.ndarray
    states: Tensor
    mass: np.ndarray | None = None
    min_density: np.ndarray | None = None
    tail: np.ndarray | None = None

    def resolved(self, tail_tol: float = 1e-6) -> np.ndarray:
        """``(K, B)``: whether each saved density is resolved (all ``True`` for particles)."""
        if self.tail is None:
            return np.ones(self.states.shape[:2], dtype=bool)
        return self.tail <= tail_tol

    def resolved_until(self, tail_tol: float = 1e-6) -> np.ndarray:
        """Per system, the last saved time before the first under-resolved one (``inf``: resolved throughout)."""
        ok = self.resolved(tail_tol)
        out = np.full(ok.shape[1], np.inf)
        for b in range(ok.shape[1]):
            bad = np.nonzero(~ok[:, b])[0]
            if len(bad):
                out[b] = self.times[max(bad[0] - 1, 0)]
        return out


def spectral_tail(f: Tensor) -> Tensor:
    """``max |f_k| / |f_0|`` over the top fifth of the kept modes (``4M/15 < k <= M/3``), per system."""
    m = f.shape[-1]
    c = torch.fft.rfft(f, dim=-1).abs()
    lo, hi = (4 * m) // 15 + 1, m // 3 + 1
    return c[..., lo:hi].amax(-1) / c[..., 0].clamp_min(1e-300)


def drive(
    step: Callable[[Tensor, Tensor, float], Tensor],
    state0: Tensor,
    path: object,
    dt: float,
    steps: int,
    save_every: int,
    diagnostics: Callable[[Tensor], tuple[np.ndarray, ...]] | None = None,
) -> tuple[np.ndarray, Tensor, list[np.ndarray]]:
    """Drive ``state0`` ``(B, ...)`` with ``step(state, xi, h)`` through the engine on ``path``, saving every
    ``save_every`` fine steps: ``(times, states (K, B, ...), diagnostics stacked (K, B) each)``.

    A coarsened view ``path.coarsen(r)`` takes ``steps / r`` steps of ``r dt`` with the normalised sums of the fine
    normals (the engine's run of ratio ``r`` on the fine path); ``save_every`` must be a multiple of ``r``."""
    from ..engine import Hooks, Run, integrate_runs

    ratio = int(getattr(path, "ratio", 1))
    fine_path = path.fine() if ratio > 1 else path  # type: ignore[attr-defined]
    if save_every < 1 or steps % save_every or save_every % ratio:
        raise ValueError(
            f"save_every must divide steps and be a multiple of the path's ratio, got {save_every}, {steps}, {ratio}"
        )
    saved: list[Tensor] = [state0.clone()]
    diag: list[tuple[np.ndarray, ...]] = [diagnostics(state0)] if diagnostics is not None else []

    def observe(k: int, states: dict[str, Tensor]) -> None:
        s = states["mu"]
        saved.append(s.clone())
        if diagnostics is not None:
            diag.append(diagnostics(s))

    def engine_step(x: Tensor, xi: Tensor | None, h: float) -> Tensor:
        assert xi is not None
        return step(x, xi, h)

    hooks = Hooks(observe=observe, observe_at=lambda k: (k + 1) % save_every == 0)
    integrate_runs([Run(step=engine_step, ratio=ratio, name="mu")], state0, fine_path, dt, steps, hooks=hooks)  # type: ignore[arg-type]
    times = dt * np.arange(0, steps + 1, save_every)
    columns = [np.stack(c) for c in zip(*diag, strict=True)] if diag else []
    return times, torch.stack(saved), columns


def _run(
    model: CircleModel,
    state0: Tensor,
    path: object,
    dt: float,
    steps: int,
    substeps: int | None,
    save_every: int,
    eulerian: bool,
    modes: int = 0,
) -> CircleRun:
    def diagnostics(s: Tensor) -> tuple[np.ndarray, ...]:
        m = s.shape[-1]
        mass = (s.sum(-1) * (2.0 * math.pi / m)).cpu().numpy()
        return mass, (s.amin(-1) * 2.0 * math.pi).cpu().numpy(), spectral_tail(s).cpu().numpy()

    def step(x: Tensor, xi: Tensor, h: float) -> Tensor:
        return wong_zakai_step(model, x, xi, h, eulerian, substeps, modes)

    times, states, diag = drive(step, state0, path, dt, steps, save_every, diagnostics if eulerian else None)
    return CircleRun(times, states, *diag) if eulerian else CircleRun(times, states)


def eulerian(
    model: CircleModel,
    f0: Tensor,
    path: object,
    dt: float,
    steps: int,
    substeps: int | None = None,
    save_every: int = 1,
) -> CircleRun:
    """The density ``f`` ``(B, M)`` (per unit angle, on ``theta_j = 2 pi j / M``) driven by ``path`` (a
    :class:`tokensde.engine.BrownianPath` of ``model.noise_size`` normals per system): Wong–Zakai steps
    (:func:`wong_zakai_step`), the states every ``save_every`` steps with the diagnostics of :class:`CircleRun`.
    As in :func:`tokensde.engine.integrate`, ``dt`` and ``steps`` count the path's fine steps: on a coarsened view
    ``path.coarsen(r)`` the run takes ``steps / r`` steps of ``r dt`` (``save_every`` a multiple of ``r``)."""
    return _run(model, f0, path, dt, steps, substeps, save_every, True)


def lagrangian(
    model: CircleModel,
    theta0: Tensor,
    path: object,
    dt: float,
    steps: int,
    substeps: int | None = None,
    save_every: int = 1,
    modes: int = 64,
) -> CircleRun:
    """Equal-weight particles at angles ``theta0`` ``(B, N)`` moved by the same scheme as :func:`eulerian`
    (the velocity of the mean-field equation evaluated on their empirical measure); ``modes``: the highest
    mode of the automatic sub-step rule (that of a grid of ``3 modes`` points)."""
    return _run(model, theta0, path, dt, steps, substeps, save_every, False, modes)


def quantiles(f: Tensor, n: int, newton: int = 4) -> Tensor:
    """Deterministic quantisation of the density ``f`` ``(B, M)``: the ``n`` angles at the mid-quantiles
    ``(i + 1/2)/n`` of its distribution function, ``(B, n)`` in ``[0, 2 pi)``, increasing. A piecewise-linear
    distribution function gives the first guess; ``newton`` Newton steps on the Fourier series of ``f`` (its
    primitive and its values) then make them the quantiles of the band-limited density itself, so that every
    cell between consecutive angles holds ``1/n`` to rounding (:func:`cell_masses`)."""
    m = f.shape[-1]
    cell = (2.0 * math.pi / m) * 0.5 * (f + torch.roll(f, -1, dims=-1))  # trapezoid mass of [theta_j, theta_j+1]
    cdf = torch.cat([torch.zeros_like(cell[..., :1]), torch.cumsum(cell, -1)], -1)
    cdf = cdf / cdf[..., -1:]
    q = (torch.arange(n, dtype=f.dtype, device=f.device) + 0.5) / n
    j = torch.searchsorted(cdf.contiguous(), q.expand(*cdf.shape[:-1], n).contiguous(), right=True) - 1
    j = j.clamp(0, m - 1)
    lo, hi = cdf.gather(-1, j), cdf.gather(-1, j + 1)
    frac = (q - lo) / (hi - lo).clamp_min(1e-300)
    theta = (2.0 * math.pi / m) * (j.to(f.dtype) + frac)
    c = torch.fft.rfft(f, dim=-1) / m
    k = torch.arange(1, m // 2, dtype=f.dtype, device=f.device)
    mass = 2.0 * math.pi * c[..., :1].real
    for _ in range(newton):
        e = torch.exp(1j * k * theta.unsqueeze(-1))
        ck = c[..., None, 1 : m // 2]
        prim = c[..., :1].real * theta + 2.0 * ((ck / (1j * k)) * (e - 1.0)).sum(-1).real  # int_0^theta f
        dens = c[..., :1].real + 2.0 * (ck * e).sum(-1).real
        theta = theta - (prim / mass - q) / (dens / mass).clamp_min(1e-12)
    return theta


def cell_masses(f: Tensor, theta: Tensor) -> Tensor:
    """``int f`` between consecutive particles ``theta`` ``(B, N)`` (unwrapped, in order; the last cell across
    ``2 pi``), from the Fourier series of the grid density ``f`` ``(B, M)``: spectrally accurate, unlike a
    piecewise-linear distribution function. A transport keeps every cell's mass ``1/N``."""
    m = f.shape[-1]
    c = torch.fft.rfft(f, dim=-1) / m
    k = torch.arange(1, m // 2, dtype=f.dtype, device=f.device)

    def primitive(x: Tensor) -> Tensor:
        e = torch.exp(1j * k * x.unsqueeze(-1))
        return c[:, :1].real * x + 2.0 * ((c[:, None, 1 : m // 2] / (1j * k)) * e).sum(-1).real

    ext = torch.cat([theta, theta[:, :1] + 2.0 * math.pi], -1)
    return primitive(ext).diff(dim=-1)


def w1_circle(theta: Tensor, f: Tensor | None = None, theta_ref: Tensor | None = None, grid: int = 4096) -> Tensor:
    """``W_1`` on the circle (arc length) between equal-weight particles ``theta`` ``(B, N)`` and either the grid
    density ``f`` ``(B, M)`` or particles ``theta_ref``: ``min_alpha int |F(t) - G(t) - alpha| dt`` over the
    distribution functions, evaluated on ``grid`` points (``(B,)``)."""
    t = (2.0 * math.pi / grid) * (torch.arange(grid, dtype=theta.dtype, device=theta.device) + 0.5)

    def cdf_particles(th: Tensor) -> Tensor:
        s = torch.sort(torch.remainder(th, 2.0 * math.pi), dim=-1).values
        return torch.searchsorted(s.contiguous(), t.expand(*s.shape[:-1], grid).contiguous()).to(th.dtype) / s.shape[-1]

    a = cdf_particles(theta)
    if f is not None:
        m = f.shape[-1]
        cell = (2.0 * math.pi / m) * 0.5 * (f + torch.roll(f, -1, dims=-1))
        cdf = torch.cat([torch.zeros_like(cell[..., :1]), torch.cumsum(cell, -1)], -1)
        cdf = cdf / cdf[..., -1:]
        x = t * (m / (2.0 * math.pi))
        j = x.floor().long().clamp(0, m - 1)
        w = x - j.to(x.dtype)
        b = cdf[..., j] * (1 - w) + cdf[..., j + 1] * w
    else:
        assert theta_ref is not None
        b = cdf_particles(theta_ref)
    diff = a - b
    alpha = diff.median(dim=-1, keepdim=True).values
    return (diff - alpha).abs().mean(-1) * (2.0 * math.pi)
