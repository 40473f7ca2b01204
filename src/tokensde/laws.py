r"""Entry laws of model A's layer matrices: standard normals ``xi`` mapped to the matrix ``Z``.

Every law maps the step's normals ``xi`` (shape ``(..., d, d)``, one normal per
entry) *deterministically* to ``Z`` of the same shape, so a run is reproducible
from its seed, the noise shape of the stack stays ``(d, d)`` for every law, and
runs of different laws driven by the same seed are coupled through ``xi``.

====================  ===========  ===============================================================
law                   parameters   ``Z`` from ``xi`` (entrywise unless said otherwise)
====================  ===========  ===============================================================
``gaussian``          --           ``xi``
``rademacher``        --           ``sign(xi)``
``uniform``           --           ``sqrt(3) (2 Phi(xi) - 1)``, uniform on ``[-sqrt 3, sqrt 3]``
``student``           ``nu``       ``c F_nu^{-1}(Phi(xi))``: Student t with ``nu`` degrees of
                                   freedom by inversion; ``c = sqrt((nu - 2)/nu)`` (variance 1)
                                   when ``nu > 2``, ``c = 1`` (unscaled; the variance is
                                   infinite) when ``nu <= 2``
``sparse``            ``p``        ``1{V < p} sign(xi) Phi^{-1}(1 - V/(2p)) / sqrt(p)`` with
                                   ``V = 2 Phi(-|xi|)``: a Bernoulli(``p``)-masked standard
                                   normal scaled to variance 1
``haar``              --           ``sqrt(d) Q`` with ``xi = Q R``, ``diag R > 0``: ``Q`` Haar on
                                   ``O(d)`` (not entrywise; the entries are dependent)
====================  ===========  ===============================================================

All of them have mean 0 and variance 1 per entry (``student`` only for ``nu > 2``),
and every law but ``haar`` has independent entries. The entries of ``sqrt(d) Q``
have the covariance of i.i.d. standard entries (``E[Q_ij Q_kl] = delta_ik delta_jl / d``),
which is all the depth limit of model A sees.

Why these maps are exact in law:

- ``student``: ``Phi(xi)`` is uniform, and ``F_nu^{-1}`` of a uniform is ``t_nu``.
  ``g(u) = F_nu^{-1}(Phi(u))`` has no closed form; it is tabulated once per ``nu``
  in float64 (SciPy's ``stdtrit`` on ``Phi(u)`` for ``u <= 0``, where ``Phi(u)``
  is accurate, and ``g(-u) = -g(u)``) on ``[-10, 0]`` with step ``1/1024``, with
  its exact derivative ``g' = phi(u) / f_nu(g(u))``, and evaluated by cubic
  Hermite interpolation on the tensor's device (relative error below ``1e-9``;
  ``|xi| > 10``, probability ``1.5e-23``, is clamped to 10).
- ``sparse``: ``V = 2 Phi(-|xi|)`` is uniform on ``(0, 1)`` and independent of
  ``sign(xi)``; given ``V < p`` (probability ``p``), ``V/p`` is again uniform, so
  ``Phi^{-1}(1 - V/(2p))`` is ``|N(0, 1)|`` and with the independent sign a
  standard normal. The mask is a function of ``|xi|`` (the entries with the
  largest ``|xi|`` are kept) and the value a monotone function of ``|xi|``, but
  in law they are the independent mask and Gaussian of the definition. The
  upper tail of the kept values comes from small ``V``, computed as ``erfc``
  without cancellation. ``p = 1`` gives back ``xi``.
- ``haar``: Mezzadri (2007): if ``xi`` has i.i.d. standard normal entries and
  ``xi = Q R`` with the diagonal of ``R`` positive, ``Q`` is Haar distributed.
  For ``d <= 16`` ``Q`` is computed by Gram--Schmidt on the columns (which gives
  ``diag R > 0`` by construction) with one reorthogonalisation pass ("twice is
  enough"), vectorised over the batch; above, by ``torch.linalg.qr`` with the sign
  fix ``Q diag(sign(diag R))``. Both are the same matrix up to rounding.

The registry :data:`REGISTRY` maps a name to a :class:`Law` (its parameters and
its mapping); :func:`entries` looks the law up at call time, so a test can
replace a mapping. Parameters are validated by :func:`check` with a
``ValueError`` naming the parameter and its range.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["LAWS", "PARAMS", "REGISTRY", "Law", "Param", "check", "entries", "finite_variance", "haar", "student"]


@dataclass(frozen=True)
class Param:
    """A law parameter and its allowed range ``lo < x <= hi`` (``lo <= x`` when ``lo_closed``).

    Parameters
    ----------
    name : str
        The keyword (``nu``, ``p``).
    lo, hi : float
        The range's ends.
    lo_closed : bool
        Whether ``lo`` itself is allowed.
    meaning : str
        Named in error messages.

    Examples
    --------
    >>> from tokensde.laws import PARAMS
    >>> PARAMS["nu"].range, PARAMS["p"].range
    ('[1, 1e+06]', '(0, 1]')
    >>> PARAMS["p"].validate("0.25")
    0.25
    >>> PARAMS["p"].validate(0)
    Traceback (most recent call last):
    ...
    ValueError: p (keep probability of the sparse law) must be in (0, 1], got 0
    """

    name: str
    lo: float
    hi: float
    lo_closed: bool
    meaning: str

    @property
    def range(self) -> str:
        return f"{'[' if self.lo_closed else '('}{self.lo:g}, {self.hi:g}]"

    def validate(self, value: float) -> float:
        """``value`` as a float, or a ``ValueError`` naming the parameter and its range."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} ({self.meaning}) must be a number in {self.range}, got {value!r}") from None
        above = v >= self.lo if self.lo_closed else v > self.lo
        if not (math.isfinite(v) and above and v <= self.hi):
            raise ValueError(f"{self.name} ({self.meaning}) must be in {self.range}, got {value!r}")
        return v


#: the parameters of the laws that have some
PARAMS: dict[str, Param] = {
    "nu": Param("nu", 1.0, 1e6, True, "degrees of freedom of the student law"),
    "p": Param("p", 0.0, 1.0, False, "keep probability of the sparse law"),
}


@dataclass(frozen=True)
class Law:
    """An entry law: its name, the parameters it reads, whether its entries are independent,
    and ``mapping(xi, **params) -> Z`` (``xi`` of shape ``(..., d, d)``).

    Parameters
    ----------
    name : str
        The key of :data:`REGISTRY`.
    params : tuple of str
        The parameters (:data:`PARAMS`) passed to ``mapping``.
    independent : bool
        Whether the entries of ``Z`` are independent (all laws but ``haar``).
    mapping : callable
        ``mapping(xi, **params) -> Z``, same shape as ``xi``, deterministic.
    summary : str
        One line for tables.

    Examples
    --------
    >>> import torch
    >>> from tokensde.laws import REGISTRY
    >>> law = REGISTRY["rademacher"]
    >>> law.params, law.independent, law.mapping(torch.tensor([-0.3, 0.0, 2.0])).tolist()
    ((), True, [-1.0, 1.0, 1.0])
    >>> REGISTRY["student"].params, REGISTRY["haar"].independent
    (('nu',), False)
    """

    name: str
    params: tuple[str, ...]
    independent: bool
    mapping: Callable[..., Tensor]
    summary: str


def _gaussian(xi: Tensor) -> Tensor:
    return xi


def _rademacher(xi: Tensor) -> Tensor:
    return torch.where(xi >= 0, 1.0, -1.0).to(xi.dtype)


def _uniform(xi: Tensor) -> Tensor:
    return math.sqrt(3.0) * torch.erf(xi / math.sqrt(2.0))


#: the table of ``g(u) = F_nu^{-1}(Phi(u))`` covers ``u`` in ``[-STUDENT_RANGE, 0]`` with ``STUDENT_STEPS`` intervals
STUDENT_RANGE = 10.0
STUDENT_STEPS = 10 * 1024


@functools.lru_cache(maxsize=32)
def _student_table(nu: float) -> tuple[np.ndarray, np.ndarray]:
    """``g`` and ``g' * step`` on the grid ``u_k = -STUDENT_RANGE + k step`` (float64)."""
    from scipy import special, stats

    u = np.linspace(-STUDENT_RANGE, 0.0, STUDENT_STEPS + 1)
    g = special.stdtrit(nu, special.ndtr(u))
    g[-1] = 0.0
    dg = np.exp(stats.norm.logpdf(u) - stats.t.logpdf(g, nu))
    return g, dg * (STUDENT_RANGE / STUDENT_STEPS)


@functools.lru_cache(maxsize=64)
def _student_tensors(nu: float, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    g, dg = _student_table(nu)
    return torch.as_tensor(g, dtype=dtype, device=device), torch.as_tensor(dg, dtype=dtype, device=device)


def student(xi: Tensor, nu: float = 5.0) -> Tensor:
    r"""Student ``t_nu`` entries ``F_nu^{-1}(Phi(xi))``, scaled to variance 1 when ``nu > 2`` (unscaled otherwise).

    .. math:: Z = c\,F_\nu^{-1}(\Phi(\xi)), \qquad c = \sqrt{(\nu - 2)/\nu}\ (\nu > 2), \quad c = 1\ (\nu \le 2)

    by cubic Hermite interpolation of a float64 table (relative error below ``1e-9``;
    see the module docstring). ``xi``: any shape; the result has its shape, dtype and device.

    Examples
    --------
    At ``nu = 1`` (Cauchy) ``F^{-1}(u) = tan(pi (u - 1/2))`` in closed form:

    >>> import math
    >>> import torch
    >>> from tokensde.laws import student
    >>> xi = torch.tensor([-1.0, 0.0, 1.0, 2.5], dtype=torch.float64)
    >>> cauchy = torch.tan(math.pi * (torch.special.ndtr(xi) - 0.5))
    >>> bool(torch.allclose(student(xi, nu=1.0), cauchy, rtol=1e-9, atol=0.0))
    True
    >>> student(xi, nu=5.0).round(decimals=4).tolist()  # odd, scaled by sqrt(3/5)
    [-0.8602, 0.0, 0.8602, 2.9561]
    """
    nu = PARAMS["nu"].validate(nu)
    g, dg = _student_tensors(nu, xi.device, xi.dtype)
    step = STUDENT_RANGE / STUDENT_STEPS
    u = (-xi.abs()).clamp_min(-STUDENT_RANGE)
    s = (u + STUDENT_RANGE) / step
    k = s.floor().clamp(0, STUDENT_STEPS - 1)
    f = s - k
    k = k.long()
    y0, y1, m0, m1 = g[k], g[k + 1], dg[k], dg[k + 1]
    # cubic Hermite on [u_k, u_{k+1}] with the exact derivatives
    f2, f3 = f * f, f * f * f
    val = (2 * f3 - 3 * f2 + 1) * y0 + (f3 - 2 * f2 + f) * m0 + (-2 * f3 + 3 * f2) * y1 + (f3 - f2) * m1
    out = torch.where(xi > 0, -val, val)
    return out * math.sqrt((nu - 2.0) / nu) if nu > 2.0 else out


def sparse(xi: Tensor, p: float = 0.5) -> Tensor:
    """Bernoulli(``p``)-masked standard normals scaled by ``1/sqrt(p)`` (variance 1), exact in law."""
    p = PARAMS["p"].validate(p)
    v = torch.special.erfc(xi.abs() / math.sqrt(2.0))  # 2 Phi(-|xi|), uniform on (0, 1]
    keep = v < p
    mag = -torch.special.ndtri((0.5 / p) * torch.where(keep, v, 0.5 * p))  # |N(0,1)| where kept
    return torch.where(keep, torch.sign(xi) * mag, 0.0) * (1.0 / math.sqrt(p))


#: Gram-Schmidt (vectorised over the batch) up to this dimension, Householder QR above
GRAM_SCHMIDT_MAX = 16


def haar(xi: Tensor) -> Tensor:
    r"""``sqrt(d) Q`` with ``Q`` the orthogonal factor of ``xi = Q R``, ``diag R > 0`` (Haar on ``O(d)``).

    .. math:: \xi = Q R,\ R_{kk} > 0 \ \Rightarrow\ Q \sim \mathrm{Haar}(O(d)), \qquad Z = \sqrt d\, Q

    ``xi``: ``(..., d, d)`` standard normals (``ValueError`` if not square); the
    result has its shape. ``Z Z^T = d I``, and the entries have mean 0 and variance 1.

    Examples
    --------
    >>> import torch
    >>> from tokensde.laws import haar
    >>> g = torch.Generator().manual_seed(0)
    >>> xi = torch.randn(5, 4, 4, generator=g)
    >>> z = haar(xi)
    >>> bool(torch.allclose(z @ z.mT, 4 * torch.eye(4), atol=1e-5))
    True
    >>> r = z.mT @ xi / 2  # = R: upper triangular with a positive diagonal
    >>> bool(torch.allclose(r, r.triu(), atol=1e-5)), bool((torch.diagonal(r, dim1=-2, dim2=-1) > 0).all())
    (True, True)
    >>> z = haar(torch.randn(2, 20, 20, generator=g))  # d > 16: Householder QR
    >>> bool(torch.allclose(z @ z.mT, 20 * torch.eye(20), atol=1e-4))
    True
    """
    d = xi.shape[-1]
    if xi.shape[-2] != d:
        raise ValueError(f"the haar law needs square matrices, got shape {tuple(xi.shape)}")
    if d > GRAM_SCHMIDT_MAX:
        q, r = torch.linalg.qr(xi)
        sign = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(xi.dtype)
        return math.sqrt(d) * q * sign.unsqueeze(-2)
    cols: list[Tensor] = []
    for j in range(d):
        v = xi[..., :, j]
        for _ in range(2):  # classical Gram-Schmidt, twice
            for c in cols:
                v = v - (v * c).sum(-1, keepdim=True) * c
        cols.append(v / torch.linalg.vector_norm(v, dim=-1, keepdim=True))
    return math.sqrt(d) * torch.stack(cols, -1)


REGISTRY: dict[str, Law] = {
    law.name: law
    for law in (
        Law("gaussian", (), True, _gaussian, "standard normal"),
        Law("rademacher", (), True, _rademacher, "random signs"),
        Law("uniform", (), True, _uniform, "uniform on [-sqrt 3, sqrt 3]"),
        Law("student", ("nu",), True, student, "Student t_nu, variance 1 for nu > 2 (unscaled for nu <= 2)"),
        Law("sparse", ("p",), True, sparse, "Bernoulli(p)-masked normal / sqrt(p)"),
        Law("haar", (), False, lambda xi: haar(xi), "sqrt(d) Q, Q Haar on O(d) (dependent entries)"),
    )
}

#: the law names, in the registry's order
LAWS: tuple[str, ...] = tuple(REGISTRY)


def check(law: str, nu: float = 5.0, p: float = 0.5) -> None:
    """``ValueError`` for an unknown law or a parameter out of its range (every parameter is checked).

    Examples
    --------
    >>> from tokensde.laws import check
    >>> check("student", nu=3.0)  # returns None when valid
    >>> check("student", nu=0.5)
    Traceback (most recent call last):
    ...
    ValueError: nu (degrees of freedom of the student law) must be in [1, 1e+06], got 0.5
    >>> check("cauchy")
    Traceback (most recent call last):
    ...
    ValueError: law must be one of gaussian, rademacher, uniform, student, sparse, haar; got 'cauchy'
    """
    if law not in REGISTRY:
        raise ValueError(f"law must be one of {', '.join(REGISTRY)}; got {law!r}")
    PARAMS["nu"].validate(nu)
    PARAMS["p"].validate(p)


def finite_variance(law: str, nu: float = 5.0) -> bool:
    """Whether the entries have finite variance (then it is 1): all laws but ``student`` with ``nu <= 2``.

    Examples
    --------
    >>> from tokensde.laws import finite_variance
    >>> finite_variance("student", nu=2.0), finite_variance("student", nu=3.0), finite_variance("haar")
    (False, True, True)
    """
    check(law, nu)
    return not (law == "student" and nu <= 2.0)


def entries(xi: Tensor, law: str, nu: float = 5.0, p: float = 0.5) -> Tensor:
    """``Z`` of the given law from standard normals ``xi`` (shape ``(..., d, d)``; the mapping is looked up now).

    Returns a tensor of the shape of ``xi``; ``nu`` and ``p`` are passed to the
    laws that read them (:attr:`Law.params`).

    Examples
    --------
    Every law has mean 0 and variance 1 per entry:

    >>> import torch
    >>> from tokensde.laws import LAWS, entries
    >>> xi = torch.randn(200, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> [round(float(entries(xi, law).var()), 1) for law in LAWS]
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    >>> bool(entries(xi, "uniform").abs().max() <= 3**0.5)
    True
    >>> round(float((entries(xi, "sparse", p=0.25) != 0).float().mean()), 2)  # the keep probability
    0.25
    """
    if law not in REGISTRY:
        raise ValueError(f"law must be one of {', '.join(REGISTRY)}; got {law!r}")
    spec = REGISTRY[law]
    kwargs = {"nu": nu, "p": p}
    return spec.mapping(xi, **{k: kwargs[k] for k in spec.params})
