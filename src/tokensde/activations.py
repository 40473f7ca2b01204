r"""Activation functions of the MLP blocks (model C), in NumPy and in torch, with derivatives.

An :class:`Activation` carries the function ``phi`` and its derivative
``phi'`` in both array libraries, because the theory
(:mod:`tokensde.theory.synchronization`) works in float64 NumPy and the model
(:mod:`tokensde.models.mlp_noise`) in torch on the tensors' device.

Named activations (:data:`NAMES`): ``relu``, ``tanh``, ``silu`` (``x sigmoid(x)``),
``sigmoid`` and ``gelu`` (the exact one, ``x Phi(x)`` with the standard normal
distribution function ``Phi``, not the tanh approximation):

.. math::

    \mathrm{relu}'(x) = 1_{x > 0}, \quad \tanh' = 1 - \tanh^2, \quad
    \sigma' = \sigma (1 - \sigma), \quad
    \mathrm{silu}' = \sigma + x \sigma (1 - \sigma), \quad
    \mathrm{gelu}' = \Phi + x \varphi.

User activations: :func:`make_activation` accepts any elementwise callable that
takes a NumPy array or a torch tensor (or both), and optionally its derivative.
Without a derivative, ``phi'`` is torch autograd of ``phi`` when ``phi`` accepts
tensors and is differentiable, otherwise the fourth-order central difference

.. math::

    \phi'(x) \approx \frac{\phi(x - 2h) - 8 \phi(x - h) + 8 \phi(x + h) - \phi(x + 2h)}{12 h},
    \qquad h = 10^{-3} \max(1, |x|),

whose error is ``O(h^4)`` for smooth ``phi`` (about ``1e-12``) plus rounding
``O(eps / h)``. A callable that works on NumPy arrays only is evaluated on the
CPU in float64 when the model needs it on tensors (slow; prefer torch callables).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import special
from torch import Tensor

__all__ = ["Activation", "NAMES", "get_activation", "make_activation", "ActivationLike"]

NpFn = Callable[[np.ndarray], np.ndarray]
TorchFn = Callable[[Tensor], Tensor]

NAMES = ("relu", "tanh", "silu", "sigmoid", "gelu")


@dataclass(frozen=True, eq=False)
class Activation:
    r"""An elementwise activation with its derivative, in NumPy (float64) and in torch.

    Parameters
    ----------
    name : str
        A named activation (:data:`NAMES`) or a label for a user callable.
    np_fn, np_grad : callable
        ``phi`` and ``phi'`` on NumPy arrays.
    torch_fn, torch_grad : callable
        ``phi`` and ``phi'`` on torch tensors (device and dtype follow the input).
    odd : bool
        Whether ``phi(-x) = -phi(x)`` (exactly for named activations, numerically
        checked on a grid for user callables).
    smooth : bool
        ``False`` for activations with a kink (relu), whose kernel has a closed form.
    meta : dict
        Free-form information, e.g. how the derivative was obtained.

    Instances compare and hash by identity, so they can key caches. The
    derivatives of the named ones are exact, e.g.

    .. math:: \tanh' = 1 - \tanh^2, \qquad \mathrm{gelu}'(x) = \Phi(x) + x \varphi(x).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from tokensde.activations import get_activation
    >>> act = get_activation("tanh")
    >>> act.name, act.odd, act.smooth
    ('tanh', True, True)
    >>> act.np_fn(np.array([0.5])).round(4).tolist(), act.np_grad(np.array([0.5])).round(4).tolist()
    ([0.4621], [0.7864])
    >>> act.torch_grad(torch.tensor([0.5], dtype=torch.float64)).round(decimals=4).tolist()
    [0.7864]
    """

    name: str
    np_fn: NpFn
    np_grad: NpFn
    torch_fn: TorchFn
    torch_grad: TorchFn
    odd: bool
    smooth: bool = True
    meta: dict[str, Any] = field(default_factory=dict)


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(special.expit(x))


def _named() -> dict[str, Activation]:
    sq2 = math.sqrt(2.0)
    inv_sqrt_2pi = 1.0 / math.sqrt(2.0 * math.pi)

    def np_gelu(x: np.ndarray) -> np.ndarray:
        return x * special.ndtr(x)

    def np_gelu_grad(x: np.ndarray) -> np.ndarray:
        return special.ndtr(x) + x * inv_sqrt_2pi * np.exp(-0.5 * x * x)

    def t_gelu(x: Tensor) -> Tensor:
        return 0.5 * x * (1.0 + torch.erf(x / sq2))

    def t_gelu_grad(x: Tensor) -> Tensor:
        return 0.5 * (1.0 + torch.erf(x / sq2)) + x * inv_sqrt_2pi * torch.exp(-0.5 * x * x)

    def np_silu_grad(x: np.ndarray) -> np.ndarray:
        s = _np_sigmoid(x)
        return s + x * s * (1.0 - s)

    def t_silu_grad(x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s + x * s * (1.0 - s)

    def np_sig_grad(x: np.ndarray) -> np.ndarray:
        s = _np_sigmoid(x)
        return s * (1.0 - s)

    def t_sig_grad(x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1.0 - s)

    return {
        "relu": Activation(
            "relu",
            lambda x: np.maximum(x, 0.0),
            lambda x: (x > 0).astype(float),
            torch.relu,
            lambda x: (x > 0).to(x.dtype),
            odd=False,
            smooth=False,
        ),
        "tanh": Activation(
            "tanh",
            np.tanh,
            lambda x: 1.0 - np.tanh(x) ** 2,
            torch.tanh,
            lambda x: 1.0 - torch.tanh(x) ** 2,
            odd=True,
        ),
        "silu": Activation(
            "silu", lambda x: x * _np_sigmoid(x), np_silu_grad, torch.nn.functional.silu, t_silu_grad, odd=False
        ),
        "sigmoid": Activation("sigmoid", _np_sigmoid, np_sig_grad, torch.sigmoid, t_sig_grad, odd=False),
        "gelu": Activation("gelu", np_gelu, np_gelu_grad, t_gelu, t_gelu_grad, odd=False),
    }


_NAMED = _named()

ActivationLike = str | Activation | Callable[..., Any]


def _fd_grad(f: NpFn) -> NpFn:
    """Fourth-order central difference of ``f`` with step ``1e-3 max(1, |x|)``."""

    def grad(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        h = 1e-3 * np.maximum(1.0, np.abs(x))
        return (f(x - 2 * h) - 8 * f(x - h) + 8 * f(x + h) - f(x + 2 * h)) / (12.0 * h)

    return grad


def _numpy_face(fn: Callable[..., Any]) -> NpFn:
    """``fn`` on NumPy float64 arrays, through torch if it does not accept arrays."""

    def np_fn(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        try:
            y = fn(x)
            if isinstance(y, Tensor):
                return y.detach().cpu().double().numpy()
            return np.asarray(y, dtype=float)
        except (TypeError, AttributeError, RuntimeError):
            return fn(torch.from_numpy(x)).detach().cpu().double().numpy()

    return np_fn


def _torch_face(fn: Callable[..., Any]) -> TorchFn:
    """``fn`` on tensors, through NumPy (CPU, float64) if it does not accept tensors."""

    def t_fn(x: Tensor) -> Tensor:
        try:
            y = fn(x)
            if isinstance(y, Tensor):
                return y
        except (TypeError, AttributeError, RuntimeError):
            pass
        y = np.asarray(fn(x.detach().cpu().double().numpy()), dtype=float)
        return torch.from_numpy(y).to(dtype=x.dtype, device=x.device)

    return t_fn


def _accepts_tensors(fn: Callable[..., Any]) -> bool:
    try:
        x = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64, requires_grad=True)
        y = fn(x)
        if not isinstance(y, Tensor) or y.shape != x.shape:
            return False
        (g,) = torch.autograd.grad(y.sum(), x)
        return bool(torch.isfinite(g).all())
    except (TypeError, AttributeError, RuntimeError):
        return False


def _autograd(fn: Callable[..., Any]) -> TorchFn:
    def grad(x: Tensor) -> Tensor:
        with torch.enable_grad():
            z = x.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(z).sum(), z)
        return g.detach()

    return grad


def make_activation(
    fn: Callable[..., Any],
    derivative: Callable[..., Any] | None = None,
    name: str | None = None,
    odd: bool | None = None,
) -> Activation:
    r"""An :class:`Activation` from a user's elementwise callable (NumPy or torch).

    Parameters
    ----------
    fn : callable
        ``phi``, elementwise, on NumPy arrays and/or torch tensors.
    derivative : callable, optional
        ``phi'``. Without it: torch autograd if ``fn`` accepts tensors, else a
        fourth-order central difference (see the module docstring).
    name : str, optional
        A label (default ``fn.__name__``).
    odd : bool, optional
        Whether ``phi`` is odd; by default checked numerically,
        ``|phi(x) + phi(-x)| <= 1e-12 (1 + |phi(x)|)`` on 201 points of ``[-8, 8]``.

    Returns
    -------
    Activation
        With ``meta["derivative"]`` one of ``given``, ``autograd``, ``finite-difference``;
        the last is the fourth-order central difference

    .. math:: \phi'(x) \approx \frac{\phi(x - 2h) - 8 \phi(x - h) + 8 \phi(x + h) - \phi(x + 2h)}{12 h}.

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.activations import make_activation
    >>> def cube(x):
    ...     return x**3
    >>> act = make_activation(cube)  # accepts tensors: autograd
    >>> act.name, act.odd, act.meta["derivative"], act.np_grad(np.array([2.0])).tolist()
    ('cube', True, 'autograd', [12.0])
    >>> act = make_activation(np.sinh)  # NumPy only: finite differences
    >>> act.meta["derivative"], act.np_grad(np.array([1.0])).round(6).tolist()  # cosh(1)
    ('finite-difference', [1.543081])
    """
    np_fn = _numpy_face(fn)
    t_fn = _torch_face(fn)
    if derivative is not None:
        np_grad, t_grad = _numpy_face(derivative), _torch_face(derivative)
        how = "given"
    elif _accepts_tensors(fn):
        t_grad = _autograd(fn)

        def np_grad(x: np.ndarray) -> np.ndarray:
            return t_grad(torch.from_numpy(np.asarray(x, dtype=float))).double().numpy()

        how = "autograd"
    else:
        np_grad = _fd_grad(np_fn)
        t_grad = _torch_face(np_grad)
        how = "finite-difference"
    if odd is None:
        x = np.linspace(-8.0, 8.0, 201)
        y = np_fn(x)
        odd = bool(np.all(np.abs(y + np_fn(-x)) <= 1e-12 * (1.0 + np.abs(y))))
    label = name or str(getattr(fn, "__name__", "callable"))
    return Activation(label, np_fn, np_grad, t_fn, t_grad, odd=odd, smooth=True, meta={"derivative": how})


def get_activation(activation: ActivationLike) -> Activation:
    """Resolve a name (:data:`NAMES`), an :class:`Activation` or a callable (see :func:`make_activation`).

    Parameters
    ----------
    activation : str, Activation or callable
        ``relu``, ``tanh``, ``silu`` (``x sigma(x)``), ``sigmoid``, ``gelu`` (``x Phi(x)``),
        an :class:`Activation` (returned as is) or an elementwise callable.

    Returns
    -------
    Activation
        One per callable object (cached), so kernels built from it are cached too.

    Examples
    --------
    >>> import numpy as np
    >>> from tokensde.activations import get_activation
    >>> relu = get_activation("relu")
    >>> relu.smooth, relu.np_grad(np.array([-1.0, 2.0])).tolist()
    (False, [0.0, 1.0])
    >>> get_activation(np.sin) is get_activation(np.sin)
    True
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        try:
            return _NAMED[activation]
        except KeyError:
            raise ValueError(f"activation must be one of {NAMES} or a callable, got {activation!r}") from None
    if callable(activation):
        return _callable_cache(activation)
    raise ValueError(f"activation must be one of {NAMES} or a callable, got {activation!r}")


_CALLABLES: dict[int, tuple[Callable[..., Any], Activation]] = {}


def _callable_cache(fn: Callable[..., Any]) -> Activation:
    """One :class:`Activation` per callable object (so that kernels built from it are cached)."""
    hit = _CALLABLES.get(id(fn))
    if hit is not None and hit[0] is fn:
        return hit[1]
    act = make_activation(fn)
    _CALLABLES[id(fn)] = (fn, act)
    return act
