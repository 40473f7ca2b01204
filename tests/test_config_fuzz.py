"""Config loading is total: any TOML gives a valid config or one error line (exit 2) naming a real key.

* fuzzing (hypothesis, derandomized): for every registered experiment, random TOML documents -- real keys with
  values near and beyond their bounds, unknown keys, wrong types, NaN/inf, huge and negative numbers, strings,
  dates, nested tables, arrays of mixed types -- go through the loader of ``tokensde run --config`` (``tomllib``,
  then ``validate``);
* strict types: for every field (nested keys too) of every experiment's Config and of the CLI's argument models,
  digit strings for numbers, booleans for numbers, integral floats for integers are refused (one line naming
  the field), while an integer for a float is accepted;
* the CLI in a subprocess: exit 2, one line naming the field and the allowed range, nothing written;
* the generated config docs (``docs/config.md``, ``docs/schema/*.json``) match the live registry;
* security: configs are TOML data, results open formats (Parquet, NPZ, JSON), never pickle.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import io
import json
import math
import re
import subprocess
import sys
import tomllib
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tokensde.cli import validate
from tokensde.experiments import REGISTRY
from tokensde.experiments import schema as sch

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tokensde"
CLI = [sys.executable, "-m", "tokensde.cli"]
NAMES = sorted(REGISTRY)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ----------------------------------------------------------------------------- TOML writer (the test's own)


def _toml_str(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_doc(d: dict[str, Any]) -> str:
    return "".join(f"{_toml_str(k)} = {toml_value(v)}\n" for k, v in d.items())


# ----------------------------------------------------------------------------- strategies

EDGES = [0, 1, -1, 2, 3, 2**31, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30, 0.0, -0.0, 0.5, 1e-320, 5e-324]
EDGES += [1e308, -1e308, 1e-12, 0.1, 0.3, 7.5, 1e6]
# TOML has no infinite or NaN dates: hypothesis's defaults suit it (naive datetimes, years 1..9999)
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(EDGES),
    st.dates(),
    st.datetimes(),
    st.times(),
)
junk_keys = st.one_of(st.text(max_size=10), st.sampled_from(["seed ", "Seed", "d.x", "", "a\nb", ":x:", "[d]"]))
junk = st.recursive(
    scalars, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(junk_keys, ch, max_size=3), max_leaves=8
)


def _bounds(info: Any) -> list[Any]:
    nums: list[Any] = []
    for m in info.metadata:
        for k in ("ge", "gt", "le", "lt"):
            v = getattr(m, k, None)
            if v is not None:
                nums += [v, v + 1, v - 1, v * 2, v / 2, math.nextafter(float(v), math.inf)]
                nums.append(math.nextafter(float(v), -math.inf))
    return nums


def _plain(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _item(annotation: Any) -> Any:
    return (typing.get_args(annotation) or (Any,))[0]


def _element(annotation: Any, near: list[Any]) -> st.SearchStrategy[Any]:
    """Entries of a list field: valid choices or tables where typed, numbers near the defaults, junk."""
    options: list[st.SearchStrategy[Any]] = [junk]
    if typing.get_origin(annotation) is Literal:
        options.append(st.sampled_from(typing.get_args(annotation)))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        options.append(tables(annotation))
    if near:
        options.append(st.sampled_from(near))
    options += [st.integers(-3, 20000), st.floats(-2.0, 3.0), st.sampled_from(EDGES)]
    return st.one_of(options)


def field_values(model: type[BaseModel], name: str) -> st.SearchStrategy[Any]:
    """Values for one key: the default, numbers at and beyond the Field bounds, valid choices, junk."""
    info = model.model_fields[name]
    ann = info.annotation
    options: list[st.SearchStrategy[Any]] = [junk]
    # a default of None (no value) has no TOML spelling: such a key is given by leaving it out
    if not info.is_required() and info.get_default(call_default_factory=True) is not None:
        options.append(st.just(_plain(info.get_default(call_default_factory=True))))
    edges = _bounds(info)
    if edges:
        options.append(st.sampled_from(edges))
        options.append(st.sampled_from([int(x) for x in edges if math.isfinite(x)]))
    if typing.get_origin(ann) is Literal:
        options.append(st.sampled_from(typing.get_args(ann)))
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        options.append(tables(ann))
    if typing.get_origin(ann) is list:
        default = _plain(info.get_default(call_default_factory=True)) if not info.is_required() else []
        near = [x for x in default if not isinstance(x, dict)]
        near += [x * f for x in near if isinstance(x, int | float) and not isinstance(x, bool) for f in (2, 3, 0.5)]
        elem = _element(_item(ann), near)
        options.append(st.lists(elem, max_size=7))
        if default:
            options.append(st.lists(st.sampled_from(default), min_size=1, max_size=6))
    return st.one_of(options)


@cache
def tables(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """TOML tables for ``model``: its keys (with near-valid values) and now and then an unknown one."""
    pair = st.one_of(
        *[st.tuples(st.just(k), field_values(model, k)) for k in model.model_fields],
        st.tuples(junk_keys, junk),
    )
    return st.lists(pair, max_size=6).map(dict)


def _check_error_line(model: type[BaseModel], data: dict[str, Any], line: str) -> None:
    assert line.startswith("error: "), line
    body = line.removeprefix("error: ")
    real = [k for k in model.model_fields if re.match(re.escape(k) + r"[:.\[]", body)]
    if real:
        assert " (allowed: " in body, line  # the allowed range of that field
        return
    # else an unknown key, named as written (quoted when not a plain key), with the keys that are allowed
    unknown = [k for k in data if k not in model.model_fields]
    named = [k for k in unknown if body.startswith(f"{k}: ") or body.startswith(f"{json.dumps(k)}: ")]
    assert named and "unknown key (allowed keys: " in body, line


def load(name: str, text: str, quick: bool) -> Any:
    """What ``tokensde run NAME [--quick] --config FILE`` does with the file's text, up to the config."""
    exp = REGISTRY[name]
    data: dict[str, Any] = dict(exp.quick) if quick else {}
    data.update(tomllib.loads(text))
    return validate(exp.Config, data)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_loader_gives_a_config_or_one_error_line(name, data):
    exp = REGISTRY[name]
    doc = data.draw(tables(exp.Config), label="config")
    quick = data.draw(st.booleans(), label="quick")
    text = toml_doc(doc)
    parsed = tomllib.loads(text)  # the test's writer is valid TOML
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        try:
            cfg = load(name, text, quick)
        except typer.Exit as e:
            assert e.exit_code == 2
            lines = buf.getvalue().splitlines()
            assert len(lines) == 1, buf.getvalue()
            _check_error_line(exp.Config, {**(exp.quick if quick else {}), **parsed}, lines[0])
            return
    assert isinstance(cfg, exp.Config) and buf.getvalue() == ""
    # a valid config is a fixed point: what the run manifest records validates to the same config
    assert exp.Config(**cfg.model_dump()) == cfg


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_quick_are_valid(name):
    exp = REGISTRY[name]
    assert isinstance(load(name, "", False), exp.Config)
    assert isinstance(load(name, "", True), exp.Config)


# ----------------------------------------------------------------------------- error lines (in process)


def _error(model: type[BaseModel], data: dict[str, Any]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), pytest.raises(typer.Exit) as e:
        validate(model, data)
    assert e.value.exit_code == 2
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1, buf.getvalue()
    return lines[0]


@pytest.mark.parametrize(
    "name,data,expected",
    [
        # wrong type: the expected type and the range
        ("chaos", {"d": "x"}, "error: d: Input should be a valid integer, not a string, got 'x'"),
        ("chaos", {"d": "x"}, "integer, not a string, got 'x' (allowed: integer in [2, 64])"),
        # strict types: no string -> number, bool -> number or integral float -> int coercion
        ("chaos", {"seed": "7"}, "error: seed: Input should be a valid integer, not a string, got '7' (allowed: "),
        ("phase-diagram", {"runs": 3000.0}, "error: runs: Input should be a valid integer, not a float, got 3000.0"),
        ("phase-diagram", {"beta": [True]}, "error: beta[0]: Input should be a valid number, not a boolean, got True"),
        ("chaos", {"T": 10**400}, "error: T: Input should be a valid number, an integer too large for a float, got"),
        ("chaos", {"d": "x"}, "(allowed: integer in [2, 64])"),
        # out of range
        ("chaos", {"T": 11}, "error: T: Input should be less than or equal to 10, got 11 (allowed: number in (0, 10])"),
        ("chaos", {"seed": -1}, "(allowed: integer in [0, 2^63 - 1])"),
        # NaN / inf
        ("chaos", {"tol": math.nan}, "error: tol: Input should be a finite number, got nan (allowed: number in (0, 1]"),
        # unknown key: the key and the allowed keys
        ("chaos", {"foo": 1}, "error: foo: unknown key (allowed keys: models, d, N, N_ref,"),
        ("chaos", {"a\nb": 1}, 'error: "a\\nb": unknown key'),
        # list entries: field and index, and the allowed values
        ("chaos", {"models": ["A", "B"]}, "error: models[1]: Input should be 'A' or 'C', got 'B' (allowed: each one"),
        ("chaos", {"N": [16, "x", 64]}, "error: N[1]: Input should be a valid integer"),
        # validator-only checks: the description states them
        ("chaos", {"N": [1, 16, 64]}, "error: N: each N must be in [2, 8192], not 1"),
        ("chaos", {"N": [1, 16, 64]}, "token counts, >= 3 values in [2, 8192], < N_ref)"),
        # a model validator whose message starts with the field
        ("convergence", {"depths": [8, 16, 7]}, "error: depths: each value must divide ref_depth = 512"),
        # nested tables: the key path, the nested model's range and keys
        ("synchronization", {"energy_setting": {"activation": "relu", "d": 1}}, "error: energy_setting.d: Input"),
        ("synchronization", {"energy_setting": {"activation": "relu", "d": 1}}, "(allowed: integer in [2, 512])"),
        ("synchronization", {"energy_setting": {"activation": "relu", "d": 4, "x": 1}}, "setting.x: unknown key"),
        ("synchronization", {"energy_setting": {"d": 4}}, "error: energy_setting.activation: Field required (allowed:"),
        ("synchronization", {"exponent_settings": [{"activation": "relu", "d": 4}, {"activation": "no", "d": 4}]},
         "error: exponent_settings[1].activation: "),
        # a step so small that T / step overflows an integer: refused by the validators themselves, one line
        ("chaos", {"dt": 5e-324}, "error: dt: T / dt must be at most 1e7 steps"),
        ("scaling-regimes", {"eta": [1e-320, 0.1, 0.2]}, "error: eta: each eta must give at most 1e7 layers"),
    ],
)  # fmt: skip
def test_error_lines(name, data, expected):
    line = _error(REGISTRY[name].Config, data)
    assert expected in line, line


def test_no_markup_or_emoji_in_error_lines():
    line = _error(REGISTRY["chaos"].Config, {":thumbs_up: [bold]x[/bold]": 1})
    assert line.startswith('error: ":thumbs_up: [bold]x[/bold]": unknown key'), line


# ----------------------------------------------------------------------------- strict types (no coercion)


def _kind(v: Any) -> str:
    """How the error line names the TOML type of a wrong value."""
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}[type(v)]


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _wrong(ann: Any, good: Any, path: str) -> list[tuple[str, Any, str | None]]:
    """``(error path, value, kind)``: values of the wrong type for a field of type ``ann`` whose valid value is
    ``good`` -- the same number as a string or an integral float, booleans --, also inside arrays and tables;
    ``kind`` is the wrong value's type as the line names it (``None`` for a choice, which lists the choices)."""
    if ann is int:
        return [(path, w, _kind(w)) for w in (str(good), True, False, float(good))]
    if ann is float:
        return [(path, w, _kind(w)) for w in (str(good), "7", True, False)]
    if ann is bool:
        return [(path, w, _kind(w)) for w in (int(good), "true")]
    if ann is str or ann == (str | None):
        return [(path, w, _kind(w)) for w in (7, True)]
    if typing.get_origin(ann) is Literal:
        return [(path, w, None) for w in (7, True)]
    if _is_model(ann):  # a table: given as a string, or one key of the wrong type
        out: list[tuple[str, Any, str | None]] = [(path, "x", "a string")]
        for key, info in ann.model_fields.items():
            for p, w, k in _wrong(info.annotation, good[key], f"{path}.{key}"):
                out.append((p, {**good, key: w}, k))
        return out
    if typing.get_origin(ann) is list:  # an array: given as a string, or its first entry of the wrong type
        out = [(path, json.dumps(good[0]), "a string")]
        for p, w, k in _wrong(_item(ann), good[0], f"{path}[0]"):
            out.append((p, [w, *good[1:]], k))
        return out
    raise AssertionError(f"{path}: no wrong values for {ann}")


def _ints(ann: Any, good: Any) -> Any:
    """``good`` with every integral float of a float field written as an int (``None``: nothing to change)."""
    if ann is float and isinstance(good, float) and good.is_integer():
        return int(good)
    if typing.get_origin(ann) is list:
        items = [_ints(_item(ann), x) for x in good]
        if all(x is None for x in items):
            return None
        return [y if x is None else x for x, y in zip(items, good, strict=True)]
    if _is_model(ann):
        sub = {k: _ints(info.annotation, good[k]) for k, info in ann.model_fields.items()}
        if all(x is None for x in sub.values()):
            return None
        return {**good, **{k: x for k, x in sub.items() if x is not None}}
    return None


def _good(model: type[BaseModel], name: str) -> Any:
    return _plain(model.model_fields[name].get_default(call_default_factory=True))


FIELDS = [(n, f) for n in NAMES for f in REGISTRY[n].Config.model_fields]


@pytest.fixture
def fast_sync_theory(monkeypatch):
    """synchronization's energy_setting validator integrates lambda_bar' (35 ms) on every validation: memoized."""
    from tokensde.experiments import synchronization

    theory = synchronization.theory_c
    monkeypatch.setattr(theory, "lambda_bar_prime", cache(theory.lambda_bar_prime))


@pytest.mark.parametrize("name,field", FIELDS, ids=[f"{n}-{f}" for n, f in FIELDS])
def test_wrong_types_are_refused(fast_sync_theory, name, field):
    """A digit string or boolean for a number, an integral float for an integer (in arrays and tables too):
    exit 2 and one line naming the field, what the value should be and what it is, and the allowed range."""
    model = REGISTRY[name].Config
    cases = _wrong(model.model_fields[field].annotation, _good(model, field), field)
    for path, value, kind in cases:
        line = _error(model, {field: value})
        assert line.startswith(f"error: {path}: ") and " (allowed: " in line, (value, line)
        if kind is not None:
            assert f", not {kind}, got " in line, (value, line)


@pytest.mark.parametrize("name", NAMES)
def test_an_integer_for_a_float_is_accepted(fast_sync_theory, name):
    """TOML ``beta = 1`` for a float field (also in arrays and tables) gives the config of ``beta = 1.0``."""
    model = REGISTRY[name].Config
    changed = 0
    for field, info in model.model_fields.items():
        good = _good(model, field)
        ints = _ints(info.annotation, good)
        if ints is not None:
            changed += 1
            as_float, as_int = validate(model, {field: good}), validate(model, {field: ints})
            assert as_int.model_dump() == as_float.model_dump(), field
            assert json.dumps(as_int.model_dump()) == json.dumps(as_float.model_dump()), field  # 1.0, not 1
    assert changed, f"{name}: no float field with an integral default to try"


@pytest.mark.parametrize(
    "name,text,expected",
    [
        ("phase-diagram", 'seed = "7"', "error: seed: Input should be a valid integer, not a string, got '7'"),
        ("phase-diagram", "beta = [true]", "error: beta[0]: Input should be a valid number, not a boolean"),
        ("phase-diagram", "runs = 3000.0", "error: runs: Input should be a valid integer, not a float, got 3000.0"),
        ("chaos", "T = false", "error: T: Input should be a valid number, not a boolean, got False (allowed: "),
        ("chaos", 'N = ["16", "32", "64"]', "error: N[0]: Input should be a valid integer, not a string, got '16'"),
        ("synchronization", "[energy_setting]\nactivation = 'relu'\nd = 4.0", "error: energy_setting.d: Input "),
        ("noise-sweep", "[[settings]]\nn = 8\nd = 4\nbeta = '2'", "error: settings[0].beta: Input should be a"),
        ("accuracy", "pointer_online = 1", "error: pointer_online: Input should be a valid boolean, not an integer"),
    ],
)  # fmt: skip
def test_toml_wrong_types_one_line(fast_sync_theory, name, text, expected):
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), pytest.raises(typer.Exit) as e:
        load(name, text, quick=False)
    assert e.value.exit_code == 2
    (line,) = buf.getvalue().splitlines()
    assert line.startswith(expected) and " (allowed: " in line, line


def test_toml_integers_for_floats_arrays_and_tables_load():
    """What strictness must keep: ints for floats, TOML arrays for lists, tables and arrays of tables for models."""
    cfg = load("chaos", "beta_a = 3\nT = 1\nc = -1\nN = [16, 32, 64]\nmodels = ['A']", quick=False)
    assert (cfg.beta_a, cfg.T, cfg.c, cfg.N, cfg.models) == (3.0, 1.0, -1.0, [16, 32, 64], ["A"])
    assert all(type(x) is float for x in (cfg.beta_a, cfg.T, cfg.c))
    cfg = load("phase-diagram", "beta = [0, 1.5, 2]\nrho0 = 0", quick=True)
    assert cfg.beta == [0.0, 1.5, 2.0] and all(type(x) is float for x in cfg.beta) and type(cfg.rho0) is float
    cfg = load("noise-sweep", "[[settings]]\nn = 8\nd = 4\nbeta = 2", quick=False)
    assert cfg.settings[0].beta == 2.0 and type(cfg.settings[0].beta) is float
    cfg = load("accuracy", "pointer_online = false\ndatasets = ['digits']", quick=True)
    assert cfg.pointer_online is False and cfg.datasets == ["digits"]


def _cli_args() -> list[tuple[type[BaseModel], dict[str, Any]]]:
    """The CLI's argument models, with the typer commands' defaults as the valid values."""
    import inspect

    from tokensde import cli

    out = []
    commands = ((cli.SimulateArgs, cli.simulate), (cli.TwoPointArgs, cli.two_point), (cli.SyncArgs, cli.sync))
    for model, command in commands:
        params = inspect.signature(command).parameters
        out.append((model, {k: params[k].default for k in model.model_fields}))
    return out


def test_cli_argument_models_are_strict():
    """simulate / theory two-point / theory sync: the same refusals, and an int for a float is accepted."""
    for model, good in _cli_args():
        assert validate(model, good).model_dump() == good
        for field, info in model.model_fields.items():
            for path, value, kind in _wrong(info.annotation, good[field], field):
                line = _error(model, {**good, field: value})
                assert line.startswith(f"error: {path}: "), (model.__name__, value, line)
                if kind is not None:
                    assert f", not {kind}, got " in line, (model.__name__, value, line)
            ints = _ints(info.annotation, good[field])
            if ints is not None:
                cfg = validate(model, {**good, field: ints})
                assert getattr(cfg, field) == good[field] and type(getattr(cfg, field)) is float


def test_cli_commands_pass_typed_options():
    """typer hands the argument models ints and floats of the declared types: the commands still run."""
    from typer.testing import CliRunner

    from tokensde.cli import app

    r = CliRunner().invoke(app, ["theory", "two-point", "--json", "--d", "5", "--beta", "2", "--rho0", "0"])
    assert r.exit_code == 0 and json.loads(r.stdout)["beta"] == 2.0, (r.exception, r.output)
    r = CliRunner().invoke(app, ["theory", "sync", "--json", "--activation", "tanh", "--d", "4", "--sigma-u", "0"])
    assert r.exit_code == 0 and json.loads(r.stdout)["sigma_u"] == 0.0, (r.exception, r.output)
    r = CliRunner().invoke(app, ["theory", "two-point", "--d", "1.5"])  # typer itself refuses a non-integer
    assert r.exit_code == 2


def test_cli_simulate_passes_typed_options(tmp_path):
    from typer.testing import CliRunner

    from tokensde.cli import app

    out = tmp_path / "sim"
    args = ["simulate", "--out", str(out), "--n", "4", "--d", "3", "--steps", "2", "--beta", "1", "--seed", "7"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, (r.exception, r.output)
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["seed"] == 7 and config["beta"] == 1.0 and isinstance(config["beta"], float)


# ----------------------------------------------------------------------------- the CLI in a subprocess

BAD = [  # wrong type, unknown key, NaN / inf, out of range; nested tables
    ("chaos", 'd = "six"', "d", "integer in [2, 64]"),
    ("chaos", "foo = 1", "foo", "allowed keys: models, d,"),
    ("convergence", "T = nan", "T", "number in (0, 4]"),
    ("chaos", "replicates = 2", "replicates", "integer in [3, 1e4]"),
    ("synchronization", "energy_setting = {activation = 'relu', d = 1000}", "energy_setting.d", "[2, 512]"),
    ("synchronization", "[energy_setting]\nactivation = 'relu'\nd = 4\nwidth = 3", "energy_setting.width", "keys: act"),
]


@pytest.mark.parametrize("name,toml,field,rng", BAD)
def test_cli_bad_config_one_line_nothing_written(tmp_path, name, toml, field, rng):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml + "\n")
    out = tmp_path / "out"
    r = subprocess.run(
        [*CLI, "run", name, "--config", str(cfg), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: ") and rng in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


@pytest.mark.parametrize("content", [b"seed = " + b"1" * 5000 + b"\n", b"seed = \xff\n"])
def test_cli_unreadable_config_one_line(tmp_path, content):
    from typer.testing import CliRunner

    from tokensde.cli import app

    cfg = tmp_path / "c.toml"
    cfg.write_bytes(content)
    r = CliRunner().invoke(app, ["run", "chaos", "--config", str(cfg), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, (r.exception, r.stderr)
    assert not (tmp_path / "out").exists()


def test_cli_schema_command():
    from typer.testing import CliRunner

    from tokensde.cli import app

    r = CliRunner().invoke(app, ["schema", "chaos", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == sch.json_schema(REGISTRY["chaos"])
    r = CliRunner().invoke(app, ["schema", "chaos"])
    assert r.exit_code == 0 and r.stdout == sch.help_text(REGISTRY["chaos"])
    r = CliRunner().invoke(app, ["schema", "--format", "markdown"])
    assert r.exit_code == 0 and r.stdout == sch.markdown_doc()
    r = subprocess.run([*CLI, "schema", "no-such"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: name: unknown experiment 'no-such' (allowed: ") and "chaos" in line


# ----------------------------------------------------------------------------- generated docs


def test_committed_config_docs_are_up_to_date():
    """docs/config.md and docs/schema/*.json are what the generator makes from the live registry."""
    docs = ROOT / "docs"
    files = sch.generated_files(docs / "config.md", docs / "schema")
    hint = "regenerate with: python -m tokensde.experiments.schema --out docs/config.md"
    for path, text in files.items():
        assert path.exists(), f"{path} is missing; {hint}"
        assert path.read_text() == text, f"{path} is stale; {hint}"
    stale = {p.name for p in (docs / "schema").glob("*.json")} - {p.name for p in files}
    assert not stale, f"schemas of unregistered experiments {stale}; {hint}"


@pytest.mark.parametrize("name", NAMES)
def test_docs_list_every_key_with_its_range(name):
    exp = REGISTRY[name]
    text, md, js = sch.help_text(exp), sch.markdown_section(exp), sch.json_schema(exp)
    assert js["title"] == name and js["additionalProperties"] is False
    for key, info in exp.Config.model_fields.items():
        assert f"\n  {key}: " in text and f"| `{key}` |" in md and key in js["properties"]
        prop = js["properties"][key]
        for m in info.metadata:  # numeric bounds appear in the text, the table and the JSON Schema
            for attr, js_key in (
                ("ge", "minimum"),
                ("gt", "exclusiveMinimum"),
                ("le", "maximum"),
                ("lt", "exclusiveMaximum"),
            ):
                v = getattr(m, attr, None)
                if v is not None:
                    assert prop[js_key] == v
                    assert sch._num(v) in sch.allowed(exp.Config, key)
    # the generator's --check agrees with the test above (nothing written)
    assert sch.json_schema(exp) == json.loads(json.dumps(js))  # plain JSON, no Python objects


def test_schema_main_check_and_write(tmp_path):
    out = tmp_path / "d" / "config.md"
    assert sch.main(["--out", str(out), "--check"]) == 1
    assert not out.exists()
    assert sch.main(["--out", str(out)]) == 0
    assert sch.main(["--out", str(out), "--check"]) == 0
    assert sorted(p.stem for p in (tmp_path / "d" / "schema").glob("*.json")) == NAMES
    (tmp_path / "d" / "schema" / "gone.json").write_text("{}")
    assert sch.main(["--out", str(out), "--check"]) == 1


# ----------------------------------------------------------------------------- security


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(SRC.rglob("*.py"))]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


PICKLERS = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal", "jsonpickle"}


def test_no_pickle_in_src():
    """Nothing in src imports a pickler or calls torch.load / read_pickle / to_pickle / np.load with pickles."""
    bad = []
    for path, tree in _sources():
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bad += [
                    f"{where}:{node.lineno} import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLERS
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLERS:
                bad.append(f"{where}:{node.lineno} from {node.module} import")
            elif isinstance(node, ast.Call):
                name = _dotted(node.func)
                kw = {k.arg: k.value for k in node.keywords}
                if name in ("torch.load", "pd.read_pickle", "pandas.read_pickle") or name.endswith(".to_pickle"):
                    bad.append(f"{where}:{node.lineno} {name}()")
                if name in ("np.load", "numpy.load"):  # must say allow_pickle=False (numpy's default may change)
                    v = kw.get("allow_pickle")
                    if not (isinstance(v, ast.Constant) and v.value is False):
                        bad.append(f"{where}:{node.lineno} {name}() without allow_pickle=False")
                if name.split(".")[-1] in ("save", "savez", "savez_compressed") and "allow_pickle" in kw:
                    v = kw["allow_pickle"]
                    if not (isinstance(v, ast.Constant) and v.value is False):
                        bad.append(f"{where}:{node.lineno} {name}(allow_pickle=...)")
    assert not bad, "pickle in src:\n" + "\n".join(bad)


def test_configs_are_toml_only():
    """The run command reads --config with tomllib; no other config parser (YAML, eval, ...) in src."""
    cli = (SRC / "cli.py").read_text()
    assert "tomllib.loads(" in cli
    bad = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            bad += [
                f"{path.name}: import {m}"
                for m in mods
                if m.split(".")[0] in ("yaml", "ruamel", "toml", "configparser")
            ]
            if isinstance(node, ast.Call) and _dotted(node.func) in ("eval", "exec", "yaml.load"):
                bad.append(f"{path.name}:{node.lineno} {_dotted(node.func)}()")
    assert not bad, bad


def test_run_store_writes_open_formats_only(tmp_path):
    """The run store writes Parquet, NPZ (no object arrays) and JSON; each reads back without pickle."""
    import numpy as np
    import pandas as pd

    from tokensde.runtime.store import RunStore

    store = RunStore(tmp_path / "run")
    store.root.mkdir(parents=True)
    store.units.mkdir(parents=True, exist_ok=True)
    rows = [{"id": "u0", "x": 1.5, "label": "a", "k": 3}, {"id": "u1", "x": float("nan"), "label": "b", "k": 4}]
    store.save_unit("u0", rows)
    store.write_table(pd.DataFrame(rows))
    store.write_json("verdict.json", {"verdict": "PASS", "checks": []})
    store.write_trajectory({"x": np.zeros((2, 3, 4)), "times": np.arange(2.0), "title": "t", "time_label": "t"})
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".parquet", ".npz", ".json"}, files
    for p in files:
        head = p.read_bytes()[:2]
        assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), f"{p} is a pickle"
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                assert all(z[k].dtype != object for k in z.files)
        else:
            assert len(pd.read_parquet(p)) == 2


def test_run_help_lists_the_config_keys():
    from typer.testing import CliRunner

    from tokensde.cli import app

    r = CliRunner().invoke(app, ["run", "convergence", "--help"])
    assert r.exit_code == 0, r.output
    for key in ("depths", "ref_depth", "widths", "tol"):
        assert f"{key}:" in r.output
    assert "--executor" in r.output  # the command's own options come first
    r = CliRunner().invoke(app, ["run", "nosuch", "--help"])
    assert r.exit_code == 2
