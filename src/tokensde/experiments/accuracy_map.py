r"""``accuracy-map``: where, over depth x noise strength x task, does suppressing the value noise change accuracy?

The ``accuracy`` experiment compares a few value initialisations at one depth. This one
maps the question over the two axes the deep limit is about, on three tasks, with paired
seeds:

* **noise strength** ``sigma`` (``sigmas``, default ``0, 0.1, 0.3, 1``) and **mean value
  matrix** ``Vbar`` in ``{0, I}`` (``vbars``): the value matrices of the pre-norm classifier
  (:mod:`tokensde.nn.transformer`) are ``V_l = Vbar / sqrt(L) + sigma Z_l / sqrt(d)``, so
  with the residual factor ``1/sqrt(L)`` every layer is model A's ``h Vbar + sigma sqrt(h) Z``
  at horizon ``T = 1`` (:func:`~tokensde.nn.transformer.set_values`). ``(Vbar, sigma) = (0, 1)``
  is the standard initialisation, the reference of the map; ``(0, 0)`` silences the attention
  branch at initialisation, ``(I, 0)`` is model A's noiseless attention flow;
* **depth** ``L`` (``depths``, default ``4, 16, 64``): the same horizon resolved by more layers;
* **task** (``datasets``): ``digits`` (patches, mean read-out), ``pointer`` (two-hop pointer
  chasing read from token 0) and the per-token ``permute`` task (every token must output
  the value its pointer chain reaches, :mod:`tokensde.nn.data`), where the loss of per-token
  information by collapse must hurt if it hurts anywhere.

Seeds are paired across the grid: run ``(task, L, Vbar, sigma, k)`` draws every weight but the
value matrices from ``derive_seed(seed, task, L, k, "init")``, the matrices ``Z_l`` from
``derive_seed(seed, task, L, k, "values")``, and sees the data in the order of ``(task, k)``;
two conditions at the same ``(task, L, k)`` differ in ``(Vbar, sigma)`` alone, so the paired
differences cancel the seed-to-seed spread the conditions share.

One unit = one training run ``(task, L, Vbar, sigma, k)``, checkpointed every
``checkpoint_every`` epochs (it resumes where it stopped and ends with the same numbers).
Reported: ``results.parquet`` (one row per run: final test and training accuracy and loss,
the learning curve on ``curve_examples`` test examples after every epoch, the training loss
per epoch, the token-clustering metrics through depth at initialisation and after training,
:func:`~tokensde.nn.train.depth_profile`), ``map.parquet`` (per cell: mean test accuracy with
its ``level`` t-interval, the paired difference to the reference with its interval, half-width
and paired-t p-value, the seeds the stated precision needs, and the paired difference of the
initial overlap change), ``curves.parquet`` (per run and epoch) and ``depth.parquet`` (per
run, stage and layer).

Verdict (the map, whatever it shows, with checks that it is worth reading; :func:`map_checks`):
every run finished once with finite numbers; the reference learns every (task, L) beyond chance;
the reference's learning curve has reached a plateau; every cell's paired-difference interval is
narrower than ``precision``; and the noise conditions differ at initialisation as model A
predicts (``(0, 0)`` leaves the stream unchanged; the overlap gained through depth grows with
``sigma`` at both ``Vbar``). Which cells are hurt, helped or unchanged is in the notes and the
figures; no direction is assumed.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator
from scipy import stats as sstats

from ..nn import data as nndata
from ..nn.transformer import TransformerClassifier, initialise_values
from ..noise import derive_seed
from .accuracy import (
    TrainConfig,
    chance_checks,
    classifier,
    depth_table,
    fit,
    load_data,
    t_interval,
    tokens_through_depth,
    train_memory,
)
from .base import Checkpoint, Experiment, Progress, each_in
from .verdict import Check, at_most, check, verdict

__all__ = ["AccuracyMap", "AccuracyMapConfig", "condition_label", "map_checks", "map_table"]

Vbar = Literal["zero", "identity"]
VBAR = {"zero": 0.0, "identity": 1.0}
REFERENCE = ("zero", 1.0)


class AccuracyMapConfig(TrainConfig):
    datasets: list[str] = Field(
        default=["digits", "pointer", "permute"],
        min_length=1,
        max_length=8,
        description="tasks: digits, pointer, permute, or torchvision:NAME (on disk under data_root)",
    )
    depths: list[int] = Field(
        default=[4, 16, 64], min_length=1, max_length=16, description="Transformer depths L, each in [1, 1024]"
    )
    sigmas: list[float] = Field(
        default=[0.0, 0.1, 0.3, 1.0],
        min_length=1,
        max_length=16,
        description="value-noise strengths sigma (times the standard init), each in [0, 4]; must hold 1",
    )
    vbars: list[Vbar] = Field(
        default=["zero", "identity"],
        min_length=1,
        description="mean value matrices Vbar: zero, identity (drift I/sqrt(L) per layer); must hold zero",
    )
    seeds: int = Field(default=8, ge=1, le=100, description="paired seeds per cell, in [1, 100]")
    width: int = Field(default=32, ge=4, le=2048, description="model width d, in [4, 2048]")
    heads: int = Field(default=2, ge=1, le=64, description="attention heads (must divide width), in [1, 64]")
    epochs: int = Field(default=10, ge=4, le=1000, description="training epochs, in [4, 1000]")
    tokens_per_side: int = Field(default=4, ge=1, le=64, description="image patches per side (digits: 1, 2, 4, 8)")
    pointer_tokens: int = Field(default=8, ge=2, le=512, description="pointer: tokens per sequence, in [2, 512]")
    pointer_train: int = Field(
        default=2000, ge=1, le=10**6, description="pointer and permute: training sequences (per epoch)"
    )
    pointer_test: int = Field(default=1000, ge=1, le=10**6, description="pointer and permute: test sequences")
    permute_hops: int = Field(default=2, ge=1, le=8, description="permute: pointers followed to the label, in [1, 8]")
    profile_examples: int = Field(default=128, ge=1, le=10**5, description="test examples for the depth metrics")
    curve_examples: int = Field(
        default=500, ge=1, le=10**6, description="test examples of the per-epoch learning curve, in [1, 10^6]"
    )
    precision: float = Field(
        default=0.05, gt=0.0, le=1.0, description="largest half-width of a cell's paired interval, in (0, 1]"
    )
    plateau: float = Field(
        default=0.02, gt=0.0, le=1.0, description="largest accuracy gain in the last quarter of epochs, in (0, 1]"
    )

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        return each_in(v, 1, 1024, "depth")

    @field_validator("sigmas")
    @classmethod
    def _sigmas(cls, v: list[float]) -> list[float]:
        v = each_in(v, 0.0, 4.0, "sigma")
        if 1.0 not in v:
            raise ValueError("sigmas must hold 1 (the standard initialisation, the reference of the map)")
        return v

    @field_validator("vbars")
    @classmethod
    def _vbars(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each Vbar at most once")
        if "zero" not in v:
            raise ValueError("vbars must hold zero (the standard initialisation, the reference of the map)")
        return v

    @model_validator(mode="after")
    def _grid(self) -> AccuracyMapConfig:
        if self.curve_examples > self.pointer_test and set(self.datasets) & {"pointer", "permute"}:
            raise ValueError(f"curve_examples must be at most pointer_test ({self.pointer_test})")
        return self


def vbar_label(vbar: str) -> str:
    return f"Vbar={'I' if vbar == 'identity' else '0'}"


def condition_label(vbar: str, sigma: float) -> str:
    return f"{vbar_label(vbar)}, sigma={sigma:g}"


def _unit_id(ds: str, depth: int, vbar: str, sigma: float, k: int) -> str:
    return f"{ds.replace(':', '_')}-L{depth}-{vbar}-sigma{sigma:g}-s{k}"


def _cells(cfg: AccuracyMapConfig) -> list[tuple[str, float]]:
    return [(vb, sg) for vb in cfg.vbars for sg in cfg.sigmas]


def build(
    cfg: AccuracyMapConfig, data: nndata.TokenData, depth: int, vbar: str, sigma: float, k: int
) -> TransformerClassifier:
    """The classifier of run ``(data, depth, vbar, sigma, k)`` at initialisation (CPU, float32)."""
    model = classifier(cfg, data, depth)
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, data.name, depth, k, "init"))
    value_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, data.name, depth, k, "values"))
    initialise_values(model, gen, value_gen, VBAR[vbar], sigma)
    return model


# ----------------------------------------------------------------------------------------------- tables


def _overlap_change(table: pd.DataFrame) -> np.ndarray:
    """Per run: the mean overlap of the tokens at the last layer minus at the embedding, at initialisation."""
    return np.array([float(v[-1]) - float(v[0]) for v in table["init_mean_overlap"]])


def map_table(table: pd.DataFrame, level: float, precision: float) -> pd.DataFrame:
    """Per (task, depth, Vbar, sigma): mean test accuracy with its t-interval, the paired difference to the
    reference ``(Vbar, sigma) = (0, 1)`` at the same (task, depth, seed) with its t-interval, half-width and
    paired-t p-value, the seeds a half-width of ``precision`` needs at the observed spread, and the initial
    overlap change through depth (mean, and paired difference to the reference)."""
    out: list[dict[str, Any]] = []
    if table.empty:
        return pd.DataFrame(out)
    t = table.assign(overlap_change=_overlap_change(table))
    for (ds, depth), group in t.groupby(["dataset", "depth"], sort=False):
        ref = group[(group["vbar"] == REFERENCE[0]) & (group["sigma"] == REFERENCE[1])]
        for (vb, sg), s in group.groupby(["vbar", "sigma"], sort=False):
            s = s.sort_values("seed")
            acc = s["test_accuracy"].to_numpy(dtype=float)
            m, lo, hi = t_interval(acc, level)
            rec: dict[str, Any] = {
                "dataset": ds,
                "depth": int(depth),
                "vbar": vb,
                "sigma": float(sg),
                "condition": condition_label(str(vb), float(sg)),
                "reference": bool((vb, float(sg)) == REFERENCE),
                "runs": len(acc),
                "mean": m,
                "low": lo,
                "high": hi,
                "chance": float(s["chance"].iloc[0]),
                "overlap_change": float(s["overlap_change"].mean()),
                "init_mean_overlap_last": float(s["init_mean_overlap_last"].mean()),
                "diff": math.nan,
                "diff_low": math.nan,
                "diff_high": math.nan,
                "half_width": math.nan,
                "diff_p": math.nan,
                "seeds_needed": math.nan,
                "overlap_diff": math.nan,
            }
            if not rec["reference"] and len(ref):
                both = s.merge(ref, on="seed", suffixes=("", "_ref"))
                d = (both["test_accuracy"] - both["test_accuracy_ref"]).to_numpy(dtype=float)
                dm, dlo, dhi = t_interval(d, level)
                rec.update({"diff": dm, "diff_low": dlo, "diff_high": dhi, "half_width": (dhi - dlo) / 2})
                if len(d) >= 2:
                    sd = float(np.std(d, ddof=1))
                    rec["diff_p"] = float(sstats.ttest_1samp(d, 0.0).pvalue) if sd > 0 else 1.0 if dm == 0 else 0.0
                    z = float(sstats.norm.ppf(0.5 + level / 2))
                    rec["seeds_needed"] = float(max(2, math.ceil((z * sd / precision) ** 2)))
                rec["overlap_diff"] = float((both["overlap_change"] - both["overlap_change_ref"]).mean())
            out.append(rec)
    return pd.DataFrame(out)


def curves_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, depth, Vbar, sigma, seed, epoch): training loss, test-curve accuracy and loss."""
    out: list[dict[str, Any]] = []
    for r in table.to_dict(orient="records"):
        for e, (loss, acc, tl) in enumerate(zip(r["loss_history"], r["curve_accuracy"], r["curve_loss"], strict=True)):
            out.append(
                {
                    "dataset": r["dataset"],
                    "depth": r["depth"],
                    "vbar": r["vbar"],
                    "sigma": r["sigma"],
                    "seed": r["seed"],
                    "epoch": e + 1,
                    "train_loss": float(loss),
                    "curve_accuracy": float(acc),
                    "curve_loss": float(tl),
                }
            )
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------------------- verdict

#: the stream of ``(Vbar, sigma) = (0, 0)`` must not move: value matrices 0 leave ``h^L = h^0`` exactly
STILL = 1e-6


def _complete(cfg: AccuracyMapConfig, table: pd.DataFrame) -> Check:
    want = {
        (ds, depth, vb, sg, k)
        for ds in cfg.datasets
        for depth in cfg.depths
        for vb, sg in _cells(cfg)
        for k in range(cfg.seeds)
    }
    cols = ["dataset", "depth", "vbar", "sigma", "seed"]
    keys = [tuple(r) for r in table[cols].itertuples(index=False)] if len(table) else []
    have = {(str(a), int(b), str(c), float(d), int(e)) for a, b, c, d, e in keys}
    missing = sorted(_unit_id(*u) for u in want - have)
    extra = sorted(_unit_id(*u) for u in have - want)
    bad = []
    for r in table.to_dict(orient="records") if len(table) else []:
        vals = [r["test_accuracy"], r["test_loss"], r["train_accuracy"], r["train_loss"]]
        curves = [np.asarray(r[c], dtype=float) for c in ("loss_history", "curve_accuracy", "curve_loss")]
        if not (np.isfinite(vals).all() and all(len(c) == cfg.epochs and np.isfinite(c).all() for c in curves)):
            bad.append(_unit_id(r["dataset"], r["depth"], r["vbar"], r["sigma"], r["seed"]))
    dup = len(keys) - len(have)
    ok = not missing and not extra and not dup and not bad and bool(want)
    return check(
        "every planned run finished once, with finite accuracies, losses and learning curves",
        ok,
        f"{len(have)} of {len(want)} runs; {len(missing)} missing, {len(extra)} unplanned, {dup} duplicated, "
        f"{len(bad)} with non-finite numbers",
        {"expected": len(want), "missing": missing[:20], "unplanned": extra[:20], "duplicates": dup, "bad": bad},
        source="the plan: tasks x depths x Vbar x sigma x seeds",
    )


def _quarters(epochs: int) -> tuple[np.ndarray, np.ndarray]:
    parts = np.array_split(np.arange(epochs), 4)
    return parts[2], parts[3]


def _grows_with_sigma(cfg: AccuracyMapConfig, name: str, vbar: str, g: pd.DataFrame, level: float) -> Check:
    """The overlap gained through depth at initialisation grows with ``sigma`` (model A), paired by seed.

    Per depth ``L`` and seed ``k`` the gain ``G(sigma)`` (mean overlap at layer ``L`` minus at layer 0);
    the runs at two noise strengths share every weight but the noise scale, so the differences
    ``G(sigma_{i+1}) - G(sigma_i)`` are compared with their own spread over the pairs ``(L, k)``: no step
    reversed beyond the two-sided Student-t quantile (Bonferroni over the steps) times its standard
    error, and the whole change ``G(sigma_max) - G(sigma_min)`` positive beyond the one-sided quantile,
    all at ``level``. Pooled over the depths: model A's layers resolve the same horizon at every ``L``,
    so the noise's effect is one quantity (its value per depth is in the detail).
    """
    label = f"{name}, {vbar_label(vbar)}"
    what = (
        f"{label}: the overlap the tokens gain through depth at initialisation grows with sigma "
        "(model A: the common noise clusters them)"
    )
    rows = g[g["vbar"] == vbar]
    rows = rows.assign(gain=_overlap_change(rows)) if len(rows) else rows.assign(gain=[])
    wide = rows.pivot_table(index=["depth", "seed"], columns="sigma", values="gain")
    wide = wide.reindex(columns=cfg.sigmas).dropna()
    s = len(wide)
    if s < 2:
        return check(what, False, f"{s} runs with every sigma; the paired test needs 2", source=f"level {level:g}")
    gains = wide.to_numpy(dtype=float)  # (seeds, sigmas)
    steps = np.diff(gains, axis=1)
    mean, se = steps.mean(axis=0), steps.std(axis=0, ddof=1) / math.sqrt(s)
    t_step = float(sstats.t.ppf(1.0 - (1.0 - level) / (2 * steps.shape[1]), s - 1))
    pairs = [f"{a:g}->{b:g}" for a, b in itertools.pairwise(cfg.sigmas)]
    reversed_ = [p for p, mu, e in zip(pairs, mean, se, strict=True) if mu < -t_step * e]
    total = gains[:, -1] - gains[:, 0]
    t_total = float(sstats.t.ppf(level, s - 1))
    bound = t_total * float(total.std(ddof=1)) / math.sqrt(s)
    ok = bool(not reversed_ and total.mean() > bound and np.isfinite(total).all())
    per_depth = pd.Series(total, index=wide.index).groupby(level="depth").mean()
    detail = (
        f"gain {', '.join(f'{x:.4f}' for x in gains.mean(axis=0))} at sigma = "
        f"{', '.join(f'{x:g}' for x in cfg.sigmas)} ({s} (depth, seed) pairs); whole change {total.mean():+.4f} "
        f"(needs > {bound:.4f}; per depth {', '.join(f'L={d}: {v:+.4f}' for d, v in per_depth.items())}); "
        f"{len(reversed_)} of {steps.shape[1]} steps reversed beyond {t_step:.2f} se"
        + (": " + ", ".join(reversed_) if reversed_ else "")
    )
    return check(
        what,
        ok,
        detail,
        {"sigma": cfg.sigmas, "gain": gains.mean(axis=0), "step": mean, "step_se": se, "reversed": reversed_},
        t_step,
        f"paired over (depth, seed), Student t ({s - 1} df): steps two-sided Bonferroni, whole change one-sided, level "
        f"{level:g}",
    )


def map_checks(cfg: AccuracyMapConfig, table: pd.DataFrame) -> list[Check]:
    """The checks that make the map worth reading (module docstring); no check assumes a direction."""
    checks = [_complete(cfg, table)]
    if table.empty:
        return checks
    summ = map_table(table, cfg.level, cfg.precision)
    groups = [(ds, depth) for ds in cfg.datasets for depth in cfg.depths]
    m = len(groups)
    fw = 1.0 - (1.0 - cfg.level) / m  # each (task, depth)'s level, family-wise over them
    q3, q4 = _quarters(cfg.epochs)
    for ds, depth in groups:
        name = f"{ds}, L={depth}"
        g = table[(table["dataset"] == ds) & (table["depth"] == depth)]
        ref = g[(g["vbar"] == REFERENCE[0]) & (g["sigma"] == REFERENCE[1])]
        if ref.empty:
            checks.append(check(f"{name}: the standard initialisation was trained", False, "no reference runs"))
            continue
        s = len(ref)
        # (1) training works: beyond chance over seeds and beyond the test set's binomial noise
        checks += chance_checks(f"{name}, standard init", ref, cfg.level, m, "(task, depth)")
        # (2) converged: the learning curve's last quarter gains less than `plateau` over the third
        curves = np.array([np.asarray(c, dtype=float) for c in ref["curve_accuracy"]])
        if curves.ndim != 2 or curves.shape[1] != cfg.epochs:
            checks.append(check(f"{name}: training converged", False, "learning curves missing or of wrong length"))
        else:
            gain = curves[:, q4].mean(axis=1) - curves[:, q3].mean(axis=1)
            if s >= 2:
                upper = float(gain.mean() + sstats.t.ppf(fw, s - 1) * gain.std(ddof=1) / math.sqrt(s))
                what = f"upper one-sided t bound ({s - 1} df, level {fw:g}) of the mean gain {gain.mean():+.4f}"
            else:
                upper, what = float(gain.mean()), "the gain (one seed)"
            checks.append(
                at_most(
                    f"{name}: training converged (standard init: test accuracy gains under {cfg.plateau:g} "
                    "from the third to the last quarter of the epochs)",
                    upper,
                    cfg.plateau,
                    what,
                    f"the learning curve on {cfg.curve_examples} test examples after every epoch; epochs "
                    f"{q3[0] + 1}-{q3[-1] + 1} against {q4[0] + 1}-{q4[-1] + 1}",
                )
            )
        # (3) precision: every cell's paired interval narrower than `precision`
        cells = summ[(summ["dataset"] == ds) & (summ["depth"] == depth) & ~summ["reference"]]
        for r in cells.itertuples():
            hw = float(r.half_width)
            checks.append(
                at_most(
                    f"{name}, {r.condition}: the paired difference to standard is resolved to {cfg.precision:g}",
                    hw if np.isfinite(hw) else math.inf,
                    cfg.precision,
                    f"half-width of the {cfg.level:.0%} t-interval of the paired difference "
                    f"({r.diff:+.4f}, {r.runs} seeds; {r.seeds_needed:g} seeds would reach it)",
                    "the stated precision (config: precision)",
                )
            )
        # (4) the noise conditions differ at initialisation as model A predicts
        if ("zero", 0.0) in _cells(cfg):
            still = g[(g["vbar"] == "zero") & (g["sigma"] == 0.0)]
            moved = float(np.max(np.abs(_overlap_change(still)))) if len(still) else math.inf
            checks.append(
                at_most(
                    f"{name}: Vbar=0, sigma=0 leaves the tokens where they are through depth at initialisation",
                    moved,
                    STILL,
                    "largest |mean overlap at layer L - at layer 0| over seeds",
                    "value matrices 0 silence every attention branch: h^L = h^0",
                )
            )
    # (5) pooled over depths (model A: the same horizon at every depth), per task and Vbar
    if len(cfg.sigmas) >= 2:
        fam = len(cfg.datasets) * len(cfg.vbars)
        for ds in cfg.datasets:
            for vb in cfg.vbars:
                g = table[table["dataset"] == ds]
                checks.append(_grows_with_sigma(cfg, ds, vb, g, 1.0 - (1.0 - cfg.level) / fam))
    return checks


def _notes(cfg: AccuracyMapConfig, table: pd.DataFrame, summ: pd.DataFrame) -> list[str]:
    notes = [
        f"paired difference of test accuracy to the standard initialisation (Vbar=0, sigma=1), {cfg.level:.0%} "
        "t-interval over seeds; hurts / helps = interval below / above 0:"
    ]
    for ds in cfg.datasets:
        s = summ[(summ["dataset"] == ds) & ~summ["reference"]] if len(summ) else summ
        if s.empty:
            continue
        hurt = s[s["diff_high"] < 0]
        helps = s[s["diff_low"] > 0]
        notes.append(
            f"{ds}: {len(hurt)} cells hurt, {len(helps)} helped, {len(s) - len(hurt) - len(helps)} unchanged "
            f"of {len(s)}"
        )
        for r in s.itertuples():
            notes.append(
                f"  L={r.depth:<3} {r.condition:<18} acc {r.mean:.4f}  diff {r.diff:+.4f} "
                f"[{r.diff_low:+.4f}, {r.diff_high:+.4f}]  overlap gained {r.overlap_change:+.4f} "
                f"(vs standard {r.overlap_diff:+.4f})"
            )
        runs = table[table["dataset"] == ds]
        oc = _overlap_change(runs)
        acc = runs["test_accuracy"].to_numpy(dtype=float)
        if len(runs) >= 3 and np.ptp(oc) > 0 and np.ptp(acc) > 0:
            rho, p = sstats.spearmanr(oc, acc)
            notes.append(f"{ds}: Spearman rho(overlap gained at init, test accuracy) = {rho:.2f} (p = {p:.2g})")
        if len(s) >= 3 and np.ptp(s["overlap_diff"]) > 0 and np.ptp(s["diff"]) > 0:
            rho, p = sstats.spearmanr(s["overlap_diff"], s["diff"])
            notes.append(
                f"{ds}: across cells, Spearman rho(paired overlap difference, paired accuracy difference) = "
                f"{rho:.2f} (p = {p:.2g}, {len(s)} cells)"
            )
    return notes


class AccuracyMap(Experiment):
    name = "accuracy-map"
    summary = "paired accuracy difference to the standard init over depth x value-noise strength x task"
    Config = AccuracyMapConfig
    checkpoints = True
    quick = {
        "depths": [8],
        "sigmas": [0.0, 1.0],
        "seeds": 8,
        "epochs": 4,
        "tokens_per_side": 2,
        "pointer_tokens": 6,
        "permute_tokens": 6,
        "pointer_hops": 1,
        "permute_hops": 1,
        "pointer_train": 800,
        "pointer_test": 300,
        "curve_examples": 200,
        "profile_examples": 64,
        "precision": 0.25,
        "plateau": 0.1,
    }

    def plan(self, cfg: AccuracyMapConfig) -> list[dict[str, Any]]:
        # seeds outermost: an interrupted map holds whole paired sets of the first seeds
        return [
            {"id": _unit_id(ds, depth, vb, sg, k), "dataset": ds, "depth": depth, "vbar": vb, "sigma": sg, "seed": k}
            for k in range(cfg.seeds)
            for depth in cfg.depths
            for ds in cfg.datasets
            for vb, sg in _cells(cfg)
        ]

    def unit_cost(self, cfg: AccuracyMapConfig, unit: dict[str, Any]) -> float:
        return float(cfg.epochs * int(unit["depth"]))

    def unit_memory(self, cfg: AccuracyMapConfig, unit: dict[str, Any], device: str) -> int:
        return train_memory(cfg, str(unit["dataset"]), int(unit["depth"]), device)

    def run_unit(
        self,
        cfg: AccuracyMapConfig,
        unit: dict[str, Any],
        device: str,
        progress: Progress | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> list[dict[str, Any]]:
        data = load_data(cfg, unit["dataset"])
        depth, vb, sg, k = int(unit["depth"]), str(unit["vbar"]), float(unit["sigma"]), int(unit["seed"])
        model = build(cfg, data, depth, vb, sg, k).to(device)
        order_seed = derive_seed(cfg.seed, data.name, k, "order")
        scaled = None if progress is None else (lambda f: progress(f * depth))
        out = fit(cfg, data, model, device, order_seed, scaled, checkpoint, cfg.curve_examples)
        row: dict[str, Any] = {
            "dataset": data.name,
            "depth": depth,
            "vbar": vb,
            "sigma": sg,
            "condition": condition_label(vb, sg),
            "seed": k,
        }
        row.update(out)
        return [row]

    def tables(self, cfg: AccuracyMapConfig, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        return {
            "map": map_table(table, cfg.level, cfg.precision),
            "curves": curves_table(table),
            "depth": depth_table(table, ("dataset", "depth", "vbar", "sigma", "seed")),
        }

    def verdict(self, cfg: AccuracyMapConfig, table: pd.DataFrame) -> dict[str, Any]:
        summ = map_table(table, cfg.level, cfg.precision) if len(table) else pd.DataFrame()
        out = verdict(map_checks(cfg, table), _notes(cfg, table, summ) if len(summ) else [])
        out["table"] = summ.to_dict(orient="records")
        return out

    def trajectory(self, cfg: AccuracyMapConfig, device: str = "cpu") -> dict[str, Any]:
        """The tokens of the first test example of the first task through the deepest model at initialisation
        (standard initialisation, seed index 0): directions ``h^l_i / |h^l_i|``, ``l = 0..L``."""
        data = load_data(cfg, cfg.datasets[0])
        depth = max(cfg.depths)
        model = build(cfg, data, depth, *REFERENCE, 0).to(device)
        return tokens_through_depth(model, data.x_test, f"{data.name}, L={depth}, standard init: tokens through depth")

    def figures(self, cfg: AccuracyMapConfig, table: pd.DataFrame) -> dict[str, Any]:
        from .accuracy_map_figures import map_figures

        return map_figures(table, map_table(table, cfg.level, cfg.precision))
