"""The accuracy map: the per-token task, the (Vbar, sigma) value matrices, the map table, and a verdict that fails
on realistic defects (small real runs through the pure pieces, and tables with a known truth)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from injection import failed, run
from scipy import stats as sstats

from tokensde.experiments.accuracy_map import AccuracyMap, AccuracyMapConfig, build, map_checks, map_table
from tokensde.nn import data as nndata
from tokensde.nn import transformer as nnt
from tokensde.nn.train import cross_entropy, depth_profile, evaluate
from tokensde.nn.transformer import TransformerClassifier, initialise, initialise_values, set_values

# --- the per-token task -------------------------------------------------------------------------------------------


def _decode(x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :n].argmax(-1), x[..., n:].argmax(-1)


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_permute_labels_follow_the_pointer_chain(hops):
    n, k = 7, 5
    d = nndata.permute(n, k, 200, 100, seed=3, hops=hops)
    assert d.readout == "tokens" and d.y_train.shape == (200, n) and d.x_train.shape == (200, n, n + k)
    assert torch.equal(d.x_train.sum(-1), torch.full((200, n), 2.0))  # one pointer and one value per token
    ptr, val = _decode(d.x_train, n)
    for b in range(20):
        assert sorted(ptr[b].tolist()) == list(range(n))  # a permutation of the positions
        for j in range(n):
            i = j
            for _ in range(hops):
                i = int(ptr[b, i])
            assert int(d.y_train[b, j]) == int(val[b, i])


def test_permute_labels_are_uniform_and_online_data_is_fresh():
    k = 4
    d = nndata.permute(6, k, 4000, 10, seed=0, online=True, hops=2)
    counts = torch.bincount(d.y_train.flatten(), minlength=k).numpy()
    stat, p = sstats.chisquare(counts)
    assert p > 1e-3, counts  # uniform labels; fixed seed, level 0.001
    a, b = d.train_data(1), d.train_data(2)
    assert not torch.equal(a[0], b[0]) and torch.equal(d.train_data(1)[0], a[0])
    small = nndata.load("permute", permute_tokens=6, permute_values=k, pointer_train=10, pointer_test=5)
    assert small.readout == "tokens" and small.y_test.shape == (5, 6)


def test_per_token_logits_loss_and_accuracy_count_every_token():
    m = TransformerClassifier(5, 9, 4, width=8, depth=2, heads=2, readout="tokens")
    x, y = torch.randn(6, 5, 9), torch.randint(0, 4, (6, 5))
    with torch.no_grad():
        logits = m(x)
    assert logits.shape == (6, 5, 4)
    ref = torch.nn.functional.cross_entropy(logits.permute(0, 2, 1), y)  # (B, C, n) form
    torch.testing.assert_close(cross_entropy(logits, y), ref)
    acc, loss = evaluate(m, x, y, batch=4)
    assert acc == pytest.approx(float((logits.argmax(-1) == y).float().mean()))
    assert loss == pytest.approx(float(ref), rel=1e-5)


# --- value matrices -----------------------------------------------------------------------------------------------


def test_values_are_model_a_layers_and_only_they_differ():
    depth, width = 9, 12
    models = {}
    for vbar, sigma in [(0.0, 1.0), (0.0, 0.3), (1.0, 0.0), (1.0, 1.0), (0.0, 0.0)]:
        m = TransformerClassifier(5, 3, 4, width=width, depth=depth, heads=2)
        initialise_values(m, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2), vbar, sigma)
        models[(vbar, sigma)] = m
    z = nnt.value_matrices(depth, width, torch.Generator().manual_seed(2))
    ref = dict(models[(0.0, 1.0)].named_parameters())
    for (vbar, sigma), m in models.items():
        for name, p in m.named_parameters():
            if not name.endswith("attn.v.weight"):
                assert torch.equal(p, ref[name]), name
        for layer, block in enumerate(m.blocks):
            want = vbar * torch.eye(width) / 3.0 + sigma * z[layer]  # Vbar / sqrt(L) + sigma Z_l / sqrt(d)
            torch.testing.assert_close(block.attn.v.weight.detach(), want, rtol=0, atol=1e-7)
    # (0, 1) is the standard initialisation of the accuracy experiment, draw for draw
    std = TransformerClassifier(5, 3, 4, width=width, depth=depth, heads=2)
    initialise(std, "standard", torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    for p, q in zip(std.parameters(), models[(0.0, 1.0)].parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="shape"):
        set_values(std, z[:3], 0.0, 1.0)


def test_the_layer_is_model_a_step_h_vbar_plus_sqrt_h_sigma_z():
    """Block output minus input = (Vbar / L + sigma Z_l / sqrt(d L)) applied to the attention average."""
    depth, width = 16, 8
    m = TransformerClassifier(4, 3, 2, width=width, depth=depth, heads=1)
    initialise_values(m, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), 1.0, 0.5)
    b = m.blocks[0]
    h = torch.randn(3, 4, width)
    y = b.norm1(h)
    q, k = b.attn.q(y), b.attn.k(y)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width), -1) @ y  # the attention average of the tokens
    z = nnt.value_matrices(depth, width, torch.Generator().manual_seed(1))[0]
    step = a @ (torch.eye(width) / depth + 0.5 * z / math.sqrt(depth)).T
    torch.testing.assert_close(b(h) - h, step, rtol=1e-4, atol=1e-5)


def test_zero_values_leave_the_stream_still_and_noise_clusters_it():
    data = nndata.pointer(8, 4, 10, 64, seed=0, hops=1)
    cfg = AccuracyMapConfig(datasets=["pointer"], width=32, heads=2)
    gains = {}
    for sigma in (0.0, 0.3, 1.0):
        m = build(cfg, data, 32, "zero", sigma, 0)
        prof = depth_profile(m, data.x_test)
        gains[sigma] = prof["mean_overlap"][-1] - prof["mean_overlap"][0]
    assert gains[0.0] == 0.0
    assert gains[0.3] < gains[1.0] and gains[1.0] > 0.05, gains


def test_seeds_pair_the_conditions_and_differ_across_depth_and_seed():
    cfg = AccuracyMapConfig(datasets=["digits"])
    d = nndata.load("digits")
    a, b = build(cfg, d, 4, "zero", 1.0, 0), build(cfg, d, 4, "identity", 0.3, 0)
    assert torch.equal(a.embed.weight, b.embed.weight) and torch.equal(a.pos, b.pos)
    assert not torch.equal(a.embed.weight, build(cfg, d, 4, "zero", 1.0, 1).embed.weight)
    assert not torch.equal(a.embed.weight, build(cfg, d, 5, "zero", 1.0, 0).embed.weight)


# --- config and plan ----------------------------------------------------------------------------------------------


def test_plan_is_the_whole_grid_seed_by_seed():
    cfg = AccuracyMapConfig(depths=[4, 16], seeds=2)
    plan = AccuracyMap().plan(cfg)
    assert len(plan) == 3 * 2 * 2 * 4 * 2 and len({u["id"] for u in plan}) == len(plan)
    assert [u["seed"] for u in plan[: len(plan) // 2]] == [0] * (len(plan) // 2)  # whole paired sets first
    assert AccuracyMap().unit_cost(cfg, plan[0]) == cfg.epochs * plan[0]["depth"]
    assert AccuracyMap().unit_memory(cfg, {**plan[0], "depth": 64}, "cpu") > AccuracyMap().unit_memory(
        cfg, {**plan[0], "depth": 4}, "cpu"
    )


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("sigmas = [0.0, 0.3]", "sigmas"),
        ("sigmas = [1.0, 5.0]", "sigma"),
        ('vbars = ["identity"]', "vbars"),
        ('vbars = ["zero", "half"]', "vbars"),
        ("depths = [0, 4]", "depth"),
        ("epochs = 3", "epochs"),
        ("precision = 0", "precision"),
        ('datasets = ["sorting"]', "datasets"),
        ("curve_examples = 5000", "curve_examples"),
    ],
)
def test_cli_rejects_bad_config(rejects_config, toml, field):
    rejects_config("accuracy-map", toml, field)


# --- the map table ------------------------------------------------------------------------------------------------

SIGMAS = [0.0, 0.3, 1.0]


def _table(
    seeds: int = 8,
    spread: float = 0.01,
    effect: float = -0.03,
    rise: float = 0.0,
    acc: float = 0.6,
    gain: float = 0.2,
    seed: int = 0,
) -> pd.DataFrame:
    """A results table with a known truth: accuracy ``acc`` for the reference, ``acc + effect * (1 - sigma)``
    elsewhere, a seed effect shared by the conditions and a per-run noise of sd ``spread``; learning curves
    that saturate (``rise`` > 0: still rising by ``rise`` per epoch at the end); overlap gained through
    depth ``gain * sigma^2`` (+ 0.1 with Vbar = I)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    epochs = 8
    for k in range(seeds):
        shared = rng.normal(0, 0.05)
        for vbar in ("zero", "identity"):
            for sigma in SIGMAS:
                ref = vbar == "zero" and sigma == 1.0
                a = acc + shared + (0.0 if ref else effect * (1 - sigma)) + rng.normal(0, spread)
                e = np.arange(1, epochs + 1)
                curve = a * (1 - np.exp(-e)) + rise * (e - epochs)
                o0 = rng.uniform(0.0, 0.1)
                g = 0.0 if (vbar, sigma) == ("zero", 0.0) else gain * sigma**2 + (0.1 if vbar == "identity" else 0)
                g += 0.0 if (vbar, sigma) == ("zero", 0.0) else rng.normal(0, 0.005)
                prof = [o0, o0 + g / 2, o0 + g]
                rows.append(
                    {
                        "dataset": "digits",
                        "depth": 2,
                        "vbar": vbar,
                        "sigma": sigma,
                        "condition": f"{vbar}-{sigma}",
                        "seed": k,
                        "test_accuracy": a,
                        "test_loss": 1.0,
                        "train_accuracy": a,
                        "train_loss": 1.0,
                        "chance": 0.1,
                        "majority": 0.102,
                        "n_test": 540,
                        "loss_history": list(2 - curve),
                        "curve_accuracy": list(curve),
                        "curve_loss": list(2 - curve),
                        "init_mean_overlap": prof,
                        "init_mean_overlap_last": prof[-1],
                    }
                )
    return pd.DataFrame(rows)


def _cfg(seeds: int = 8) -> AccuracyMapConfig:
    return AccuracyMapConfig(datasets=["digits"], depths=[2], sigmas=SIGMAS, seeds=seeds, epochs=8)


def test_map_table_pairs_by_seed():
    t = _table()
    summ = map_table(t, 0.95, 0.05)
    assert len(summ) == 6 and summ["reference"].sum() == 1
    for r in summ[~summ["reference"]].itertuples():
        c = t[(t["vbar"] == r.vbar) & (t["sigma"] == r.sigma)].sort_values("seed")["test_accuracy"].to_numpy()
        ref = t[(t["vbar"] == "zero") & (t["sigma"] == 1.0)].sort_values("seed")["test_accuracy"].to_numpy()
        d = c - ref
        half = sstats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        assert r.diff == pytest.approx(d.mean()) and r.half_width == pytest.approx(half)
        assert r.diff_p == pytest.approx(sstats.ttest_rel(c, ref).pvalue)
        # the paired interval is far narrower than the unpaired one (the seed effect cancels)
        assert r.half_width < 0.5 * sstats.t.ppf(0.975, 14) * math.sqrt(c.var(ddof=1) / 8 + ref.var(ddof=1) / 8)
    cell = summ[(summ["vbar"] == "zero") & (summ["sigma"] == 0.0)].iloc[0]
    assert cell.diff_low < -0.03 < cell.diff_high  # covers the truth


def test_verdict_of_a_sound_table_passes_and_its_checks_are_the_map():
    cfg, t = _cfg(), _table()
    checks = map_checks(cfg, t)
    assert all(c.passed for c in checks), [c.detail for c in checks if not c.passed]
    names = [c.name for c in checks]
    assert sum("resolved to" in n for n in names) == 5  # every cell but the reference
    assert sum("grows with sigma" in n for n in names) == 2 and any("where they are" in n for n in names)
    assert any("converged" in n for n in names) and any("binomial noise" in n for n in names)


@pytest.mark.parametrize(
    ("table", "seeds", "caught_by"),
    [
        (dict(spread=0.06), 8, "resolved to"),  # seed-to-seed noise six times larger: intervals too wide
        (dict(seeds=2), 2, "resolved to"),  # two seeds
        (dict(rise=0.02), 8, "converged"),  # stopped while still learning
        (dict(acc=0.0, effect=0.0), 8, "beats chance"),  # nothing learned
        (dict(gain=0.0), 8, "grows with sigma"),  # the noise moves no token
    ],
    ids=["noisy-seeds", "two-seeds", "not-converged", "at-chance", "noise-dropped"],
)
def test_verdict_fails_on_a_table_with_a_defect(table, seeds, caught_by):
    checks = map_checks(_cfg(seeds), _table(**table))
    bad = [c.name for c in checks if not c.passed]
    assert any(caught_by in n for n in bad), bad


def test_an_empty_or_partial_table_fails():
    cfg = _cfg()
    assert not map_checks(cfg, pd.DataFrame())[0].passed
    t = _table()
    checks = map_checks(cfg, t[t["seed"] != 3])
    assert not checks[0].passed and "1 missing" not in checks[0].detail and "6 missing" in checks[0].detail


# --- real runs, small, with defects injected ----------------------------------------------------------------------

#: init-focused: training is tiny (the learning checks are shown to fail on tables above and in the quick run's
#: PASS); the clustering at initialisation is measured on 64 sequences through 8 layers of width 32
SMALL = dict(
    datasets=["pointer"],
    depths=[8],
    sigmas=[0.0, 1.0],
    seeds=4,
    width=32,
    heads=2,
    epochs=4,
    pointer_tokens=6,
    pointer_values=4,
    pointer_hops=1,
    pointer_train=64,
    pointer_test=64,
    curve_examples=64,
    profile_examples=64,
)
INIT_CHECKS = ("grows with sigma", "where they are")


def _noise_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The noise term dropped from the value matrices: V_l = Vbar / sqrt(L) whatever sigma."""
    orig = nnt.set_values
    monkeypatch.setattr(nnt, "set_values", lambda m, z, vbar, sigma: orig(m, z, vbar, 0.0))


def _noise_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The noise never suppressed: sigma = 0 draws sigma = 0.1."""
    orig = nnt.set_values
    monkeypatch.setattr(nnt, "set_values", lambda m, z, vbar, sigma: orig(m, z, vbar, max(sigma, 0.1)))


@pytest.fixture(scope="module")
def small_as_is() -> dict[str, Any]:
    return run("accuracy-map", SMALL)[1]


def test_init_checks_pass_as_is(small_as_is):
    init = [c for c in small_as_is["checks"] if any(k in c["name"] for k in INIT_CHECKS)]
    assert len(init) == 3 and all(c["passed"] for c in init), [c["detail"] for c in init]


@pytest.mark.parametrize(
    ("defect", "caught_by"),
    [(_noise_dropped, "grows with sigma"), (_noise_floor, "where they are")],
    ids=["noise-dropped", "noise-not-suppressed"],
)
def test_init_checks_fail_on_a_defect(monkeypatch, small_as_is, defect, caught_by):
    assert caught_by not in " ".join(failed(small_as_is))
    defect(monkeypatch)
    _, v = run("accuracy-map", SMALL)
    assert v["verdict"] == "FAIL"
    assert any(caught_by in n for n in failed(v)), failed(v)


class _Stop(Exception):
    pass


def test_interrupted_map_unit_resumes_with_the_same_curves(tmp_path):
    from tokensde.runtime.store import FileCheckpoint

    exp, cfg = AccuracyMap(), AccuracyMapConfig(**SMALL)
    unit = next(u for u in exp.plan(cfg) if u["vbar"] == "identity" and u["sigma"] == 1.0)
    whole = exp.run_unit(cfg, unit, "cpu")
    assert len(whole[0]["curve_accuracy"]) == cfg.epochs
    ck, done = FileCheckpoint(tmp_path / "u.npz"), [0.0]

    def stop_in_epoch_three(x: float) -> None:  # progress counts epochs x depth
        done[0] += x
        if done[0] >= 2.5 * unit["depth"]:
            raise _Stop

    with pytest.raises(_Stop):
        exp.run_unit(cfg, unit, "cpu", stop_in_epoch_three, checkpoint=ck)
    saved = ck.load()
    assert saved is not None and int(saved["epoch"]) == 2 and len(saved["curve_accuracy"]) == 2
    resumed_from: list[float] = []
    assert exp.run_unit(cfg, unit, "cpu", resumed_from.append, checkpoint=ck) == whole
    assert resumed_from[0] == 2.0 * unit["depth"]


def test_quick_run_writes_the_map(quick_run):
    out, verdict = quick_run("accuracy-map")
    assert verdict["verdict"] == "PASS", [c["name"] for c in verdict["checks"] if not c["passed"]]
    cfg = AccuracyMapConfig(**AccuracyMap.quick)
    t = pd.read_parquet(out / "results.parquet")
    assert len(t) == len(cfg.datasets) * len(cfg.depths) * len(cfg.sigmas) * len(cfg.vbars) * cfg.seeds
    summ = pd.read_parquet(out / "map.parquet")
    assert len(summ) == len(t) // cfg.seeds and summ[~summ["reference"]]["half_width"].notna().all()
    curves = pd.read_parquet(out / "curves.parquet")
    assert len(curves) == len(t) * cfg.epochs
    assert len(pd.read_parquet(out / "depth.parquet")) == sum(2 * (d + 1) for d in t["depth"])
    for name in ("accuracy_map", "accuracy_map_curves", "accuracy_map_mediator"):
        assert (out / f"{name}.png").exists()
