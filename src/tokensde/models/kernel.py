r"""User-defined models: a drift and a common-noise kernel (docs/models.md, "Bring your own model").

Equation (*) needs only a drift ``b(X)`` (ambient, ``(B, n, d)``; the solver
projects it) and a kernel ``C(X)`` (``(B, n, n)``, symmetric positive
semi-definite). :class:`KernelModel` wraps two such callables into a model with
the same contract as the paper models:

* ``noise_shape(n, d, discrete=False) -> (n, d)``: ``n x d`` normals per system and step;
* ``kernel(x) -> (B, n, n)`` and ``drift(x) -> (B, n, d) | None``;
* ``noise(x, xi) -> F xi`` and ``coefficients(x, xi) -> (b, C_ii, F xi)`` with
  ``F F^T = C(X)`` (:meth:`KernelModel.factor`): the Cholesky
  factor for every system where it succeeds, the eigendecomposition factor of
  :func:`tokensde.noise.kernel_factor` (exact also for singular kernels, e.g.
  coinciding tokens) for the systems where it fails.

These are the names of :mod:`tokensde.models.base` (it subclasses its
:class:`~tokensde.models.base.Model`), so it runs with :func:`tokensde.solvers.simulate`
(Euler–Maruyama) as it is. It has no discrete stack (``solver="stack"``), and its
noise is a state-dependent factor, so the Heun scheme refuses it.

The kernel is given in one of two forms, said explicitly by ``pairwise``:

* ``pairwise=True``: ``kappa(u)``, applied elementwise to the overlaps,
  ``C_ij = kappa(<x_i, x_j>)`` (the overlaps are clamped to ``[-1, 1]`` and the
  diagonal is exactly ``kappa(1)``);
* ``pairwise=False``: ``C(X)`` of the whole state, ``(B, n, d) -> (B, n, n)``.

Two-point theory (:meth:`KernelModel.two_point`). Assuming the model is
invariant under rotations (``C(QX) = C(X)``, ``b(QX) = Q b(X)`` for orthogonal
``Q``) and under exchanging tokens, the overlap of two tokens is the diffusion of
:class:`tokensde.theory.two_point.TwoPointMotion` with ``c_0(rho) = C_11 = C_22``,
``c_1(rho) = C_12`` and ``b_att(rho) = <P_{x_1} b_1, x_2> + <P_{x_2} b_2, x_1>``,
all evaluated on the canonical pair ``x_1 = e_1``,
``x_2 = rho e_1 + sqrt(1 - rho^2) e_2`` (vectorised, float64). Both assumptions
are checked numerically before the motion is returned.

:func:`load_model` builds a model from ``"MODULE:FACTORY"``: it imports MODULE and
calls FACTORY, i.e. it executes code, with the trust of ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from .base import Model

if TYPE_CHECKING:
    from ..theory.two_point import TwoPointMotion

__all__ = ["KernelModel", "load_model", "is_model", "canonical_pair"]

TensorFn = Callable[[Tensor], Tensor]
Array = np.ndarray

#: elements (B * 2 * d) of one batch of canonical pairs in the two-point evaluation
PAIR_CHUNK = 1 << 21
#: overlaps at which the two-point assumptions (C_11 = C_22, rotation invariance) are checked
CHECK_POINTS = 33
#: relative tolerance of those checks (float64)
CHECK_TOL = 1e-8


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def _name_of(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__)


class KernelModel(Model):
    r"""A model of equation (*) from a kernel and an optional drift.

    Parameters
    ----------
    kernel : callable
        With ``pairwise=True``: ``kappa(u) -> Tensor`` of the shape of ``u``,
        elementwise on the overlaps (``C_ij = kappa(<x_i, x_j>)``). With
        ``pairwise=False``: ``C(X) -> (B, n, n)`` for a state ``X`` of shape
        ``(B, n, d)``. Must give a symmetric positive semi-definite matrix.
    drift : callable, optional
        ``b(X) -> (B, n, d)``, ambient (the solver projects it on the tangent spaces).
    pairwise : bool
        Which of the two forms ``kernel`` is. Required: there is no guessing
        (a whole-state function applied to the Gram matrix can return a matrix
        of the right shape and the wrong meaning).
    name : str, optional
        For messages and manifests (default: the kernel's qualified name).
    kappa_prime : callable, optional
        ``pairwise=True`` only: the exact derivative ``kappa'(u)``, used by
        :meth:`two_point` at ``u = +-1``. Without it the derivative is taken by
        autograd of ``kappa`` (exact for smooth kernels written in torch), or,
        where that is not finite (kernels not smooth at ``+-1``, like ReLU's
        arc-cosine kernel), by finite differences with a warning.
    tol : float, optional
        Relative tolerance of the symmetry and positive semi-definiteness checks
        (default ``sqrt(eps)`` of the state's dtype: 1.5e-8 in float64, 3.5e-4 in float32).

    Checks. At construction: the callables. At every call of :meth:`kernel`:
    its type and shape (``ValueError`` naming ``kernel`` and the expected shape)
    and, for a whole-state kernel, finiteness and symmetry within ``tol``. At the
    first call for each ``(n, d, dtype, device)``: also those for a pairwise
    kernel, positive semi-definiteness (eigenvalues ``>= -tol * max|eigenvalue|``)
    and the drift's finiteness. At every step, the systems whose Cholesky
    factorisation fails are checked again through their eigenvalues (which the
    fallback factor needs anyway): a kernel that is not PSD (or not finite) at a
    later state is refused there. Every such failure is a ``ValueError``.

    Notes
    -----
    The model is (*) with the given ``b`` and ``C``: for states ``x`` ``(B, n, d)``
    and normals ``xi`` ``(B, n, d)`` the unit-time noise is ``F xi`` with
    ``F F^T = C(X)`` (:meth:`factor`), so that ``E[m_i m_j^T] = C_ij I_d``.

    Examples
    --------
    The kernel ``kappa(u) = exp(u - 1)`` is the covariance of the noise (4000 draws at one state):

    >>> import torch
    >>> from tokensde.models.kernel import KernelModel
    >>> from tokensde.sphere import uniform
    >>> model = KernelModel(lambda u: torch.exp(u - 1), pairwise=True, name="exp")
    >>> model
    KernelModel('exp', pairwise=True, drift=None)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = uniform((1, 3), 4, g).expand(4000, 3, 4)
    >>> c = model.kernel(x[:1])[0]
    >>> m = model.noise(x, torch.randn(4000, 3, 4, generator=g))
    >>> torch.diagonal(c).tolist(), bool(torch.allclose(torch.einsum("bid,bjd->ij", m, m) / (4000 * 4), c, atol=0.05))
    ([1.0, 1.0, 1.0], True)

    The Gram kernel ``C = X X^T``, pairwise or as a whole-state function, has
    the logistic two-point motion, which ends antipodal with probability
    ``arccos(rho_0) / pi`` in every dimension:

    >>> gram = KernelModel(lambda u: u, pairwise=True, name="gram")
    >>> whole = KernelModel(lambda x: x @ x.mT, pairwise=False)
    >>> bool(torch.allclose(gram.kernel(x[:1]), whole.kernel(x[:1]), atol=1e-6))
    True
    >>> round(gram.p_antipodal(3, 0.5), 4), round(gram.p_antipodal(7, -0.3), 4)  # 1/3 and arccos(-0.3)/pi
    (0.3333, 0.597)
    >>> KernelModel(lambda u: u)
    Traceback (most recent call last):
    ...
    TypeError: KernelModel: say which form `kernel` is: ...
    """

    def __init__(
        self,
        kernel: TensorFn,
        drift: TensorFn | None = None,
        pairwise: bool | None = None,
        name: str | None = None,
        *,
        kappa_prime: TensorFn | None = None,
        tol: float | None = None,
    ) -> None:
        if not callable(kernel):
            raise TypeError(f"KernelModel: kernel must be callable, got {type(kernel).__name__}")
        if drift is not None and not callable(drift):
            raise TypeError(f"KernelModel: drift must be callable or None, got {type(drift).__name__}")
        if not isinstance(pairwise, bool):
            raise TypeError(
                "KernelModel: say which form `kernel` is: pairwise=True for kappa(u) applied to the overlaps "
                "<x_i, x_j>, pairwise=False for a function C(X) of the whole state, (B, n, d) -> (B, n, n); "
                f"got pairwise={pairwise!r}"
            )
        if kappa_prime is not None and (not pairwise or not callable(kappa_prime)):
            raise TypeError("KernelModel: kappa_prime must be a callable, and only with pairwise=True")
        if tol is not None and not (isinstance(tol, int | float) and 0.0 < tol < 1.0):
            raise ValueError(f"KernelModel: tol must be a number in (0, 1), got {tol!r}")
        self.kernel_fn = kernel
        self.drift_fn = drift
        self.pairwise = pairwise
        self.kappa_prime = kappa_prime
        self.name = name if name is not None else _name_of(kernel)
        self.tol = tol
        self._checked: set[tuple[int, int, torch.dtype, str]] = set()
        self._motions: dict[int, TwoPointMotion] = {}

    def __repr__(self) -> str:
        drift = "None" if self.drift_fn is None else _name_of(self.drift_fn)
        return f"KernelModel({self.name!r}, pairwise={self.pairwise}, drift={drift})"

    def __getstate__(self) -> dict[str, Any]:
        # caches hold closures (not picklable) and device-specific checks: rebuilt where the model lands
        state = dict(self.__dict__)
        state["_checked"] = set()
        state["_motions"] = {}
        return state

    def describe(self) -> dict[str, Any]:
        """The model's description (for manifests and tables)."""
        return {
            "model": "kernel",
            "name": self.name,
            "pairwise": self.pairwise,
            "drift": None if self.drift_fn is None else _name_of(self.drift_fn),
        }

    # ----------------------------------------------------------------- contract
    def noise_shape(self, n: int, d: int, discrete: bool = False) -> tuple[int, ...]:
        """``(n, d)``: one system's normals per step (a kernel model has no discrete stack)."""
        if discrete:
            raise ValueError(f"{self!r} is a limit model only: it has no discrete stack (solver='stack')")
        return (n, d)

    def _tol(self, dtype: torch.dtype) -> float:
        return self.tol if self.tol is not None else math.sqrt(torch.finfo(dtype).eps)

    def kernel(self, x: Tensor) -> Tensor:
        r"""``C(X)``, shape ``(B, n, n)``, checked (see the class docstring)."""
        if x.dim() != 3:
            raise ValueError(f"x: expected a state of shape (B, n, d), got {_shape(x)}")
        bsz, n, d = x.shape
        if self.pairwise:
            g = (x @ x.transpose(-1, -2)).clamp(-1.0, 1.0)
            idx = torch.arange(n, device=x.device)
            g[..., idx, idx] = 1.0
            c = self.kernel_fn(g)
            form = f"kernel {self.name}: kappa(u) must return a tensor of the shape of u, (B, n, n) = {(bsz, n, n)}"
        else:
            c = self.kernel_fn(x)
            form = f"kernel {self.name}: C(X) must return a tensor of shape (B, n, n) = {(bsz, n, n)}"
        if not isinstance(c, Tensor) or c.shape != (bsz, n, n):
            raise ValueError(f"{form}, got {_shape(c)}")
        c = c.to(dtype=x.dtype, device=x.device)
        tol = self._tol(x.dtype)
        key = (n, d, x.dtype, str(x.device))
        first = key not in self._checked
        if first or not self.pairwise:  # kappa of the (symmetric) overlaps: checked once
            asym, size = torch.stack([(c - c.transpose(-1, -2)).abs().amax(), c.abs().amax()]).tolist()
            if not (math.isfinite(asym) and math.isfinite(size)):
                raise ValueError(f"kernel {self.name}: C(X) is not finite")
            if asym > tol * size:
                raise ValueError(
                    f"kernel {self.name}: C(X) is not symmetric: max |C - C^T| = {asym:.3g} > "
                    f"tol * max|C| = {tol * size:.3g}"
                )
        if first:
            evals = torch.linalg.eigvalsh(c)
            low = evals[..., 0]
            top = evals.abs().amax(-1)
            worst = int(torch.argmin(low + tol * top))
            if float(low[worst]) < -tol * float(top[worst]):
                raise ValueError(
                    f"kernel {self.name}: C(X) is not positive semi-definite: system {worst} has eigenvalue "
                    f"{float(low[worst]):.3g} < -tol * max|eigenvalue| = {-tol * float(top[worst]):.3g}"
                )
            b = self.drift(x)
            if b is not None and not bool(torch.isfinite(b).all()):
                raise ValueError(f"drift {_name_of(self.drift_fn)}: b(X) is not finite")
            self._checked.add(key)
        return c

    def drift(self, x: Tensor) -> Tensor | None:
        """``b(X)``, ambient, shape ``(B, n, d)``; ``None`` without a drift."""
        if self.drift_fn is None:
            return None
        b = self.drift_fn(x)
        if not isinstance(b, Tensor) or b.shape != x.shape:
            raise ValueError(
                f"drift {_name_of(self.drift_fn)}: b(X) must return a tensor of shape (B, n, d) = "
                f"{tuple(x.shape)}, got {_shape(b)}"
            )
        return b.to(dtype=x.dtype, device=x.device)

    def factor(self, c: Tensor) -> Tensor:
        r"""``F`` with ``F F^T = C`` for a batch ``(B, n, n)``: Cholesky, eigendecomposition where it fails.

        The systems whose Cholesky factorisation fails (numerically singular
        ``C``) take ``F = U diag(sqrt(max(lambda, 0)))``; their eigenvalues must be
        ``>= -tol * max|lambda|`` (else ``ValueError``: the kernel is not PSD).
        """
        low, info = torch.linalg.cholesky_ex(c)
        bad = info != 0
        if bool(bad.any()):
            low = low.clone()
            evals, evecs = torch.linalg.eigh(c[bad])
            if not bool(torch.isfinite(evals).all()):
                raise ValueError(f"kernel {self.name}: C(X) is not finite")
            floor = -self._tol(c.dtype) * evals.abs().amax(-1)
            wrong = evals[..., 0] < floor
            if bool(wrong.any()):
                i = int(torch.nonzero(bad).reshape(-1)[int(torch.nonzero(wrong)[0])])
                raise ValueError(
                    f"kernel {self.name}: C(X) is not positive semi-definite: system {i} has eigenvalue "
                    f"{float(evals[wrong][0, 0]):.3g}"
                )
            low[bad] = evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)
        return low

    def noise(self, x: Tensor, xi: Tensor) -> Tensor:
        """The unit-time noise ``dM / sqrt(dt) = F xi`` ``(B, n, d)``, ``F F^T = C(X)``."""
        return self._noise(x, xi, self.kernel(x))

    def _noise(self, x: Tensor, xi: Tensor, c: Tensor) -> Tensor:
        if xi.shape != x.shape:
            raise ValueError(f"xi: expected normals of shape (B, n, d) = {tuple(x.shape)}, got {_shape(xi)}")
        return self.factor(c) @ xi

    def coefficients(self, x: Tensor, xi: Tensor | None) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """``(b, C_ii, dM / sqrt(dt))`` at ``x`` for the normals ``xi`` ``(B, n, d)`` (no noise without ``xi``)."""
        c = self.kernel(x)
        m = None if xi is None else self._noise(x, xi, c)
        return self.drift(x), torch.diagonal(c, dim1=-2, dim2=-1), m

    # ----------------------------------------------------------------- two-point theory
    def pair_coefficients(self, rho: Array | float, d: int) -> tuple[Array, Array, Array, Array]:
        r"""``(C_11, C_22, C_12, b_att)`` on the canonical pairs at overlaps ``rho``, as float64 arrays.

        ``x_1 = e_1``, ``x_2 = rho e_1 + sqrt((1 - rho)(1 + rho)) e_2`` in ``R^d``;
        ``b_att = <P_{x_1} b_1, x_2> + <P_{x_2} b_2, x_1>`` (zeros without a drift).
        Evaluated in torch float64 on the CPU, in batches of at most
        :data:`PAIR_CHUNK` / (2 d) pairs.
        """
        r = np.asarray(rho, dtype=float)
        flat = r.reshape(-1)
        out = np.empty((4, flat.size))
        if self.pairwise and self.drift_fn is None:
            # no pair needed: C_11 = C_22 = kappa(1), C_12 = kappa(rho)
            u = torch.as_tensor(np.concatenate([[1.0], flat]), dtype=torch.float64)
            k = self.kernel_fn(u)
            if not isinstance(k, Tensor) or k.shape != u.shape:
                raise ValueError(
                    f"kernel {self.name}: kappa(u) must return a tensor of the shape of u {tuple(u.shape)}, "
                    f"got {_shape(k)}"
                )
            kn = k.detach().to(torch.float64).numpy()
            out[0] = out[1] = kn[0]
            out[2] = kn[1:]
            out[3] = 0.0
            return out[0].reshape(r.shape), out[1].reshape(r.shape), out[2].reshape(r.shape), out[3].reshape(r.shape)
        step = max(1, PAIR_CHUNK // (2 * d))
        for lo in range(0, flat.size, step):
            rr = torch.as_tensor(flat[lo : lo + step], dtype=torch.float64)
            x = canonical_pair(rr, d)
            c = self.kernel(x).detach()
            b = self.drift(x)
            b = None if b is None else b.detach()
            out[0, lo : lo + step] = c[:, 0, 0].numpy()
            out[1, lo : lo + step] = c[:, 1, 1].numpy()
            out[2, lo : lo + step] = (0.5 * (c[:, 0, 1] + c[:, 1, 0])).numpy()
            if b is None:
                out[3, lo : lo + step] = 0.0
            else:
                x1, x2 = x[:, 0], x[:, 1]
                b1, b2 = b[:, 0], b[:, 1]
                att = (b1 * x2).sum(-1) - (b1 * x1).sum(-1) * rr + (b2 * x1).sum(-1) - (b2 * x2).sum(-1) * rr
                out[3, lo : lo + step] = att.numpy()
        return out[0].reshape(r.shape), out[1].reshape(r.shape), out[2].reshape(r.shape), out[3].reshape(r.shape)

    def check_two_point(self, d: int, points: int = CHECK_POINTS, tol: float = CHECK_TOL) -> None:
        r"""Check the assumptions of :meth:`two_point` in dimension ``d``; ``ValueError`` if one fails.

        On ``points`` overlaps in ``[-1, 1]``: ``C_11 = C_22`` (token exchange), and
        ``C`` and ``b_att`` unchanged when the canonical pair is rotated by a
        random orthogonal matrix (fixed seed) and when the tokens are swapped,
        all to ``tol`` relative to the largest ``|C|`` (``|b_att|``).
        """
        rho = np.linspace(-1.0, 1.0, points)
        c11, c22, c12, att = self.pair_coefficients(rho, d)
        size = max(float(np.max(np.abs(np.concatenate([c11, c22, c12])))), 1e-300)
        gap = np.abs(c11 - c22)
        if not np.all(np.isfinite(gap)) or float(np.max(gap)) > tol * size:
            i = int(np.nanargmax(np.where(np.isfinite(gap), gap, np.inf)))
            raise ValueError(
                f"kernel {self.name}: the two-point motion needs C_11 = C_22 (token exchange symmetry); "
                f"at rho = {rho[i]:.4g} in d = {d}: C_11 = {c11[i]:.6g}, C_22 = {c22[i]:.6g}"
            )
        g = torch.Generator().manual_seed(20_240_601 + d)
        q, rr = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(rr)).unsqueeze(0)
        x = canonical_pair(torch.as_tensor(rho, dtype=torch.float64), d)
        for what, y, perm in (("rotation", x @ q.T, False), ("token exchange", x.flip(1), True)):
            c = self.kernel(y)
            if perm:
                c = c.flip(1).flip(2)
            cmp = torch.stack([torch.as_tensor(c11), torch.as_tensor(c22), torch.as_tensor(c12)], -1)
            got = torch.stack([c[:, 0, 0], c[:, 1, 1], 0.5 * (c[:, 0, 1] + c[:, 1, 0])], -1)
            err = float((got - cmp).abs().max())
            if not err <= tol * size:
                raise ValueError(
                    f"kernel {self.name}: the two-point motion needs a kernel invariant under {what} of the pair "
                    f"(C(QX) = C(X)); in d = {d} it changes by {err:.3g} (tolerance {tol * size:.3g})"
                )
            b = self.drift(y)
            if b is not None:
                y1, y2 = y[:, 0], y[:, 1]
                r = torch.as_tensor(rho, dtype=torch.float64)
                a2 = (b[:, 0] * y2).sum(-1) - (b[:, 0] * y1).sum(-1) * r + (b[:, 1] * y1).sum(-1)
                a2 = a2 - (b[:, 1] * y2).sum(-1) * r
                scale_b = max(float(np.max(np.abs(att))), size)
                errb = float((a2 - torch.as_tensor(att)).abs().max())
                if not errb <= tol * scale_b:
                    raise ValueError(
                        f"drift {_name_of(self.drift_fn)}: the two-point motion needs a drift equivariant under "
                        f"{what} (b(QX) = Q b(X)); in d = {d} the overlap drift changes by {errb:.3g}"
                    )

    def _kappa_grad(self, r: Array) -> Array:
        """``kappa'(r)``: ``kappa_prime`` if given, else autograd of ``kappa`` (float64)."""
        u = torch.as_tensor(np.asarray(r, dtype=float).reshape(-1), dtype=torch.float64)
        if self.kappa_prime is not None:
            out = self.kappa_prime(u)
            if not isinstance(out, Tensor) or out.shape != u.shape:
                raise ValueError(f"kappa_prime: must return a tensor of the shape of u, got {_shape(out)}")
            return out.detach().to(torch.float64).numpy().reshape(np.shape(r))
        u.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.kernel_fn(u).sum(), u)
        return grad.detach().numpy().reshape(np.shape(r))

    def two_point(self, d: int, check: bool = True) -> TwoPointMotion:
        r"""The overlap diffusion of two tokens in dimension ``d`` (cached per ``d``).

        :class:`tokensde.theory.two_point.TwoPointMotion` with ``c_0 = (C_11 + C_22)/2``
        (``= C_11 = C_22``, checked), ``c_1 = C_12`` and ``b_att`` from
        :meth:`pair_coefficients`. Assumes rotation invariance and token exchange
        symmetry; ``check=True`` verifies both numerically (:meth:`check_two_point`).

        Derivatives at ``rho = +-1`` (boundary exponents): for a pairwise kernel
        ``dc_0 = 0`` and ``dc_1 = kappa'`` from ``kappa_prime`` or autograd (exact);
        when autograd gives no finite value at ``+-1`` (a kernel not smooth there), and
        for whole-state kernels and the drift, TwoPointMotion's one-sided fourth-order
        finite differences (step 1e-3: about 1e-12 for smooth coefficients).
        ``p_antipodal(rho0)``, ``exponent_collapse`` and ``exponent_antipodal`` are the motion's.
        """
        from ..theory.two_point import TwoPointMotion

        if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 2:
            raise ValueError(f"d must be an integer >= 2, got {d!r}")
        d = int(d)
        hit = self._motions.get(d)
        if hit is not None:
            return hit
        if check:
            self.check_two_point(d)
        cache: dict[str, Any] = {"key": None}

        def coeffs(r: Array) -> tuple[Array, Array, Array]:
            r = np.asarray(r, dtype=float)
            key = (r.shape, r.tobytes())
            if cache["key"] != key:
                c11, c22, c12, att = self.pair_coefficients(r, d)
                cache["key"], cache["val"] = key, (0.5 * (c11 + c22), c12, att)
            val: tuple[Array, Array, Array] = cache["val"]
            return val

        def c0(r: Array) -> Array:
            return coeffs(r)[0]

        def c1(r: Array) -> Array:
            return coeffs(r)[1]

        def b_att(r: Array) -> Array:
            return coeffs(r)[2]

        dc0: Callable[[Array], Array] | None = None
        dc1: Callable[[Array], Array] | None = None
        if self.pairwise:

            def dc0(r: Array) -> Array:
                return np.zeros(np.shape(r))

            try:
                ends = self._kappa_grad(np.array([-1.0, 1.0]))
            except (RuntimeError, TypeError):  # kappa not differentiable by autograd (numpy inside, in-place ops)
                ends = np.array([math.nan, math.nan])
            if np.all(np.isfinite(ends)):
                dc1 = self._kappa_grad
            else:
                warnings.warn(
                    f"kernel {self.name}: kappa'(+-1) by autograd is not finite (a kernel not smooth at u = +-1, "
                    "e.g. the ReLU arc-cosine kernel): the boundary exponents use finite differences, which can be "
                    "inaccurate for such kernels; pass kappa_prime= for exact ones",
                    RuntimeWarning,
                    stacklevel=2,
                )
        motion = TwoPointMotion(d=d, c0=c0, c1=c1, b_att=None if self.drift_fn is None else b_att, dc0=dc0, dc1=dc1)
        self._motions[d] = motion
        return motion

    def p_antipodal(self, d: int, rho0: float) -> float:
        """``P(rho_t -> -1 | rho0)`` for two tokens in dimension ``d`` (:meth:`two_point`)."""
        return self.two_point(d).p_antipodal(rho0)


def canonical_pair(rho: Tensor, d: int) -> Tensor:
    r"""``(B, 2, d)``: ``x_1 = e_1``, ``x_2 = rho e_1 + sqrt((1 - rho)(1 + rho)) e_2`` (dtype of ``rho``).

    ``rho``: overlaps of any shape (flattened to ``B`` pairs), in ``[-1, 1]``; ``d >= 2``.

    Examples
    --------
    >>> import torch
    >>> from tokensde.models.kernel import canonical_pair
    >>> x = canonical_pair(torch.tensor([0.5, -1.0], dtype=torch.float64), 3)
    >>> tuple(x.shape), (x[:, 0] * x[:, 1]).sum(-1).tolist()
    ((2, 2, 3), [0.5, -1.0])
    >>> bool(torch.allclose(x.norm(dim=-1), torch.ones(2, 2, dtype=torch.float64)))
    True
    """
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    r = rho.reshape(-1)
    x = torch.zeros(r.numel(), 2, d, dtype=r.dtype, device=r.device)
    x[:, 0, 0] = 1.0
    x[:, 1, 0] = r
    x[:, 1, 1] = ((1.0 - r) * (1.0 + r)).clamp_min(0.0).sqrt()
    return x


def is_model(obj: Any) -> bool:
    """Whether ``obj`` (not a class) has the limit-model contract: ``coefficients`` and ``noise_shape``.

    Examples
    --------
    >>> from tokensde import ValueNoise
    >>> from tokensde.models.kernel import is_model
    >>> is_model(ValueNoise()), is_model(ValueNoise), is_model(object())
    (True, False, False)
    """
    return (
        not isinstance(obj, type)
        and callable(getattr(obj, "coefficients", None))
        and callable(getattr(obj, "noise_shape", None))
    )


def load_model(spec: Any, /, what: str = "model", **kwargs: Any) -> Any:
    r"""A model from ``"MODULE:FACTORY"`` (or from an object): **this executes code**.

    ``MODULE`` is imported (running its top-level code) and ``FACTORY`` (an
    attribute path, e.g. ``make`` or ``Models.make``) is called with ``kwargs``;
    so a spec carries the same trust as ``PYTHONPATH``: never take one from an
    untrusted source. ``FACTORY`` may also be a model object itself (returned
    as it is; no ``kwargs`` then) or a class. A non-string ``spec`` is taken as
    that object directly.

    The result must have the limit-model contract (:func:`is_model`:
    ``coefficients(x, xi)`` and ``noise_shape(n, d, discrete=False)``), e.g. a
    :class:`KernelModel`. Any failure (malformed spec, import error, missing
    attribute, the factory raising, a result that is not a model) raises
    :class:`tokensde.errors.UsageError` (a ``ValueError``) with one line that
    starts with ``what`` and names the spec.

    Examples
    --------
    >>> from tokensde.models.kernel import load_model
    >>> model = load_model("tokensde.models:ValueNoise", beta=2.0)
    >>> type(model).__name__, model.beta
    ('ValueNoise', 2.0)
    >>> load_model(model) is model  # an object is taken as it is
    True
    >>> load_model("ValueNoise")
    Traceback (most recent call last):
    ...
    tokensde.errors.UsageError: model: expected MODULE:FACTORY (e.g. mypkg.models:make), got 'ValueNoise'
    """
    label = repr(spec) if isinstance(spec, str) else _name_of(spec)
    obj: Any = spec
    if isinstance(spec, str):
        module, sep, attr = spec.strip().partition(":")
        if not sep or not module or not attr or ":" in attr:
            raise UsageError(f"{what}: expected MODULE:FACTORY (e.g. mypkg.models:make), got {spec!r}")
        try:
            obj = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - the user's module: any failure while importing it
            raise UsageError(f"{what}: cannot import {module!r} for {spec!r}: {type(e).__name__}: {e}") from None
        for part in attr.split("."):
            if not part.isidentifier() or not hasattr(obj, part):
                raise UsageError(f"{what}: {spec!r}: module {module!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
    if is_model(obj):
        if kwargs:
            raise UsageError(f"{what}: {label} is a model, not a factory: it takes no arguments ({sorted(kwargs)})")
        return obj
    if not callable(obj):
        raise UsageError(f"{what}: {label} is neither a model nor a factory (a callable returning one)")
    try:
        model = obj(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's factory: any failure while building the model
        raise UsageError(f"{what}: {label} failed: {type(e).__name__}: {e}") from None
    if not is_model(model):
        raise UsageError(
            f"{what}: {label} returned a {type(model).__name__}, which is not a model: it needs the methods "
            "coefficients(x, xi) and noise_shape(n, d, discrete=False) (e.g. tokensde.models.KernelModel)"
        )
    return model
