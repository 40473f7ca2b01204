r"""The model contract: what the engine asks of a model of equation (*).

A model of

.. math::

    dx_i = P_{x_i} b_i(X)\,dt + P_{x_i} dM_i - \tfrac{d-1}{2} C_{ii}(X)\,x_i\,dt,
    \qquad E[dM_i\,dM_j^T] = C_{ij}(X)\,I_d\,dt,

is a drift, a common-noise kernel and a way to draw the noise, in one
vocabulary for models A, B, C and user models (docs/models.md, "The model
contract"). States are ``x`` ``(B, n, d)``: ``B`` systems of ``n`` tokens on
``S^{d-1}``.

Required (the limit face, for the ``euler`` and ``heun`` solvers):

``noise_shape(n, d, discrete=False) -> tuple``
    The standard normals one system needs per step.
``drift(x) -> (B, n, d) | None``
    The ambient drift ``b`` (the solver projects it); ``None`` for none.
``kernel(x) -> (B, n, n)``
    ``C(X)``.
``noise(x, xi) -> (B, n, d)``
    The unit-time noise ``dM / sqrt(dt)`` from the step's normals ``xi``: a
    centred Gaussian (in ``xi``) with ``E[m_i m_j^T] = C_ij I_d``.
``coefficients(x, xi) -> (b, C_ii (B, n), m)``
    What one step uses, computed together (the default composes the three
    above; models override it to share work, e.g. the attention weights).

Optional:

``layer(x, xi, h)``
    One layer of the discrete random stack of step ``h`` (the ``stack`` solver).
``linear_noise(n, d) -> bool``
    The noise is one fixed linear map of ``xi`` at every state (the Heun solver needs it).
``stratonovich_correction(x)``
    A closed form of the Itô–Stratonovich correction (else finite differences).
``fused_euler(x, compile=False) -> step | None``
    A fast route for the Euler step at states like ``x``: a callable
    ``step(x, xi, dt)`` with the numbers of the generic step up to rounding,
    optionally with ``slab(x, normals, dt)`` (several steps at once) and
    ``chunk`` (the step is elementwise per system and runs best on chunks of
    that many systems).
``select(idx, total) -> model``
    The model restricted to the systems ``idx`` of ``total`` (per-system parameters).

:func:`check_model` validates a model once when an integration starts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["Model", "check_model"]


class Model:
    """Base class of the models: the contract's defaults (see the module docstring).

    Subclasses define :meth:`noise_shape`, and :meth:`kernel` and :meth:`noise`
    (or :meth:`coefficients`) for the limit, :meth:`layer` for a discrete stack.

    Examples
    --------
    A constant kernel ``C = I`` (independent Brownian motions on the sphere):

    >>> import torch
    >>> from tokensde.models.base import Model
    >>> class Free(Model):
    ...     def noise_shape(self, n, d, discrete=False):
    ...         return (n, d)
    ...     def kernel(self, x):
    ...         return torch.eye(x.shape[-2]).expand(x.shape[0], -1, -1)
    ...     def noise(self, x, xi):
    ...         return xi
    >>> b, cdiag, m = Free().coefficients(torch.ones(2, 3, 4) / 2, torch.zeros(2, 3, 4))
    >>> b is None, tuple(cdiag.shape), tuple(m.shape)
    (True, (2, 3), (2, 3, 4))
    """

    def noise_shape(self, n: int, d: int, discrete: bool = False) -> tuple[int, ...]:
        raise NotImplementedError(f"{type(self).__name__} does not define noise_shape")

    def drift(self, x: Tensor) -> Tensor | None:
        """The ambient drift ``b(X)`` ``(B, n, d)``; ``None``: no drift."""
        return None

    def kernel(self, x: Tensor) -> Tensor:
        """``C(X)`` ``(B, n, n)``."""
        raise NotImplementedError(f"{type(self).__name__} does not define kernel")

    def noise(self, x: Tensor, xi: Tensor) -> Tensor:
        """The unit-time noise ``dM / sqrt(dt)`` ``(B, n, d)`` from the normals ``xi``."""
        raise NotImplementedError(f"{type(self).__name__} does not define noise")

    def coefficients(self, x: Tensor, xi: Tensor | None) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """``(b, C_ii, m)`` at ``x`` for the normals ``xi`` (``m = None`` when ``xi`` is ``None``)."""
        cdiag = torch.diagonal(self.kernel(x), dim1=-2, dim2=-1)
        return self.drift(x), cdiag, None if xi is None else self.noise(x, xi)

    def layer(self, x: Tensor, xi: Tensor, h: float) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no discrete stack (layer)")

    def linear_noise(self, n: int, d: int) -> bool:
        return False

    def stratonovich_correction(self, x: Tensor) -> Tensor | None:
        return None

    def fused_euler(self, x: Tensor, compile: bool = False) -> Any:
        return None

    def select(self, idx: Tensor, total: int) -> Model:
        return self


def check_model(model: Any, x0: Tensor, shape: tuple[int, ...] | None, discrete: bool) -> None:
    """Validate ``model`` for an integration from ``x0`` driven by normals of ``shape`` per system.

    Checks, once: ``x0`` is ``(B, n, d)`` floating point; the model implements
    the contract's face the solver uses (:meth:`Model.coefficients` for the
    limit, :meth:`Model.layer` for the stack); the path's shape is the model's
    ``noise_shape``; one step's coefficients of the first system have the
    contract's shapes. Raises ``ValueError`` naming what is wrong.

    Parameters
    ----------
    model : object
        A model of the contract (:class:`Model` or any object with its methods).
    x0 : Tensor ``(B, n, d)``
        The initial states.
    shape : tuple of int or None
        The normals per system and step of the path (``None``: a path-less run).
    discrete : bool
        Whether the solver steps the discrete stack (``layer``) rather than the limit.

    Examples
    --------
    >>> import torch
    >>> from tokensde import ValueNoise
    >>> from tokensde.models.base import check_model
    >>> from tokensde.sphere import uniform
    >>> model = ValueNoise(beta=1.0)
    >>> x0 = uniform((4, 3), 3, torch.Generator().manual_seed(0))  # (B, n, d) = (4, 3, 3)
    >>> model.noise_shape(3, 3), check_model(model, x0, (3, 3), discrete=False)
    ((3, 3), None)
    >>> check_model(model, x0, (2, 3), discrete=False)
    Traceback (most recent call last):
    ...
    ValueError: the path draws (2, 3) normals per system; the model needs (3, 3)
    >>> check_model(model, x0[0], (3, 3), discrete=False)
    Traceback (most recent call last):
    ...
    ValueError: x0 must be a floating tensor (B, n, d), got shape (3, 3) and torch.float32
    """
    if x0.dim() != 3 or not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating tensor (B, n, d), got shape {tuple(x0.shape)} and {x0.dtype}")
    bsz, n, d = x0.shape
    face = "layer" if discrete else "coefficients"
    if not callable(getattr(model, face, None)) or not callable(getattr(model, "noise_shape", None)):
        raise ValueError(f"model {type(model).__name__} must define noise_shape and {face} (tokensde.models.base)")
    want = tuple(model.noise_shape(n, d, discrete=discrete))
    if shape is not None and tuple(shape) != want:
        raise ValueError(f"the path draws {tuple(shape)} normals per system; the model needs {want}")
    if discrete or bsz == 0:
        return
    one = model.select(torch.arange(1, device=x0.device), bsz) if isinstance(model, Model) else model
    xi = torch.zeros((1, *want), dtype=x0.dtype, device=x0.device) if shape is not None else None
    b, cdiag, m = one.coefficients(x0[:1], xi)
    if b is not None and tuple(b.shape) != (1, n, d):
        raise ValueError(f"model drift has shape {tuple(b.shape)}, expected (B, n, d) = (1, {n}, {d})")
    if tuple(cdiag.shape) != (1, n):
        raise ValueError(f"model kernel diagonal has shape {tuple(cdiag.shape)}, expected (B, n) = (1, {n})")
    if m is not None and tuple(m.shape) != (1, n, d):
        raise ValueError(f"model noise has shape {tuple(m.shape)}, expected (B, n, d) = (1, {n}, {d})")
