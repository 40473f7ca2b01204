"""The ``mean-field`` experiment: the quick run passes, and its verdict sees realistic defects."""

from __future__ import annotations

import dataclasses
import math

import pytest
from injection import failed, run

from tokensde.experiments import mean_field as mfx
from tokensde.meanfield import circle as mf

SMALL = {
    "models": ["A", "C"],
    "grid": 192,
    "particles": 256,
    "T": 1.0,
    "dt": 0.02,
    "draws": 2,
    "spectral_grids": [32, 40, 48],
    "order_draws": 4096,
    "chaos_n": [16, 32, 64, 128],
    "chaos_reps": 32,
    "conc_T": 20.0,
    "conc_draws": 128,
}


def test_quick_run_passes(quick_run):
    out, verdict = quick_run("mean-field")
    assert verdict["verdict"] == "PASS", verdict
    names = {c["name"] for c in verdict["checks"]}
    assert any("spectral convergence" in n for n in names) and any("weak order 1" in n for n in names)
    assert (out / "densities.png").exists() and (out / "convergence.png").exists()
    assert any("resolved until" in n for n in verdict["notes"])


def test_a_noise_that_is_not_common_fails_the_chaos_check(monkeypatch):
    """Defect: the N-token systems of the chaos study driven by another noise than the reference ``mu_t`` (a path
    of another key): their empirical measure approaches another random measure, and E W1 stops falling with N."""
    real = mf.lagrangian

    def other_noise(model, theta0, path, *args, **kw):  # type: ignore[no-untyped-def]
        if theta0.shape[-1] < SMALL["particles"]:  # the N-token systems, not the reference
            path = dataclasses.replace(path, key=(*path.key, "another"))
        return real(model, theta0, path, *args, **kw)

    monkeypatch.setattr(mf, "lagrangian", other_noise)
    _, v = run("mean-field", {**SMALL, "models": ["C"]})
    assert v["verdict"] == "FAIL"
    assert "model C: chaos against the limit: E W1(mu^N_T, mu_T) falls with N as at t = 0" in failed(v), failed(v)


def test_a_wrong_brownian_scaling_fails_the_order_check(monkeypatch):
    """Defect: the frozen noise velocity scaled as ``G / dt^0.55`` instead of ``G / dt^0.5`` (increments of the
    wrong size for the step): the scheme no longer converges as dt -> 0, and the weak-order slope collapses."""
    real = mf.CircleC.velocity

    def wrong(self, atoms, xi, dt):  # type: ignore[no-untyped-def]
        return real(self, atoms, xi, dt) * dt**-0.05

    monkeypatch.setattr(mf.CircleC, "velocity", wrong)
    _, v = run("mean-field", {**SMALL, "models": ["C"], "chaos_n": [16, 32, 64]})
    assert v["verdict"] == "FAIL"
    assert any("weak order 1" in n for n in failed(v)), failed(v)


def test_wrong_concentration_rate_fails(monkeypatch):
    """Defect: model C's noise field 20% too strong (every mode scaled by 1.2 in amplitude): mu_t concentrates
    at 1.44 lambda_1, and the concentration check fails, while the solvers still agree with each other."""
    real = mf.CircleC.noise
    monkeypatch.setattr(mf.CircleC, "noise", lambda self, atoms, xi: 1.2 * real(self, atoms, xi))
    _, v = run("mean-field", {**SMALL, "models": ["C"], "chaos_n": [16, 32, 64]})
    assert v["verdict"] == "FAIL"
    bad = failed(v)
    assert any("concentrates at the synchronization exponent" in n for n in bad), bad
    assert not any("agree on one noise path" in n for n in bad), bad


def test_empty_or_bad_config_is_refused():
    with pytest.raises(ValueError, match="each in"):
        mfx.MeanFieldConfig(spectral_grids=[8, 16, 32])
    with pytest.raises(ValueError):
        mfx.MeanFieldConfig(models=[])
    assert math.isclose(mfx.MeanFieldConfig().order_dt[0], 0.25)
