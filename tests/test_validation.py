"""Validation experiments (solver-order, convergence) end to end, and the nested-level driver behind them."""

import math
import sys

import pandas as pd
import pytest
import torch

from tokensde.models import ValueNoise
from tokensde.solvers import SOLVERS, Level, simulate, simulate_levels
from tokensde.sphere import uniform

CLI = [sys.executable, "-m", "tokensde.cli"]
F64 = torch.float64


def test_solver_order_quick(quick_run):
    out, verdict = quick_run("solver-order")
    assert verdict["verdict"] == "PASS", verdict
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["case"]) == {"A-euler", "A-heun", "B-euler", "C-euler"}
    # errors shrink with the step in every case (the strong error monotonically)
    for _, sub in table.groupby("case"):
        assert sub.sort_values("h")["strong"].is_monotonic_increasing
    assert (out / "solver_order.png").exists() and (out / "report.html").exists()


def test_convergence_quick(quick_run):
    out, verdict = quick_run("convergence")
    assert verdict["verdict"] == "PASS", verdict
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["series"]) == {"A", "B", "C-depth", "C-width"}
    depth = table[table["series"] != "C-width"]
    # the supremum over grid times dominates the final-time error
    assert (depth["ms_sup"] >= depth["ms"] - 1e-12).all()
    assert (out / "convergence.png").exists()


def test_levels_ratio_one_is_simulate():
    """A level of ratio 1 takes exactly the numbers of simulate() with the same seed and key."""
    model = ValueNoise(beta=1.0, route="matrix")
    x0 = uniform((256, 3), 4, torch.Generator().manual_seed(0), F64)
    em = SOLVERS["euler"]
    res = simulate_levels([Level("a", lambda x, xi, h: em.step(model, x, xi, h), 1)], x0, 0.01, 32, (4, 4), 7, ("k",))
    ref = simulate(model, x0, 0.01, 32, 7, ("k",))
    torch.testing.assert_close(res["a"].x, ref.x, rtol=0, atol=1e-13)


def test_levels_coarse_step_uses_the_brownian_increment():
    """A level of ratio r steps with (xi_1 + ... + xi_r)/sqrt(r) at step r dt: replayed by hand."""
    from tokensde.engine import BrownianPath

    model = ValueNoise(beta=0.5, route="matrix")
    x0 = uniform((256, 2), 3, torch.Generator().manual_seed(1), F64)
    em = SOLVERS["euler"]
    dt, steps, r = 0.02, 12, 4
    res = simulate_levels(
        [Level("c", lambda x, xi, h: em.step(model, x, xi, h), r)], x0, dt, steps, (3, 3), 3, ("k",), record_every=r
    )
    fine = BrownianPath(3, ("k",), 256, (3, 3), dtype=F64).normals(0, steps)
    x = x0
    for j in range(steps // r):
        s = fine[j * r : (j + 1) * r].sum(0)
        x = em.step(model, x, s / math.sqrt(r), r * dt)
    torch.testing.assert_close(res["c"].x, x, rtol=0, atol=1e-13)
    assert res["c"].xs.shape[0] == steps // r + 1


def test_levels_refuse_ratios_that_do_not_divide():
    x0 = uniform((256, 2), 3, torch.Generator().manual_seed(1), F64)
    with pytest.raises(ValueError, match="multiples"):
        simulate_levels([Level("c", lambda x, xi, h: x, 5)], x0, 0.1, 12, (3, 3), 0)


@pytest.mark.parametrize(
    "name,toml,field",
    [
        ("solver-order", "steps = [4, 8, 24]", "steps"),  # 24 does not divide ref_steps = 512
        ("solver-order", 'cases = ["A-milstein"]', "cases"),
        ("solver-order", "T = -1.0", "T"),
        ("convergence", "depths = [8, 16]", "depths"),
        ("convergence", 'series = ["D"]', "series"),
        ("convergence", "widths = [4, 8, 100000]", "widths"),
        ("convergence", "systems = inf", "systems"),
    ],
)
def test_cli_rejects_bad_config(rejects_config, name, toml, field):
    rejects_config(name, toml, field)
