"""Every verdict shown to fail: ``homogenized`` and ``synchronization``.

Each experiment runs at a small config through its pure pieces (plan, run_unit,
summarize, verdict), once with the correct model (PASS) and once with a defect a
user could really make injected with ``monkeypatch`` (FAIL), fixed seeds.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from injection import failed, run

from tokensde import activations
from tokensde.activations import Activation
from tokensde.models.mlp_noise import MLPNoise
from tokensde.models.multihead import MultiheadLimit

# ----------------------------------------------------------------------------- homogenized
HOMOGENIZED = {
    "n": 8,
    "logistic_beta": [0.0],
    "logistic_d": [16, 32, 64],
    "systems": 256,
    "tau_max": 2.0,
    "simplex_n": 4,
    "simplex_d": [8, 16, 32],
    "simplex_systems": 64,
    "simplex_tau": 2.0,
    "fg_samples": 256,
    "frozen_d": [8, 16, 32],
    "pairs": 400,
    "exit_d": [4],
    "exit_dtau": 0.05,
    "tradeoff_d": [8],
    "tradeoff_n": [4],
    "tradeoff_beta": [0.0],
    "tradeoff_samples": 64,
}


def test_homogenized_passes_with_the_correct_model():
    _, v = run("homogenized", HOMOGENIZED)
    assert v["verdict"] == "PASS", failed(v)
    names = [c["name"] for c in v["checks"]]
    assert any("pooled per d" in n for n in names)  # the exit law and the frozen pairs are pooled per d


def test_homogenized_fails_when_the_noise_is_ten_percent_too_strong(monkeypatch):
    """The value noise ``dM`` scaled by 1.1 while ``C_ii`` is not (an inconsistent kernel, e.g. ``sigma_V``
    taken 10 % too large in the noise only): in diffusive time this runs the limit 1.21 times too fast, so the
    mean overlap leaves the logistic curve by O(1), whatever ``d``. (The exit law cannot see it: a time change
    leaves it alone.)"""
    coefficients = MultiheadLimit.coefficients

    def too_strong(self: MultiheadLimit, x: torch.Tensor, xi: torch.Tensor) -> Any:
        b, cdiag, noise = coefficients(self, x, xi)
        return b, cdiag, 1.1 * noise

    monkeypatch.setattr(MultiheadLimit, "coefficients", too_strong)
    _, v = run("homogenized", HOMOGENIZED)
    assert v["verdict"] == "FAIL"
    assert any("mean of u follows the logistic curve" in n for n in failed(v)), failed(v)


# ----------------------------------------------------------------------------- synchronization
SYNCHRONIZATION = {
    "table_activations": ["silu"],
    "table_d": [5],
    "table_bias": [0.0],
    "cluster_n": 4,
    "cluster_runs": 16,
    "cluster_T": 150.0,
    "cluster_dt": 0.25,
    "exponent_settings": [{"activation": "silu", "d": 5}, {"activation": "relu", "d": 4}],
    "exponent_runs": 512,
    "exponent_horizon": 3.0,
    "energy_runs": 32,
    "energy_T": 2.0,
    "energy_dt": 0.05,
    "energy_c": [1.0],
    "energy_records": 8,
}


def test_synchronization_passes_with_the_correct_model():
    _, v = run("synchronization", SYNCHRONIZATION)
    assert v["verdict"] == "PASS", failed(v)


def silu_derivative_without_the_product_rule(monkeypatch: pytest.MonkeyPatch) -> str:
    """``silu'(x) = sigmoid(x)``: the term ``x sigmoid(x) (1 - sigmoid(x))`` of the product rule dropped.

    ``kappa'(1)`` (Price's theorem), ``lambda_1`` and the model's kernel next to
    collapse (the slopes of its tabulated interpolant) all follow the wrong
    derivative, so the Monte-Carlo exponent agrees with the wrong ``lambda_1``;
    only the derivative-free ``gap(delta) / delta`` of the Price check sees it.
    """
    silu = activations.get_activation("silu")
    wrong = Activation("silu", silu.np_fn, activations._np_sigmoid, silu.torch_fn, torch.sigmoid, odd=False)
    monkeypatch.setitem(activations._NAMED, "silu", wrong)
    return "Price's theorem"


def noise_ten_percent_too_strong(monkeypatch: pytest.MonkeyPatch) -> str:
    """The exact Gaussian field at the tokens scaled by 1.1 while ``C_ii = kappa(1)`` is not: every
    exponent is about 1.21 times too large."""
    exact_noise = MLPNoise.exact_noise
    monkeypatch.setattr(MLPNoise, "exact_noise", lambda self, x, xi: 1.1 * exact_noise(self, x, xi))
    return "exponents pooled over the settings"


@pytest.mark.parametrize("defect", [silu_derivative_without_the_product_rule, noise_ten_percent_too_strong])
def test_synchronization_fails_with_a_defect(monkeypatch, defect):
    caught_by = defect(monkeypatch)
    _, v = run("synchronization", SYNCHRONIZATION)
    assert v["verdict"] == "FAIL"
    assert any(caught_by in n for n in failed(v)), failed(v)
