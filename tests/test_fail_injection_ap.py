"""Every verdict shown to fail: ``accuracy`` and ``probe`` run once as they are (PASS) and once with a realistic
defect injected (FAIL), at small configs with fixed seeds, through the pure pieces (plan, run_unit, summarize,
verdict)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from injection import failed, run

from tokensde.models.value_noise import ValueNoise
from tokensde.nn import probe as nnp
from tokensde.nn import train as nntrain

# --- accuracy -----------------------------------------------------------------------------------------------------

ACCURACY = dict(
    datasets=["digits"],
    conditions=["standard"],
    seeds=3,
    depth=2,
    width=16,
    heads=2,
    epochs=3,
    lr=0.01,
    tokens_per_side=2,
    profile_examples=16,
)


def _shuffled_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training labels permuted independently of the inputs (x and y shuffled with two permutations)."""
    from tokensde.experiments import accuracy

    load = accuracy.load_data

    def wrong(cfg: Any, name: str) -> Any:
        data = load(cfg, name)
        perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(0))
        return dataclasses.replace(data, y_train=data.y_train[perm])

    monkeypatch.setattr(accuracy, "load_data", wrong)


def _no_learning_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule gives 0 at every step (a warm-up that never ends): the weights never move."""
    monkeypatch.setattr(nntrain, "learning_rate", lambda s, step, total: 0.0)


def test_accuracy_verdict_passes_as_is():
    table, v = run("accuracy", ACCURACY)
    assert v["verdict"] == "PASS", v
    names = [c["name"] for c in v["checks"]]
    assert len(names) == 4 and any("binomial noise" in n for n in names) and any("decreases" in n for n in names)
    assert table["test_accuracy"].min() > 0.5


@pytest.mark.parametrize(
    ("defect", "caught_by"),
    [
        (_shuffled_labels, ("t-interval", "binomial noise")),
        (_no_learning_rate, ("t-interval", "binomial noise", "decreases")),
    ],
    ids=["shuffled-labels", "zero-learning-rate"],
)
def test_accuracy_verdict_fails_on_a_defect(monkeypatch, defect, caught_by):
    defect(monkeypatch)
    table, v = run("accuracy", ACCURACY)
    assert v["verdict"] == "FAIL", v
    bad = failed(v)
    for part in caught_by:
        assert any(part in n for n in bad), (part, bad)
    assert not any(n.startswith("every run") for n in bad)  # the runs themselves finished
    assert table["test_accuracy"].max() < 0.2  # at chance (0.1)


# --- probe --------------------------------------------------------------------------------------------------------

PROBE = dict(architectures=["gpt2", "bert"], layers=8, hidden=[32], n=8, sequences=32, substeps=2, bins=20)
CLOCK = ("per layer, the SDE's mean squared tangent move", "pooled over the layers of each unit")


def _noise_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDE's value noise 1.1 times too large (sigma = 1.1 where the matched clock assumes 1)."""
    monkeypatch.setattr(nnp, "ValueNoise", lambda beta, sigma: ValueNoise(beta=beta, sigma=1.1 * sigma))


def _whole_layer_per_substep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of the K sub-steps advances by the whole layer's time (dt without the 1/K): the SDE runs K times
    too far. The SDE's own martingale (realised minus its conditional expectation) does not see this."""
    sde = nnp.sde_prediction

    def wrong(x0: Any, beta: float, clock: Any, substeps: int, *args: Any, **kwargs: Any) -> Any:
        return sde(x0, beta, np.asarray(clock) * substeps, substeps, *args, **kwargs)

    monkeypatch.setattr(nnp, "sde_prediction", wrong)


def test_probe_verdict_passes_as_is():
    _, v = run("probe", PROBE)
    assert v["verdict"] == "PASS", v
    assert len(v["checks"]) == 5


@pytest.mark.parametrize("defect", [_noise_scale, _whole_layer_per_substep], ids=["sigma-1.1", "dt-without-1/K"])
def test_probe_verdict_fails_on_a_defect(monkeypatch, defect):
    defect(monkeypatch)
    _, v = run("probe", PROBE)
    assert v["verdict"] == "FAIL", v
    bad = failed(v)
    assert all(any(n.startswith(c) for n in bad) for c in CLOCK), bad  # per layer and pooled
    assert len(bad) == 2  # the structural checks still pass: only the prediction is wrong
