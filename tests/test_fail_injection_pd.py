"""The phase diagram's verdict fails on realistic defects and passes without them.

Scaling the noise of model A does not change its exit law (a time change), so the defects
injected are ones the exit law sees: the attention's inverse temperature off by 15% or 10%
(a factor forgotten or doubled in the scores), and a step six times the default.
"""

import pytest
from injection import failed, run

import tokensde.kernels as kernels_mod
import tokensde.models.value_noise as vn_mod

#: one dimension, away from beta_c(4) = 0.66; with 2000 pairs per cell the pooled z of a temperature off
#: by 15% (10%) is about +6.6 (-5.4) by the exit law itself, against a limit of 2.58
SMALL = {
    "d": [4],
    "beta": [0.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
    "runs": 2000,
    "T": 20.0,
    "T_max": 40.0,
    "step": 0.1,
}


def _verdict(config: dict) -> dict:
    return run("phase-diagram", config)[1]


def test_correct_model_passes():
    v = _verdict(SMALL)
    assert v["verdict"] == "PASS", [c["detail"] for c in v["checks"]]


@pytest.mark.parametrize("factor", [1.15, 0.9])
def test_wrong_temperature_fails(monkeypatch, factor):
    """The scores' inverse temperature off by a factor (a scaling forgotten or applied twice)."""
    # the fused two-token step that ValueNoise offers the engine: its compiled kernel (CPU) and its torch form
    kernel = kernels_mod.pair_levels
    monkeypatch.setattr(
        kernels_mod,
        "pair_levels",
        lambda states, acc, alive, beta, *rest: kernel(states, acc, alive, factor * beta, *rest),
    )
    orig = vn_mod.pair_euler_step
    monkeypatch.setattr(vn_mod, "pair_euler_step", lambda x, xi, beta, dt, s2: orig(x, xi, factor * beta, dt, s2))
    v = _verdict(SMALL)
    assert v["verdict"] == "FAIL" and any("exit law" in n for n in failed(v)), v


@pytest.mark.parametrize("step", [0.3])
def test_step_far_too_coarse_fails(step):
    """Six times the default step: the extrapolation's remaining bias (from the 4 dt run) and the exit law show it."""
    v = _verdict({**SMALL, "step": step})
    assert v["verdict"] == "FAIL", v
