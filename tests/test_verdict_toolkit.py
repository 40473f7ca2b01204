"""The verdict toolkit: empty lists fail, pooled tests see a few-percent bias, slope checks use the standard error."""

import json

import numpy as np
import pytest

from tokensde.experiments import verdict as V


def test_empty_list_of_checks_is_a_fail():
    v = V.verdict([])
    assert v["verdict"] == "FAIL" and len(v["checks"]) == 1 and not v["checks"][0]["passed"]
    assert V.verdict([V.check("a", True, "x")])["verdict"] == "PASS"
    assert V.verdict([V.check("a", True, "x"), V.check("b", False, "y")])["verdict"] == "FAIL"


def test_records_are_json_with_numbers_and_tolerance():
    c = V.slope_within("s", np.float64(-1.02), float("nan"), -1.0, 0.25, 0.99)
    d = V.verdict([c])["checks"][0]
    assert set(d) == {"name", "passed", "detail", "values", "tolerance", "source"}
    assert d["values"]["se"] is None and d["tolerance"] == 0.25 and d["passed"]
    json.dumps(d, allow_nan=False)


def _binomial_family(bias: float, seed: int, cells: int = 9, n: int = 2000):
    rng = np.random.default_rng(seed)
    p = np.linspace(0.3, 0.7, cells)
    k = rng.binomial(n, p * (1.0 + bias))
    return k, np.full(cells, n), p


def test_pooled_sees_a_four_percent_bias_that_cells_do_not():
    """9 cells of 2000 runs, 4% fewer successes than the theory in every cell. Per-cell family-wise bands
    (z = 3.26) miss it about half the time; the pooled z (expected -0.04 sum(n p) / sqrt(sum n p (1 - p)) = -5.4)
    fails at the family-wise level; without the bias the pooled check raises false alarms at its level."""
    fails = cell_fails = false_alarms = 0
    for seed in range(10):
        k, n, p = _binomial_family(-0.04, seed)
        cell_fails += not V.binomial_cells("c", k, n, p, [str(i) for i in range(9)], 0.99).passed
        se = np.sqrt(p * (1 - p) / n)
        pooled = V.pooled_z("p", k / n, se, p, ["d=20"] * 9, 0.99, "d", scale=n)
        fails += not pooled.passed
        k0, _, _ = _binomial_family(0.0, seed)
        false_alarms += not V.pooled_z("p", k0 / n, se, p, ["d=20"] * 9, 0.99, "d", scale=n).passed
    # unbiased: Binomial(10, 0.01) false alarms, P(>= 2) = 0.004; biased: power ~0.97 per seed
    assert false_alarms <= 1 and fails >= 8 and cell_fails <= 6, (false_alarms, fails, cell_fails)


def test_pooled_families_and_degenerate_variance():
    c = V.pooled_z("p", [0.0, 0.5], [0.0, 0.01], [0.0, 0.5], ["a", "b"], 0.99)
    assert c.passed and c.values["z"] == {"a": 0.0, "b": 0.0}
    c = V.pooled_z("p", [0.01], [0.0], [0.0], ["a"], 0.99)
    assert not c.passed
    assert not V.pooled_z("p", [], [], [], [], 0.99).passed


def test_slope_within_uses_the_larger_tolerance():
    # statistical part dominates: 0.4 off, se 0.2 -> tolerance 2.58 * 0.2 = 0.52 > 0.25
    assert V.slope_within("s", 0.9, 0.2, 0.5, 0.25, 0.99).passed
    # precise slope: the model tolerance is the limit
    c = V.slope_within("s", 0.9, 0.01, 0.5, 0.25, 0.99)
    assert not c.passed and c.tolerance == pytest.approx(0.25)
    assert V.slope_within("s", 0.6, 0.01, 0.5, 0.25, 0.99).passed
    assert not V.slope_within("s", float("nan"), 0.01, 0.5, 0.25, 0.99).passed
    # one-sided
    assert V.slope_within("s", -3.0, 0.01, -1.0, 0.1, 0.99, side="upper").passed
    assert not V.slope_within("s", -3.0, 0.01, -1.0, 0.1, 0.99, side="lower").passed


def test_coverage_counts_against_the_binomial_law():
    rng = np.random.default_rng(0)
    ok = rng.random(400) < 0.95
    assert V.coverage("c", ok, 0.95, 0.99).passed
    bad = rng.random(400) < 0.85  # intervals too narrow
    assert not V.coverage("c", bad, 0.95, 0.99).passed
    assert not V.coverage("c", [], 0.95, 0.99).passed


def test_monotone():
    x = np.arange(6.0)
    se = np.full(6, 0.01)
    assert V.monotone("m", x, x * 0.1, se, "increasing", 0.99).passed
    assert not V.monotone("m", x, x * 0.1, se, "decreasing", 0.99).passed
    y = x * 0.1
    y[3] = 0.0  # a reversal far beyond the noise
    assert not V.monotone("m", x, y, se, "increasing", 0.99).passed
    assert not V.monotone("m", x, np.zeros(6), se, "increasing", 0.99).passed  # flat: no trend
    assert not V.monotone("m", [0.0], [1.0], [0.1], "increasing", 0.99).passed


def test_bounds():
    assert V.at_most("a", 0.005, 0.01, "undecided", "stated").passed
    assert not V.at_most("a", float("nan"), 0.01, "undecided", "stated").passed
    assert V.at_least("a", 3, 2, "n", "stated").passed and not V.at_least("a", 1, 2, "n", "stated").passed


def test_settle_guards_verdicts_not_built_with_the_toolkit():
    assert V.settle({"verdict": "PASS", "checks": []})["verdict"] == "FAIL"
    assert V.settle({"verdict": "PASS"})["verdict"] == "FAIL"
    assert V.settle({"verdict": "PASS", "checks": [{"name": "a", "passed": False, "detail": ""}]})["verdict"] == "FAIL"
    assert V.settle({"verdict": "FAIL", "checks": [{"name": "a", "passed": True, "detail": ""}]})["verdict"] == "FAIL"
    ok = {"verdict": "PASS", "checks": [{"name": "a", "passed": True, "detail": ""}], "notes": ["n"]}
    assert V.settle(ok) == ok


def test_runner_turns_an_empty_pass_into_a_fail(tmp_path):
    """An experiment (e.g. loaded from elsewhere) whose verdict says PASS with no checks is recorded as FAIL."""
    from tokensde.experiments.base import Experiment, ExperimentConfig
    from tokensde.runtime import run_experiment

    class Empty(Experiment):
        name = "empty"
        summary = "says PASS, checks nothing"

        class Config(ExperimentConfig):
            pass

        def plan(self, cfg):
            return [{"id": "u"}]

        def run_unit(self, cfg, unit, device, progress=None):
            return [{"x": 1.0}]

        def verdict(self, cfg, table):
            return {"verdict": "PASS", "checks": []}

    v = run_experiment(Empty(), Empty.Config(), tmp_path / "run", show_progress=False)
    assert v["verdict"] == "FAIL"
    assert json.loads((tmp_path / "run" / "verdict.json").read_text())["verdict"] == "FAIL"
