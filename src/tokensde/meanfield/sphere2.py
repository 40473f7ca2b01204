r"""The mean-field limit of model C on the sphere ``S^2`` (``d = 3``): the conditional law ``mu_t`` given the noise.

The same design as :mod:`tokensde.meanfield.circle`, one dimension up. A token is a unit vector ``x in R^3``;
given the common noise, the law ``mu_t`` of a token of the large-``n`` limit solves the stochastic transport
equation ``d mu = -div_S(mu u)`` with the Stratonovich velocity ``u``. Both solvers integrate it by the
Wong–Zakai scheme: over a step ``dt`` the noise is frozen and the transport is an ODE in a fictitious time
``s in [0, dt]``, ``d_s x = u(x; mu_s)``, taken by ``substeps`` classical Runge–Kutta steps. On one noise path
the Eulerian and Lagrangian solvers share the scheme step for step and differ only by their discretisation of
``mu``.

**Noise** (:class:`SphereC`). A Gaussian vector field ``M(x) in R^3`` with ``E[M(x) M(y)^T] = kappa(<x, y>) I_3``.
By Funk–Hecke, ``kappa(<x, y>) = sum_l kappa_l sum_m Y_lm(x) Y_lm(y)`` with real orthonormal spherical harmonics
and ``kappa_l = 2 pi int_{-1}^1 kappa(t) P_l(t) dt >= 0`` (:func:`funk_hecke`), so, truncated at degree
``L_noise`` (``degree``),

.. math:: M(x) = \sum_{l \le L_{noise}} \sum_{m} \sqrt{\kappa_l}\, Y_{lm}(x)\, \xi_{lm}, \qquad \xi_{lm} \sim N(0, I_3)

(``3 (L_noise + 1)^2`` normals per step: ``noise_size``, laid out ``(3, (L_noise+1)^2)``, harmonic index
``l^2 + l + m``). The truncated field has the isotropic kernel ``kappa_L(t) = sum_{l<=L_noise} kappa_l
(2l+1)/(4 pi) P_l(t)`` (:meth:`SphereC.kernel_truncated`). The tokens are driven by ``P_x M``. The
Itô–Stratonovich correction ``(1/2) P_x sum_k D sigma_k[P_x sigma_k]`` of the fields ``sigma_k = sqrt(kappa_l) Y_lm
e_c`` is ``(1/2) sum_l kappa_l sum_m Y_lm grad_S Y_lm = (1/4) grad_S sum_l kappa_l sum_m Y_lm^2 = 0``, since
``sum_m Y_lm^2 = (2l+1)/(4 pi)`` (addition theorem), and the field does not depend on ``mu``: no correction
(:meth:`SphereC.stratonovich_correction` evaluates it). The Stratonovich velocity is

.. math:: u(x) = P_x\big(c\, m_\beta(x; \mu) + M(x) / \sqrt{dt}\big).

**Attention** ``m_beta(x; mu) = int e^{beta <x,y>} y mu(dy) / int e^{beta <x,y>} mu(dy)``. The kernel
``e^{beta (t - 1)}`` has the Funk–Hecke coefficients ``k_l = 4 pi e^{-beta} i_l(beta)`` (modified spherical
Bessel), which fall like ``beta^l / (2l+1)!!``: the convolutions are diagonal in harmonic space and are computed
there up to the degree where ``k_l / k_0 < 1e-17`` (:func:`kernel_degree`), from the harmonic coefficients of
``g mu`` (``g = 1, y_1, y_2, y_3``). A density on the grid gives them by the grid's quadrature (exact up to degree
``L`` for ``f`` of degree ``L``: the integrands have degree ``<= 2L + 1``); particles by direct sums. So both
solvers apply the same integral operator to their measure (it is truncated at ``min(L, kernel_degree)`` on a
grid of degree ``L``; choose ``L >= kernel_degree(beta)``, 14 for ``beta = 1``). Harmonic space is cheaper than
quadrature on the grid (``O(L^3)`` against ``O(L^4)``) and than direct particle sums (``O(N L^2)`` against
``O(N^2)``), and it is exact to rounding for the measures at hand.

**Eulerian solver** (:func:`eulerian`). The density ``f`` (per unit area, mass 1 is ``f = 1 / (4 pi)``) on the
Gauss–Legendre grid of :class:`SphereGrid` (``nlat = L + 1`` nodes in ``cos theta``, ``nlon = 2L + 2`` in
``phi``), with the real spherical-harmonic transform up to degree ``L`` (FFT in ``phi``, Legendre sums with
tables of the normalised associated Legendre functions). ``d_s f = -div_S(f u)`` pseudo-spectrally: the three
ambient components of the flux ``F = f u`` are analysed and truncated at degree ``cut = floor(2L/3)`` (the 2/3
rule; alias-free when ``u`` has degree ``<= L/3``, i.e. ``L_noise + 2 <= L/3`` and ``kernel_degree + 2 <= L/3``,
and otherwise a truncation that keeps the scheme stable), and

.. math:: \operatorname{div}_S(P F) = \sum_c (\nabla_S F_c)_c - 2 \langle x, F\rangle

(the divergence of the tangent part of the truncated flux; ``nabla_S`` from the ``theta`` derivatives of the
Legendre tables). Its ``l = 0`` coefficient vanishes to rounding (both terms have degree ``<= cut + 1`` and the
quadrature integrates them exactly), so the mass is conserved. The initial density is projected on degree
``<= L``. Diagnostics per saved time: ``mass``, ``min_density`` (relative to the uniform ``1/(4 pi)``) and
``tail`` (:func:`spectral_tail`, the largest degree energy ``(sum_m f_lm^2)^{1/2}`` over the top fifth of the kept
degrees, ``4 cut / 5 < l <= cut``, relative to ``|f_00|``): resolved while ``tail <= tail_tol``.

**Lagrangian solver** (:func:`lagrangian`). Equal-weight particles ``(B, N, 3)``, moved by the same scheme with
the same normals (the field evaluated at the particles by the same Legendre recursion), put back on the sphere
after every RK4 step. Deterministic starts: :func:`fibonacci` (uniform) and :func:`quantize` (a density: the
Rosenblatt transform of the Fibonacci points of the unit square).

Cross-validation: :func:`wasserstein` (``W_p`` with the great-circle cost between particles and the grid density
as weighted atoms, by POT's ``emd2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from scipy import special
from torch import Tensor

from .circle import CircleRun, drive

__all__ = [
    "legendre",
    "real_sh",
    "real_sh_grad",
    "SphereGrid",
    "get_grid",
    "funk_hecke",
    "kernel_degree",
    "exp_kernel_coefficients",
    "SphereC",
    "wong_zakai_step",
    "SphereRun",
    "eulerian",
    "lagrangian",
    "spectral_tail",
    "fibonacci",
    "quantize",
    "wasserstein",
    "von_mises_fisher",
]

SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- Legendre tables, harmonics
def legendre(lmax: int, z: Tensor, s: Tensor | None = None) -> Tensor:
    r"""Normalised associated Legendre functions ``Q_lm(z)``, ``(..., lmax + 1 [l], lmax + 1 [m])`` (0 for ``m > l``).

    ``Q_lm = sqrt((2l+1)/(4 pi) (l-m)!/(l+m)!) P_l^m`` without the Condon–Shortley phase, so that
    ``Y_l0 = Q_l0``, ``Y_lm = sqrt2 Q_lm cos(m phi)``, ``Y_l,-m = sqrt2 Q_lm sin(m phi)`` are orthonormal on
    ``S^2``. ``s = sin theta`` (default ``sqrt(1 - z^2)``). Stable recursion: the diagonal
    ``Q_mm = sqrt((2m+1)/(2m)) s Q_{m-1,m-1}``, then in ``l`` at fixed ``m``.
    """
    if s is None:
        s = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    out = torch.zeros(*z.shape, lmax + 1, lmax + 1, dtype=z.dtype, device=z.device)
    diag = torch.full_like(z, 1.0 / math.sqrt(4.0 * math.pi))
    out[..., 0, 0] = diag
    for m in range(1, lmax + 1):
        diag = math.sqrt((2 * m + 1) / (2 * m)) * s * diag
        out[..., m, m] = diag
    ms = torch.arange(lmax + 1, dtype=z.dtype, device=z.device)
    for l in range(1, lmax + 1):  # noqa: E741
        # m = l - 1: sqrt(2m + 3) z Q_mm
        out[..., l, l - 1] = math.sqrt(2 * (l - 1) + 3) * z * out[..., l - 1, l - 1]
        if l >= 2:
            mm = ms[: l - 1]
            a = torch.sqrt((4.0 * l * l - 1.0) / (l * l - mm * mm))
            b = torch.sqrt(((l - 1.0) ** 2 - mm * mm) / (4.0 * (l - 1.0) ** 2 - 1.0))
            out[..., l, : l - 1] = a * (z.unsqueeze(-1) * out[..., l - 1, : l - 1] - b * out[..., l - 2, : l - 1])
    return out


def _legendre_dtheta(q: Tensor, z: Tensor, s: Tensor) -> Tensor:
    r"""``d Q_lm / d theta = (l z Q_lm - sqrt((2l+1)(l^2 - m^2)/(2l-1)) Q_{l-1,m}) / sin theta`` (``s > 0``)."""
    lmax = q.shape[-1] - 1
    lv = torch.arange(lmax + 1, dtype=z.dtype, device=z.device)
    l, m = lv[:, None], lv[None, :]  # noqa: E741
    coef = torch.sqrt(((2 * l + 1) * (l * l - m * m)).clamp_min(0.0) / (2 * l - 1).abs())
    prev = torch.zeros_like(q)
    prev[..., 1:, :] = q[..., :-1, :]
    return (l * z[..., None, None] * q - coef * prev) / s[..., None, None]


def _harmonic_index(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``(l, m)`` of the real harmonic at index ``l^2 + l + m``, ``m = -l..l``."""
    ls = np.concatenate([np.full(2 * l + 1, l) for l in range(lmax + 1)])  # noqa: E741
    ms = np.concatenate([np.arange(-l, l + 1) for l in range(lmax + 1)])  # noqa: E741
    return ls, ms


def _angles(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(z, s, phi)`` of the directions ``x`` ``(..., 3)`` (normalised here)."""
    x = x / x.norm(dim=-1, keepdim=True)
    s = torch.hypot(x[..., 0], x[..., 1])
    return x[..., 2], s, torch.atan2(x[..., 1], x[..., 0])


def _trig(phi: Tensor, lmax: int) -> tuple[Tensor, Tensor]:
    m = torch.arange(lmax + 1, dtype=phi.dtype, device=phi.device)
    mp = phi.unsqueeze(-1) * m
    return torch.cos(mp), torch.sin(mp)


def real_sh(lmax: int, x: Tensor) -> Tensor:
    """Real orthonormal spherical harmonics ``Y_lm(x)`` at the directions ``x`` ``(..., 3)``: ``(..., (lmax+1)^2)``."""
    z, s, phi = _angles(x)
    q = legendre(lmax, z, s)
    cos, sin = _trig(phi, lmax)
    ls, ms = _harmonic_index(lmax)
    am = np.abs(ms)
    lt, mt = torch.as_tensor(ls, device=x.device), torch.as_tensor(am, device=x.device)
    qa = q[..., lt, mt]
    fac = torch.as_tensor(np.where(ms == 0, 1.0, SQRT2), dtype=x.dtype, device=x.device)
    trig = torch.where(torch.as_tensor(ms >= 0, device=x.device), cos[..., mt], sin[..., mt])
    return qa * trig * fac


def real_sh_grad(lmax: int, x: Tensor) -> Tensor:
    r"""Surface gradients ``grad_S Y_lm(x)`` (ambient, tangent), ``(..., (lmax+1)^2, 3)``; ``x`` off the poles.

    ``grad_S Y = e_theta d_theta Y + e_phi (1 / sin theta) d_phi Y``.
    """
    z, s, phi = _angles(x)
    q = legendre(lmax, z, s)
    dq = _legendre_dtheta(q, z, s)
    cos, sin = _trig(phi, lmax)
    ls, ms = _harmonic_index(lmax)
    am = np.abs(ms)
    lt, mt = torch.as_tensor(ls, device=x.device), torch.as_tensor(am, device=x.device)
    fac = torch.as_tensor(np.where(ms == 0, 1.0, SQRT2), dtype=x.dtype, device=x.device)
    pos = torch.as_tensor(ms >= 0, device=x.device)
    mf = torch.as_tensor(am, dtype=x.dtype, device=x.device)
    trig = torch.where(pos, cos[..., mt], sin[..., mt])
    dtrig = torch.where(pos, -mf * sin[..., mt], mf * cos[..., mt])  # d/dphi
    yt = dq[..., lt, mt] * trig * fac
    yp = q[..., lt, mt] * dtrig * fac / s.unsqueeze(-1)
    cp, sp = torch.cos(phi), torch.sin(phi)
    e_t = torch.stack([z * cp, z * sp, -s], -1)  # (..., 3)
    e_p = torch.stack([-sp, cp, torch.zeros_like(sp)], -1)
    return yt.unsqueeze(-1) * e_t.unsqueeze(-2) + yp.unsqueeze(-1) * e_p.unsqueeze(-2)


# ----------------------------------------------------------------------------- the grid and its transforms
class SphereGrid:
    r"""The Gauss–Legendre grid of degree ``L`` and its real spherical-harmonic transform.

    ``nlat = L + 1`` nodes ``z_j = cos theta_j`` (Gauss–Legendre, weights ``w_j``), ``nlon = 2L + 2``
    longitudes ``phi_k = 2 pi k / nlon``; grid functions are ``(..., nlat, nlon)``. Spectral coefficients are kept
    complex, ``c`` ``(..., L + 1 [l], L + 1 [m])``, with ``f = sum_l [Q_l0 c_l0 + sum_{m>0} Re(Q_lm c_lm e^{im phi})]``
    (:meth:`to_real` / :meth:`from_real` convert to the real orthonormal coefficients ``a_lm``, index
    ``l^2 + l + m``: ``c_l0 = a_l0``, ``c_lm = sqrt2 (a_lm - i a_l,-m)``). :meth:`analysis` is exact for grid
    functions of degree ``<= L`` (quadrature exact to degree ``2L + 1``).
    """

    def __init__(self, lmax: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> None:
        self.L = int(lmax)
        self.nlat, self.nlon = self.L + 1, 2 * self.L + 2
        znp, wnp = np.polynomial.legendre.leggauss(self.nlat)
        self.z = torch.as_tensor(znp, dtype=dtype, device=device)
        self.w = torch.as_tensor(wnp, dtype=dtype, device=device)
        self.s = torch.as_tensor(np.sqrt(1.0 - znp**2), dtype=dtype, device=device)
        self.phi = torch.as_tensor(2.0 * math.pi * np.arange(self.nlon) / self.nlon, dtype=dtype, device=device)
        self.q = legendre(self.L, self.z, self.s)  # (nlat, l, m)
        self.dq = _legendre_dtheta(self.q, self.z, self.s)
        m = torch.arange(self.L + 1, dtype=dtype, device=device)
        self.mq_over_s = self.q * m / self.s[:, None, None]  # m Q_lm / sin theta
        fac = (2.0 - (m == 0).to(dtype)) * (2.0 * math.pi / self.nlon)
        self.wq = self.q * (self.w[:, None, None] * fac)  # analysis weights
        cp, sp = torch.cos(self.phi), torch.sin(self.phi)
        zz, ss = self.z[:, None], self.s[:, None]
        self.x = torch.stack(torch.broadcast_tensors(ss * cp, ss * sp, zz.expand(-1, self.nlon)), 0)  # (3, nlat, nlon)
        self.e_theta = torch.stack(torch.broadcast_tensors(zz * cp, zz * sp, -ss.expand(-1, self.nlon)), 0)
        self.e_phi = torch.stack(torch.broadcast_tensors(-sp.expand(self.nlat, -1), cp.expand(self.nlat, -1)), 0)
        self.e_phi = torch.cat([self.e_phi, torch.zeros_like(self.e_phi[:1])], 0)
        self.cell = (self.w[:, None] * (2.0 * math.pi / self.nlon)).expand(self.nlat, self.nlon)  # quadrature weights
        ls, ms = _harmonic_index(self.L)
        self._ls, self._ms = ls, ms
        self.degrees = torch.arange(self.L + 1, device=device)

    @property
    def points(self) -> Tensor:
        """The grid points ``(nlat, nlon, 3)``."""
        return self.x.permute(1, 2, 0)

    # -- transforms
    def analysis(self, f: Tensor) -> Tensor:
        """Complex coefficients ``(..., L+1, L+1)`` of the grid function ``f`` ``(..., nlat, nlon)``."""
        r = torch.fft.rfft(f, dim=-1)[..., : self.L + 1]  # (..., nlat, m)
        return torch.einsum("jlm,...jm->...lm", self.wq.to(r.dtype), r)

    def _fourier(self, h: Tensor) -> Tensor:
        """``Re sum_m h_m e^{i m phi_k}`` for ``h`` ``(..., nlat, L+1)`` complex: ``(..., nlat, nlon)``."""
        x = torch.zeros(*h.shape[:-1], self.nlon // 2 + 1, dtype=h.dtype, device=h.device)
        x[..., 0] = h[..., 0].real
        x[..., 1 : self.L + 1] = 0.5 * h[..., 1:]
        return torch.fft.irfft(x, n=self.nlon, dim=-1) * self.nlon

    def synthesis(self, c: Tensor) -> Tensor:
        """The grid function of the coefficients ``c`` ``(..., L+1, L+1)``."""
        return self._fourier(torch.einsum("jlm,...lm->...jm", self.q.to(c.dtype), c))

    def gradient(self, c: Tensor) -> Tensor:
        """The ambient surface gradient ``(..., 3, nlat, nlon)`` of the function of coefficients ``c``."""
        gt = self._fourier(torch.einsum("jlm,...lm->...jm", self.dq.to(c.dtype), c))
        gp = self._fourier(1j * torch.einsum("jlm,...lm->...jm", self.mq_over_s.to(c.dtype), c))
        return gt.unsqueeze(-3) * self.e_theta + gp.unsqueeze(-3) * self.e_phi

    def truncate(self, c: Tensor, lcut: int) -> Tensor:
        """Coefficients of degree ``> lcut`` set to zero."""
        return c * (self.degrees <= lcut).to(c.real.dtype)[:, None]

    def project(self, f: Tensor) -> Tensor:
        """The projection of a grid function on degree ``<= L``."""
        return self.synthesis(self.analysis(f))

    def divergence(self, flux: Tensor, lcut: int | None = None) -> Tensor:
        r"""``div_S(P F)`` ``(..., nlat, nlon)`` of the ambient field ``F`` ``(..., 3, nlat, nlon)``, truncated at
        degree ``lcut`` (default ``floor(2L/3)``): ``sum_c (grad_S F_c)_c - 2 <x, F>``, pseudo-spectrally."""
        lcut = self.cut if lcut is None else lcut
        c = self.truncate(self.analysis(flux), lcut)  # (..., 3, l, m)
        grad = self.gradient(c)  # (..., 3 [component], 3 [direction], nlat, nlon)
        trace = torch.diagonal(grad, dim1=-4, dim2=-3).sum(-1)
        return trace - 2.0 * (self.synthesis(c) * self.x).sum(-3)

    @property
    def cut(self) -> int:
        """The 2/3-rule degree of the flux, ``floor(2L/3)``."""
        return (2 * self.L) // 3

    def integrate(self, f: Tensor) -> Tensor:
        """``int_{S^2} f`` by the grid quadrature: ``(...)``."""
        return (f * self.cell).sum((-2, -1))

    # -- real coefficients
    def to_real(self, c: Tensor) -> Tensor:
        """Real orthonormal coefficients ``(..., (L+1)^2)`` from complex ``c`` ``(..., L+1, L+1)``."""
        ls, ms = self._ls, self._ms
        lt = torch.as_tensor(ls, device=c.device)
        mt = torch.as_tensor(np.abs(ms), device=c.device)
        v = c[..., lt, mt]
        pos = torch.as_tensor(ms > 0, device=c.device)
        neg = torch.as_tensor(ms < 0, device=c.device)
        return torch.where(pos, v.real / SQRT2, torch.where(neg, -v.imag / SQRT2, v.real))

    def from_real(self, a: Tensor) -> Tensor:
        """Complex ``c`` ``(..., L+1, L+1)`` from real coefficients ``a`` ``(..., (l_a+1)^2)``, ``l_a <= L``."""
        la = int(round(math.sqrt(a.shape[-1]))) - 1
        if (la + 1) ** 2 != a.shape[-1] or la > self.L:
            raise ValueError(f"{a.shape[-1]} real coefficients do not fit a grid of degree {self.L}")
        cdt = torch.complex128 if a.dtype == torch.float64 else torch.complex64
        c = torch.zeros(*a.shape[:-1], self.L + 1, self.L + 1, dtype=cdt, device=a.device)
        ls, ms = _harmonic_index(la)
        dev = a.device
        zero = np.nonzero(ms == 0)[0]
        c[..., torch.as_tensor(ls[zero], device=dev), 0] = a[..., torch.as_tensor(zero, device=dev)].to(cdt)
        pos = np.nonzero(ms > 0)[0]
        neg = pos - 2 * ms[pos]  # l^2 + l - m
        lt, mt = torch.as_tensor(ls[pos], device=dev), torch.as_tensor(ms[pos], device=dev)
        c[..., lt, mt] = SQRT2 * torch.complex(
            a[..., torch.as_tensor(pos, device=dev)], -a[..., torch.as_tensor(neg, device=dev)]
        )
        return c

    def degree_energy(self, c: Tensor) -> Tensor:
        """``(sum_m a_lm^2)^{1/2}`` per degree ``(..., L+1)``."""
        w = torch.full((self.L + 1,), 0.5, dtype=c.real.dtype, device=c.device)
        w[0] = 1.0
        return torch.sqrt((c.abs() ** 2 * w).sum(-1))


@lru_cache(maxsize=16)
def get_grid(lmax: int, dtype: torch.dtype = torch.float64, device: str = "cpu") -> SphereGrid:
    """The (cached) :class:`SphereGrid` of degree ``lmax``."""
    return SphereGrid(lmax, dtype, device)


def _grid_of(f: Tensor) -> SphereGrid:
    nlat = f.shape[-2]
    if f.shape[-1] != 2 * nlat:
        raise ValueError(f"a grid density is (..., L + 1, 2L + 2), got {tuple(f.shape)}")
    return get_grid(nlat - 1, f.dtype, str(f.device))


# ----------------------------------------------------------------------------- kernels in harmonic space
@lru_cache(maxsize=8)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def funk_hecke(kernel: Callable[[np.ndarray], np.ndarray], lmax: int, nodes: int | None = None) -> np.ndarray:
    r"""``k_l = 2 pi int_{-1}^1 k(t) P_l(t) dt``, ``l = 0..lmax`` (``k(<x,y>) = sum_l k_l sum_m Y_lm(x) Y_lm(y)``).

    Quadrature in ``theta`` (``t = cos theta``, Gauss–Legendre in ``theta in [0, pi]``): spectrally accurate
    for kernels smooth in the angle, such as the ReLU arc-cosine kernel (smooth in ``theta``, not in ``t``).
    """
    xg, wg = _gauss_legendre(nodes or max(1024, 8 * lmax))
    theta = 0.5 * math.pi * (xg + 1.0)
    t = np.cos(theta)
    k = np.asarray(kernel(t), dtype=float) * np.sin(theta) * wg * (0.5 * math.pi)
    p = np.zeros((lmax + 1, len(t)))
    p[0] = 1.0
    if lmax >= 1:
        p[1] = t
    for l in range(2, lmax + 1):  # noqa: E741
        p[l] = ((2 * l - 1) * t * p[l - 1] - (l - 1) * p[l - 2]) / l
    return 2.0 * math.pi * (p @ k)


def exp_kernel_coefficients(beta: float, lmax: int) -> np.ndarray:
    r"""Funk–Hecke coefficients of ``e^{beta (t - 1)}``: ``4 pi e^{-beta} i_l(beta)``, ``l = 0..lmax``."""
    l = np.arange(lmax + 1)  # noqa: E741
    if beta == 0.0:
        return np.where(l == 0, 4.0 * math.pi, 0.0)
    return 4.0 * math.pi * math.sqrt(math.pi / (2.0 * beta)) * special.ive(l + 0.5, beta)


def kernel_degree(beta: float, tol: float = 1e-17) -> int:
    """Smallest ``l`` with ``k_j / k_0 < tol`` for ``j > l`` (the attention kernel's band limit), at least 1."""
    if beta == 0.0:
        return 1
    l = 1  # noqa: E741
    k0 = special.ive(0.5, beta)
    while special.ive(l + 1.5, beta) / k0 >= tol and l < 4096:
        l += 1  # noqa: E741
    return l


@dataclass(frozen=True)
class SphereC:
    """Model C on ``S^2``: the noise field of kernel ``kappa`` in harmonics of degree ``<= degree``, drift ``c m_beta``.

    Parameters
    ----------
    kappa : callable
        ``kappa(u)`` on NumPy arrays (e.g. ``tokensde.theory.synchronization.kernel(act, 3).kappa``).
    beta, c : float
        Attention inverse temperature and value scale (``c = 0``: noise only).
    degree : int
        ``L_noise``: ``3 (degree + 1)^2`` normals per step.
    """

    kappa: Callable[[np.ndarray], np.ndarray]
    beta: float = 1.0
    c: float = 0.0
    degree: int = 8
    kl: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kl = funk_hecke(self.kappa, self.degree)
        scale = abs(float(np.asarray(self.kappa(np.array([1.0])))[0]))
        if (kl < -1e-12 * max(scale, 1e-300)).any():
            raise ValueError("kappa: not a covariance on S^2 (a negative Funk–Hecke coefficient)")
        object.__setattr__(self, "kl", np.clip(kl, 0.0, None))

    @property
    def noise_size(self) -> int:
        return 3 * (self.degree + 1) ** 2

    @property
    def attention_degree(self) -> int:
        return kernel_degree(self.beta)

    def kernel_truncated(self, u: np.ndarray) -> np.ndarray:
        """``kappa_L(u) = sum_{l <= degree} kappa_l (2l+1)/(4 pi) P_l(u)``: the covariance of the truncated field."""
        u = np.asarray(u, dtype=float)
        lv = np.arange(self.degree + 1)
        return np.polynomial.legendre.legval(u, self.kl * (2 * lv + 1) / (4.0 * math.pi))

    def field_truncation(self) -> float:
        """Variance of the field left out by the truncation, relative to ``kappa(1)``."""
        k1 = float(np.asarray(self.kappa(np.array([1.0])))[0])
        return max(0.0, 1.0 - float(self.kernel_truncated(np.array([1.0]))[0]) / k1)

    def _sqrt_kl(self, like: Tensor) -> Tensor:
        ls, _ = _harmonic_index(self.degree)
        return torch.as_tensor(np.sqrt(self.kl)[ls], dtype=like.dtype, device=like.device)

    def noise_coefficients(self, xi: Tensor) -> Tensor:
        """Real harmonic coefficients ``(B, 3, (degree+1)^2)`` of ``M`` for the normals ``xi`` ``(B, noise_size)``."""
        k = (self.degree + 1) ** 2
        return xi.reshape(xi.shape[0], 3, k) * self._sqrt_kl(xi)

    def field(self, x: Tensor, xi: Tensor) -> Tensor:
        """``M(x)`` (ambient, not projected) at points ``x`` ``(B, N, 3)``: ``(B, N, 3)``."""
        y = real_sh(self.degree, x)
        return torch.einsum("bnk,bck->bnc", y, self.noise_coefficients(xi))

    def stratonovich_correction(self, x: Tensor) -> Tensor:
        r"""``(1/2) P_x sum_k D sigma_k[P_x sigma_k]`` at points ``x`` ``(..., 3)`` off the poles (zero by the addition
        theorem): ``(1/2) sum_{l,m} kappa_l Y_lm grad_S Y_lm`` (``sum_c e_c <grad Y, P e_c> = grad Y``)."""
        y = real_sh(self.degree, x)
        g = real_sh_grad(self.degree, x)
        kl = self._sqrt_kl(x) ** 2
        return 0.5 * torch.einsum("...k,...kc->...c", kl * y, g)

    # -- velocities
    def velocity_grid(self, f: Tensor, xi: Tensor, dt: float) -> Tensor:
        """``u`` ``(B, 3, nlat, nlon)`` on the grid of the density ``f`` ``(B, nlat, nlon)``."""
        grid = _grid_of(f)
        m = grid.synthesis(grid.from_real(self.noise_coefficients(xi))) / math.sqrt(dt)  # (B, 3, nlat, nlon)
        if self.c != 0.0:
            lb = min(self.attention_degree, grid.L)
            k = torch.as_tensor(exp_kernel_coefficients(self.beta, grid.L), dtype=f.dtype, device=f.device)
            k = k * (grid.degrees <= lb).to(f.dtype)
            g = torch.cat([f.unsqueeze(1), f.unsqueeze(1) * grid.x], 1)  # (B, 4, nlat, nlon)
            conv = grid.synthesis(grid.analysis(g) * k[:, None])
            m = m + self.c * conv[:, 1:] / conv[:, :1]
        return m - (m * grid.x).sum(1, keepdim=True) * grid.x

    def velocity_particles(self, x: Tensor, xi: Tensor, dt: float, w: Tensor | None = None) -> Tensor:
        """``u`` ``(B, N, 3)`` at the particles ``x`` ``(B, N, 3)`` (weights ``w`` ``(B, N)``, default ``1/N``)."""
        x = x / x.norm(dim=-1, keepdim=True)
        lb = self.attention_degree if self.c != 0.0 else 0
        y = real_sh(max(self.degree, lb), x)
        kn = (self.degree + 1) ** 2
        m = torch.einsum("bnk,bck->bnc", y[..., :kn], self.noise_coefficients(xi)) / math.sqrt(dt)
        if self.c != 0.0:
            if w is None:
                w = torch.full(x.shape[:-1], 1.0 / x.shape[-2], dtype=x.dtype, device=x.device)
            kb = (lb + 1) ** 2
            yb = y[..., :kb]
            ls, _ = _harmonic_index(lb)
            k = torch.as_tensor(exp_kernel_coefficients(self.beta, lb)[ls], dtype=x.dtype, device=x.device)
            g = torch.cat([torch.ones_like(x[..., :1]), x], -1) * w.unsqueeze(-1)  # (B, N, 4)
            coef = torch.einsum("bnk,bng->bgk", yb, g) * k
            conv = torch.einsum("bnk,bgk->bng", yb, coef)
            m = m + self.c * conv[..., 1:] / conv[..., :1]
        return m - (m * x).sum(-1, keepdim=True) * x


# ----------------------------------------------------------------------------- the scheme
def wong_zakai_step(
    model: SphereC, state: Tensor, xi: Tensor, dt: float, eulerian: bool, substeps: int | None, degree: int = 0
) -> Tensor:
    """One Wong–Zakai step: RK4 steps of the frozen-noise transport over ``[0, dt]``.

    ``eulerian``: ``state`` is the grid density ``(B, nlat, nlon)``, ``d_s f = -div_S(f u)`` with the flux truncated
    at ``floor(2L/3)``; else particles ``(B, N, 3)``, ``d_s x = u(x)``, renormalised after each RK4 step.
    ``substeps=None``: ``max|u| (dt / substeps) k <= 1.5`` from the velocity at the step's start, ``k`` the flux's
    cut (``degree`` for particles: pass the paired grid's cut for the same rule).
    """
    if eulerian:
        grid = _grid_of(state)

        def rhs(s: Tensor) -> Tensor:
            u = model.velocity_grid(s, xi, dt)
            return -grid.divergence(s.unsqueeze(1) * u)

        k = grid.cut
    else:

        def rhs(s: Tensor) -> Tensor:
            return model.velocity_particles(s, xi, dt)

        k = max(degree, 1)
    if substeps is None:
        u = model.velocity_grid(state, xi, dt) if eulerian else model.velocity_particles(state, xi, dt)
        umax = float(u.norm(dim=1 if eulerian else -1).max())
        substeps = max(1, math.ceil(umax * dt * k / 1.5))
    h = dt / substeps
    for _ in range(substeps):
        k1 = rhs(state)
        k2 = rhs(state + 0.5 * h * k1)
        k3 = rhs(state + 0.5 * h * k2)
        k4 = rhs(state + h * k3)
        state = state + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        if not eulerian:
            state = state / state.norm(dim=-1, keepdim=True)
    return state


def spectral_tail(f: Tensor) -> Tensor:
    """Largest degree energy over the top fifth of the kept degrees (``4 cut/5 < l <= cut``) relative to ``|f_00|``."""
    grid = _grid_of(f)
    e = grid.degree_energy(grid.analysis(f))
    lo, hi = (4 * grid.cut) // 5 + 1, grid.cut + 1
    return e[..., lo:hi].amax(-1) / e[..., 0].clamp_min(1e-300)


class SphereRun(CircleRun):
    """A solution on ``S^2``: ``states`` ``(K, B, nlat, nlon)`` (grid densities) or ``(K, B, N, 3)`` (particles).

    Eulerian runs carry, per saved time and system, ``mass``, ``min_density`` (``4 pi min f``) and ``tail``
    (:func:`spectral_tail`); resolved while ``tail <= tail_tol`` (``resolved``, ``resolved_until`` as on the circle).
    """


def _run(
    model: SphereC,
    state0: Tensor,
    path: object,
    dt: float,
    steps: int,
    substeps: int | None,
    save_every: int,
    eulerian: bool,
    degree: int = 0,
) -> SphereRun:
    def diagnostics(s: Tensor) -> tuple[np.ndarray, ...]:
        grid = _grid_of(s)
        low = (s.amin((-2, -1)) * 4.0 * math.pi).cpu().numpy()
        return grid.integrate(s).cpu().numpy(), low, spectral_tail(s).cpu().numpy()

    def step(x: Tensor, xi: Tensor, h: float) -> Tensor:
        return wong_zakai_step(model, x, xi, h, eulerian, substeps, degree)

    times, states, diag = drive(step, state0, path, dt, steps, save_every, diagnostics if eulerian else None)
    return SphereRun(times, states, *diag) if eulerian else SphereRun(times, states)


def eulerian(
    model: SphereC,
    f0: Tensor,
    path: object,
    dt: float,
    steps: int,
    substeps: int | None = None,
    save_every: int = 1,
) -> SphereRun:
    """The density ``f`` ``(B, L + 1, 2L + 2)`` on the Gauss–Legendre grid (projected on degree ``<= L`` at the
    start) driven by ``path`` (a :class:`tokensde.engine.BrownianPath` of shape ``(model.noise_size,)``):
    Wong–Zakai steps (:func:`wong_zakai_step`), states every ``save_every`` steps with the diagnostics."""
    grid = _grid_of(f0)
    if model.degree > grid.L:
        raise ValueError(f"noise degree {model.degree} above the grid's degree {grid.L}")
    return _run(model, grid.project(f0), path, dt, steps, substeps, save_every, True)


def lagrangian(
    model: SphereC,
    x0: Tensor,
    path: object,
    dt: float,
    steps: int,
    substeps: int | None = None,
    save_every: int = 1,
    degree: int = 10,
) -> SphereRun:
    """Equal-weight particles ``x0`` ``(B, N, 3)`` moved by the scheme of :func:`eulerian`; ``degree``: the ``k`` of
    the automatic sub-step rule (the paired grid's ``floor(2L/3)``)."""
    x0 = x0 / x0.norm(dim=-1, keepdim=True)
    return _run(model, x0, path, dt, steps, substeps, save_every, False, degree)


# ----------------------------------------------------------------------------- starts and distances
GOLDEN = (1.0 + math.sqrt(5.0)) / 2.0


def _fib_unit(n: int, dtype: torch.dtype, device: str | torch.device) -> tuple[Tensor, Tensor]:
    i = torch.arange(n, dtype=dtype, device=device)
    return (i + 0.5) / n, torch.remainder(i / GOLDEN, 1.0)


def fibonacci(n: int, batch: int = 1, dtype: torch.dtype = torch.float64, device: str = "cpu") -> Tensor:
    """The spherical Fibonacci lattice of ``n`` points ``(batch, n, 3)``: ``z_i = -1 + 2 (i + 1/2)/n``,
    ``phi_i = 2 pi frac(i / golden)`` (equal-area in ``z``, a deterministic quantisation of the uniform law)."""
    u, v = _fib_unit(n, dtype, device)
    z = -1.0 + 2.0 * u
    s = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    phi = 2.0 * math.pi * v
    x = torch.stack([s * torch.cos(phi), s * torch.sin(phi), z], -1)
    return x.expand(batch, n, 3).clone()


def _invert_cdf(xs: Tensor, dens: Tensor, q: Tensor) -> Tensor:
    """Quantiles ``q`` (``(B, n)``) of the densities ``dens`` ``(B, n or 1, P)`` tabulated at ``xs`` ``(P,)``
    (trapezoid CDF, linear inverse)."""
    cell = 0.5 * (dens[..., 1:] + dens[..., :-1]) * (xs[1:] - xs[:-1])
    cdf = torch.cat([torch.zeros_like(cell[..., :1]), torch.cumsum(cell, -1)], -1)
    cdf = cdf / cdf[..., -1:]
    cdf = cdf.expand(*q.shape, cdf.shape[-1]).contiguous()
    j = torch.searchsorted(cdf, q.unsqueeze(-1).contiguous(), right=True).squeeze(-1) - 1
    j = j.clamp(0, xs.shape[0] - 2)
    lo, hi = cdf.gather(-1, j.unsqueeze(-1)).squeeze(-1), cdf.gather(-1, (j + 1).unsqueeze(-1)).squeeze(-1)
    frac = ((q - lo) / (hi - lo).clamp_min(1e-300)).clamp(0.0, 1.0)
    return xs[j] + frac * (xs[j + 1] - xs[j])


def quantize(f: Tensor, n: int, fine: int = 2048) -> Tensor:
    r"""Deterministic quantisation of the grid density ``f`` ``(B, nlat, nlon)`` by ``n`` particles ``(B, n, 3)``.

    The Rosenblatt transform of the Fibonacci points ``(u_i, v_i)`` of the unit square: ``z_i`` the ``u_i``-quantile
    of the marginal of ``z`` (``2 pi sum_l c_l0 Q_l0(z)``), then ``phi_i`` the ``v_i``-quantile of ``f(z_i, .)``;
    both distribution functions by the trapezoid rule on ``fine`` points, negative values clamped to 0. For the
    uniform density this is :func:`fibonacci`.
    """
    grid = _grid_of(f)
    c = grid.analysis(f)  # (B, l, m)
    u, v = _fib_unit(n, f.dtype, f.device)
    zs = torch.linspace(-1.0, 1.0, fine, dtype=f.dtype, device=f.device)
    qz = legendre(grid.L, zs)  # (P, l, m)
    marg = (2.0 * math.pi * torch.einsum("pl,bl->bp", qz[..., 0], c[..., 0].real)).clamp_min(0.0)
    z = _invert_cdf(zs, marg.unsqueeze(1), u.expand(f.shape[0], n))  # (B, n)
    s = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    qn = legendre(grid.L, z, s)  # (B, n, l, m)
    h = torch.einsum("bnlm,blm->bnm", qn.to(c.dtype), c)  # (B, n, m)
    phis = torch.linspace(0.0, 2.0 * math.pi, fine + 1, dtype=f.dtype, device=f.device)
    cos, sin = _trig(phis, grid.L)
    e = torch.complex(cos, sin)  # (P, m)
    cond = torch.einsum("bnm,pm->bnp", h, e).real.clamp_min(0.0)  # (B, n, P): Re sum_m h_m e^{im phi}
    phi = _invert_cdf(phis, cond, v.expand(f.shape[0], n))
    return torch.stack([s * torch.cos(phi), s * torch.sin(phi), z], -1)


def von_mises_fisher(grid: SphereGrid, kappa0: float, mu: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Tensor:
    """The von Mises–Fisher density ``kappa0 e^{kappa0 (<x, mu> - 1)} / (2 pi (1 - e^{-2 kappa0}))`` on the grid."""
    m = torch.as_tensor(mu, dtype=grid.x.dtype, device=grid.x.device)
    m = m / m.norm()
    dot = (grid.x * m[:, None, None]).sum(0)
    if kappa0 == 0.0:
        return torch.full_like(dot, 1.0 / (4.0 * math.pi))
    return kappa0 * torch.exp(kappa0 * (dot - 1.0)) / (2.0 * math.pi * -math.expm1(-2.0 * kappa0))


def wasserstein(x: Tensor, f: Tensor | None = None, y: Tensor | None = None, p: int = 1, upsample: int = 1) -> Tensor:
    r"""``W_p`` (great-circle cost ``arccos<x, y>^p``) between equal-weight particles ``x`` ``(B, N, 3)`` and either
    the grid density ``f`` ``(B, nlat, nlon)`` as weighted atoms (quadrature weights times ``f``, negative values
    clamped to 0, renormalised; spectrally interpolated on the grid of degree ``upsample (L + 1) - 1`` first) or
    particles ``y`` ``(B, M, 3)``; exact by POT's network simplex (``ot.emd2``). Returns ``(B,)``."""
    import ot

    if f is not None:
        grid = _grid_of(f)
        if upsample > 1:
            fine = get_grid(upsample * (grid.L + 1) - 1, f.dtype, str(f.device))
            c = torch.zeros(*f.shape[:-2], fine.L + 1, fine.L + 1, dtype=torch.complex128, device=f.device)
            c[..., : grid.L + 1, : grid.L + 1] = grid.analysis(f)
            f, grid = fine.synthesis(c), fine
        pts = grid.points.reshape(-1, 3)
        wts = (f.clamp_min(0.0) * grid.cell).reshape(f.shape[0], -1)
        ys = [pts] * f.shape[0]
        ws = [wts[b] for b in range(f.shape[0])]
    else:
        assert y is not None
        ys = list(y)
        ws = [torch.full((y.shape[1],), 1.0 / y.shape[1], dtype=y.dtype, device=y.device)] * y.shape[0]
    out = []
    for b in range(x.shape[0]):
        xb = x[b] / x[b].norm(dim=-1, keepdim=True)
        yb = ys[b] / ys[b].norm(dim=-1, keepdim=True)
        cost = torch.arccos((xb @ yb.T).clamp(-1.0, 1.0)) ** p
        a = np.full(xb.shape[0], 1.0 / xb.shape[0])
        wb = ws[b].detach().cpu().numpy().astype(float)
        wb = wb / wb.sum()
        val = ot.emd2(a, wb, cost.detach().cpu().numpy(), numItermax=10_000_000)
        out.append(float(val) ** (1.0 / p))
    return torch.tensor(out, dtype=x.dtype)
