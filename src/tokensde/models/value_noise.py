r"""Model A: random value matrices (Fedorov et al.), as a stack and as its limit.

Discrete stack, layer ``k`` with step ``h``:

.. math::

    a_i = m_{\beta,A}(x_i; X), \quad
    x_i^{k+1} = N\big(x_i + h \bar V a_i + \sigma \sqrt{h} Z_k a_i\big),

``Z_k`` a ``d x d`` matrix of i.i.d. mean-0 variance-1 entries shared by the
system's tokens. Limit (Itô), the form (*) with drift ``b_i = Vbar a_i`` and
kernel ``C_ij = sigma^2 <a_i, a_j>``:

.. math::

    dx_i = P_{x_i}\bar V a_i\,dt + \sigma P_{x_i} dW_t a_i - \tfrac{\sigma^2 (d-1)}{2} |a_i|^2 x_i\,dt.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..attention import barycenters, usa_barycenters
from ..laws import LAWS
from ..laws import check as check_law
from ..noise import entry_law, gram_factor, kernel_increment, matrix_increment
from ..sphere import normalize
from .base import Model

__all__ = ["ValueNoise", "FusedPairStep", "pair_euler_slab", "pair_euler_step"]


def _pair_step(x1, x2, xi0, xi1, beta, dt: float, sigma2: float, d: int, dot, scale, unit):  # type: ignore[no-untyped-def]
    r"""The two-token step on tokens in either layout (see :func:`pair_euler_step`).

    ``x1, x2, xi0, xi1`` are tokens and ``beta`` a per-system scalar; the layout
    supplies ``dot(u, v)`` (a per-system scalar), ``scale(u, s)`` (a token times a
    per-system scalar) and ``unit(u)`` (``u / |u|``). Tokens are tensors ``(B, d)``
    with scalars ``(B, 1)``, or :class:`_Coords` with scalars ``(B,)``.
    """
    # 1 + rho and 1 - rho from the chordal distances: accurate near both boundaries
    s_plus = 0.5 * dot(x1 + x2, x1 + x2)
    s_minus = 0.5 * dot(x1 - x2, x1 - x2)
    # self-weight p = sigmoid(beta (1 - rho)); p - q = tanh(beta (1 - rho) / 2) keeps its relative accuracy
    t = torch.tanh((0.5 * beta) * s_minus)
    t2 = t * t
    c0 = t2 + (0.5 * (1.0 - t2)) * s_plus  # (p-q)^2 + 2pq (1 + rho)
    c1 = (0.5 * (1.0 + t2)) * s_plus - t2  # (p^2+q^2)(1 + rho) - (p-q)^2
    l11 = c0.sqrt().clamp_min(torch.finfo(c0.dtype).tiny)
    l21 = c1 / l11
    # Schur complement c0 - c1^2/c0 = (p - q)^2 (1 + rho)(1 - rho) / c0, without cancellation
    l22 = t.abs() * (s_plus * s_minus).sqrt() / l11
    sq = math.sqrt(dt * sigma2)
    m1 = scale(xi0, sq * l11)
    m2 = scale(xi0, sq * l21) + scale(xi1, sq * l22)
    m1 = m1 - scale(x1, dot(m1, x1))
    m2 = m2 - scale(x2, dot(m2, x2))
    shrink = 1.0 - (0.5 * (d - 1) * dt * sigma2) * c0
    return unit(scale(x1, shrink) + m1), unit(scale(x2, shrink) + m2)


def pair_euler_step(x: Tensor, xi: Tensor, beta: Tensor, dt: float, sigma2: float) -> Tensor:
    r"""One projected Euler–Maruyama step for two tokens, kernel route, in fused form.

    The same step as :class:`~tokensde.solvers.EulerMaruyama` with
    :class:`ValueNoise` (``A = I``, ``Vbar = 0``, softmax), written with the
    closed forms ``a_1 = p x_1 + q x_2``, ``c_0 = p^2 + q^2 + 2 p q rho``,
    ``c_1 = 2 p q + (p^2 + q^2) rho`` and the ``2 x 2`` Cholesky factor
    ``[[sqrt(c_0), 0], [c_1/sqrt(c_0), sqrt(c_0 - c_1^2/c_0)]]`` of the kernel.
    ``1 -+ rho`` are taken from ``|x_1 -+ x_2|^2 / 2`` and the Schur complement
    from its factored form ``(p-q)^2 (1-rho^2) / c_0``, so that the noise stays
    accurate in float32 arbitrarily close to collapse and to antipodality.
    ``x``, ``xi``: ``(B, 2, d)``; ``beta``: ``(B, 1)``.

    .. math::

        c_0 = (p-q)^2 + 2pq(1+\rho), \quad c_1 = (p^2+q^2)(1+\rho) - (p-q)^2, \quad
        p - q = \tanh\big(\tfrac{\beta(1-\rho)}{2}\big).

    Parameters
    ----------
    x : Tensor ``(B, 2, d)``
        Pairs of unit vectors.
    xi : Tensor ``(B, 2, d)``
        The step's normals (the kernel route's ``noise_shape``).
    beta : Tensor ``(B, 1)``
        Inverse temperature per pair.
    dt : float
        Step.
    sigma2 : float
        ``sigma^2``.

    Returns
    -------
    Tensor ``(B, 2, d)``
        The pairs after one step, on the sphere.

    Examples
    --------
    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.models.value_noise import pair_euler_step
    >>> from tokensde.solvers import EulerMaruyama
    >>> from tokensde.sphere import uniform
    >>> g = torch.Generator().manual_seed(0)
    >>> x, xi = uniform((6, 2), 4, g), torch.randn(6, 2, 4, generator=g)
    >>> y = pair_euler_step(x, xi, torch.full((6, 1), 2.0), 0.01, 1.0)
    >>> generic = EulerMaruyama().step(ValueNoise(beta=2.0, route="kernel"), x, xi, 0.01)
    >>> bool(torch.allclose(y, generic, atol=1e-6))
    True
    """
    y1, y2 = _pair_step(
        x[:, 0], x[:, 1], xi[:, 0], xi[:, 1], beta, dt, sigma2, x.shape[-1],
        lambda u, v: (u * v).sum(-1, keepdim=True),
        operator.mul,
        lambda u: u / torch.linalg.vector_norm(u, dim=-1, keepdim=True),
    )  # fmt: skip
    return torch.stack([y1, y2], 1)


class _Coords:
    """A token of every system as ``d`` coordinate vectors ``(B,)``: the layout of :func:`pair_euler_slab`.

    ``+`` and ``-`` are coordinate-wise; :meth:`scale` multiplies every system by its own scalar.
    """

    def __init__(self, c: list[Tensor]) -> None:
        self.c = c

    def __add__(self, o: _Coords) -> _Coords:
        return _Coords([a + b for a, b in zip(self.c, o.c, strict=True)])

    def __sub__(self, o: _Coords) -> _Coords:
        return _Coords([a - b for a, b in zip(self.c, o.c, strict=True)])

    def scale(self, s: Tensor) -> _Coords:
        return _Coords([a * s for a in self.c])

    def dot(self, o: _Coords) -> Tensor:
        return sum((a * b for a, b in zip(self.c[1:], o.c[1:], strict=True)), self.c[0] * o.c[0])

    def unit(self) -> _Coords:
        n = self.dot(self).sqrt()
        return _Coords([a / n for a in self.c])


def pair_euler_slab(x: Tensor, xi: Tensor, beta: Tensor, dt: float, sigma2: float) -> Tensor:
    r"""``xi.shape[0]`` steps of :func:`pair_euler_step` in the coordinate-major layout.

    ``x``: ``(2, d, B)``; ``xi``: ``(S, 2, d, B)``; ``beta``: ``(B,)``. Every
    operation is elementwise over the systems, so under :func:`torch.compile`
    the ``S`` steps become one vectorised loop over systems (the step of
    :func:`pair_euler_step`, up to floating-point rounding).

    Returns
    -------
    Tensor ``(2, d, B)``
        The pairs after the ``S`` steps, coordinate-major.

    Examples
    --------
    >>> import torch
    >>> from tokensde.models.value_noise import pair_euler_slab, pair_euler_step
    >>> from tokensde.sphere import uniform
    >>> g = torch.Generator().manual_seed(0)
    >>> x, xis, beta = uniform((6, 2), 4, g), torch.randn(3, 6, 2, 4, generator=g), torch.full((6, 1), 2.0)
    >>> y = x
    >>> for xi in xis:
    ...     y = pair_euler_step(y, xi, beta, 0.01, 1.0)
    >>> ys = pair_euler_slab(x.permute(1, 2, 0), xis.permute(0, 2, 3, 1), beta.reshape(-1), 0.01, 1.0)
    >>> tuple(ys.shape), bool(torch.allclose(ys.permute(2, 0, 1), y, atol=1e-6))
    ((2, 4, 6), True)
    """
    d = x.shape[1]
    x1, x2 = _Coords(list(x[0].unbind(0))), _Coords(list(x[1].unbind(0)))
    for k in range(xi.shape[0]):
        x1, x2 = _pair_step(
            x1, x2, _Coords(list(xi[k, 0].unbind(0))), _Coords(list(xi[k, 1].unbind(0))), beta, dt, sigma2, d,
            _Coords.dot, _Coords.scale, _Coords.unit,
        )  # fmt: skip
    return torch.stack([torch.stack(x1.c), torch.stack(x2.c)])


ROUTES = ("auto", "matrix", "kernel")


class FusedPairStep:
    """The fused two-token Euler step of :class:`ValueNoise` (its ``fused_euler`` capability).

    ``step(x, xi, dt)`` is :func:`pair_euler_step`; the step is elementwise per
    pair, so the engine runs it on chunks of ``chunk`` pairs (a chunk's state fits
    in cache). With ``compile=True`` it also has ``slab(x, normals, dt)``: a whole
    slab of steps as :func:`torch.compile`-d calls of :func:`pair_euler_slab`.

    Parameters
    ----------
    beta : Tensor ``(B, 1)``
        Inverse temperature per pair.
    sigma2 : float
        ``sigma^2``.
    d : int
        Dimension (sets the chunk size).
    compile : bool
        Whether to add the compiled ``slab``.

    Examples
    --------
    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.models.value_noise import FusedPairStep
    >>> from tokensde.solvers import EulerMaruyama
    >>> from tokensde.sphere import uniform
    >>> g = torch.Generator().manual_seed(0)
    >>> x, xi = uniform((6, 2), 4, g), torch.randn(6, 2, 4, generator=g)
    >>> model = ValueNoise(beta=2.0)
    >>> step = model.fused_euler(x)
    >>> isinstance(step, FusedPairStep), step.chunk
    (True, 32768)
    >>> y = step(x, xi, 0.01)
    >>> bool(torch.allclose(y, EulerMaruyama().step(model, x, xi, 0.01), atol=1e-6))
    True
    >>> bool(torch.equal(step.rows(2, 4)(x[2:4], xi[2:4], 0.01), y[2:4]))  # elementwise per pair
    True
    """

    def __init__(self, beta: Tensor, sigma2: float, d: int, compile: bool = False) -> None:
        self.beta, self.sigma2 = beta, sigma2
        self.chunk = max(1024, CHUNK_ENTRIES // d)
        if compile:
            self.slab = _compiled_slab(beta, sigma2, d)

    def __call__(self, x: Tensor, xi: Tensor, dt: float) -> Tensor:
        if len(self.beta) != len(x):
            raise ValueError(f"the fused step is prepared for {len(self.beta)} pairs, got {len(x)}")
        return pair_euler_step(x, xi, self.beta, dt, self.sigma2)

    def levels(
        self,
        states: np.ndarray,
        acc: np.ndarray,
        alive: np.ndarray,
        systems: Tensor | None,
        ratios: list[int],
        keys: tuple[np.ndarray, np.ndarray, np.ndarray],
        step0: int,
        steps: int,
        dt: float,
    ) -> None:
        """``steps`` fine steps of coupled runs of ratios ``ratios`` on the systems ``systems`` (all if ``None``)
        of its batch, drawing their normals from ``keys`` (:func:`tokensde.kernels.pair_levels`, CPU).

        ``states`` float64 ``(R, S, 2, d)`` is updated in place where ``alive`` ``(R, S)`` holds; ``acc``
        ``(R, S, 2d)`` float64 holds the coarse runs' sums of fine normals between calls. The kernel
        evaluates each step in float64 and, for float32 pairs, rounds the new state to float32; its numbers
        equal :func:`pair_euler_step`'s to rounding.
        """
        from ..kernels import pair_levels

        # NumPy between kernel calls: a torch operation would wake torch's thread pool, whose threads then spin
        # for milliseconds beside the kernel's (measured: a third slower on 2 cores)
        b = self._beta64 if systems is None else self._beta64[systems.numpy()]
        single = self.beta.dtype == torch.float32
        pair_levels(
            states, acc, alive, b, *keys, np.asarray(ratios, dtype=np.int64), step0, steps, dt, self.sigma2, single
        )

    @functools.cached_property
    def _beta64(self) -> np.ndarray:
        """``beta`` as a float64 NumPy vector (the kernel's input), computed once."""
        return self.beta.reshape(-1).to(device="cpu", dtype=torch.float64).numpy()

    def rows(self, lo: int, hi: int) -> FusedPairStep:
        """The step for the pairs ``lo..hi`` of its batch (the engine's cache-sized chunks)."""
        out = FusedPairStep.__new__(FusedPairStep)
        out.beta, out.sigma2, out.chunk = self.beta[lo:hi], self.sigma2, self.chunk
        return out


#: coordinates per token in a cache-sized chunk of pairs (a chunk's state is ``2 * CHUNK_ENTRIES`` numbers)
CHUNK_ENTRIES = 2**17

COMPILED_STEP_COORDS = 64
"""Steps per compiled call times ``d``: bounds the unrolled graph (compile time grows with it)."""

_COMPILED: dict[str, Callable[..., Tensor]] = {}


def _to_coords(t: Tensor) -> Tensor:
    """``(B, m)`` -> ``(m, B)`` contiguous (compiled: a vectorised tiled transpose)."""
    return t.t().contiguous()


def _compiled_slab(beta: Tensor, sigma2: float, d: int) -> Callable[[Tensor, Tensor, float], Tensor]:
    """A whole slab ``(S, B, 2, d)`` of fused two-token steps in compiled calls of :func:`pair_euler_slab`.

    The slab is transposed once to the coordinate-major layout, whose compiled form is one vectorised
    loop over systems for ``steps`` steps (``steps`` divides ``S``; ``steps * d <= COMPILED_STEP_COORDS``).
    """
    flat = beta.reshape(-1).contiguous()
    if "pair_slab" not in _COMPILED:
        _COMPILED["pair_slab"] = torch.compile(pair_euler_slab, dynamic=False, options={"max_fusion_size": 4096})
        _COMPILED["to_coords"] = torch.compile(_to_coords, dynamic=False)
    step, to_coords = _COMPILED["pair_slab"], _COMPILED["to_coords"]

    def run(x: Tensor, slab: Tensor, dt: float) -> Tensor:
        n_steps, bsz = slab.shape[0], x.shape[0]
        per_call = math.gcd(n_steps, max(1, COMPILED_STEP_COORDS // d))
        xi = to_coords(slab.transpose(0, 1).reshape(bsz, -1)).view(n_steps, 2, d, bsz)
        xc = x.permute(1, 2, 0).contiguous()
        for k in range(0, n_steps, per_call):
            xc = step(xc, xi[k : k + per_call], flat, dt, sigma2)
        return xc.permute(2, 0, 1).contiguous()

    return run


@dataclass
class ValueNoise(Model):
    r"""Model A. ``beta`` may be a float or a tensor ``(B,)`` (one value per system).

    Parameters
    ----------
    beta : float or Tensor
        Inverse temperature.
    sigma : float
        Noise scale (``0`` suppresses the noise).
    vbar : Tensor ``(d, d)``, optional
        Mean value matrix (``0`` if omitted; the identity gives the attention flow).
    a : Tensor ``(d, d)``, optional
        Interaction matrix ``A`` (identity if omitted).
    law : str
        Entry law of the layer matrices (:mod:`tokensde.laws`): ``gaussian``, ``rademacher``,
        ``uniform``, ``student``, ``sparse``, ``haar``.
    route : str
        How the limit's noise is drawn: ``matrix`` (``d^2`` normals per system),
        ``kernel`` (``n d`` normals and an ``n x n`` factor), or ``auto``: the
        kernel route when ``n < d``.
    attention : str
        ``softmax`` or ``usa`` (unnormalised).
    nu : float
        Degrees of freedom of the ``student`` law, in ``[1, 1e6]`` (variance 1 for ``nu > 2``).
    p : float
        Keep probability of the ``sparse`` law, in ``(0, 1]``.

    Notes
    -----
    States are ``(B, n, d)``. Layer ``N(x_i + h Vbar a_i + sigma sqrt(h) Z a_i)``
    (:meth:`layer`), limit (*) with

    .. math:: b_i = \bar V a_i, \qquad C_{ij} = \sigma^2 \langle a_i, a_j\rangle, \qquad a_i = m_{\beta, A}(x_i; X).

    Examples
    --------
    The kernel is the covariance of the noise, ``E[m_i m_j^T] = C_ij I_d``
    (4000 draws at one state, both routes):

    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.sphere import uniform
    >>> g = torch.Generator().manual_seed(0)
    >>> x = uniform((1, 3), 4, g).expand(4000, 3, 4)
    >>> model = ValueNoise(beta=1.0, route="matrix")
    >>> model.noise_shape(3, 4), ValueNoise(route="kernel").noise_shape(3, 4), model.noise_shape(3, 4, discrete=True)
    ((4, 4), (3, 4), (4, 4))
    >>> c = model.kernel(x[:1])[0]
    >>> for route, shape in (("matrix", (4, 4)), ("kernel", (3, 4))):
    ...     m = ValueNoise(beta=1.0, route=route).noise(x, torch.randn(4000, *shape, generator=g))
    ...     print(route, bool(torch.allclose(torch.einsum("bid,bjd->ij", m, m) / (4000 * 4), c, atol=0.03)))
    matrix True
    kernel True

    Two tokens at overlap ``rho``: ``C_11 = p^2 + q^2 + 2pq rho``, ``C_12 = 2pq + (p^2 + q^2) rho``
    with ``p = 1 / (1 + exp(-beta (1 - rho)))``:

    >>> import math
    >>> from tokensde.sphere import pair_with_overlap
    >>> x = pair_with_overlap(1, 5, 0.3, generator=g, dtype=torch.float64)
    >>> p = 1 / (1 + math.exp(-2.0 * 0.7))
    >>> q = 1 - p
    >>> c = ValueNoise(beta=2.0).kernel(x)[0]
    >>> round(float(c[0, 0]), 6) == round(p * p + q * q + 0.6 * p * q, 6), round(float(c[0, 1]), 4)
    (True, 0.5222)
    """

    beta: float | Tensor = 1.0
    sigma: float = 1.0
    vbar: Tensor | None = None
    a: Tensor | None = None
    law: str = "gaussian"
    route: str = "auto"
    attention: str = "softmax"
    nu: float = 5.0
    p: float = 0.5

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, got {self.route!r}")
        if self.law not in LAWS:
            raise ValueError(f"law must be one of {LAWS}, got {self.law!r}")
        check_law(self.law, self.nu, self.p)
        if self.attention not in ("softmax", "usa"):
            raise ValueError(f"attention must be softmax or usa, got {self.attention!r}")

    # ----------------------------------------------------------------- shared pieces
    def barycenters(self, x: Tensor) -> Tensor:
        """``a_i = m_{beta, A}(x_i; X)``, shape ``(B, n, d)``."""
        if self.attention == "usa":
            return usa_barycenters(x, self.beta, self.a)
        if x.shape[-2] == 2 and self.a is None:
            # two tokens: the softmax of two scores in closed form (same numbers as SDPA up to rounding)
            rho = (x[..., 0, :] * x[..., 1, :]).sum(-1, keepdim=True)
            beta = self.beta if not isinstance(self.beta, Tensor) else self.beta.to(x).reshape(-1, 1)
            p = torch.sigmoid(beta * (1.0 - rho))
            q = 1.0 - p
            return torch.stack([p * x[..., 0, :] + q * x[..., 1, :], q * x[..., 0, :] + p * x[..., 1, :]], -2)
        return barycenters(x, self.beta, self.a)

    def fused_pair(self, x: Tensor) -> bool:
        """Whether :func:`pair_euler_step` applies (two tokens, kernel route, ``A = I``, ``Vbar = 0``)."""
        n, d = x.shape[-2:]
        return (
            n == 2
            and self.a is None
            and self.vbar is None
            and self.attention == "softmax"
            and self.route_for(n, d) == "kernel"
        )

    def route_for(self, n: int, d: int) -> str:
        """The noise route used for ``n`` tokens in dimension ``d``."""
        if self.route != "auto":
            return self.route
        return "kernel" if n < d else "matrix"

    def linear_noise(self, n: int, d: int) -> bool:
        """Whether the limit's noise is one fixed linear map of the normals (the matrix route)."""
        return self.route_for(n, d) == "matrix"

    def noise_shape(self, n: int, d: int, discrete: bool = False) -> tuple[int, int]:
        """Normals per system per step: ``(d, d)`` (matrix route, and the stack) or ``(min(n, d), d)``.

        The kernel route's factor has ``min(n, d)`` columns (the rank bound of ``a a^T``).
        """
        return (d, d) if discrete or self.route_for(n, d) == "matrix" else (min(n, d), d)

    # ----------------------------------------------------------------- limit face
    def drift(self, x: Tensor) -> Tensor | None:
        """``b_i = Vbar a_i`` ``(B, n, d)`` (ambient; the solver projects), or ``None`` when ``Vbar = 0``."""
        return None if self.vbar is None else self._drift(self.barycenters(x))

    def _drift(self, a: Tensor) -> Tensor | None:
        return None if self.vbar is None else a @ self.vbar.to(a).transpose(-1, -2)

    def kernel_diag(self, a: Tensor) -> Tensor:
        """``C_ii = sigma^2 |a_i|^2``, shape ``(B, n)``."""
        return self.sigma**2 * torch.linalg.vecdot(a, a)

    def kernel(self, x: Tensor) -> Tensor:
        """``C_ij = sigma^2 <a_i, a_j>``, shape ``(B, n, n)``."""
        a = self.barycenters(x)
        return self.sigma**2 * (a @ a.transpose(-1, -2))

    def noise(self, x: Tensor, xi: Tensor) -> Tensor:
        """Unit-time noise ``dM / sqrt(dt)`` ``(B, n, d)`` from standard normals ``xi`` (``noise_shape``)."""
        return self._noise(x, self.barycenters(x), xi)

    def _noise(self, x: Tensor, a: Tensor, xi: Tensor) -> Tensor:
        if xi.shape[-2:] == (x.shape[-1], x.shape[-1]) and self.route_for(x.shape[-2], x.shape[-1]) == "matrix":
            out = matrix_increment(a, xi)
        else:
            out = kernel_increment(gram_factor(a), xi)
        return out if self.sigma == 1.0 else self.sigma * out

    def coefficients(self, x: Tensor, xi: Tensor | None) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """``(b, C_ii, dM/sqrt(dt))`` at ``x`` for the normals ``xi`` (no noise when ``xi`` is ``None``)."""
        a = self.barycenters(x)
        return self._drift(a), self.kernel_diag(a), None if xi is None else self._noise(x, a, xi)

    # ----------------------------------------------------------------- capabilities
    def fused_euler(self, x: Tensor, compile: bool = False) -> FusedPairStep | None:
        """The fused two-token Euler step (:class:`FusedPairStep`) when :meth:`fused_pair` holds, else ``None``."""
        if not self.fused_pair(x):
            return None
        beta = self.beta
        if isinstance(beta, Tensor):
            b = beta.to(x).reshape(-1, 1)
        else:
            b = torch.full((x.shape[0], 1), float(beta), dtype=x.dtype, device=x.device)
        # on the CPU the compiled kernel (levels) is the fast route: no torch.compile-d slab there
        return FusedPairStep(b, float(self.sigma) ** 2, x.shape[-1], compile and x.device.type != "cpu")

    def select(self, idx: Tensor, total: int) -> ValueNoise:
        """The model for the systems ``idx`` of ``total`` (a per-system ``beta`` is indexed)."""
        beta = self.beta
        if isinstance(beta, Tensor) and beta.dim() == 1 and beta.shape[0] == total:
            return dataclasses.replace(self, beta=beta[idx.to(beta.device)])
        return self

    def stratonovich_correction(self, x: Tensor) -> Tensor | None:
        r"""``sum_k D sigma_k[g_k]`` of :func:`tokensde.solvers.stratonovich_coefficients` in closed form.

        For the matrix route, ``sigma_{rc}(X)_i = sigma e_r (a_i)_c`` and
        ``g_{rc} = P sigma_{rc}``. Differentiating the softmax weights
        ``w_il = softmax_l(beta <A x_i, x_l>)`` gives, with
        ``S_i = sum_l w_il x_l x_l^T``,

        .. math::

            \sum_k D\sigma_k[g_k]_i = \sigma^2 \Big( \sum_j w_{ij} P_{x_j} a_j
            + \beta P_{x_i} A^T (S_i a_i - |a_i|^2 a_i)
            + \beta \sum_l w_{il} (\langle a_l, x_l\rangle - \langle a_l, a_i\rangle) P_{x_l} A x_i \Big).

        Forms the ``n x n`` weights (the Heun scheme is for small systems);
        ``None`` (use finite differences) for the USA attention or another route.
        """
        n, d = x.shape[-2:]
        if self.attention != "softmax" or self.route_for(n, d) != "matrix":
            return None
        beta = self.beta if not isinstance(self.beta, Tensor) else self.beta.to(x).reshape(-1, 1, 1)
        ax = x if self.a is None else x @ self.a.to(x).transpose(-1, -2)  # rows A x_i
        w = torch.softmax(beta * (ax @ x.transpose(-1, -2)), dim=-1)  # (B, n, n)
        a = w @ x
        xa = (x * a).sum(-1, keepdim=True)  # <x_j, a_j>
        pa = a - xa * x  # P_j a_j
        term1 = w @ pa
        # S_i a_i = sum_l w_il <x_l, a_i> x_l
        xl_ai = a @ x.transpose(-1, -2)  # (B, i, l): <a_i, x_l>
        s_a = (w * xl_ai) @ x
        u = s_a - (a * a).sum(-1, keepdim=True) * a
        atu = u if self.a is None else u @ self.a.to(x)  # rows A^T u_i
        term2 = atu - (x * atu).sum(-1, keepdim=True) * x
        # sum_l w_il c_il P_l A x_i with c_il = <a_l, x_l> - <a_l, a_i>
        c = w * (xa.transpose(-1, -2) - a @ a.transpose(-1, -2))  # (B, i, l)
        # P_l A x_i = A x_i - <x_l, A x_i> x_l
        proj = ax @ x.transpose(-1, -2)  # (B, i, l): <A x_i, x_l>
        term3 = c.sum(-1, keepdim=True) * ax - (c * proj) @ x
        out = term1 + beta * (term2 + term3)
        return out if self.sigma == 1.0 else (self.sigma**2) * out

    # ----------------------------------------------------------------- discrete face
    def layer(self, x: Tensor, xi: Tensor, h: float) -> Tensor:
        r"""One random layer ``N(x + h Vbar a + sigma sqrt(h) Z a)``, ``Z = law(xi)`` of shape ``(B, d, d)``."""
        a = self.barycenters(x)
        z = entry_law(xi, self.law, self.nu, self.p)
        y = x + (self.sigma * math.sqrt(h)) * (a @ z.transpose(-1, -2))
        b = self._drift(a)
        if b is not None:
            y = y + h * b
        return normalize(y)
