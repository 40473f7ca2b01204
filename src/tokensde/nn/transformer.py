r"""Deep pre-norm Transformer classifiers whose value matrices carry (or do not carry) the common noise.

Architecture (``L`` blocks, width ``d``, ``H`` heads of width ``d/H``):

.. math::

    h^0_i &= E u_i + p_i, \\
    h^{l+1} &= h^l + \tfrac{1}{\sqrt L}\,\mathrm{Attn}_l(\mathrm{RMSNorm}(h^l))
               \;[+\; \tfrac{1}{\sqrt L}\,\mathrm{MLP}_l(\mathrm{RMSNorm}(h^l))], \\
    \mathrm{Attn}_l(y)_i &= \big(\textstyle\sum_j \pi^{(h)}_{ij}\, (V_l y_j)^{(h)}\big)_{h=1..H},
    \quad \pi^{(h)}_{ij} = \mathrm{softmax}_j \frac{\langle Q^{(h)}_l y_i, K^{(h)}_l y_j\rangle}{\sqrt{d/H}},

then a final RMSNorm, the read-out (mean over tokens, token 0, or every token for
per-token labels) and a linear head. The value matrix ``V_l`` (``d x d``; head ``h`` uses its rows of block
``h``) is the whole value-output map: there is no separate output projection, so
``V_l`` is exactly the matrix that model A calls ``sigma sqrt(h) Z_k`` and the
initial conditions below act on the matrix that carries the noise. The residual
factor ``1/sqrt(L)`` is model A's ``sqrt(h)`` with ``T = 1``: with
``V_l = Z_l / sqrt(d)`` (``Z_l`` entries i.i.d. ``N(0, 1)``) a layer moves a
token's direction by ``O(L^{-1/2})`` in a direction common to all tokens, and the
directions of the tokens follow model A's SDE in the depth limit (up to the time
change of the growing residual norm and the random ``Q, K``). The optional MLP
(``mlp_ratio > 0``) adds model C's noise in every condition.

Initialisation. Every weight is ``N(0, 1/fan_in)`` (``Q, K, V``, embedding, MLP,
head), biases ``0``, position embeddings ``N(0, 1)``, RMSNorm gains ``1``. All of
it except the value matrices is drawn from one generator, the value matrices
``Z_0..Z_{L-1} / sqrt(d)`` from a second one, so two models with the same seeds
differ only in the value condition:

* ``standard``: ``V_l = Z_l / sqrt(d)``, independent across layers (the noise);
* ``value-scaled``: ``V_l = s Z_l / sqrt(d)`` (``s = value_scale``, noise variance ``s^2``);
* ``value-zero``: ``V_l = 0`` (the attention branch starts silent);
* ``value-identity``: ``V_l = I`` (deterministic: model A's noiseless attention flow, ``Vbar = I, sigma = 0``);
* ``value-shared``: ``V_l = Z_0 / sqrt(d)`` for every ``l`` (one random matrix: the layer noises
  are perfectly correlated, so their sum grows like ``L``, not ``sqrt(L)``, and is no Brownian motion).

The conditions differ only at initialisation; training updates every ``V_l`` on its own.

Noise strength as a continuous axis (:func:`set_values`, the ``accuracy-map`` experiment):
``V_l = Vbar / sqrt(L) + sigma Z_l / sqrt(d)`` with ``Vbar`` in ``{0, I}``. With the residual
factor ``1/sqrt(L)`` the attention branch is ``h Vbar a + sigma sqrt(h) (Z_l / sqrt(d)) a``
(``h = 1/L``): model A's layer with horizon ``T = 1``, so ``Vbar`` is a drift and
``sigma`` the noise strength of the same depth limit at every ``L``. ``(Vbar, sigma) = (0, 1)``
is ``standard``; ``(0, s)`` is ``value-scaled`` with ``value_scale = s``; ``(I, 0)`` is
model A's noiseless attention flow at horizon 1 (``value-identity`` above is ``V_l = I``,
a drift ``sqrt(L)`` times stronger).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CONDITIONS", "TransformerClassifier", "initialise", "initialise_values", "set_values", "value_matrices"]

CONDITIONS = ("standard", "value-scaled", "value-zero", "value-identity", "value-shared")


class Attention(nn.Module):
    """Multi-head softmax attention with one ``d x d`` value matrix and no output projection."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"heads must divide the width {d}, got {heads}")
        self.heads = heads
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)

    def forward(self, y: Tensor) -> Tensor:
        b, n, d = y.shape
        h = self.heads

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(y)), split(self.k(y)), split(self.v(y)))
        return out.transpose(1, 2).reshape(b, n, d)


class Block(nn.Module):
    """``h + Attn(RMSNorm h)/sqrt(L)`` and, if ``mlp_ratio > 0``, ``h + MLP(RMSNorm h)/sqrt(L)``."""

    def __init__(self, d: int, heads: int, depth: int, mlp_ratio: int) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(depth)
        self.norm1 = nn.RMSNorm(d, eps=1e-6)
        self.attn = Attention(d, heads)
        self.mlp: nn.Sequential | None = None
        if mlp_ratio > 0:
            self.norm2 = nn.RMSNorm(d, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.scale * self.attn(self.norm1(h))
        if self.mlp is not None:
            h = h + self.scale * self.mlp(self.norm2(h))
        return h


class TransformerClassifier(nn.Module):
    """Pre-norm Transformer classifier of token sequences ``(B, n, f) -> (B, classes)`` (see the module docstring)."""

    def __init__(
        self,
        n_tokens: int,
        n_features: int,
        n_classes: int,
        width: int = 64,
        depth: int = 16,
        heads: int = 4,
        mlp_ratio: int = 0,
        readout: str = "mean",
    ) -> None:
        super().__init__()
        if readout not in ("mean", "first", "tokens"):
            raise ValueError(f"readout must be 'mean', 'first' or 'tokens', got {readout!r}")
        self.readout = readout
        self.embed = nn.Linear(n_features, width)
        self.pos = nn.Parameter(torch.zeros(n_tokens, width))
        self.blocks = nn.ModuleList(Block(width, heads, depth, mlp_ratio) for _ in range(depth))
        self.norm = nn.RMSNorm(width, eps=1e-6)
        self.head = nn.Linear(width, n_classes)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor, hidden: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits (``(B, classes)``, or ``(B, n, classes)`` with the ``tokens`` read-out); with ``hidden=True``
        also the residual stream ``[h^0, ..., h^L]`` (each ``(B, n, width)``)."""
        h = self.embed(x) + self.pos
        states = [h]
        for block in self.blocks:
            h = block(h)
            if hidden:
                states.append(h)
        z = self.norm(h)
        pooled = z.mean(dim=1) if self.readout == "mean" else z[:, 0] if self.readout == "first" else z
        logits: Tensor = self.head(pooled)
        return (logits, states) if hidden else logits


def value_matrices(depth: int, width: int, gen: torch.Generator) -> Tensor:
    """``Z_l / sqrt(d)`` for ``l < depth``: ``(depth, d, d)``, entries i.i.d. ``N(0, 1/d)``."""
    return torch.randn(depth, width, width, generator=gen) / math.sqrt(width)


def _draw_weights(model: TransformerClassifier, gen: torch.Generator) -> None:
    """Every parameter but the value matrices, from ``gen`` (see the module docstring)."""
    for name, p in model.named_parameters():
        if name == "pos":
            p.copy_(torch.randn(p.shape, generator=gen))
        elif name.endswith("bias"):
            p.zero_()
        elif p.ndim == 1:  # RMSNorm gains
            p.fill_(1.0)
        elif name.endswith("attn.v.weight"):
            continue
        else:
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def _value_weights(model: TransformerClassifier) -> list[Tensor]:
    out = []
    for block in model.blocks:
        assert isinstance(block, Block)
        out.append(block.attn.v.weight)
    return out


@torch.no_grad()
def initialise(
    model: TransformerClassifier,
    condition: str,
    gen: torch.Generator,
    value_gen: torch.Generator,
    value_scale: float = 0.1,
) -> None:
    """Draw every parameter (see the module docstring); ``condition`` decides the value matrices."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
    _draw_weights(model, gen)
    width = model.pos.shape[1]
    z = value_matrices(model.depth, width, value_gen)
    for layer, v in enumerate(_value_weights(model)):
        if condition == "standard":
            v.copy_(z[layer])
        elif condition == "value-scaled":
            v.copy_(value_scale * z[layer])
        elif condition == "value-zero":
            v.zero_()
        elif condition == "value-identity":
            v.copy_(torch.eye(width))
        else:  # value-shared
            v.copy_(z[0])


@torch.no_grad()
def set_values(model: TransformerClassifier, z: Tensor, vbar: float, sigma: float) -> None:
    """``V_l = vbar I / sqrt(L) + sigma z[l]`` for every layer (``z``: ``(L, d, d)``, :func:`value_matrices`).

    With the residual factor ``1/sqrt(L)`` this is model A's layer ``h Vbar + sigma sqrt(h) Z`` at
    horizon 1 with ``Vbar = vbar I`` (module docstring).
    """
    depth = model.depth
    width = model.pos.shape[1]
    if z.shape != (depth, width, width):
        raise ValueError(f"z must have shape {(depth, width, width)}, got {tuple(z.shape)}")
    eye = torch.eye(width, dtype=z.dtype) * (vbar / math.sqrt(depth))
    for layer, v in enumerate(_value_weights(model)):
        v.copy_(eye + sigma * z[layer])


@torch.no_grad()
def initialise_values(
    model: TransformerClassifier, gen: torch.Generator, value_gen: torch.Generator, vbar: float, sigma: float
) -> None:
    """Every parameter from ``gen`` as :func:`initialise`, the value matrices by :func:`set_values`
    from ``Z_l / sqrt(d)`` drawn from ``value_gen`` (so models that share the seeds differ only in
    ``(vbar, sigma)``)."""
    _draw_weights(model, gen)
    set_values(model, value_matrices(model.depth, model.pos.shape[1], value_gen), vbar, sigma)
