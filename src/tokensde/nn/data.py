r"""Token-sequence classification data: images as patches, and a synthetic lookup task.

Every data set is a :class:`TokenData`: inputs of shape ``(N, n, f)`` (``N``
examples of ``n`` tokens with ``f`` features each, float32), integer labels,
a train/test split fixed by the data set alone (never by the training seed, so
that seeds vary only the initialisation and the order of the mini-batches), and
the token the classifier reads its answer from.

* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, shipped with
  the library, nothing downloaded), pixel values divided by 16, cut into
  ``tokens_per_side^2`` square patches of ``(8 / tokens_per_side)^2`` pixels
  (row-major order); a stratified split with ``test_fraction`` of each class held
  out. Read-out: the mean over tokens.
* ``pointer`` (synthetic, generated in code; pointer chasing): ``n`` tokens;
  token 0 carries a pointer ``p_0`` uniform in ``{1, ..., n-1}``, every token
  ``j >= 1`` a pointer ``p_j`` uniform in ``{1, ..., n-1}`` and a value ``v_j``
  uniform in ``{0, ..., K-1}``, all independent (one-hot: ``n - 1`` pointer
  symbols then ``K`` value symbols, so ``n - 1 + K`` features; token 0's value
  slots are 0). With ``hops = k`` the label is the value reached after following
  ``k`` pointers from token 0: ``j_1 = p_0``, ``j_{m+1} = p_{j_m}``, label
  ``v_{j_k}``. Chance is ``1/K``; each hop needs one round of content-based
  attention (a pointer matched against positions), so ``k`` hops need a
  composition of ``k`` attention steps through depth. Read-out: token 0.
  With ``online=True`` every epoch trains on ``n_train`` fresh sequences (epoch
  ``e`` drawn from ``derive_seed(seed, "epoch", e)``): unlimited data, so the
  task measures what the model learns, not what it memorises; the test set is
  fixed.
* ``permute`` (synthetic, per token; copying under a permutation): ``n`` tokens;
  token ``j`` carries a value ``v_j`` uniform in ``{0, ..., K-1}`` and a pointer
  ``p_j``, where ``(p_0, ..., p_{n-1})`` is a uniformly random permutation of
  the positions (one-hot: ``n`` pointer symbols then ``K`` value symbols). The
  label of *every* token is the value it points at, ``y_j = v_{p_j}`` (with
  ``hops = k``: the value reached after ``k`` pointers, ``y_j = v_{p^k(j)}``): each
  position must keep its own pointer through depth and fetch another token's
  value by ``k`` rounds of content-based attention. Chance is ``1/K`` per token, the
  ceiling 100%; accuracy is the fraction of tokens labelled right. Collapse of the
  tokens to one point destroys exactly the per-token information this task reads.
  Read-out: every token (``tokens``). Online as ``pointer``.
* ``torchvision:NAME`` (e.g. ``torchvision:MNIST``, ``torchvision:CIFAR10``): a
  data set of ``torchvision.datasets`` that is already on disk under ``root``
  (``download=False``: nothing is fetched), its own train/test split, the first
  ``max_train`` / ``max_test`` examples (0: all), pixel values in ``[0, 1]``,
  patches as for digits (channels become features). Read-out: the mean.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..noise import derive_seed

__all__ = [
    "TokenData",
    "digits",
    "pointer",
    "permute",
    "torchvision_data",
    "load",
    "patches",
    "check_dataset_name",
]

DATASETS = ("digits", "pointer", "permute")
TORCHVISION = "torchvision:"


@dataclass(frozen=True)
class TokenData:
    """A classification data set of token sequences (CPU tensors)."""

    name: str
    x_train: Tensor  # (N, n, f) float32
    y_train: Tensor  # (N,) int64
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    readout: str  # "mean", "first" or "tokens" (one label per token: y is (N, n))
    #: ``epoch -> (x, y)``: fresh training data per epoch (``None``: ``x_train``, ``y_train`` every epoch)
    sampler: Callable[[int], tuple[Tensor, Tensor]] | None = None

    def train_data(self, epoch: int) -> tuple[Tensor, Tensor]:
        """The training examples of ``epoch``."""
        if self.sampler is None or epoch == 0:
            return self.x_train, self.y_train
        return self.sampler(epoch)

    @property
    def n_tokens(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[2])


def patches(images: np.ndarray, per_side: int) -> np.ndarray:
    """``(N, C, H, W)`` images -> ``(N, per_side^2, C * (H/per_side) * (W/per_side))`` row-major patches.

    ``H`` and ``W`` must be multiples of ``per_side``.
    """
    n, c, h, w = images.shape
    if h % per_side or w % per_side:
        raise ValueError(f"tokens_per_side must divide the image size {h}x{w}, got {per_side}")
    ph, pw = h // per_side, w // per_side
    x = images.reshape(n, c, per_side, ph, per_side, pw).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(x.reshape(n, per_side * per_side, c * ph * pw))


def digits(tokens_per_side: int = 4, test_fraction: float = 0.3, split_seed: int = 0) -> TokenData:
    """scikit-learn's digits as ``tokens_per_side^2`` patch tokens (see the module docstring)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)[:, None]
    x = patches(images, tokens_per_side)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=split_seed)
    return TokenData(
        "digits", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte), 10, "mean"
    )


def _pointer_split(n: int, values: int, hops: int, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    ptr = torch.randint(1, n, (size, n), generator=gen)  # p_0 .. p_{n-1}
    val = torch.randint(0, values, (size, n), generator=gen)
    rows = torch.arange(size)
    x = torch.zeros(size, n, n - 1 + values)
    x[rows[:, None], torch.arange(n)[None, :], ptr - 1] = 1.0
    pos = torch.arange(1, n)
    x[rows[:, None], pos[None, :], (n - 1 + val[:, 1:])] = 1.0
    j = ptr[:, 0]
    for _ in range(hops - 1):
        j = ptr[rows, j]
    return x, val[rows, j]


def pointer(
    n_tokens: int = 16,
    values: int = 8,
    n_train: int = 4000,
    n_test: int = 2000,
    seed: int = 0,
    hops: int = 2,
    online: bool = False,
) -> TokenData:
    """The synthetic pointer-chasing task (see the module docstring); train and test drawn independently."""
    if n_tokens < 2:
        raise ValueError(f"pointer needs at least 2 tokens, got {n_tokens}")
    if hops < 1:
        raise ValueError(f"pointer needs at least 1 hop, got {hops}")
    return _synthetic("pointer", "first", _pointer_split, n_tokens, values, hops, n_train, n_test, seed, online)


def _synthetic(
    name: str,
    readout: str,
    split: Callable[[int, int, int, int, torch.Generator], tuple[Tensor, Tensor]],
    n_tokens: int,
    values: int,
    hops: int,
    n_train: int,
    n_test: int,
    seed: int,
    online: bool,
) -> TokenData:
    """A task drawn by ``split(n_tokens, values, hops, size, gen)``: train then test from ``seed``; online,
    epoch ``e``'s training sequences from ``derive_seed(seed, "epoch", e)``."""
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = split(n_tokens, values, hops, n_train, gen)
    xte, yte = split(n_tokens, values, hops, n_test, gen)

    def epoch_data(epoch: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch))
        return split(n_tokens, values, hops, n_train, g)

    return TokenData(name, xtr, ytr, xte, yte, values, readout, epoch_data if online else None)


def _permute_split(n: int, values: int, hops: int, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    ptr = torch.argsort(torch.rand(size, n, generator=gen), dim=1)  # a uniform permutation per sequence
    val = torch.randint(0, values, (size, n), generator=gen)
    rows = torch.arange(size)[:, None]
    pos = torch.arange(n)[None, :]
    x = torch.zeros(size, n, n + values)
    x[rows, pos, ptr] = 1.0
    x[rows, pos, n + val] = 1.0
    j = ptr
    for _ in range(hops - 1):
        j = torch.gather(ptr, 1, j)
    return x, torch.gather(val, 1, j)


def permute(
    n_tokens: int = 8,
    values: int = 8,
    n_train: int = 4000,
    n_test: int = 2000,
    seed: int = 0,
    online: bool = False,
    hops: int = 1,
) -> TokenData:
    """The synthetic per-token task ``y_j = v_{p^hops(j)}`` (see the module docstring); labels ``(N, n)``."""
    if n_tokens < 2:
        raise ValueError(f"permute needs at least 2 tokens, got {n_tokens}")
    if hops < 1:
        raise ValueError(f"permute needs at least 1 hop, got {hops}")
    return _synthetic("permute", "tokens", _permute_split, n_tokens, values, hops, n_train, n_test, seed, online)


def _tv_arrays(ds: Any, limit: int) -> tuple[np.ndarray, np.ndarray]:
    data = ds.data
    targets = np.asarray(ds.targets, dtype=np.int64)
    arr = data.numpy() if isinstance(data, Tensor) else np.asarray(data)
    if limit:
        arr, targets = arr[:limit], targets[:limit]
    arr = arr.astype(np.float32) / 255.0
    if arr.ndim == 3:  # (N, H, W) grey
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3, 4):  # (N, H, W, C)
        arr = arr.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(arr), targets


def torchvision_data(
    name: str, root: str | Path, tokens_per_side: int = 4, max_train: int = 0, max_test: int = 0
) -> TokenData:
    """``torchvision.datasets.NAME(root, train=..., download=False)`` as patch tokens (see the module docstring)."""
    tv = importlib.import_module("torchvision.datasets")
    cls = getattr(tv, name)
    train = cls(root=str(root), train=True, download=False)
    test = cls(root=str(root), train=False, download=False)
    xtr, ytr = _tv_arrays(train, max_train)
    xte, yte = _tv_arrays(test, max_test)
    classes = int(max(ytr.max(), yte.max()) + 1)
    return TokenData(
        f"{TORCHVISION}{name}",
        torch.from_numpy(patches(xtr, tokens_per_side)),
        torch.from_numpy(ytr),
        torch.from_numpy(patches(xte, tokens_per_side)),
        torch.from_numpy(yte),
        classes,
        "mean",
    )


def check_dataset_name(name: str, root: str | None) -> None:
    """Raise ``ValueError`` (one line) unless ``name`` is a data set this machine can load."""
    if name in DATASETS:
        return
    if not name.startswith(TORCHVISION):
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)} or torchvision:NAME")
    attr = name[len(TORCHVISION) :]
    try:
        tv = importlib.import_module("torchvision.datasets")
    except Exception as e:  # noqa: BLE001 - not installed, or broken beside this torch
        raise ValueError(f"{name} needs torchvision, which cannot be imported ({type(e).__name__})") from None
    if not attr.isidentifier() or not isinstance(getattr(tv, attr, None), type):
        raise ValueError(f"torchvision.datasets has no data set {attr!r}")
    if root is None or not Path(root).is_dir():
        raise ValueError(f"{name} needs data_root, a folder holding the data set (nothing is downloaded)")


def load(
    name: str,
    *,
    tokens_per_side: int = 4,
    test_fraction: float = 0.3,
    pointer_tokens: int = 16,
    pointer_values: int = 8,
    pointer_train: int = 4000,
    pointer_test: int = 2000,
    pointer_hops: int = 2,
    pointer_online: bool = False,
    permute_tokens: int = 8,
    permute_values: int = 8,
    permute_hops: int = 1,
    root: str | None = None,
    max_train: int = 0,
    max_test: int = 0,
    data_seed: int = 0,
) -> TokenData:
    """The data set ``name`` (``digits``, ``pointer``, ``permute`` or ``torchvision:NAME``).

    ``permute`` takes its sizes and online flag from ``pointer_train``, ``pointer_test`` and
    ``pointer_online`` (the two synthetic tasks share them)."""
    check_dataset_name(name, root)
    if name == "digits":
        return digits(tokens_per_side, test_fraction, data_seed)
    if name == "pointer":
        return pointer(
            pointer_tokens, pointer_values, pointer_train, pointer_test, data_seed, pointer_hops, pointer_online
        )
    if name == "permute":
        return permute(
            permute_tokens, permute_values, pointer_train, pointer_test, data_seed, pointer_online, permute_hops
        )
    assert root is not None
    return torchvision_data(name[len(TORCHVISION) :], root, tokens_per_side, max_train, max_test)
