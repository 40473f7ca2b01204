"""The accuracy experiment: data, classifiers and their value conditions, training state, resume, end to end."""

import math
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sstats

from tokensde import metrics
from tokensde.experiments.accuracy import Accuracy, AccuracyConfig, build, summary_table, t_interval
from tokensde.nn import data as nndata
from tokensde.nn.train import (
    TrainSettings,
    depth_profile,
    learning_rate,
    load_state_arrays,
    make_optimizer,
    state_arrays,
    train_epoch,
)
from tokensde.nn.transformer import CONDITIONS, TransformerClassifier, initialise
from tokensde.runtime.store import FileCheckpoint
from tokensde.sphere import normalize

TINY = dict(
    datasets=["digits", "pointer"],
    seeds=2,
    depth=4,
    width=16,
    heads=2,
    epochs=3,
    pointer_tokens=6,
    pointer_values=3,
    pointer_train=300,
    pointer_test=200,
    profile_examples=16,
)


# --- data ---------------------------------------------------------------------------------------------------------


def test_patches_cut_images_row_major():
    img = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    p = nndata.patches(img, 4)  # 16 patches of 3 channels x 2 x 2
    assert p.shape == (2, 16, 12)
    for n in range(2):
        for t in range(16):
            r, c = divmod(t, 4)
            np.testing.assert_array_equal(p[n, t], img[n, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(-1))
    with pytest.raises(ValueError, match="tokens_per_side"):
        nndata.patches(img, 3)


def test_digits_split_is_stratified_and_fixed():
    a = nndata.digits(4, 0.3, 0)
    b = nndata.digits(4, 0.3, 0)
    assert a.x_train.shape == (1257, 16, 4) and a.x_test.shape == (540, 16, 4)
    assert torch.equal(a.x_test, b.x_test) and a.n_classes == 10 and a.readout == "mean"
    assert float(a.x_train.max()) == 1.0 and float(a.x_train.min()) == 0.0
    # stratified: every class holds 30% of its images out, up to rounding
    counts_test = np.bincount(a.y_test.numpy(), minlength=10)
    counts_all = counts_test + np.bincount(a.y_train.numpy(), minlength=10)
    assert np.all(np.abs(counts_test - 0.3 * counts_all) <= 1.0)


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_pointer_labels_follow_the_pointers(hops):
    n, k = 7, 5
    d = nndata.pointer(n, k, 200, 50, seed=3, hops=hops)
    x, y = d.x_train.numpy(), d.y_train.numpy()
    assert x.shape == (200, n, n - 1 + k) and d.readout == "first" and d.n_classes == k
    for e in range(200):
        ptr = x[e, :, : n - 1].argmax(1) + 1
        assert np.all(x[e, :, : n - 1].sum(1) == 1)
        assert x[e, 0, n - 1 :].sum() == 0 and np.all(x[e, 1:, n - 1 :].sum(1) == 1)
        val = x[e, 1:, n - 1 :].argmax(1)
        j = ptr[0]
        for _ in range(hops - 1):
            j = ptr[j]
        assert y[e] == val[j - 1]


def test_online_pointer_data_is_fresh_every_epoch_and_reproducible():
    d = nndata.pointer(8, 4, 100, 20, seed=1, hops=2, online=True)
    x0, _ = d.train_data(0)
    x1, y1 = d.train_data(1)
    assert torch.equal(x0, d.x_train) and not torch.equal(x0, x1)
    x1b, y1b = nndata.pointer(8, 4, 100, 20, seed=1, hops=2, online=True).train_data(1)
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b)
    ptr = x1[:, :, :7].argmax(-1) + 1
    val = x1[:, 1:, 7:].argmax(-1)
    j = ptr[torch.arange(100), ptr[:, 0]]
    assert torch.equal(y1, val[torch.arange(100), j - 1])
    fixed = nndata.pointer(8, 4, 100, 20, seed=1, hops=2)
    assert fixed.sampler is None and torch.equal(fixed.train_data(3)[0], fixed.x_train)


def test_pointer_labels_are_uniform():
    d = nndata.pointer(16, 8, 4000, 10, seed=0)
    counts = np.bincount(d.y_train.numpy(), minlength=8)
    assert sstats.chisquare(counts).pvalue > 1e-3


def _fake_torchvision(monkeypatch, seen):
    class FakeSet:
        def __init__(self, root, train, download):
            seen.append((root, train, download))
            g = torch.Generator().manual_seed(int(train))
            size = 30 if train else 12
            self.data = torch.randint(0, 256, (size, 28, 28), dtype=torch.uint8, generator=g)
            self.targets = torch.arange(size) % 10

    tv = types.ModuleType("torchvision")
    ds = types.ModuleType("torchvision.datasets")
    ds.FakeMNIST = FakeSet
    tv.datasets = ds
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", ds)


def test_torchvision_data_from_disk_without_download(monkeypatch, tmp_path):
    seen: list = []
    _fake_torchvision(monkeypatch, seen)
    d = nndata.load("torchvision:FakeMNIST", root=str(tmp_path), max_train=20)
    assert all(dl is False for _, _, dl in seen) and {t for _, t, _ in seen} == {True, False}
    assert d.x_train.shape == (20, 16, 49) and d.x_test.shape == (12, 16, 49) and d.n_classes == 10
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    with pytest.raises(ValueError, match="no data set"):
        nndata.check_dataset_name("torchvision:Nope", str(tmp_path))
    with pytest.raises(ValueError, match="data_root"):
        nndata.check_dataset_name("torchvision:FakeMNIST", None)


def test_torchvision_missing_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ValueError, match="needs torchvision"):
        nndata.check_dataset_name("torchvision:MNIST", str(tmp_path))


# --- the classifier and its value conditions ----------------------------------------------------------------------


def _models(depth=6, width=16, seed=1):
    out = {}
    for c in CONDITIONS:
        m = TransformerClassifier(5, 3, 4, width=width, depth=depth, heads=2)
        initialise(m, c, torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1), 0.1)
        out[c] = m
    return out


def test_conditions_differ_only_in_the_value_matrices():
    ms = _models()
    ref = dict(ms["standard"].named_parameters())
    for c, m in ms.items():
        for name, p in m.named_parameters():
            if not name.endswith("attn.v.weight"):
                assert torch.equal(p, ref[name]), (c, name)
    vs = {c: [b.attn.v.weight.detach() for b in m.blocks] for c, m in ms.items()}
    std = vs["standard"]
    assert all(not torch.equal(std[0], v) for v in std[1:])  # independent across layers
    for layer in range(6):
        assert torch.allclose(vs["value-scaled"][layer], 0.1 * std[layer])
        assert torch.equal(vs["value-zero"][layer], torch.zeros(16, 16))
        assert torch.equal(vs["value-identity"][layer], torch.eye(16))
        assert torch.equal(vs["value-shared"][layer], std[0])


def test_standard_value_entries_have_variance_one_over_d():
    depth, width = 32, 32
    m = _models(depth, width)["standard"]
    z = torch.stack([b.attn.v.weight.detach() for b in m.blocks]).double().flatten() * math.sqrt(width)
    n = z.numel()
    # mean 0 and variance 1 within 4 standard errors (normal entries: se of the variance is sqrt(2/n))
    assert abs(float(z.mean())) < 4 / math.sqrt(n)
    assert abs(float(z.var()) - 1.0) < 4 * math.sqrt(2 / n)


def test_residual_branches_are_scaled_by_one_over_sqrt_depth():
    m = _models(depth=9)["value-identity"]
    assert all(b.scale == pytest.approx(1 / 3) for b in m.blocks)
    x = torch.randn(4, 5, 3)
    logits, states = m(x, hidden=True)
    assert logits.shape == (4, 4) and len(states) == 10
    # block l adds attn(RMSNorm h) / sqrt(L)
    b = m.blocks[0]
    torch.testing.assert_close(states[1], states[0] + b.attn(b.norm1(states[0])) / 3)


def test_identity_values_contract_tokens_through_depth():
    """V = I is model A's noiseless attention flow: at initialisation the tokens draw together with depth."""
    ms = _models(depth=24, width=32)
    x = torch.randn(64, 5, 3)
    prof_id = depth_profile(ms["value-identity"], x)
    prof_std = depth_profile(ms["standard"], x)
    assert prof_id["mean_overlap"][-1] > prof_id["mean_overlap"][0] + 0.2
    assert prof_id["mean_overlap"][-1] > prof_std["mean_overlap"][-1] + 0.2


def test_depth_profile_agrees_with_metrics_at_every_layer():
    m = _models(depth=3)["standard"]
    x = torch.randn(8, 5, 3)
    prof = depth_profile(m, x, beta=1.5, eps=0.05)
    _, states = m(x, hidden=True)
    for layer, h in enumerate(states):
        s = metrics.summary(normalize(h.detach().double()), 1.5, 0.05)
        for key in ("mean_overlap", "energy", "effective_rank", "n_clusters"):
            assert prof[key][layer] == pytest.approx(float(np.mean(s[key])), rel=1e-9, abs=1e-12)


# --- training state -----------------------------------------------------------------------------------------------


def test_learning_rate_warms_up_then_decays_to_zero():
    s = TrainSettings(epochs=10, lr=2e-3, warmup=0.1)
    lrs = [learning_rate(s, i, 100) for i in range(101)]
    assert lrs[0] == pytest.approx(2e-4) and lrs[9] == pytest.approx(2e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[100] == pytest.approx(0.0)


def test_state_arrays_round_trip_continues_identically():
    torch.manual_seed(0)
    x, y = torch.randn(40, 5, 3), torch.randint(0, 4, (40,))
    s = TrainSettings(epochs=3, batch_size=8)
    a = _models(depth=3)["standard"]
    opt = make_optimizer(a, s)
    train_epoch(a, opt, x, y, s, 0, order_seed=5)
    arrays = state_arrays(a, opt)
    b = _models(depth=3, seed=9)["standard"]
    opt_b = make_optimizer(b, s)
    load_state_arrays(b, opt_b, {k: v.copy() for k, v in arrays.items()})
    la = train_epoch(a, opt, x, y, s, 1, order_seed=5)
    lb = train_epoch(b, opt_b, x, y, s, 1, order_seed=5)
    assert la == lb
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("dataset", ["digits", "pointer"])
def test_interrupted_unit_resumes_from_its_checkpoint_with_the_same_result(tmp_path, dataset):
    exp, cfg = Accuracy(), AccuracyConfig(**TINY)
    unit = next(u for u in exp.plan(cfg) if u["dataset"] == dataset)
    whole = exp.run_unit(cfg, unit, "cpu")
    ck = FileCheckpoint(tmp_path / "u.npz")
    done = [0.0]

    def stop_after_two_epochs(x: float) -> None:
        done[0] += x
        if done[0] >= 2.0 - 1e-9:
            raise _Stop

    with pytest.raises(_Stop):
        exp.run_unit(cfg, unit, "cpu", stop_after_two_epochs, checkpoint=ck)
    saved = ck.load()
    assert saved is not None and int(saved["epoch"]) == 1  # the epoch in flight is lost, epoch 1 is kept
    resumed_from = []
    resumed = exp.run_unit(cfg, unit, "cpu", resumed_from.append, checkpoint=ck)
    assert resumed_from[0] == 1.0  # progress restarts at the saved epoch
    assert resumed == whole


def test_corrupt_checkpoint_starts_the_unit_again(tmp_path):
    ck = FileCheckpoint(tmp_path / "u.npz")
    ck.path.write_bytes(b"not an npz")
    assert ck.load() is None
    exp, cfg = Accuracy(), AccuracyConfig(**TINY)
    unit = exp.plan(cfg)[0]
    assert exp.run_unit(cfg, unit, "cpu", checkpoint=ck) == exp.run_unit(cfg, unit, "cpu")


# --- summary ------------------------------------------------------------------------------------------------------


def test_t_interval_matches_scipy():
    x = np.array([0.91, 0.93, 0.9, 0.95, 0.92])
    m, lo, hi = t_interval(x, 0.95)
    ref = sstats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sstats.sem(x))
    assert m == pytest.approx(x.mean()) and (lo, hi) == pytest.approx(ref)
    assert math.isnan(t_interval(np.array([0.5]), 0.95)[1])


def test_summary_pairs_conditions_by_seed():
    rng = np.random.default_rng(0)
    rows = []
    for k in range(6):
        base = rng.normal(0.9, 0.02)
        for cond, shift in (("standard", 0.0), ("value-zero", -0.05)):
            rows.append(
                {"dataset": "digits", "condition": cond, "seed": k,
                 "test_accuracy": base + shift + rng.normal(0, 0.001), "test_loss": 0.3, "loss_auc": 1.0 + k,
                 "chance": 0.1, "init_mean_overlap_last": 0.1, "init_effective_rank_last": 3.0}
            )  # fmt: skip
    table = pd.DataFrame(rows[::-1])  # order must not matter
    s = summary_table(table, 0.95)
    z = s[(s["condition"] == "value-zero") & (s["metric"] == "test_accuracy")].iloc[0]
    std = table[table["condition"] == "standard"].sort_values("seed")["test_accuracy"].to_numpy()
    zero = table[table["condition"] == "value-zero"].sort_values("seed")["test_accuracy"].to_numpy()
    d = zero - std
    assert z["diff"] == pytest.approx(d.mean())
    assert z["diff_p"] == pytest.approx(sstats.ttest_rel(zero, std).pvalue)
    assert z["diff_high"] < 0  # the paired interval sees the shift the unpaired spread would hide
    assert s[(s["condition"] == "value-zero") & (s["metric"] == "loss_auc")].iloc[0]["diff"] == 0.0


# --- end to end ---------------------------------------------------------------------------------------------------


def test_build_is_seeded_by_dataset_and_seed_index():
    cfg = AccuracyConfig(**TINY)
    d = nndata.load("digits")
    a, b = build(cfg, d, "standard", 0), build(cfg, d, "standard", 0)
    c = build(cfg, d, "standard", 1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.embed.weight, c.embed.weight)


def test_quick_run_tables_and_figures(quick_run):
    """``--quick`` (the runtime's quick run, shared with the report tests): tables, profiles, figures."""
    out, verdict = quick_run("accuracy")
    assert verdict["verdict"] == "PASS", verdict
    cfg = AccuracyConfig(**Accuracy.quick)
    t = pd.read_parquet(out / "results.parquet")
    assert len(t) == len(cfg.datasets) * len(cfg.conditions) * cfg.seeds
    assert not t.duplicated(["dataset", "condition", "seed"]).any()
    assert {"dataset", "condition", "seed", "test_accuracy"} <= set(t.columns)
    assert all(len(v) == cfg.depth + 1 for v in t["init_mean_overlap"])
    depth = pd.read_parquet(out / "depth.parquet")
    assert len(depth) == len(t) * 2 * (cfg.depth + 1) and set(depth["stage"]) == {"init", "trained"}
    summ = pd.read_parquet(out / "summary.parquet")
    acc = summ[summ["metric"] == "test_accuracy"]
    assert len(acc) == len(cfg.datasets) * len(cfg.conditions)
    assert not list((out / "checkpoints").glob("*.npz"))  # removed once each unit was stored
    for name in ("accuracy", "accuracy_depth", "accuracy_vs_clustering"):
        assert (out / f"{name}.png").exists()


@pytest.mark.slow  # a whole training command (10 s); the run command and its printed verdict are tested elsewhere
def test_cli_run_prints_the_table(tmp_path):
    from typer.testing import CliRunner

    from tokensde.cli import app

    cfg = tmp_path / "tiny.toml"
    cfg.write_text("".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in TINY.items()))
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", "accuracy", "--config", str(cfg), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "accuracy in" in r.stdout and "digits" in r.stdout and "value-shared" in r.stdout
    assert len(pd.read_parquet(out / "results.parquet")) == 2 * 4 * 2


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("width = 30\nheads = 4", "heads"),
        ('datasets = ["imagenet"]', "datasets"),
        ('datasets = ["torchvision:MNIST"]', "torchvision"),
        ("tokens_per_side = 3", "tokens_per_side"),
        ('conditions = ["standard", "standard"]', "conditions"),
        ('conditions = ["noisy"]', "conditions"),
        ("seeds = 0", "seeds"),
        ("depth = 0", "depth"),
        ("lr = 0", "lr"),
    ],
)
def test_cli_rejects_bad_config(rejects_config, toml, field):
    rejects_config("accuracy", toml, field)
