"""One experiment registry, read by `list`, `schema`, `run` and the report, including experiments named in
$TOKENSDE_EXPERIMENTS; the layering of the shell (report and runtime do not import each other both ways);
the `simulate` command is a call of the library function `runtime.simulate.simulate_run`.

The external experiment is a real module written to a temporary directory put on ``sys.path``; the CLI runs in
process through typer's runner.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tokensde
from tokensde.cli import app
from tokensde.errors import UsageError
from tokensde.experiments import REGISTRY
from tokensde.experiments.registry import ENV, available_experiments

MODULE = "tokensde_registry_test_ext"
NAME = "registry-test-ext"

SOURCE = f'''
from typing import Any

import pandas as pd
from pydantic import Field

from tokensde.experiments.base import Experiment, ExperimentConfig


class ExtConfig(ExperimentConfig):
    units: int = Field(default=2, ge=1, le=8, description="integer in [1, 8]")
    scale: float = Field(default=1.5, gt=0.0, le=10.0, description="number in (0, 10]")
    seed: int = Field(default=0, ge=0, description="integer >= 0")


class Ext(Experiment):
    name = "{NAME}"
    summary = "an experiment defined outside tokensde"
    Config = ExtConfig

    def plan(self, cfg: ExtConfig) -> list[dict[str, Any]]:
        return [{{"id": f"u{{i}}", "i": i}} for i in range(cfg.units)]

    def run_unit(self, cfg: ExtConfig, unit: dict[str, Any], device: str, progress: Any = None) -> list[dict]:
        return [{{"unit": unit["i"], "value": cfg.scale * unit["i"]}}]

    def verdict(self, cfg: ExtConfig, table: pd.DataFrame) -> dict[str, Any]:
        ok = len(table) == cfg.units
        return {{"verdict": "PASS" if ok else "FAIL", "checks": [{{"name": "rows", "passed": ok, "detail": "n"}}]}}

    def interactive_figures(self, config: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
        import plotly.graph_objects as go

        fig = go.Figure(go.Scatter(x=table["unit"], y=table["value"], mode="markers"))
        return {{"ext values scale " + str(config["scale"]): fig}}


class NotAnExperiment:
    pass


ext_instance = Ext()
'''


@pytest.fixture
def ext(tmp_path, monkeypatch):
    """A module defining ``Ext`` on ``sys.path``; ``ext(spec)`` sets $TOKENSDE_EXPERIMENTS to ``spec``."""
    root = tmp_path / "extpath"
    root.mkdir()
    (root / f"{MODULE}.py").write_text(SOURCE)
    (root / "tokensde_registry_test_broken.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(root))
    for m in (MODULE, "tokensde_registry_test_broken"):
        monkeypatch.delitem(sys.modules, m, raising=False)

    def use(spec: str = f"{MODULE}:Ext") -> None:
        monkeypatch.setenv(ENV, spec)

    return use


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_list_shows_catalogue_and_external(ext):
    ext()
    r = invoke("list")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    for name in [*REGISTRY, NAME]:
        assert name in r.stdout, name
    assert "an experiment defined outside tokensde" in r.stdout


def test_schema_of_an_external_experiment(ext):
    ext()
    r = invoke("schema", NAME)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "units" in r.stdout and "scale" in r.stdout and "number in (0, 10]" in r.stdout
    r = invoke("schema", NAME, "--format", "json")
    assert r.exit_code == 0, r.stderr
    schema = json.loads(r.stdout)
    assert schema["title"] == NAME and set(schema["properties"]) == {"units", "scale", "seed"}
    r = invoke("schema", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert set(json.loads(r.stdout)) == {*REGISTRY, NAME}
    r = invoke("schema", "--format", "markdown")
    assert r.exit_code == 0 and f"- [{NAME}](#{NAME})" in r.stdout
    r = invoke("run", NAME, "--help")
    assert r.exit_code == 0 and "number in (0, 10]" in r.stdout


def test_an_instance_is_accepted_and_catalogue_names_are_not_replaced(ext):
    ext(f"{MODULE}:ext_instance, {MODULE}:Ext")
    found = available_experiments()
    assert list(found)[: len(REGISTRY)] == list(REGISTRY) and found[NAME].name == NAME
    assert all(found[n] is REGISTRY[n] for n in REGISTRY)


def test_external_experiment_runs_and_draws_its_own_interactive_figure(ext, tmp_path):
    ext()
    out = tmp_path / "run"
    r = invoke("run", NAME, "--out", out, "--executor", "serial", "--no-progress", "--seed", "3")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "PASS" in r.stdout
    page = (out / "report.html").read_text()
    assert 'data-figure="ext values scale 1.5"' in page
    (out / "report.html").unlink()
    r = invoke("report", out)
    assert r.exit_code == 0, r.stderr
    assert 'data-figure="ext values scale 1.5"' in (out / "report.html").read_text()


BAD = [
    ("no_colon_here", "entries are module:attribute"),
    ("tokensde_registry_no_such_module:Ext", "cannot load"),
    (f"{MODULE}:Missing", "cannot load"),
    (f"{MODULE}:NotAnExperiment", "is not an Experiment"),
    ("tokensde_registry_test_broken:Ext", "RuntimeError: broken on import"),
]


@pytest.mark.parametrize(("spec", "words"), BAD)
@pytest.mark.parametrize("command", [["list"], ["schema", NAME], ["schema"], ["run", NAME, "--no-progress"]])
def test_bad_entry_is_one_line_exit_2_naming_the_variable(ext, tmp_path, spec, words, command):
    ext(spec)
    r = invoke(*command, "--out", tmp_path / "o") if command[0] == "run" else invoke(*command)
    assert r.exit_code == 2, (r.stdout, r.stderr, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {ENV}: ") and words in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout and not (tmp_path / "o").exists()


def test_registry_function_raises_a_usage_error(ext):
    ext("nonsense")
    with pytest.raises(UsageError, match=f"^{ENV}: "):
        available_experiments()


# ----------------------------------------------------------------------------- layering


PACKAGE = Path(tokensde.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every package module ``path`` imports, at module level or inside a function (absolute names)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    pkg = parts if path.name == "__init__.py" else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(pkg[: len(pkg) - node.level + 1]) if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("tokensde")}


def _parts_imported(folder: str) -> set[str]:
    return {m.split(".")[1] for p in (PACKAGE / folder).rglob("*.py") for m in _imports(p) if m.count(".") >= 1}


def test_report_and_runtime_do_not_import_each_other_both_ways():
    assert "runtime" not in _parts_imported("report")  # runtime -> report only (the runner calls the report)
    assert not {"runtime", "report", "cli"} & _parts_imported("experiments")


def test_importing_the_report_loads_no_runtime():
    code = "import sys, tokensde.report; print(sorted({m for m in sys.modules if m.startswith('tokensde.')}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "tokensde.runtime" not in r.stdout and "tokensde.cli" not in r.stdout, r.stdout


# ----------------------------------------------------------------------------- simulate: CLI = library


def test_simulate_command_is_the_library_function(tmp_path):
    from tokensde.runtime.simulate import simulate_run

    args = dict(n=5, d=3, beta=1.0, steps=4, dt=0.01, systems=2, seed=4)
    cli_out, lib_out = tmp_path / "cli", tmp_path / "lib"
    flags = [f"--{k}={v}" for k, v in args.items()]
    r = invoke("simulate", "--out", cli_out, *flags)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "simulated 2 x 5 tokens in d = 3 for 4 steps" in r.stdout
    summary = simulate_run(lib_out, **args)  # type: ignore[arg-type]
    assert json.loads((lib_out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    cli_summary = json.loads((cli_out / "summary.json").read_text())
    assert cli_summary["config"] == summary["config"] and cli_summary["metrics"] == summary["metrics"]
    with np.load(cli_out / "final_states.npz") as a, np.load(lib_out / "final_states.npz") as b:
        assert np.array_equal(a["x"], b["x"])
    cli_manifest = json.loads((cli_out / "manifest.json").read_text())
    lib_manifest = json.loads((lib_out / "manifest.json").read_text())
    assert cli_manifest["config"] == lib_manifest["config"] == summary["config"]
    with pytest.raises(UsageError, match="^model: "):
        simulate_run(tmp_path / "other", model="multihead", **args)  # type: ignore[arg-type]
    assert not (tmp_path / "other").exists()
