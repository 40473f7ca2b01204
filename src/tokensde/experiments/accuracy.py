r"""``accuracy``: does suppressing the intrinsic noise of the value matrices hurt trained Transformers?

Deep pre-norm (RMSNorm) Transformer classifiers (:mod:`tokensde.nn.transformer`:
``depth >= 16`` blocks by default, residual branches scaled by ``1/sqrt(depth)`` as
in model A, one ``d x d`` value matrix per layer and no output projection) are
trained from the standard random value initialisation and from initialisations
where that noise is suppressed:

* ``value-scaled``: value matrices multiplied by ``value_scale`` (0.1: noise variance / 100),
* ``value-zero``: value matrices 0,
* ``value-identity``: value matrices ``I`` (deterministic; model A's noiseless attention flow),
* ``value-shared``: one random value matrix copied into every layer (the layer noises are
  perfectly correlated and do not add up to a Brownian motion).

Everything else is identical between conditions with the same seed index ``k``:
the other weights (one generator), the random value matrices that the conditions
transform (a second generator), the data and the order of the mini-batches. The
comparison between conditions is therefore *paired* by seed.

Data (:mod:`tokensde.nn.data`): scikit-learn's digits as 16 patch tokens (real
data shipped offline), the synthetic ``pointer`` task (pointer chasing: token 0
points at a position, whose pointer points at the position holding the label;
``pointer_hops = 2`` by default, fresh training sequences every epoch), and
``torchvision:NAME`` for data sets the user has on disk (``data_root``). With one
hop and a fixed training set every condition reaches 100% (measured: 10 seeds x 4
conditions, 12 epochs), which is why the default asks for two.

One unit = one training run ``(dataset, condition, seed)``; it saves a checkpoint
(weights, AdamW moments, finished epochs) every ``checkpoint_every`` epochs, so an
interrupted run resumes where it stopped and ends with the same weights.

Reported (``results.parquet``, one row per ``(dataset, condition, seed)``):
``test_accuracy``, ``test_loss``, ``train_accuracy``, ``train_loss``, the per-epoch
training loss, and the token-clustering metrics of the residual stream through
depth at initialisation (``init_*``) and after training (``trained_*``): lists of
length ``depth + 1`` over layers (mean overlap, minimum overlap, number of
clusters, collapsed and antipodal fractions, interaction energy, effective rank;
:func:`tokensde.nn.train.depth_profile`) on ``profile_examples`` test examples, and
their last-layer values as scalars (``*_last``). Further tables:
``depth.parquet`` (the same profiles, one row per run, stage and layer) and
``summary.parquet`` (per dataset and condition: mean test accuracy with its
``level`` Student-t interval over seeds; the paired difference to ``standard`` with
its interval and the paired t-test's two-sided p-value).

Verdict (the catalogue asks for the table, whatever it shows; :mod:`.verdict`):
every planned run finished once, with finite accuracies and losses and a finite
training loss every epoch; and training works: for every data set the ``standard``
condition's runs (1) have a mean test accuracy whose Student-t interval over seeds
lies above chance, (2) have a mean test accuracy above chance by more than the test
set's binomial noise (``chance`` = the larger of ``1 / classes`` and the test set's
majority-class frequency; this one also sees seeds that agree on a label-blind
answer, which give a zero-width t-interval), and (3) have a training loss that
decreases over training (:func:`~tokensde.experiments.verdict.monotone` on the
mean over seeds and over each quarter of the epochs: with online data an epoch's
sampling noise is common to the seeds; with one seed, the last epoch below the
first). All at the
family-wise ``level`` over the data sets (Bonferroni). Shuffled training labels
fail (1) and (2); a learning rate of 0 fails all three (tests/test_fail_injection_ap.py).
What the comparison shows (which conditions are better or worse, by how much, and how
accuracy goes with clustering at initialisation: Spearman's rank correlation of
``test_accuracy`` and ``init_mean_overlap_last`` over all runs of a data set) is in
the notes and the figures; no direction is assumed.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator
from scipy import stats as sstats
from torch import Tensor

from ..metrics import EPS
from ..nn import data as nndata
from ..nn.train import (
    PROFILE_KEYS,
    TrainSettings,
    depth_profile,
    evaluate,
    load_state_arrays,
    make_optimizer,
    state_arrays,
    steps_per_epoch,
    train_epoch,
)
from ..nn.transformer import TransformerClassifier, initialise
from ..noise import derive_seed
from ..sphere import normalize
from ..stats import bonferroni_z
from .base import Checkpoint, Experiment, ExperimentConfig, Progress
from .verdict import Check, at_least, at_most, check, monotone, verdict

__all__ = [
    "Accuracy",
    "AccuracyConfig",
    "TrainConfig",
    "chance_checks",
    "classifier",
    "depth_table",
    "fit",
    "load_data",
    "t_interval",
    "tokens_through_depth",
    "train_memory",
]

Condition = Literal["standard", "value-scaled", "value-zero", "value-identity", "value-shared"]


class TrainConfig(ExperimentConfig):
    """The fields shared by the training experiments (``accuracy``, ``accuracy-map``): data, model, optimiser."""

    datasets: list[str] = Field(
        default=["digits", "pointer"],
        min_length=1,
        max_length=8,
        description="data sets: digits, pointer, permute, or torchvision:NAME (on disk under data_root)",
    )
    seeds: int = Field(default=10, ge=1, le=100, description="training runs per (dataset, condition), in [1, 100]")
    seed: int = Field(default=0, ge=0, le=2**62, description="base seed")
    width: int = Field(default=64, ge=4, le=2048, description="model width d, in [4, 2048]")
    heads: int = Field(default=4, ge=1, le=64, description="attention heads (must divide width), in [1, 64]")
    mlp_ratio: int = Field(default=0, ge=0, le=8, description="MLP hidden width / d; 0 = attention-only blocks")
    epochs: int = Field(default=20, ge=1, le=1000, description="training epochs, in [1, 1000]")
    batch_size: int = Field(default=64, ge=1, le=8192, description="mini-batch size, in [1, 8192]")
    lr: float = Field(default=3e-3, gt=0.0, le=1.0, description="peak AdamW learning rate, in (0, 1]")
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0, description="AdamW weight decay (matrices), in [0, 1]")
    warmup: float = Field(default=0.05, ge=0.0, le=0.5, description="warm-up fraction of the steps, in [0, 0.5]")
    grad_clip: float = Field(default=1.0, ge=0.0, le=1e3, description="gradient-norm clip (0 = none), in [0, 1000]")
    tokens_per_side: int = Field(default=4, ge=1, le=64, description="image patches per side (digits: 1, 2, 4, 8)")
    test_fraction: float = Field(default=0.3, gt=0.0, lt=1.0, description="digits: held-out fraction, in (0, 1)")
    pointer_tokens: int = Field(default=16, ge=2, le=512, description="pointer: tokens per sequence, in [2, 512]")
    pointer_values: int = Field(default=8, ge=2, le=256, description="pointer: value symbols (classes), in [2, 256]")
    pointer_train: int = Field(
        default=4000, ge=1, le=10**6, description="pointer and permute: training sequences (per epoch)"
    )
    pointer_test: int = Field(default=2000, ge=1, le=10**6, description="pointer and permute: test sequences")
    pointer_hops: int = Field(default=2, ge=1, le=8, description="pointer: pointers followed to the label, in [1, 8]")
    pointer_online: bool = Field(default=True, description="pointer and permute: fresh sequences every epoch")
    permute_tokens: int = Field(default=8, ge=2, le=512, description="permute: tokens per sequence, in [2, 512]")
    permute_values: int = Field(default=8, ge=2, le=256, description="permute: value symbols (classes), in [2, 256]")
    permute_hops: int = Field(default=1, ge=1, le=8, description="permute: pointers followed to the label, in [1, 8]")
    data_root: str | None = Field(default=None, description="folder of torchvision data sets (nothing downloaded)")
    max_train: int = Field(default=0, ge=0, le=10**7, description="torchvision: first examples to train on (0 = all)")
    max_test: int = Field(default=0, ge=0, le=10**7, description="torchvision: first test examples (0 = all)")
    profile_examples: int = Field(default=256, ge=1, le=10**5, description="test examples for the depth metrics")
    beta: float = Field(default=1.0, ge=0.0, le=50.0, description="inverse temperature of the energy, in [0, 50]")
    eps: float = Field(default=EPS, gt=0.0, lt=1.0, description="cluster threshold <x_i,x_j> > 1 - eps, in (0, 1)")
    level: float = Field(default=0.95, gt=0.5, lt=1.0, description="confidence level of the intervals, in (0.5, 1)")
    checkpoint_every: int = Field(default=1, ge=1, le=1000, description="epochs between checkpoints, in [1, 1000]")

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each data set at most once")
        for name in v:
            if name not in nndata.DATASETS and not name.startswith(nndata.TORCHVISION):
                raise ValueError(f"unknown data set {name!r}; allowed: digits, pointer, permute or torchvision:NAME")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.width % self.heads:
            raise ValueError(f"heads must divide width ({self.width}), got {self.heads}")
        if "digits" in self.datasets and 8 % self.tokens_per_side:
            raise ValueError(f"tokens_per_side must divide 8 for digits (1, 2, 4, 8), got {self.tokens_per_side}")
        for name in self.datasets:
            nndata.check_dataset_name(name, self.data_root)
        return self


class AccuracyConfig(TrainConfig):
    conditions: list[Condition] = Field(
        default=["standard", "value-scaled", "value-identity", "value-shared"],
        min_length=1,
        description="value initialisations: standard, value-scaled, value-zero, value-identity, value-shared",
    )
    depth: int = Field(default=16, ge=1, le=256, description="Transformer blocks L, in [1, 256]")
    value_scale: float = Field(default=0.1, ge=0.0, le=1.0, description="factor of value-scaled, in [0, 1]")

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each condition at most once")
        return v


def t_interval(x: np.ndarray, level: float) -> tuple[float, float, float]:
    """``(mean, low, high)``: the Student-t interval of the mean of ``x`` (NaN bounds for fewer than 2 values)."""
    x = np.asarray(x, dtype=float)
    m = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return m, math.nan, math.nan
    half = float(sstats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def _unit_id(dataset: str, condition: str, k: int) -> str:
    return f"{dataset.replace(':', '_')}-{condition}-s{k}"


def load_data(cfg: TrainConfig, name: str) -> nndata.TokenData:
    return nndata.load(
        name,
        tokens_per_side=cfg.tokens_per_side,
        test_fraction=cfg.test_fraction,
        pointer_tokens=cfg.pointer_tokens,
        pointer_values=cfg.pointer_values,
        pointer_train=cfg.pointer_train,
        pointer_test=cfg.pointer_test,
        pointer_hops=cfg.pointer_hops,
        pointer_online=cfg.pointer_online,
        permute_tokens=cfg.permute_tokens,
        permute_values=cfg.permute_values,
        permute_hops=cfg.permute_hops,
        root=cfg.data_root,
        max_train=cfg.max_train,
        max_test=cfg.max_test,
        data_seed=derive_seed(cfg.seed, name, "data") % 2**31,
    )


def classifier(cfg: TrainConfig, data: nndata.TokenData, depth: int) -> TransformerClassifier:
    """An (uninitialised) classifier for ``data`` of the config's width, heads and MLP ratio, ``depth`` blocks."""
    return TransformerClassifier(
        data.n_tokens,
        data.n_features,
        data.n_classes,
        width=cfg.width,
        depth=depth,
        heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
        readout=data.readout,
    )


def build(cfg: AccuracyConfig, data: nndata.TokenData, condition: str, k: int) -> TransformerClassifier:
    """The classifier of run ``(data, condition, k)`` at initialisation (CPU, float32)."""
    model = classifier(cfg, data, cfg.depth)
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, data.name, k, "init"))
    value_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, data.name, k, "values"))
    initialise(model, condition, gen, value_gen, cfg.value_scale)
    return model


def tokens_through_depth(model: TransformerClassifier, x: Tensor, title: str) -> dict[str, Any]:
    """The viewer's trajectory of the first example of ``x`` through ``model`` (at initialisation): the token
    directions ``h^l_i / |h^l_i|``, ``l = 0..L``, on the model's device."""
    model.eval()
    with torch.no_grad():
        _, states = model(x[:1].to(next(model.parameters()).device), hidden=True)
    directions = torch.stack([normalize(h[0].double()) for h in states])
    return {
        "x": directions.cpu().numpy(),
        "times": np.arange(len(states), dtype=float),
        "title": title,
        "time_label": "layer",
    }


def _settings(cfg: TrainConfig) -> TrainSettings:
    return TrainSettings(cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.warmup, cfg.grad_clip)


def _data_memory(cfg: TrainConfig, name: str) -> tuple[int, int, int, int, int, int]:
    """``(train, test, tokens, features, classes, bytes)`` of a data set from the config alone (nothing loaded).

    ``digits``: 1797 images (scikit-learn's float64 arrays and the float32 splits). ``pointer``: both splits
    (float32 one-hot) and the index tensors of one draw; online, the current and the next epoch's sequences
    beside the first. ``torchvision:NAME``: the size is unknown before loading; CIFAR-sized images
    (3 x 32 x 32) are assumed, ``max_train`` / ``max_test`` of them or 60000 / 10000 (uint8 original, float
    copy and patches).
    """
    if name == "digits":
        total = 1797
        test = math.ceil(cfg.test_fraction * total)
        n = cfg.tokens_per_side**2
        return total - test, test, n, 64 // n, 10, 8 * total * 64 * 8
    if name == "pointer":
        n, k = cfg.pointer_tokens, cfg.pointer_values
        f = n - 1 + k
        held = (cfg.pointer_train * (3 if cfg.pointer_online else 1) + cfg.pointer_test) * n * f * 4
        return cfg.pointer_train, cfg.pointer_test, n, f, k, held + max(cfg.pointer_train, cfg.pointer_test) * n * 48
    if name == "permute":
        n, k = cfg.permute_tokens, cfg.permute_values
        f = n + k
        held = (cfg.pointer_train * (3 if cfg.pointer_online else 1) + cfg.pointer_test) * n * (f * 4 + 8)
        return cfg.pointer_train, cfg.pointer_test, n, f, k, held + max(cfg.pointer_train, cfg.pointer_test) * n * 48
    train, test, pixels = cfg.max_train or 60000, cfg.max_test or 10000, 3 * 32 * 32
    n = cfg.tokens_per_side**2
    return train, test, n, max(1, pixels // n), 100, (train + test) * pixels * 13


def _parameters(cfg: TrainConfig, depth: int, n: int, f: int, k: int) -> int:
    """Parameters of the classifier: embedding, positions, ``depth`` blocks (Q, K, V, gains, MLP), head."""
    w, r = cfg.width, cfg.mlp_ratio
    block = 3 * w * w + w + ((2 * w + 2 * r * w * w + r * w) if r else 0)
    return f * w + w + n * w + depth * block + w + w * k + k


_RUN_COLUMNS = ("test_accuracy", "test_loss", "train_accuracy", "train_loss")
#: the convergence check compares the training loss over (at most) this many consecutive blocks of epochs
LOSS_BLOCKS = 4


def _complete(cfg: AccuracyConfig, table: pd.DataFrame) -> Check:
    """Every planned ``(dataset, condition, seed)`` ran exactly once and ended with finite accuracies and losses
    and a finite training loss for each of its ``epochs`` epochs."""
    want = {(ds, c, k) for ds in cfg.datasets for c in cfg.conditions for k in range(cfg.seeds)}
    keys = list(zip(table["dataset"], table["condition"], table["seed"], strict=True)) if len(table) else []
    have = {(str(ds), str(c), int(k)) for ds, c, k in keys}
    missing = sorted(_unit_id(*u) for u in want - have)
    extra = sorted(_unit_id(*u) for u in have - want)
    twice = len(keys) - len(have)
    bad = []
    for r in table.to_dict(orient="records") if len(table) else []:
        hist = np.asarray(r.get("loss_history", []), dtype=float)
        vals = np.asarray([r.get(c, math.nan) for c in _RUN_COLUMNS], dtype=float)
        if not (np.isfinite(vals).all() and len(hist) == cfg.epochs and np.isfinite(hist).all()):
            bad.append(_unit_id(r["dataset"], r["condition"], int(r["seed"])))
    ok = bool(want) and not (missing or extra or twice or bad)
    return check(
        "every run finished with finite test and training accuracy and loss, and a finite loss every epoch",
        ok,
        f"{len(have & want)} of {len(want)} runs; missing: {missing[:8] or 'none'}; unplanned: {extra[:8] or 'none'};"
        f" duplicated rows: {twice}; non-finite or short loss history: {bad[:8] or 'none'}",
        {
            "runs": len(table),
            "expected": len(want),
            "missing": missing,
            "unplanned": extra,
            "duplicates": twice,
            "non_finite": bad,
        },
        source="the plan: datasets x conditions x seeds",
    )


def chance_checks(name: str, runs: pd.DataFrame, level: float, m: int, family: str) -> list[Check]:
    """The runs' mean test accuracy beats chance, at ``level`` family-wise over ``m`` ``family`` (Bonferroni):
    by the lower end of its Student-t interval over seeds (two or more seeds), and by more than the test set's
    binomial noise; ``chance`` is the larger of ``1 / classes`` and the test labels' majority frequency
    (:func:`_learning_checks` says why both)."""
    acc = runs["test_accuracy"].to_numpy(dtype=float)
    s = len(acc)
    chance = float(runs["chance"].iloc[0])
    if "majority" in runs.columns:
        chance = max(chance, float(runs["majority"].max()))
    n_test = int(runs["n_test"].min())
    fw = 1.0 - (1.0 - level) / m  # each member's two-sided level
    out: list[Check] = []
    if s >= 2:
        mean, low, high = t_interval(acc, fw)
        c = at_least(
            f"{name}: the mean test accuracy over seeds beats chance (t-interval)",
            low,
            chance,
            "lower end of the t-interval",
            f"two-sided Student t ({s - 1} df) at level {fw:g}: {level:g} family-wise over {m} {family};"
            " the limit is chance",
        )
        out.append(
            check(
                c.name,
                c.passed,
                c.detail + f"; mean {mean:.4f} [{low:.4f}, {high:.4f}] over {s} seeds",
                {**c.values, "mean": mean, "high": high, "seeds": s},
                c.tolerance,
                c.source,
            )
        )
    z = bonferroni_z(level, m)
    limit = chance + z * math.sqrt(chance * (1.0 - chance) / n_test)
    out.append(
        at_least(
            f"{name}: the mean test accuracy beats chance beyond the test set's binomial noise",
            float(acc.mean()),
            limit,
            f"mean test accuracy of {s} runs",
            f"chance {chance:.4f} + {z:.2f} sqrt(chance (1 - chance) / {n_test}), level {level:g}"
            f" family-wise over {m} {family}",
        )
    )
    return out


def _learning_checks(cfg: AccuracyConfig, ds: str, ref: str, runs: pd.DataFrame) -> list[Check]:
    r"""Training works on ``ds``: the reference condition's runs beat chance and their training loss decreases.

    Family-wise over the data sets (Bonferroni, two-sided quantiles used one-sided, so each bound is
    at least as strict as the two-sided ``level`` interval of the summary):

    * *over seeds*: the lower end of the Student-t interval of the mean test accuracy (``S - 1``
      degrees of freedom) above ``chance`` (needs ``S >= 2`` seeds);
    * *on the test set*: the mean test accuracy above ``chance + z sqrt(chance (1 - chance) / n_test)``,
      ``chance`` the larger of ``1 / classes`` and the test set's majority-class frequency: a classifier
      blind to the labels has a test accuracy of mean at most that and variance ``chance (1 - chance) /
      n_test``, and the mean over seeds has no larger variance (Cauchy-Schwarz), whatever the dependence
      between seeds. This one sees what the seed interval cannot: seeds that agree on a label-blind answer
      (``sd = 0``) give a zero-width t-interval at, e.g., the majority-class frequency;
    * *convergence*: the training loss, averaged over seeds and over each of ``LOSS_BLOCKS`` consecutive
      blocks of epochs (quarters), decreases (:func:`monotone`: no step reversed beyond its noise, the
      overall fall significant; standard errors over seeds). Quarters, not single epochs: with online data
      (``pointer``) every seed trains on the same fresh sequences in a given epoch, so an epoch's sampling
      noise is common to the seeds and absent from their spread; at the defaults the epoch means of the
      pointer task rise by up to 0.026 from one epoch to the next inside a fall of 0.28 (measured). With
      one seed, only the last epoch's loss below the first epoch's.
    """
    m = len(cfg.datasets)
    name = f"{ds}, {ref}"
    if runs.empty:
        return [check(f"{name}: training works", False, f"no {ref} runs on {ds}")]
    s = len(runs)
    fw = 1.0 - (1.0 - cfg.level) / m  # each data set's two-sided level
    out = chance_checks(name, runs, cfg.level, m, "data sets")
    hist = np.array([np.asarray(h, dtype=float) for h in runs["loss_history"]])
    if hist.ndim != 2 or hist.shape[1] < 2:
        out.append(check(f"{name}: the training loss decreases", False, "fewer than two epochs of training loss"))
    elif s >= 2:
        parts = np.array_split(np.arange(hist.shape[1]), min(LOSS_BLOCKS, hist.shape[1]))
        blocks = np.stack([hist[:, p].mean(axis=1) for p in parts], axis=1)  # (seeds, blocks)
        out.append(
            monotone(
                f"{name}: the training loss (mean over seeds and over each quarter of the epochs) decreases",
                np.array([float(p.mean()) + 1.0 for p in parts]),
                blocks.mean(axis=0),
                blocks.std(axis=0, ddof=1) / math.sqrt(s),
                "decreasing",
                fw,
                "training loss",
            )
        )
    else:
        out.append(
            at_most(
                f"{name}: the training loss decreases (one seed: last epoch below the first)",
                float(hist[0, -1]),
                float(hist[0, 0]),
                "last epoch's training loss",
                "the first epoch's training loss",
            )
        )
    return out


def train_memory(cfg: TrainConfig, dataset: str, depth: int, device: str) -> int:
    """Peak bytes of one training run: in float32, the data (:func:`_data_memory`), the parameters with their
    gradients, AdamW's two moments and the optimiser's and clipping's temporaries (7 copies), and the largest
    of: training (every block's activations kept for the backward pass for one mini-batch, the attention
    weights where they are materialised), evaluation (batches of 512), the depth profile (every layer's
    hidden states of the profile examples, their float64 normalised copy and the blocked metrics) and a
    checkpoint (parameters and moments as arrays, the NPZ buffer and its copy)."""
    from ..sizes import attention_bytes, metrics_bytes

    train, test, n, f, k, data = _data_memory(cfg, dataset)
    w, r, heads = cfg.width, cfg.mlp_ratio, cfg.heads
    p = 4 * _parameters(cfg, depth, n, f, k)

    def forward(b: int, kept: int) -> int:
        per = (kept + ((4 + 2 * r) if r else 0)) * b * n * w * 4
        return per + attention_bytes(b, n, w // heads, 4, device, heads)

    b = min(cfg.batch_size, train)
    training = (depth + 2) * forward(b, 9) + b * n * f * 4
    e = min(512, max(train, test))
    evaluation = forward(e, 12)
    pe = min(cfg.profile_examples, test)
    profile = (depth + 1) * pe * n * w * 4 + forward(pe, 12) + 2 * pe * n * w * 8 + metrics_bytes(pe, n, w, 8)
    return int(data + 7 * p + max(training, evaluation, profile, 9 * p))


def fit(
    cfg: TrainConfig,
    data: nndata.TokenData,
    model: TransformerClassifier,
    device: str,
    order_seed: int,
    progress: Progress | None = None,
    checkpoint: Checkpoint | None = None,
    curve_examples: int = 0,
) -> dict[str, Any]:
    """Train ``model`` on ``data`` for ``cfg.epochs`` epochs (resuming from ``checkpoint``) and measure it.

    Returns the columns of a results row: test and training accuracy and loss, chance and the
    majority-class frequency of the test labels, sizes, the per-epoch training loss
    (``loss_history``), and the depth profiles at initialisation and after training (``init_*``,
    ``trained_*``: lists over layers, and ``*_last``). With ``curve_examples > 0`` also the learning
    curve on the first ``curve_examples`` test examples after every epoch (``curve_accuracy``,
    ``curve_loss``). A checkpoint is saved every ``cfg.checkpoint_every`` epochs (weights, AdamW
    moments, the epochs done, the curves so far and the initial profile), so an interrupted run
    continues where it stopped and ends with the same numbers.
    """
    s = _settings(cfg)
    opt = make_optimizer(model, s)
    dev = torch.device(device)
    xtr, ytr = data.x_train.to(dev), data.y_train.to(dev)
    xte, yte = data.x_test.to(dev), data.y_test.to(dev)
    probe = xte[: cfg.profile_examples]
    xc, yc = xte[:curve_examples], yte[:curve_examples]

    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None and "epoch" in saved:
        load_state_arrays(model, opt, saved)
        start = int(saved["epoch"])
        losses = [float(v) for v in saved["losses"]]
        curve_acc = [float(v) for v in saved.get("curve_accuracy", np.zeros(0))]
        curve_loss = [float(v) for v in saved.get("curve_loss", np.zeros(0))]
        init = {key: saved[f"init.{key}"] for key in PROFILE_KEYS}
        if progress is not None and start:
            progress(float(start))
    else:
        start, losses, curve_acc, curve_loss = 0, [], [], []
        init = depth_profile(model, probe, cfg.beta, cfg.eps)
    for epoch in range(start, cfg.epochs):
        if data.sampler is not None:
            xtr, ytr = (t.to(dev) for t in data.train_data(epoch))
        losses.append(train_epoch(model, opt, xtr, ytr, s, epoch, order_seed, progress))
        if curve_examples:
            acc, loss = evaluate(model, xc, yc)
            curve_acc.append(acc)
            curve_loss.append(loss)
        if checkpoint is not None and epoch + 1 < cfg.epochs and (epoch + 1) % cfg.checkpoint_every == 0:
            arrays = state_arrays(model, opt)
            arrays["epoch"] = np.asarray(epoch + 1)
            arrays["losses"] = np.asarray(losses)
            arrays["curve_accuracy"] = np.asarray(curve_acc, dtype=float)
            arrays["curve_loss"] = np.asarray(curve_loss, dtype=float)
            arrays.update({f"init.{key}": init[key] for key in PROFILE_KEYS})
            checkpoint.save(arrays)
    test_acc, test_loss = evaluate(model, xte, yte)
    train_acc, train_loss = evaluate(model, xtr, ytr)
    trained = depth_profile(model, probe, cfg.beta, cfg.eps)
    row: dict[str, Any] = {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "train_accuracy": train_acc,
        "train_loss": train_loss,
        "chance": 1.0 / data.n_classes,
        "majority": float(torch.bincount(data.y_test.reshape(-1), minlength=data.n_classes).max())
        / data.y_test.numel(),
        "n_train": int(data.x_train.shape[0]),
        "n_test": int(data.x_test.shape[0]),
        "epochs": cfg.epochs,
        "steps": cfg.epochs * steps_per_epoch(int(data.x_train.shape[0]), cfg.batch_size),
        "loss_history": losses,
        "loss_auc": float(np.mean(losses)),
    }
    if curve_examples:
        row["curve_accuracy"] = curve_acc
        row["curve_loss"] = curve_loss
    for stage, prof in (("init", init), ("trained", trained)):
        for key in PROFILE_KEYS:
            vals = [float(v) for v in np.asarray(prof[key], dtype=float)]
            row[f"{stage}_{key}"] = vals
            row[f"{stage}_{key}_last"] = vals[-1]
    return row


class Accuracy(Experiment):
    name = "accuracy"
    summary = "train deep pre-norm Transformers with and without the value-matrix noise; accuracy and clustering"
    Config = AccuracyConfig
    checkpoints = True
    quick = {
        "seeds": 2,
        "depth": 8,
        "width": 32,
        "epochs": 6,
        "pointer_hops": 1,
        "pointer_train": 2000,
        "pointer_test": 1000,
        "profile_examples": 64,
    }

    def plan(self, cfg: AccuracyConfig) -> list[dict[str, Any]]:
        return [
            {"id": _unit_id(ds, c, k), "dataset": ds, "condition": c, "seed": k}
            for ds in cfg.datasets
            for c in cfg.conditions
            for k in range(cfg.seeds)
        ]

    def unit_cost(self, cfg: AccuracyConfig, unit: dict[str, Any]) -> float:
        return float(cfg.epochs)

    def unit_memory(self, cfg: AccuracyConfig, unit: dict[str, Any], device: str) -> int:
        return train_memory(cfg, str(unit["dataset"]), cfg.depth, device)

    def run_unit(
        self,
        cfg: AccuracyConfig,
        unit: dict[str, Any],
        device: str,
        progress: Progress | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> list[dict[str, Any]]:
        data = load_data(cfg, unit["dataset"])
        k, condition = int(unit["seed"]), str(unit["condition"])
        model = build(cfg, data, condition, k).to(device)
        order_seed = derive_seed(cfg.seed, data.name, k, "order")
        out = fit(cfg, data, model, device, order_seed, progress, checkpoint)
        row: dict[str, Any] = {"dataset": data.name, "condition": condition, "seed": k}
        row.update(out)
        return [row]

    def summarize(self, cfg: AccuracyConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return pd.DataFrame(rows)

    def tables(self, cfg: AccuracyConfig, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        return {"depth": depth_table(table), "summary": summary_table(table, cfg.level)}

    def verdict(self, cfg: AccuracyConfig, table: pd.DataFrame) -> dict[str, Any]:
        summ = summary_table(table, cfg.level) if len(table) else pd.DataFrame()
        ref = "standard" if "standard" in cfg.conditions else cfg.conditions[0]
        checks = [_complete(cfg, table)]
        for ds in cfg.datasets:
            runs = table[(table["dataset"] == ds) & (table["condition"] == ref)] if len(table) else table
            checks += _learning_checks(cfg, ds, ref, runs)
        notes = [f"test accuracy, mean over seeds with {cfg.level:.0%} t-interval; paired difference to standard:"]
        if len(summ):
            notes += table_lines(summ, "test_accuracy")
            notes.append("mean training loss over the epochs (area under the training curve; lower = faster):")
            notes += table_lines(summ, "loss_auc")
        for ds, s in table.groupby("dataset", sort=False) if len(table) else ():
            if len(s) >= 3 and s["init_mean_overlap_last"].nunique() > 1 and s["test_accuracy"].nunique() > 1:
                rho, p = sstats.spearmanr(s["init_mean_overlap_last"], s["test_accuracy"])
                notes.append(
                    f"{ds}: Spearman rho(init last-layer mean overlap, test accuracy) = {rho:.2f} "
                    f"(p = {p:.2g}, {len(s)} runs)"
                )
        out = verdict(checks, notes)
        out["table"] = summ.to_dict(orient="records")
        return out

    def trajectory(self, cfg: AccuracyConfig, device: str = "cpu") -> dict[str, Any]:
        """The tokens of the first test example through depth, at initialisation (first data set and
        condition, seed index 0): directions ``h^l_i / |h^l_i|``, ``l = 0..L``."""
        data = load_data(cfg, cfg.datasets[0])
        model = build(cfg, data, cfg.conditions[0], 0).to(device)
        return tokens_through_depth(
            model, data.x_test, f"{data.name}, {cfg.conditions[0]}: tokens through depth at initialisation"
        )

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The report's interactive (plotly) figures (beside the static ones of :meth:`figures`)."""
        return _interactive_figures(table, cfg)

    def figures(self, cfg: AccuracyConfig, table: pd.DataFrame) -> dict[str, Any]:
        from .accuracy_figures import accuracy_figures

        return accuracy_figures(table, summary_table(table, cfg.level))


def depth_table(table: pd.DataFrame, keys: tuple[str, ...] = ("dataset", "condition", "seed")) -> pd.DataFrame:
    """One row per run (its ``keys`` columns), stage and layer with the depth profiles' metrics."""
    out: list[dict[str, Any]] = []
    for r in table.to_dict(orient="records"):
        for stage in ("init", "trained"):
            for layer in range(len(r[f"{stage}_mean_overlap"])):
                rec: dict[str, Any] = {key: r[key] for key in keys}
                rec.update({"stage": stage, "layer": layer})
                rec.update({key: float(r[f"{stage}_{key}"][layer]) for key in PROFILE_KEYS})
                out.append(rec)
    return pd.DataFrame(out)


SUMMARY_METRICS = ("test_accuracy", "test_loss", "loss_auc")


def summary_table(table: pd.DataFrame, level: float) -> pd.DataFrame:
    """Per (dataset, condition, metric): mean over seeds, its t-interval, the paired difference to ``standard``.

    Metrics: ``test_accuracy``, ``test_loss`` and ``loss_auc`` (the mean training loss over
    the epochs, the area under the training curve: lower is faster learning).
    """
    out: list[dict[str, Any]] = []
    for (ds, cond), s in table.groupby(["dataset", "condition"], sort=False):
        s = s.sort_values("seed")
        ref = table[(table["dataset"] == ds) & (table["condition"] == "standard")]
        both = s.merge(ref, on="seed", suffixes=("", "_ref")) if cond != "standard" and len(ref) else None
        for metric in SUMMARY_METRICS:
            vals = s[metric].to_numpy(dtype=float)
            m, lo, hi = t_interval(vals, level)
            rec: dict[str, Any] = {
                "dataset": ds,
                "condition": cond,
                "metric": metric,
                "runs": len(vals),
                "mean": m,
                "low": lo,
                "high": hi,
                "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
                "chance": float(s["chance"].iloc[0]),
                "init_mean_overlap_last": float(s["init_mean_overlap_last"].mean()),
                "init_effective_rank_last": float(s["init_effective_rank_last"].mean()),
                "diff": math.nan,
                "diff_low": math.nan,
                "diff_high": math.nan,
                "diff_p": math.nan,
            }
            if both is not None:
                d = (both[metric] - both[f"{metric}_ref"]).to_numpy(dtype=float)
                dm, dlo, dhi = t_interval(d, level)
                rec.update({"diff": dm, "diff_low": dlo, "diff_high": dhi})
                if len(d) >= 2 and np.std(d) > 0:
                    rec["diff_p"] = float(sstats.ttest_1samp(d, 0.0).pvalue)
            out.append(rec)
    return pd.DataFrame(out)


def table_lines(summ: pd.DataFrame, metric: str = "test_accuracy") -> list[str]:
    """One metric of the summary as aligned text lines: mean [interval], paired difference to ``standard``."""
    lines = []
    for r in summ[summ["metric"] == metric].itertuples():
        line = f"{r.dataset:>10} {r.condition:<15} {r.mean:.4f} [{r.low:.4f}, {r.high:.4f}] ({r.runs} seeds)"
        if not math.isnan(r.diff):
            line += f"  diff {r.diff:+.4f} [{r.diff_low:+.4f}, {r.diff_high:+.4f}] p = {r.diff_p:.2g}"
        lines.append(line)
    return lines


def _interactive_figures(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's interactive (plotly) figures, from the results table and the run's JSON config."""
    from .accuracy_figures import interactive  # beside the experiment's static figures

    return interactive(t, cfg)
