r"""``probe``: randomly initialised library Transformers next to the matched SDE of model A.

For every architecture (``gpt2`` pre-LN, ``bert`` post-LN, ``albert`` post-LN with
one block shared by all layers) and every hidden size ``d``, one network of depth
``L`` is built from its ``transformers`` config class (nothing downloaded; the
library's own random initialisation, seeded; eval mode, dropout 0) and
``sequences`` independent inputs of ``n`` tokens (``inputs_embeds`` with i.i.d.
``N(0, 1)`` entries, the same inputs for every architecture of a given ``d``) go
through it. At every layer ``l = 0..L`` the normalised hidden states give the
pooled pairwise cosine histogram and quantiles, clusters, collapsed and antipodal
configurations, antipodal *pairs*, the energy ``E_beta``, the effective rank, the
attention entropy and the coherence of the token moves
(:mod:`tokensde.nn.probe`).

The prediction (:func:`tokensde.nn.probe.sde_prediction`) is model A's limit
(``Vbar = 0``, ``sigma = 1``, ``A = I``) started from the *same* layer-0
configurations, with ``beta_eff`` matched to the network's layer-0 attention
entropy and the time of each layer matched to the network's measured
single-token clock ``s_l`` (the derivation is in :mod:`tokensde.nn.probe`). The
same metrics are reported for it (prefix ``sde_``), with the Wasserstein-1
distance ``w1`` between the two pooled cosine distributions per layer.

One unit per ``(architecture, hidden)``; one row per ``(architecture, hidden, layer)``
with the column ``layer``. ``hist`` and ``sde_hist`` hold the bin counts of
``bins`` equal bins of ``[-1, 1]`` (pairs ``i < j`` of all sequences).

Verdict ("plots and numbers"; :mod:`.verdict`): checks that can fail but test the
pipeline and the matched SDE, not an agreement of network and SDE: every planned
unit has ``L + 1`` layers with finite metrics and histograms holding every pair; the
networks called ``L`` blocks (``L`` distinct ones, ALBERT one); the matched
``beta_eff`` reproduces the network's layer-0 entropy (to ``1e-4``); and the SDE's
realised squared tangent moves equal the network's clock ``s_l`` it was matched to,
tested per layer (``sde_s`` against ``s`` with the standard error ``sde_s_se`` of the
``B`` systems' martingale increments ``sum_k (mean_i |P dx_i|^2 - (d-1) mean_i |a_i|^2 dt)``:
Student ``t`` with ``B - 1`` degrees of freedom, Bonferroni over all cells at
``level``) and pooled over the layers of each unit (:func:`~tokensde.experiments.verdict.pooled_z`
of the relative deviations, Bonferroni over units), so that a bias of a few percent
common to the layers shows (at the defaults 0.25% at ``d = 64`` and 0.13% at
``d = 256``: 3.1 pooled standard errors; 2.4% at ``--quick``). The scheme's own bias is
``O(s_l^2 / (K d))`` per layer, far below the Monte Carlo error. A noise scale off
by 1.1 (the clock 21% high) or sub-steps that each take the whole layer's time (the
clock ``K`` times too high; the SDE's own martingale does not see this one) fail
both clock checks (tests/test_fail_injection_ap.py). What the data show (net vs SDE
at the last layer) goes into ``notes``.

Expected deviations: ALBERT's shared weights are not independent layers (its
"noise" is one matrix applied ``L`` times), GPT-2 is causal, and a network is one
draw of the weights for all its inputs while each SDE system has its own noise.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator
from scipy import stats as sstats
from scipy.stats import wasserstein_distance

from .. import metrics
from ..nn import probe as nnp
from ..noise import derive_seed
from ..sphere import normalize
from .base import Experiment, ExperimentConfig, Progress, each_in
from .verdict import Check, at_most, check, pooled_z, verdict

__all__ = ["Probe", "ProbeConfig", "METRICS"]

Arch = Literal["gpt2", "bert", "albert"]

METRICS = (
    "n_clusters",
    "collapsed",
    "antipodal",
    "energy",
    "effective_rank",
    "mean_overlap",
    "min_overlap",
    "max_overlap",
    "mean_cos",
    "antipodal_pairs",
    "q01",
    "q10",
    "q50",
    "q90",
    "q99",
)
"""Per-layer metrics reported for the network and (prefixed ``sde_``) for the SDE."""

MAX_ENTRIES = 2**31
ENTROPY_TOL = 1e-4


class ProbeConfig(ExperimentConfig):
    """Configuration of ``probe`` (every field has a default)."""

    architectures: list[Arch] = Field(
        default=["gpt2", "bert", "albert"], min_length=1, description="architectures: gpt2, bert, albert (distinct)"
    )
    layers: int = Field(
        default=24, ge=1, le=256, description="depth L, in [1, 256] (the issue's claim is about L >= 24)"
    )
    hidden: list[int] = Field(
        default=[64, 256], min_length=1, description="hidden sizes d, each in [8, 4096] and a multiple of heads"
    )
    heads: int = Field(default=4, ge=1, le=64, description="attention heads, in [1, 64]")
    n: int = Field(default=32, ge=2, le=1024, description="tokens per sequence, in [2, 1024]")
    sequences: int = Field(
        default=256,
        ge=2,
        le=100_000,
        description="independent random inputs (one SDE system each), in [2, 1e5]; "
        "sequences * n * max(hidden) * (layers + 1) at most 2^31",
    )
    bins: int = Field(default=100, ge=10, le=1000, description="histogram bins on [-1, 1], in [10, 1000]")
    eps: float = Field(default=metrics.EPS, gt=0.0, lt=0.5, description="cluster and antipodal threshold, in (0, 0.5)")
    beta: float = Field(
        default=1.0, ge=0.0, le=50.0, description="inverse temperature of the energy E_beta, in [0, 50]"
    )
    substeps: int = Field(default=8, ge=1, le=1000, description="SDE Euler steps per layer, in [1, 1000]")
    level: float = Field(default=0.99, gt=0.5, lt=1.0, description="family-wise level of the clock check, in (0.5, 1)")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="base seed, in [0, 2^63)")

    @field_validator("architectures")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("architectures must be distinct")
        return v

    @field_validator("hidden")
    @classmethod
    def _hidden_range(cls, v: list[int]) -> list[int]:
        return each_in(v, 8, 4096, "hidden size")

    @model_validator(mode="after")
    def _fits(self) -> ProbeConfig:
        for h in self.hidden:
            if h % self.heads:
                raise ValueError(f"hidden: each value must be a multiple of heads = {self.heads}, got {h}")
        size = self.sequences * self.n * max(self.hidden) * (self.layers + 1)
        if size > MAX_ENTRIES:
            raise ValueError(f"sequences: sequences * n * max(hidden) * (layers + 1) must be at most 2^31, got {size}")
        return self


def _unit_id(arch: str, hidden: int) -> str:
    return f"{arch}-d{hidden}"


def _network(cfg: ProbeConfig, arch: str, d: int, device: str) -> torch.nn.Module:
    """The probed network of ``(arch, d)``: weights seeded from ``(seed, arch, d)``, on ``device``."""
    seed = derive_seed(cfg.seed, "probe", "weights", arch, d)
    return nnp.build_model(arch, cfg.layers, d, cfg.heads, cfg.n, seed).to(device)


def _parameters(arch: str, layers: int, d: int, n: int) -> int:
    """Parameters of the probed network: embeddings, ``12 d^2 + 13 d`` per block (``layers`` blocks; ALBERT:
    one, and its input projection), the final or embedding LayerNorm."""
    block = 12 * d * d + 13 * d
    embed = 8 * d + n * d
    if arch == "gpt2":
        return embed + layers * block + 2 * d
    if arch == "bert":
        return embed + 4 * d + layers * block
    return embed + 4 * d + d * d + d + block


def _inputs(cfg: ProbeConfig, d: int, sequences: int, device: str) -> torch.Tensor:
    """The first ``sequences`` random-embedding inputs of width ``d`` (the same for every architecture)."""
    return nnp.random_inputs(sequences, cfg.n, d, derive_seed(cfg.seed, "probe", "inputs", d), device)


_Units = list[tuple[Any, pd.DataFrame]]


def _complete(cfg: ProbeConfig, table: pd.DataFrame, units: _Units) -> Check:
    """Every planned ``(architecture, hidden)`` has the rows of layers ``0..L``, finite metrics (net and SDE) and
    cosine histograms that hold every pair ``i < j`` of every sequence."""
    want = {(a, h) for a in cfg.architectures for h in cfg.hidden}
    have = {(str(a), int(d)) for (a, d), _ in units}
    cols = [c for m in METRICS for c in (m, f"sde_{m}")] + ["w1", "t", "s", "sde_s", "sde_s_se", "beta_eff"]
    missing_cols = [c for c in cols + ["hist", "sde_hist"] if c not in table.columns]
    pairs = cfg.sequences * cfg.n * (cfg.n - 1) // 2
    bad_layers, bad_finite, bad_hist = [], [], []
    for (arch, d), s in units:
        tag = f"{arch} d={d}"
        if sorted(s["layer"]) != list(range(cfg.layers + 1)):
            bad_layers.append(tag)
        if missing_cols:
            continue
        if not np.isfinite(s[cols].to_numpy(dtype=float)).all():
            bad_finite.append(tag)
        if not all(sum(h) == pairs for h in list(s["hist"]) + list(s["sde_hist"])):
            bad_hist.append(tag)
    absent = sorted(f"{a} d={h}" for a, h in want - have)
    ok = bool(units) and not (absent or missing_cols or bad_layers or bad_finite or bad_hist)
    return check(
        f"every (architecture, hidden) has layers 0..{cfg.layers} with finite metrics (net and SDE) and"
        " histograms holding every pair i < j",
        ok,
        f"{len(units)} of {len(want)} units (absent: {absent or 'none'}); missing columns: {missing_cols or 'none'};"
        f" missing layers: {bad_layers or 'none'}; non-finite: {bad_finite or 'none'};"
        f" histograms without {pairs} pairs per layer: {bad_hist or 'none'}",
        {
            "units": len(units),
            "absent": absent,
            "missing_layers": bad_layers,
            "non_finite": bad_finite,
            "bad_histograms": bad_hist,
            "pairs": pairs,
        },
        source="the plan (architectures x hidden) and sequences * n (n-1) / 2 pairs per layer",
    )


def _blocks(cfg: ProbeConfig, units: _Units) -> Check:
    """The networks called ``L`` blocks: ``L`` distinct ones, ALBERT one shared block."""
    bad = []
    for (arch, d), s in units:
        want = 1 if arch == "albert" else cfg.layers
        if not ((s["calls"] == cfg.layers).all() and (s["blocks"] == want).all()):
            bad.append(f"{arch} d={d}: {s['blocks'].iloc[0]} blocks, {s['calls'].iloc[0]} calls")
    return check(
        "the networks call L blocks (L distinct ones; ALBERT one shared block)",
        bool(units) and not bad,
        "; ".join(bad) or f"all {len(units)} units: {cfg.layers} calls, blocks as expected",
        {"wrong": bad},
        source="the architectures' configs (num_hidden_layers; ALBERT num_hidden_groups = inner_group_num = 1)",
    )


def _entropy_match(units: _Units) -> Check:
    """``beta_eff`` reproduces the network's layer-0 attention entropy (units with ``beta_eff`` strictly
    inside ``(0, BETA_MAX)``; at a bound the network's entropy is outside model A's range)."""
    devs = {}
    at_bound = []
    for (arch, d), s in units:
        r = s.iloc[0]
        if r["beta_eff"] in (0.0, nnp.BETA_MAX):
            at_bound.append(f"{arch} d={d}")
        else:
            devs[f"{arch} d={d}"] = abs(float(r["entropy_matched"]) - float(r["entropy_net0"]))
    worst = max(devs.values(), default=0.0)
    c = at_most(
        "beta_eff reproduces the network's layer-0 attention entropy",
        worst,
        ENTROPY_TOL,
        "max |H_A(beta_eff) - H_net|",
        "bisection to 1e-6 in beta and |dH_A/dbeta| = beta Var_w <= BETA_MAX = 50 give <= 5e-5",
        ".2g",
    )
    detail = c.detail + f" over {len(devs)} units; beta_eff at a bound (exempt): {at_bound or 'none'}"
    return check(
        c.name,
        c.passed and bool(units),
        detail,
        {**c.values, "deviations": devs, "at_bound": at_bound},
        c.tolerance,
        c.source,
    )


def _clock_checks(cfg: ProbeConfig, table: pd.DataFrame, units: _Units) -> list[Check]:
    r"""The SDE's realised squared tangent moves against the network's clock ``s_l``, per layer and pooled per unit.

    Per cell ``(unit, layer l >= 1)``: ``sde_s`` (the mean over the ``B`` systems of the realised
    ``sum_k mean_i |P dx_i|^2`` through the layer) against ``s_l``. The batch mean of the
    conditional expectations is ``s_l`` exactly (``dt`` is set so), so ``sde_s - s_l`` is the mean of ``B``
    independent martingale increments, whose standard error ``sde_s_se`` is estimated from them:
    ``|sde_s - s_l| <= t * sde_s_se`` with ``t`` the two-sided Student quantile with ``B - 1`` degrees of
    freedom, Bonferroni over the cells. Pooled per unit (:func:`pooled_z` over its layers, the increments
    of different layers uncorrelated): a bias of a few percent common to the layers shows there. The bias
    of the scheme is ``O(s_l^2 / (K d))`` per layer (the normalisation), far below both tolerances.
    """
    name_cell = "per layer, the SDE's mean squared tangent move equals the network's clock s_l"
    name_pool = "pooled over the layers of each unit, the SDE's squared tangent moves add up to the network's clock"
    if not units or not {"s", "sde_s", "sde_s_se"} <= set(table.columns):
        why = "no units" if not units else "the table has no column sde_s_se (rerun the units)"
        return [check(name_cell, False, why), check(name_pool, False, why)]
    cells = table[table["layer"] >= 1]
    est = cells["sde_s"].to_numpy(dtype=float)
    tgt = cells["s"].to_numpy(dtype=float)
    se = cells["sde_s_se"].to_numpy(dtype=float)
    fams = [f"{a} d={d}" for a, d in zip(cells["architecture"], cells["hidden"], strict=True)]
    labels = [f"{f} l={int(lyr)}" for f, lyr in zip(fams, cells["layer"], strict=True)]
    m, df = len(est), cfg.sequences - 1
    tq = float(sstats.t.ppf(1.0 - (1.0 - cfg.level) / (2.0 * max(m, 1)), df))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (est - tgt) / se, np.where(est == tgt, 0.0, np.inf))
    bad = np.flatnonzero(~(np.abs(z) <= tq))
    worst = int(np.nanargmax(np.abs(z))) if m else 0
    detail = (
        f"{m - len(bad)}/{m} cells with |sde_s - s_l| <= {tq:.2f} se; largest |t| = {abs(z[worst]):.2f}"
        f" ({labels[worst]}: {est[worst]:.4g} vs {tgt[worst]:.4g})"
    )
    if len(bad):
        detail += "; outside: " + ", ".join(
            f"{labels[i]}: {est[i]:.4g} vs {tgt[i]:.4g} (t = {z[i]:+.2f})" for i in bad[:10]
        )
        detail += f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
    per_cell = check(
        name_cell,
        m > 0 and len(bad) == 0,
        detail,
        {
            "cells": m,
            "inside": m - len(bad),
            "t_limit": tq,
            "max_abs_t": float(np.abs(z).max()) if m else None,
            "ratio": float(est.sum() / tgt.sum()) if tgt.sum() > 0 else None,
        },
        tq,
        f"two-sided Student t with B - 1 = {df} degrees of freedom, Bonferroni over {m} cells"
        f" at family-wise level {cfg.level:g}",
    )
    # weights 1/s_l: each unit's numerator is sum_l (sde_s / s_l - 1), its layers' relative deviations
    w = np.where(tgt > 0, 1.0 / np.where(tgt > 0, tgt, 1.0), 1.0)
    pooled = pooled_z(name_pool, est, se, tgt, fams, cfg.level, "unit", scale=w)
    return [per_cell, pooled]


class Probe(Experiment):
    name = "probe"
    summary = "Randomly initialised GPT-2, BERT and ALBERT stacks: per-layer token geometry next to the matched SDE"
    Config = ProbeConfig
    quick = {"hidden": [64], "n": 16, "sequences": 16, "substeps": 2, "bins": 40}

    def plan(self, cfg: ProbeConfig) -> list[dict[str, Any]]:
        return [{"id": _unit_id(a, h), "architecture": a, "hidden": h} for a in cfg.architectures for h in cfg.hidden]

    def unit_cost(self, cfg: ProbeConfig, unit: dict[str, Any]) -> float:
        h = int(unit["hidden"])
        return float((cfg.layers + 1) * cfg.sequences * cfg.n * h * (h + cfg.n * cfg.substeps)) / 1e6

    def unit_memory(self, cfg: ProbeConfig, unit: dict[str, Any], device: str) -> int:
        """The network's forward pass (parameters, inputs, every layer's hidden states as cloned by the hooks
        and stacked, every layer's ``B x heads x n x n`` attention maps, one layer's temporaries); then, beside
        the states, the maps, their normalised copy and ``x0`` in float64: the attention entropies (float64
        maps), the matching of ``beta`` (``n x n`` float64 scores), or the matched SDE (float64 noise stream of
        the ``auto`` route, Euler steps) with the per-layer metrics and the pooled pairwise cosines of the
        network and the SDE (copies, quantiles, histogram and Wasserstein distance)."""
        from ..sizes import metrics_bytes, stream_bytes, value_noise_step_bytes

        arch, d = str(unit["architecture"]), int(unit["hidden"])
        L, n, bsz, heads = cfg.layers, cfg.n, cfg.sequences, cfg.heads
        bnd4, maps = bsz * n * d * 4, bsz * heads * n * n
        states = (L + 1) * bnd4
        net = 4 * _parameters(arch, L, d, n) + bnd4 + 2 * states + L * maps * 4 + 15 * bnd4 + 3 * maps * 4
        held = 2 * states + L * maps * 4 + (L + 1) * bsz * n * 4 + bsz * n * d * 8
        entropy = 5 * maps * 8
        match = 6 * bsz * n * n * 8 + n * n
        kernel = n < d
        pairs = bsz * n * (n - 1) // 2
        sde = stream_bytes(bsz, (min(n, d), d) if kernel else (d, d), 8) + 3 * bsz * n * d * 8
        sde += value_noise_step_bytes(bsz, n, d, 8, device, kernel) + metrics_bytes(bsz, n, d, 8)
        sde += 128 * pairs + 2 * bsz * n * n * 8 + 16 * n * n
        return int(max(net, held + max(entropy, match, sde)))

    def trajectory(self, cfg: ProbeConfig, device: str = "cpu") -> dict[str, Any]:
        """The tokens of one input sequence through the layers of the first architecture (first hidden size)."""
        arch, d = cfg.architectures[0], cfg.hidden[0]
        trace = nnp.run_network(_network(cfg, arch, d, device), arch, _inputs(cfg, d, 1, device))
        u = normalize(trace.states[:, 0].double())  # (L+1, n, d)
        return {
            "x": u.cpu().numpy(),
            "times": np.arange(u.shape[0], dtype=float),
            "title": f"{arch} (d = {d}), random initialisation: tokens through the layers",
            "time_label": "layer",
        }

    def run_unit(
        self, cfg: ProbeConfig, unit: dict[str, Any], device: str, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        arch, d = str(unit["architecture"]), int(unit["hidden"])
        L, n, bsz = cfg.layers, cfg.n, cfg.sequences
        tick = self.unit_cost(cfg, unit) / (L + 2)
        model = _network(cfg, arch, d, device)
        params = sum(p.numel() for p in model.parameters())
        distinct = len(nnp.blocks(model, arch))
        trace = nnp.run_network(model, arch, _inputs(cfg, d, bsz, device))
        del model
        if progress is not None:
            progress(tick)
        u = normalize(trace.states)  # (L+1, B, n, d), float32 on the device
        causal = arch == "gpt2"
        ent = [nnp.attention_entropy(a) for a in trace.attentions]
        x0 = u[0].double()
        beta_eff = nnp.match_beta(x0, ent[0], causal)
        ent_matched = nnp.model_a_entropy(x0, beta_eff, causal)
        clock = np.array([float(nnp.tangent_sq(u[lyr], u[lyr + 1]).double().mean()) for lyr in range(L)])
        coh = [math.nan] + [nnp.coherence(u[lyr], u[lyr + 1]) for lyr in range(L)]

        rows: list[dict[str, Any]] = []
        prev: list[torch.Tensor] = []

        def observe(lyr: int, xs: torch.Tensor) -> None:
            net, cos_net = nnp.layer_metrics(u[lyr], cfg.beta, cfg.eps, cfg.bins)
            sde, cos_sde = nnp.layer_metrics(xs, cfg.beta, cfg.eps, cfg.bins)
            row: dict[str, Any] = {
                "architecture": arch,
                "hidden": d,
                "layer": lyr,
                "heads": cfg.heads,
                "layers": L,
                "n": n,
                "sequences": bsz,
                "params": params,
                "blocks": distinct,
                "calls": trace.calls,
                "shared_weights": arch == "albert",
                "causal": causal,
                "beta_eff": beta_eff,
                "entropy_net0": ent[0],
                "entropy_matched": ent_matched,
                "attn_entropy": ent[lyr] if lyr < L else math.nan,
                "sde_attn_entropy": nnp.model_a_entropy(xs, beta_eff, False),
                "s": float(clock[lyr - 1]) if lyr > 0 else 0.0,
                "coherence": coh[lyr],
                "sde_coherence": nnp.coherence(prev[0], xs) if prev else math.nan,
                **{k: v for k, v in net.items()},
                **{f"sde_{k}": v for k, v in sde.items()},
                "w1": float(wasserstein_distance(cos_net, cos_sde)),
            }
            rows.append(row)
            prev[:] = [xs]
            if progress is not None:
                progress(tick)

        sde = nnp.sde_prediction(
            x0, beta_eff, clock, cfg.substeps, cfg.seed, ("probe", "sde", arch, d), on_layer=observe
        )
        per_layer = sde.realised - sde.predicted  # (L, B): per layer and system, martingale increments, mean 0
        layer_se = per_layer.std(axis=1, ddof=1) / math.sqrt(bsz) if bsz > 1 else np.full(L, math.nan)
        resid = per_layer.sum(0)  # per system, a martingale with mean 0
        se = float(resid.std(ddof=1)) / math.sqrt(bsz) if bsz > 1 else math.nan
        z = float(resid.mean()) / se if se > 0 else (0.0 if float(np.abs(resid).max()) == 0.0 else math.inf)
        for row in rows:
            lyr = row["layer"]
            row["t"] = float(sde.t[lyr])
            row["sde_s"] = float(sde.realised[lyr - 1].mean()) if lyr > 0 else 0.0
            row["sde_s_se"] = float(layer_se[lyr - 1]) if lyr > 0 else 0.0
            row["clock_total"] = float(clock.sum())
            row["sde_clock_total"] = float(sde.realised.sum(0).mean())
            row["clock_z"] = z
        return rows

    def summarize(self, cfg: ProbeConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
        t = pd.DataFrame(rows)
        order = {a: i for i, a in enumerate(cfg.architectures)}
        t["_o"] = t["architecture"].map(order)
        return t.sort_values(["_o", "hidden", "layer"]).drop(columns="_o").reset_index(drop=True)

    def verdict(self, cfg: ProbeConfig, table: pd.DataFrame) -> dict[str, Any]:
        units = list(table.groupby(["architecture", "hidden"], sort=False))
        checks = [
            _complete(cfg, table, units),
            _blocks(cfg, units),
            _entropy_match(units),
            *_clock_checks(cfg, table, units),
        ]
        notes = [
            "s_l is the network's mean squared tangent move per layer; the SDE advances by"
            " dt = s_l / ((d-1) mean|a|^2), so the two runs move single tokens equally far: differences come"
            " from how *correlated* the moves of the tokens are (coherence: 1 = all tokens of a sequence moved by"
            " one vector), and from the drift the clock counts as noise."
        ]
        for (arch, d), s in units:
            last = s[s["layer"] == s["layer"].max()].iloc[0]
            first = s[s["layer"] == 0].iloc[0]
            notes.append(
                f"{arch} d={d}: beta_eff = {last['beta_eff']:.3g} (layer-0 entropy {first['entropy_net0']:.3f}),"
                f" clock t_L = {last['t']:.3g} (sum s_l = {last['clock_total']:.3g});"
                f" at layer {int(last['layer'])}: mean cos net {last['mean_cos']:.3f} vs SDE {last['sde_mean_cos']:.3f}"
                f" (layer 0: {first['mean_cos']:.3f}), W1 = {last['w1']:.3f},"
                f" clusters {last['n_clusters']:.1f} vs {last['sde_n_clusters']:.1f},"
                f" antipodal pairs {last['antipodal_pairs']:.2g} vs {last['sde_antipodal_pairs']:.2g},"
                f" energy {last['energy']:.3f} vs {last['sde_energy']:.3f};"
                f" mean coherence net {s['coherence'].mean():.2f} vs SDE {s['sde_coherence'].mean():.2f}"
            )
        notes.append(
            "the net-vs-SDE differences above are reported, not tested: a network is one quenched draw of the"
            " weights with a deterministic part the clock counts as noise, so no agreement is claimed."
        )
        if "albert" in cfg.architectures:
            notes.append(
                "albert shares one block's weights across all layers: the per-layer 'noise' is the same matrix every"
                " time, so it does not add up to a Brownian motion and the SDE is not its limit; deviations are"
                " expected there."
            )
        if "gpt2" in cfg.architectures:
            notes.append(
                "gpt2 is causal: beta_eff is matched with the causal mask, the SDE uses model A's full attention;"
                " layer L is the residual stream before ln_f."
            )
        return verdict(checks, notes)

    def interactive_figures(self, cfg: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        """The report's interactive (plotly) figures (beside the static ones of :meth:`figures`)."""
        return _interactive_figures(table, cfg)

    def figures(self, cfg: ProbeConfig, table: pd.DataFrame) -> dict[str, Any]:
        from .probe_figures import static_figures

        return static_figures(table, cfg.bins)


def _interactive_figures(t: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's interactive (plotly) figures, from the results table and the run's JSON config."""
    from .probe_figures import interactive  # beside the experiment's static figures

    return interactive(t, cfg)
