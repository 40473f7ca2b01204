"""``universality``: the quick run passes; a law with the wrong variance turns the verdict FAIL.

At Vbar = 0 a variance of 1.2 instead of 1 is a time change of model A and leaves the exit law alone, so
the check that sees it is the clock (the overlap's quadratic variation against its exact rate); the exit-law
checks keep passing, which the injection test shows too.
"""

import dataclasses
import math

import matplotlib
import pytest
from injection import failed, run

from tokensde import laws
from tokensde.experiments import REGISTRY

matplotlib.use("Agg")

NAME = "universality"
CLOCK = "covariance scale pooled per law: the overlap's quadratic variation over its exact rate is 1"

#: one law, one cell: about 2 s
SMALL = {
    "laws": ["gaussian"],
    "heavy_nu": [],
    "d": [3],
    "beta": [2.5],
    "runs": 1000,
    "T": 20.0,
    "T_max": 40.0,
    "step": 0.1,
    "clock_steps": 8,
}


def test_quick_run_passes():
    exp = REGISTRY[NAME]
    cfg = exp.Config(**exp.quick)
    table, v = run(NAME, exp.quick)
    assert v["verdict"] == "PASS", [c["detail"] for c in v["checks"] if not c["passed"]]
    names = {c["name"] for c in v["checks"]}
    assert CLOCK in names and any("pooled per law" in n for n in names) and len(names) >= 6
    # every law of the catalogue ran, and the heavy-tailed one is reported, not checked
    assert set(table["law"]) == set(laws.LAWS)
    heavy = table[~table["finite_variance"]]
    assert len(heavy) and heavy["finite_states"].all() and any("infinite variance" in n for n in v["notes"])
    assert ((table["ci_low"] <= table["p_antipodal_mc"]) & (table["p_antipodal_mc"] <= table["ci_high"])).all()
    per_law = exp.tables(cfg, table)["laws"]
    assert len(per_law) == table["label"].nunique()
    figs = exp.figures(cfg, table)
    assert list(figs) == ["universality"]
    import matplotlib.pyplot as plt

    plt.close("all")


def test_variance_one_point_two_fails(monkeypatch):
    """The gaussian law's map scaled to variance 1.2: the clock check fails, the exit-law checks do not."""
    spec = laws.REGISTRY["gaussian"]
    wrong = dataclasses.replace(spec, mapping=lambda xi: math.sqrt(1.2) * xi)
    _, ok = run(NAME, SMALL)
    assert ok["verdict"] == "PASS", [c["detail"] for c in ok["checks"] if not c["passed"]]
    monkeypatch.setitem(laws.REGISTRY, "gaussian", wrong)
    _, v = run(NAME, SMALL)
    assert v["verdict"] == "FAIL" and CLOCK in failed(v), v
    clock = next(c for c in v["checks"] if c["name"] == CLOCK)
    assert clock["values"]["z"]["gaussian"] > 5.0
    assert not any("exit law" in n for n in failed(v))


@pytest.mark.parametrize(
    "data,field",
    [
        ({"clock_steps": 7}, "clock_steps"),
        ({"heavy_nu": [2.5]}, "heavy_nu"),
        ({"nu": 2.0}, "nu"),
        ({"laws": ["cauchy"]}, "laws"),
        ({"T": 30.0, "T_max": 20.0}, "T_max"),
    ],
)
def test_config_refuses(data, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        REGISTRY[NAME].Config(**data)
    assert field in str(e.value)
