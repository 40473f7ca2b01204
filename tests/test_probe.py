"""probe: random library Transformers (GPT-2, BERT, ALBERT) and the matched SDE of model A."""

import json
import math
import socket

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from tokensde import metrics
from tokensde.experiments import REGISTRY
from tokensde.experiments.probe import METRICS, Probe, ProbeConfig
from tokensde.nn import probe as nnp
from tokensde.noise import derive_seed
from tokensde.sphere import normalize, uniform


@pytest.fixture
def offline(monkeypatch):
    """No hub, no network: HF_HUB_OFFLINE and a socket that refuses to connect."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("arch", nnp.ARCHITECTURES)
def test_models_have_the_requested_depth_offline(offline, arch):
    state = torch.random.get_rng_state()
    m = nnp.build_model(arch, 5, 32, 4, 8, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    assert not m.training and m.config._attn_implementation == "eager"
    assert m.config.num_hidden_layers == 5
    assert len(nnp.blocks(m, arch)) == (1 if arch == "albert" else 5)
    tr = nnp.run_network(m, arch, nnp.random_inputs(3, 8, 32, seed=1))
    assert tr.calls == 5 and tr.states.shape == (6, 3, 8, 32) and len(tr.attentions) == 5
    assert tr.attentions[0].shape == (3, 4, 8, 8)
    assert torch.allclose(tr.attentions[0].sum(-1), torch.ones(3, 4, 8), atol=1e-5)
    if arch == "gpt2":  # causal: nothing above the diagonal
        assert float(tr.attentions[0].triu(1).abs().max()) == 0.0
    # the last recorded state is the last block's output (for GPT-2: before ln_f)
    with torch.no_grad():
        out = m(inputs_embeds=nnp.random_inputs(3, 8, 32, seed=1)).last_hidden_state
    assert torch.equal(out, tr.states[-1]) == (arch != "gpt2")
    # seeded: same seed, same weights; another seed, other weights
    w = [p.detach().clone() for p in m.parameters()]
    w2 = [p.detach() for p in nnp.build_model(arch, 5, 32, 4, 8, seed=3).parameters()]
    w3 = [p.detach() for p in nnp.build_model(arch, 5, 32, 4, 8, seed=4).parameters()]
    assert all(torch.equal(a, b) for a, b in zip(w, w2, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(w, w3, strict=True))


def test_albert_shares_one_block():
    def count(arch, layers):
        return sum(p.numel() for p in nnp.build_model(arch, layers, 32, 4, 8, seed=0).parameters())

    assert count("albert", 2) == count("albert", 7)
    block = sum(p.numel() for p in nnp.blocks(nnp.build_model("bert", 1, 32, 4, 8, 0), "bert")[0].parameters())
    assert count("bert", 7) - count("bert", 2) == 5 * block
    assert count("gpt2", 7) > count("gpt2", 2)


def test_layer_metrics_agree_with_metrics_module():
    g = torch.Generator().manual_seed(5)
    u = uniform((12, 10), 6, g)
    u[0, 1] = -u[0, 0]  # one antipodal pair
    u[1] = u[1, :1]  # one collapsed system
    row, cos = nnp.layer_metrics(u, 1.5, 0.01, 20)
    s = metrics.summary(u, 1.5, 0.01)
    for k in ("n_clusters", "collapsed", "antipodal", "energy", "effective_rank", "mean_overlap"):
        assert row[k] == pytest.approx(float(np.mean(s[k])), rel=1e-6), k
    g_full = (u @ u.transpose(-1, -2)).double()
    iu = torch.triu_indices(10, 10, 1)
    pairs = g_full[:, iu[0], iu[1]].reshape(-1).numpy()
    assert cos.shape == (12 * 45,) and np.allclose(np.sort(cos), np.sort(pairs))
    assert row["antipodal_pairs"] == pytest.approx(np.mean(pairs < -0.99))
    assert row["antipodal_pairs"] > 0
    assert sum(row["hist"]) == 12 * 45 and len(row["hist"]) == 20
    assert row["q50"] == pytest.approx(float(np.median(pairs)))


@pytest.mark.parametrize("causal", [False, True])
def test_match_beta_recovers_a_known_beta(causal):
    x = uniform((64, 16), 8, torch.Generator().manual_seed(1), torch.float64)
    for beta in (0.3, 2.5, 7.0):
        target = nnp.model_a_entropy(x, beta, causal)
        assert nnp.match_beta(x, target, causal) == pytest.approx(beta, abs=1e-5)
    assert nnp.model_a_entropy(x, 0.0, causal) == pytest.approx(
        float(np.mean(np.log(np.arange(1, 17)))) if causal else math.log(16)
    )
    assert nnp.match_beta(x, 10.0, causal) == 0.0  # flatter than uniform: the lower end
    # model A's entropy from the attention module's own softmax weights
    w = torch.softmax(2.5 * (x @ x.transpose(-1, -2)), -1)
    assert nnp.attention_entropy(w) == pytest.approx(nnp.model_a_entropy(x, 2.5))


@pytest.mark.parametrize("substeps", [1, 4])
def test_sde_clock_reproduces_the_given_clock(substeps):
    """With dt from a given s, the SDE's mean squared tangent move over the layer is s (Monte Carlo interval)."""
    bsz, n, d, s = 2048, 8, 16, 0.02
    x0 = uniform((bsz, n), d, torch.Generator().manual_seed(2), torch.float64)
    states = []
    tr = nnp.sde_prediction(x0, 1.0, np.array([s, s]), substeps, 7, ("test",), lambda k, x: states.append(x))
    assert len(states) == 3 and tr.t.shape == (3,) and tr.t[0] == 0.0 and np.all(np.diff(tr.t) > 0)
    # the time of the first layer: s / ((d-1) mean |a|^2) (one sub-step: exactly; more: the sum)
    bary = torch.softmax(x0 @ x0.transpose(-1, -2), -1) @ x0
    dt0 = s / ((d - 1) * float((bary * bary).sum(-1).mean()))
    if substeps == 1:
        assert tr.t[1] == pytest.approx(dt0, rel=1e-12)
        per = nnp.tangent_sq(states[0], states[1]).mean(-1).numpy()  # the layer's move, computed independently
        assert np.allclose(per, tr.realised[0])
    else:
        assert tr.t[1] == pytest.approx(dt0, rel=0.05)
        per = tr.realised[0]
    assert tr.predicted[0].mean() == pytest.approx(s, rel=1e-9)  # by construction, over the batch
    se = per.std(ddof=1) / math.sqrt(bsz)
    z = 4.0  # two-sided, about 6e-5 per case
    assert abs(per.mean() - s) < z * se, (per.mean(), s, se)
    assert se < 0.02 * s  # the interval is informative
    # a clock off by 10% is detected: the same check fails for 1.1 s
    assert abs(per.mean() - 1.1 * s) > z * se


def test_quick_end_to_end(tmp_path):
    from tokensde.experiments.probe_figures import interactive
    from tokensde.runtime.runner import run_experiment

    exp = Probe()
    cfg = ProbeConfig(**exp.quick)
    assert cfg.layers >= 24
    out = tmp_path / "run"
    verdict = run_experiment(exp, cfg, out, show_progress=False)
    assert verdict["verdict"] == "PASS", verdict
    assert len(verdict["checks"]) == 5 and len(verdict["notes"]) >= 4
    t = pd.read_parquet(out / "results.parquet")
    assert len(t) == 3 * (cfg.layers + 1)
    for arch in ("gpt2", "bert", "albert"):
        s = t[t["architecture"] == arch]
        assert list(s["layer"]) == list(range(cfg.layers + 1))
    for m in METRICS:
        assert np.isfinite(t[m]).all() and np.isfinite(t[f"sde_{m}"]).all()
    assert (t["w1"] >= 0).all()
    assert (t.groupby("architecture")["w1"].first() < 1e-6).all()  # same layer 0 (float32 vs float64 cosines)
    pairs = cfg.sequences * cfg.n * (cfg.n - 1) // 2
    assert all(sum(h) == pairs for h in t["hist"]) and all(len(h) == cfg.bins for h in t["sde_hist"])
    for f in ("probe_histograms.png", "probe_metrics.svg", "report.html"):
        assert (out / f).exists()
    assert set(interactive(t, cfg.model_dump())) >= {"metrics", "histograms gpt2 d=64"}
    # layer 0 of the table = tokensde.metrics on the same network's normalised embeddings, rebuilt here
    arch, d = "bert", 64
    m = nnp.build_model(arch, cfg.layers, d, cfg.heads, cfg.n, derive_seed(cfg.seed, "probe", "weights", arch, d))
    x = nnp.random_inputs(cfg.sequences, cfg.n, d, derive_seed(cfg.seed, "probe", "inputs", d))
    u = normalize(nnp.run_network(m, arch, x).states)
    row0 = t[(t["architecture"] == arch) & (t["layer"] == 0)].iloc[0]
    rowL = t[(t["architecture"] == arch) & (t["layer"] == cfg.layers)].iloc[0]
    for layer, row in ((0, row0), (cfg.layers, rowL)):
        s = metrics.summary(u[layer], cfg.beta, cfg.eps)
        for k in ("energy", "mean_overlap", "effective_rank", "n_clusters", "min_overlap"):
            assert row[k] == pytest.approx(float(np.mean(s[k])), rel=1e-5), k
    assert row0["sde_energy"] == pytest.approx(row0["energy"], rel=1e-5)  # the SDE starts where the net starts
    assert rowL["s"] == pytest.approx(float(nnp.tangent_sq(u[-2], u[-1]).double().mean()), rel=1e-5)
    assert rowL["t"] > 0 and rowL["sde_clock_total"] == pytest.approx(rowL["clock_total"], rel=0.1)
    # resuming recomputes nothing and gives the same verdict
    assert run_experiment(exp, cfg, out, show_progress=False)["checks"] == verdict["checks"]
    assert json.loads((out / "verdict.json").read_text())["verdict"] == "PASS"


def test_config_validation():
    with pytest.raises(ValidationError, match="multiple of heads"):
        ProbeConfig(hidden=[30], heads=4)
    with pytest.raises(ValidationError):
        ProbeConfig(architectures=["gpt3"])
    with pytest.raises(ValidationError, match="distinct"):
        ProbeConfig(architectures=["bert", "bert"])
    with pytest.raises(ValidationError, match="2\\^31"):
        ProbeConfig(sequences=100_000, n=1024, hidden=[4096])
    assert ProbeConfig().layers == 24 and ProbeConfig(hidden=[256, 64]).hidden == [64, 256]


registered = pytest.mark.skipif("probe" not in REGISTRY, reason="probe not registered yet")


@registered
def test_cli_quick(tmp_path):
    from typer.testing import CliRunner

    from tokensde.cli import app

    out = tmp_path / "cli"
    args = ["run", "probe", "--quick", "--out", str(out), "--config", str(_toml(tmp_path)), "--executor", "serial"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    t = pd.read_parquet(out / "results.parquet")
    assert {"architecture", "layer"} <= set(t.columns) and len(t) == 2 * 5


def _toml(tmp_path):
    p = tmp_path / "small.toml"
    p.write_text('architectures = ["bert", "albert"]\nlayers = 4\n')
    return p


@registered
def test_bad_config_rejected(rejects_config):
    rejects_config("probe", "hidden = [30]\nheads = 4", "hidden")
    rejects_config("probe", 'architectures = ["gpt3"]', "architectures")
