r"""Probes of randomly initialised library Transformers, and the matched SDE of model A.

Networks
--------
:func:`build_model` instantiates a ``transformers`` architecture from its config
class only (``GPT2Model(GPT2Config(...))`` etc.): nothing is downloaded and no
pretrained weight is read. The library's own initialisation is used (normal
entries of standard deviation ``initializer_range = 0.02``, GPT-2's residual
projections scaled by ``1 / sqrt(2 L)``, LayerNorm gains 1 and biases 0), under
``torch.random.fork_rng`` with a seed, so the global generator is untouched and
the weights depend only on ``(arch, layers, hidden, heads, n, seed)``. Models are
built on the CPU in float32 and then moved to the requested device (the same
weights on every device), in eval mode with every dropout probability 0 and the
``eager`` attention (which returns the attention maps).

* ``gpt2``: pre-LN blocks ``x + Attn(LN x)``, ``x + MLP(LN x)``, GELU MLP of width
  ``4 d``, causal attention, learned position embeddings;
* ``bert``: post-LN blocks ``LN(x + Attn x)``, ``LN(x + MLP x)``, bidirectional
  attention, position and token-type embeddings followed by a LayerNorm;
* ``albert``: BERT's post-LN block, but **one** block whose weights are shared by
  all ``L`` layers (``num_hidden_groups = inner_group_num = 1``); the embedding
  size equals the hidden size, and the input projection ``embedding_hidden_mapping_in``
  is part of layer 0's input.

Inputs (:func:`random_inputs`) are ``inputs_embeds`` with i.i.d. ``N(0, 1)``
entries, ``(sequences, n, d)``; the architecture's own position (and token-type)
embeddings are added by the model, they are part of the probe.

Hidden states (:func:`run_network`) are read with forward hooks on the blocks:
``h^0`` is the input of the first block call (embeddings, after BERT's LayerNorm
and ALBERT's input projection) and ``h^l`` the output of the ``l``-th block call,
``l = 1..L``. For GPT-2 this is the residual stream: the final ``ln_f`` (a readout
normalisation, which centres the features and would change the directions) is not
a layer and is not applied. Tokens are then normalised, ``u_i^l = h_i^l / |h_i^l|``.

Metrics per layer (:func:`layer_metrics`) are those of :mod:`tokensde.metrics`
(clusters, collapse, antipodal configurations, energy, overlaps, effective rank)
averaged over sequences, plus the pooled pairwise cosines ``<u_i, u_j>`` (``i < j``,
all sequences): histogram on ``[-1, 1]``, quantiles, their mean and the fraction of
antipodal *pairs* ``<u_i, u_j> < -1 + eps``.

The matched SDE (a modelling choice)
------------------------------------
The prediction is the limit of model A (docs/models.md) with ``Vbar = 0``, ``sigma = 1``,
``A = I``, in dimension ``d = hidden`` with ``n`` tokens:

.. math::

    dx_i = P_{x_i} dW_t\, a_i - \tfrac{d-1}{2} |a_i|^2 x_i\, dt, \qquad
    a_i = \sum_j \mathrm{softmax}_j(\beta_{\mathrm{eff}} \langle x_i, x_j\rangle)\, x_j,

started from the network's *own* normalised layer-0 configurations ``u^0`` (one
SDE system per input sequence), with three matched quantities:

1. **(n, d)** are the network's tokens per sequence and hidden size.
2. **Inverse temperature.** ``beta_eff`` is chosen so that model A's mean attention
   entropy at the layer-0 configurations equals the network's mean layer-0
   attention entropy (average over sequences, heads and query tokens of
   ``-sum_j p_ij log p_ij`` from the eager attention maps):

   .. math::

       \bar H_A(\beta) = \frac{1}{B n}\sum_{b, i} -\sum_{j \in V(i)} w_{ij} \log w_{ij},\quad
       w_{ij} = \frac{e^{\beta \langle u_i^0, u_j^0\rangle}}{\sum_{l \in V(i)} e^{\beta \langle u_i^0, u_l^0\rangle}},
       \qquad \bar H_A(\beta_{\mathrm{eff}}) = \bar H_{\mathrm{net}}.

   ``V(i)`` is what the network's token ``i`` may attend to: every token for BERT
   and ALBERT, ``j <= i`` for GPT-2 (causal), so that the mask does not pass for a
   temperature. ``\bar H_A`` decreases in ``beta`` (``d H / d beta = -beta Var_w <u_i, u_j>``),
   so bisection on ``[0, BETA_MAX]`` finds it (0 if the network's attention is at
   least as flat as model A's at ``beta = 0``; ``BETA_MAX`` if sharper than at
   ``BETA_MAX``). The SDE itself uses model A's full (unmasked) attention.
3. **Clock.** Layer ``l -> l+1`` of the network moves the tokens by the measured
   single-token clock

   .. math:: s_l = \frac{1}{B n}\sum_{b,i} |P_{u_i^l}(u_i^{l+1} - u_i^l)|^2 ,

   attributing all tangent motion to noise. Under (*), ``E|P dM_i|^2 = (d-1) C_ii dt``
   with ``C_ii = |a_i|^2``, so the SDE advances through layer ``l`` in ``K = substeps``
   projected Euler–Maruyama steps (:class:`tokensde.solvers.EulerMaruyama`) of

   .. math:: \Delta t_{l,k} = \frac{s_l / K}{(d-1)\,\overline{|a_i|^2}},

   the mean ``|a_i|^2`` over systems and tokens at the SDE's *current* state (so the
   expected squared tangent increment of every sub-step is exactly ``s_l / K``;
   over the layer it adds up to ``s_l``). The cumulative clock is
   ``t_l = sum_{m<l} sum_k Delta t_{m,k}``.

The noise is one ``d x d`` Brownian increment (or its exact ``n x d`` kernel
factorisation, model A's ``auto`` route) per system per sub-step, shared by the
system's tokens, the counter-based normals of a :class:`tokensde.engine.BrownianPath`
keyed by ``(seed, key)``. The SDE runs in float64 on the device of the network's states.

What this does not match, on purpose or not: (i) one network is *one* draw of the
weights shared by all its input sequences (quenched), while every SDE system has
its own noise (annealed); (ii) the network's layer maps have a deterministic part
(the mean of the random MLP field, LayerNorm centring, the attention's own
drift) that the clock counts as noise; (iii) ALBERT reuses one layer's weights, so
its "noise" is the same matrix at every layer and does not add up to a Brownian
motion: deviations from the SDE are expected there; (iv) GPT-2's causal mask.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import metrics
from ..engine import BrownianPath, Hooks, Run, integrate_runs
from ..models.value_noise import ValueNoise
from ..solvers import EulerMaruyama
from ..sphere import tangent_project

__all__ = [
    "ARCHITECTURES",
    "BETA_MAX",
    "QUANTILES",
    "build_model",
    "blocks",
    "random_inputs",
    "NetworkTrace",
    "run_network",
    "attention_entropy",
    "model_a_entropy",
    "match_beta",
    "tangent_sq",
    "coherence",
    "pair_cosines",
    "layer_metrics",
    "SdeTrace",
    "sde_prediction",
]

ARCHITECTURES = ("gpt2", "bert", "albert")
BETA_MAX = 50.0
QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99)


# --------------------------------------------------------------------------- networks
def build_model(arch: str, layers: int, hidden: int, heads: int, n: int, seed: int) -> nn.Module:
    """A randomly initialised ``transformers`` model, CPU, float32, eval mode, no dropout, eager attention.

    Parameters
    ----------
    arch : str
        ``gpt2``, ``bert`` or ``albert``.
    layers, hidden, heads : int
        Depth ``L``, width ``d`` (a multiple of ``heads``) and attention heads.
    n : int
        Tokens per sequence (the number of position embeddings).
    seed : int
        Seed of the library's initialisation (a forked global generator; the caller's is untouched).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub (nothing here asks it anyway)
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    from transformers import AlbertConfig, AlbertModel, BertConfig, BertModel, GPT2Config, GPT2Model

    common: dict[str, Any] = {"attn_implementation": "eager"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: nn.Module
        if arch == "gpt2":
            cfg = GPT2Config(
                n_embd=hidden, n_layer=layers, n_head=heads, n_positions=n, vocab_size=8,
                bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
            )  # fmt: skip
            model = GPT2Model(cfg)
        elif arch == "bert":
            cfg_b = BertConfig(
                hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=4 * hidden, max_position_embeddings=n, vocab_size=8,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common,
            )  # fmt: skip
            model = BertModel(cfg_b, add_pooling_layer=False)
        elif arch == "albert":
            cfg_a = AlbertConfig(
                embedding_size=hidden, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=4 * hidden, max_position_embeddings=n, vocab_size=8,
                num_hidden_groups=1, inner_group_num=1,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0, **common,
            )  # fmt: skip
            model = AlbertModel(cfg_a, add_pooling_layer=False)
        else:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    return model.eval()


def blocks(model: nn.Module, arch: str) -> list[nn.Module]:
    """The distinct block modules in call order (``L`` for GPT-2 and BERT; ALBERT's one shared block)."""
    m: Any = model
    if arch == "gpt2":
        return list(m.h)
    if arch == "bert":
        return list(m.encoder.layer)
    if arch == "albert":
        return [layer for group in m.encoder.albert_layer_groups for layer in group.albert_layers]
    raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")


def random_inputs(sequences: int, n: int, hidden: int, seed: int, device: str | torch.device = "cpu") -> Tensor:
    """``inputs_embeds`` with i.i.d. ``N(0, 1)`` entries, ``(sequences, n, hidden)``, float32.

    Drawn on the CPU from a generator seeded with ``seed`` and moved to ``device``
    (the same numbers on every device).
    """
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(sequences, n, hidden, generator=g, dtype=torch.float32).to(device)


@dataclass
class NetworkTrace:
    """Hidden states ``states`` ``(L+1, B, n, d)`` (unnormalised, float32), the attention maps of each
    layer ``attentions[l]`` ``(B, H, n, n)`` and ``calls``, the number of block calls (``L``)."""

    states: Tensor
    attentions: list[Tensor]
    calls: int


def _first(out: Any) -> Tensor:
    return out[0] if isinstance(out, tuple | list) else out


def run_network(model: nn.Module, arch: str, inputs: Tensor) -> NetworkTrace:
    """One forward pass of ``inputs`` (``inputs_embeds``) with hooks on the blocks (module docstring)."""
    states: list[Tensor] = []

    def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not states:
            hs = args[0] if args else kwargs["hidden_states"]
            states.append(hs.detach().clone())

    def post(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        states.append(_first(out).detach().clone())

    handles = []
    for blk in blocks(model, arch):
        handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(blk.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            out = model(inputs_embeds=inputs, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    atts = [a.detach() for a in out.attentions]
    return NetworkTrace(torch.stack(states), atts, len(states) - 1)


# --------------------------------------------------------------------------- temperature
def attention_entropy(p: Tensor) -> float:
    r"""Mean row entropy ``-sum_j p_ij log p_ij`` of attention maps ``(..., n, n)`` (``0 log 0 = 0``)."""
    pd = p.double()
    h = -(torch.where(pd > 0, pd * torch.log(pd.clamp_min(1e-300)), 0.0)).sum(-1)
    return float(h.mean())


def model_a_entropy(x: Tensor, beta: float, causal: bool = False) -> float:
    r"""Mean entropy of model A's attention rows ``softmax_j(beta <x_i, x_j>)`` at ``x`` ``(B, n, d)``.

    With ``causal`` the rows are restricted to ``j <= i`` (GPT-2's mask).
    """
    s = beta * (x @ x.transpose(-1, -2))
    if causal:
        n = x.shape[-2]
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        s = s.masked_fill(mask, -math.inf)
    return attention_entropy(torch.softmax(s.double(), dim=-1))


def match_beta(x: Tensor, target: float, causal: bool = False, beta_max: float = BETA_MAX, tol: float = 1e-6) -> float:
    r"""``beta`` in ``[0, beta_max]`` with :func:`model_a_entropy` ``(x, beta) = target`` (bisection).

    The entropy decreases in ``beta``; the ends are returned when ``target`` is
    outside ``[H(beta_max), H(0)]``. Absolute tolerance ``tol`` on ``beta``.
    """
    xd = x.double()
    if target >= model_a_entropy(xd, 0.0, causal):
        return 0.0
    if target <= model_a_entropy(xd, beta_max, causal):
        return beta_max
    lo, hi = 0.0, beta_max
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if model_a_entropy(xd, mid, causal) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------- metrics
def tangent_sq(u0: Tensor, u1: Tensor) -> Tensor:
    r"""``|P_{u0}(u1 - u0)|^2`` per token, ``(B, n)`` (tokens on the sphere)."""
    v = tangent_project(u0, u1 - u0)
    return (v * v).sum(-1)


def coherence(u0: Tensor, u1: Tensor) -> float:
    r"""How common the tangent moves ``delta_i = P_{u0_i}(u1_i - u0_i)`` of a system's tokens are.

    .. math::

        \kappa = \frac{\sum_b \sum_{i \ne j} \langle\delta_i, \delta_j\rangle}{(n-1) \sum_b \sum_i |\delta_i|^2}
        = \frac{\sum_b |\sum_i \delta_i|^2 - \sum_b\sum_i |\delta_i|^2}{(n-1)\sum_b\sum_i |\delta_i|^2},

    1 when all tokens of a system move by the same vector, about 0 for independent
    moves. Model A at small ``beta`` has ``C_ij = <a_i, a_j> ~ C_ii``, hence
    ``kappa`` near 1; NaN when nothing moves.
    """
    v = tangent_project(u0, u1 - u0).double()
    n = v.shape[-2]
    own = float((v * v).sum())
    tot = v.sum(-2)
    if not own > 0.0 or n < 2:
        return math.nan
    return (float((tot * tot).sum()) - own) / ((n - 1) * own)


def pair_cosines(u: Tensor) -> Tensor:
    """The pooled overlaps ``<u_i, u_j>``, ``i < j``, of every system, flat (``B n (n-1) / 2``)."""
    n = u.shape[-2]
    iu = torch.triu_indices(n, n, 1, device=u.device)
    g = u @ u.transpose(-1, -2)
    return g[:, iu[0], iu[1]].reshape(-1)


def layer_metrics(u: Tensor, beta: float, eps: float, bins: int) -> tuple[dict[str, Any], np.ndarray]:
    r"""Metrics of one layer's configurations ``u`` ``(B, n, d)`` (on the sphere) and the pooled cosines.

    Returns ``(row, cosines)``: ``row`` has the means over systems of
    :func:`tokensde.metrics.summary` (``n_clusters``, ``collapsed``, ``antipodal`` as
    fractions, ``energy`` ``E_beta``, ``effective_rank``, ``mean_overlap``
    ``|sum_i u_i|^2 / n^2``, ``min_overlap``/``max_overlap`` per system), and of the pooled
    cosines: ``mean_cos``, ``antipodal_pairs`` (fraction ``< -1 + eps``), the quantiles
    ``q01 .. q99`` and ``hist`` (counts in ``bins`` equal bins of ``[-1, 1]``).
    """
    s = metrics.summary(u, beta, eps)
    cos = pair_cosines(u).double().cpu().numpy()
    counts, _ = np.histogram(np.clip(cos, -1.0, 1.0), bins=bins, range=(-1.0, 1.0))
    row: dict[str, Any] = {
        "n_clusters": float(np.mean(s["n_clusters"])),
        "collapsed": float(np.mean(s["collapsed"])),
        "antipodal": float(np.mean(s["antipodal"])),
        "energy": float(np.mean(s["energy"])),
        "effective_rank": float(np.mean(s["effective_rank"])),
        "mean_overlap": float(np.mean(s["mean_overlap"])),
        "min_overlap": float(np.mean(s["min_overlap"])),
        "max_overlap": float(np.mean(s["max_overlap"])),
        "mean_cos": float(cos.mean()),
        "antipodal_pairs": float(np.mean(cos < -1.0 + eps)),
    }
    for q, v in zip(QUANTILES, np.quantile(cos, QUANTILES), strict=True):
        row[f"q{round(100 * q):02d}"] = float(v)
    row["hist"] = [int(c) for c in counts]
    return row, cos


# --------------------------------------------------------------------------- the matched SDE
@dataclass
class SdeTrace:
    """The matched SDE's run: final state ``x``, cumulative clock ``t`` ``(L+1,)``, and per layer and
    system the realised clock ``realised`` ``(L, B)`` (sum over sub-steps of the token-mean
    ``|P_x(x' - x)|^2``) and its conditional expectation ``predicted`` ``(L, B)``
    (sum of ``(d-1) mean_i |a_i|^2 Delta t``)."""

    x: Tensor
    t: np.ndarray
    realised: np.ndarray
    predicted: np.ndarray


def sde_prediction(
    x0: Tensor,
    beta: float,
    clock: np.ndarray,
    substeps: int,
    seed: int,
    key: tuple[object, ...],
    on_layer: Callable[[int, Tensor], None] | None = None,
) -> SdeTrace:
    r"""Model A's limit (``Vbar = 0``, ``sigma = 1``, ``A = I``) through ``L = len(clock)`` matched layers.

    Parameters
    ----------
    x0 : Tensor ``(B, n, d)``
        Start on the sphere (the network's normalised layer 0); the run is in ``x0``'s dtype and device.
    beta : float
        ``beta_eff``.
    clock : array ``(L,)``
        The network's clock ``s_l``; layer ``l`` takes ``substeps`` Euler–Maruyama steps of
        ``Delta t = (s_l / K) / ((d-1) mean |a_i|^2)`` (module docstring).
    seed, key
        The noise stream (one per system per step, shared by its tokens).
    on_layer : callable, optional
        ``on_layer(l, x)`` at ``l = 0`` (``x0``) and after each layer.
    """
    bsz, n, d = x0.shape
    model = ValueNoise(beta=float(beta), sigma=1.0)
    scheme = EulerMaruyama()
    layers = len(clock)
    t = np.zeros(layers + 1)
    realised = np.zeros((layers, bsz))
    predicted = np.zeros((layers, bsz))
    count = [0]

    def step(x: Tensor, xi: Tensor | None, h: float) -> Tensor:
        # the step size follows the state: the layer's clock over K sub-steps, per unit of (d-1) mean |a_i|^2
        lyr = count[0] // substeps
        a = model.barycenters(x)
        c = (a * a).sum(-1)  # C_ii = |a_i|^2
        dt = float(clock[lyr]) / substeps / ((d - 1) * float(c.mean()))
        x1 = scheme.step(model, x, xi, dt)
        realised[lyr] += tangent_sq(x, x1).mean(-1).cpu().numpy()
        predicted[lyr] += ((d - 1) * dt * c.mean(-1)).cpu().numpy()
        t[lyr + 1] += dt
        count[0] += 1
        return x1

    def observe(k: int, states: dict[str, Tensor]) -> None:
        lyr = (k + 1) // substeps
        t[lyr] += t[lyr - 1]
        if on_layer is not None:
            on_layer(lyr, states["x"])

    if on_layer is not None:
        on_layer(0, x0)
    path = BrownianPath.for_model(model, x0, seed, key)
    hooks = Hooks(observe=observe, observe_at=lambda k: (k + 1) % substeps == 0)
    x = integrate_runs([Run(step=step, name="x")], x0, path, 1.0, layers * substeps, hooks=hooks)["x"].x
    return SdeTrace(x, t, realised, predicted)
