r"""Training and evaluation of the classifiers; their state as flat arrays; token metrics through depth.

Training: AdamW on the cross-entropy, mini-batches in a fresh random order every
epoch (the permutation of epoch ``e`` comes from ``derive_seed(order_seed, e)``,
so an interrupted run that resumes at epoch ``e`` sees exactly the batches the
uninterrupted run saw), learning rate warmed up linearly over the first
``warmup`` fraction of the steps and then decayed along a cosine to 0, gradient
norm clipped. There is no dropout and no other randomness, so a resumed run ends
with the same weights as an uninterrupted one (same device and thread count).

State. :func:`state_arrays` flattens the model's parameters and the optimiser's
moments into ``{name: array}`` (no pickled objects), :func:`load_state_arrays`
puts them back; the runtime stores them as a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import metrics
from ..noise import derive_seed
from ..sphere import normalize

__all__ = [
    "TrainSettings",
    "learning_rate",
    "make_optimizer",
    "train_epoch",
    "evaluate",
    "cross_entropy",
    "state_arrays",
    "load_state_arrays",
    "depth_profile",
    "PROFILE_KEYS",
]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: float = 0.05
    grad_clip: float = 1.0


def learning_rate(s: TrainSettings, step: int, total: int) -> float:
    """Linear warm-up over ``ceil(warmup * total)`` steps, then a cosine from ``lr`` to 0 at ``total``."""
    warm = max(1, math.ceil(s.warmup * total))
    if step < warm:
        return s.lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return 0.5 * s.lr * (1.0 + math.cos(math.pi * min(1.0, frac)))


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on gains, biases or position embeddings)."""
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and n != "pos"]
    rest = [p for n, p in model.named_parameters() if not (p.ndim == 2 and n != "pos")]
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.999), eps=1e-8)


def cross_entropy(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``(B, C)`` logits against ``(B,)`` labels, or of per-token ``(B, n, C)`` against ``(B, n)``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction=reduction)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    s: TrainSettings,
    epoch: int,
    order_seed: int,
    on_batch: Callable[[float], None] | None = None,
) -> float:
    """One epoch over ``(x, y)`` (on the model's device); returns the mean training loss."""
    model.train()
    n = x.shape[0]
    per = steps_per_epoch(n, s.batch_size)
    total = per * s.epochs
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(order_seed, "epoch", epoch)))
    perm = perm.to(x.device)
    loss_sum = 0.0
    for b in range(per):
        idx = perm[b * s.batch_size : (b + 1) * s.batch_size]
        for g in opt.param_groups:
            g["lr"] = learning_rate(s, epoch * per + b, total)
        loss = cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        loss_sum += float(loss.detach()) * len(idx)
        if on_batch is not None:
            on_batch(1.0 / per)
    return loss_sum / n


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch: int = 512) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``(x, y)``; per-token labels ``(N, n)`` count every
    token (accuracy = fraction of tokens labelled right, loss = mean over tokens)."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, x.shape[0], batch):
        logits = model(x[i : i + batch])
        correct += int((logits.argmax(-1) == y[i : i + batch]).sum())
        loss += float(cross_entropy(logits, y[i : i + batch], reduction="sum"))
    return correct / y.numel(), loss / y.numel()


def state_arrays(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """Parameters (``model.NAME``) and optimiser moments (``opt.I.KEY``) as CPU arrays."""
    out = {f"model.{k}": v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().numpy().copy()
    return out


def load_state_arrays(model: nn.Module, opt: torch.optim.Optimizer, arrays: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`state_arrays` (onto the model's device)."""
    dev = next(model.parameters()).device
    model.load_state_dict({k[6:]: torch.from_numpy(v).to(dev) for k, v in arrays.items() if k.startswith("model.")})
    sd = opt.state_dict()
    state: dict[int, dict[str, Tensor]] = {}
    for k, v in arrays.items():
        if k.startswith("opt."):
            _, i, key = k.split(".", 2)
            t = torch.from_numpy(v)
            state.setdefault(int(i), {})[key] = t if key == "step" else t.to(dev)
    sd["state"] = state
    opt.load_state_dict(sd)


PROFILE_KEYS = ("mean_overlap", "min_overlap", "n_clusters", "collapsed", "antipodal", "energy", "effective_rank")


@torch.no_grad()
def depth_profile(model: nn.Module, x: Tensor, beta: float = 1.0, eps: float = metrics.EPS) -> dict[str, np.ndarray]:
    r"""Token-clustering metrics of the residual stream at every depth, averaged over the examples ``x``.

    The tokens ``h^l_i`` of each example are put on the unit sphere (``h/|h|``, which is
    what the next block's RMSNorm sees up to the factor ``sqrt(d)``) and
    :func:`tokensde.metrics.summary` is applied at ``l = 0..L``: returns, for every key
    of ``PROFILE_KEYS``, an array of length ``L + 1`` (the mean over examples; for
    ``collapsed`` and ``antipodal`` the fraction of examples).
    """
    model.eval()
    _, states = model(x, hidden=True)
    out: dict[str, list[float]] = {k: [] for k in PROFILE_KEYS}
    for h in states:
        s = metrics.summary(normalize(h.double()), beta, eps)
        for k in PROFILE_KEYS:
            out[k].append(float(np.mean(s[k])))
    return {k: np.asarray(v) for k, v in out.items()}
