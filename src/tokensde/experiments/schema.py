"""Config documentation and error lines, generated from each experiment's typed ``Config``.

One source of truth: the pydantic model. From it come

* :func:`help_text` -- plain text for ``tokensde run NAME --help`` (every key with type, default,
  allowed range or values, and description);
* :func:`markdown_section` / :func:`markdown_doc` -- the Markdown reference ``docs/config.md``;
* :func:`json_schema` -- pydantic's JSON Schema (ranges as ``minimum``/``maximum``), ``docs/schema/NAME.json``;
* :func:`error_line` -- the one-line message for a rejected config: the field (with list index or nested key),
  what is wrong, the offending value and the allowed range.

The allowed range is derived from the ``Field`` constraints (``ge``/``gt``/``le``/``lt``, ``min_length``/
``max_length``, ``Literal`` choices, nested tables); where a validator checks more than the constraints say
(ranges of list entries, "divides T", ...), the field's description, which states those checks, is appended.

Regenerate the committed docs with ``python -m tokensde.experiments.schema`` (``--check`` only compares).
Pure: no CLI, no files except in :func:`main`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

__all__ = [
    "allowed",
    "type_name",
    "default_text",
    "help_text",
    "markdown_section",
    "markdown_doc",
    "json_schema",
    "generated_files",
    "error_line",
    "main",
]

_BOUNDS = ("ge", "gt", "le", "lt")
# every character str.splitlines() breaks on
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _config_of(exp_or_model: Any) -> type[BaseModel]:
    if isinstance(exp_or_model, type) and issubclass(exp_or_model, BaseModel):
        return exp_or_model
    return exp_or_model.Config


# ----------------------------------------------------------------------------- formatting of values


def _num(x: Any) -> str:
    """A bound or number, short: ``2^63 - 1``, ``2^20``, ``1e7``, ``0.5``, ``1e-10``."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, float):
        if x != x or x in (float("inf"), float("-inf")):
            return str(x)
        if x.is_integer() and abs(x) < 1e16:
            return _num(int(x))
        return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m.group(1).replace("+", "") + m.group(2), f"{x:g}")
    if x == 2**63 - 1:
        return "2^63 - 1"
    a = abs(x)
    sign = "-" if x < 0 else ""
    if a >= 2**16 and a & (a - 1) == 0:
        return f"{sign}2^{a.bit_length() - 1}"
    s = str(a)
    if a >= 10**4 and s.rstrip("0") == "1":
        return f"{sign}1e{len(s) - 1}"
    return str(x)


def _toml(v: Any) -> str:
    """A JSON-able value written as a TOML inline value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def _key(k: str) -> str:
    return k if _PLAIN_KEY.fullmatch(k) else json.dumps(k)


def _plain(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _short(v: Any, limit: int = 60) -> str:
    try:
        s = repr(v)
    except ValueError:  # an int too long for str()
        return f"<{type(v).__name__}>"
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _one_line(s: str) -> str:
    return _LINE_BREAKS.sub(" ", s)


def _kind(v: Any) -> str | None:
    """The TOML type of a parsed value, with its article: ``a string``, ``an integer``, ``a table``..."""
    for types_, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list | tuple, "an array"),
        (dict, "a table"),
        (datetime.datetime, "a datetime"),
        (datetime.date, "a date"),
        (datetime.time, "a time"),
    ):
        if isinstance(v, types_):
            return name
    return None


# ----------------------------------------------------------------------------- types and constraints


def _args(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation)


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (list, tuple, set, frozenset)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def type_name(annotation: Any) -> str:
    """The TOML type of an annotation: ``integer``, ``float``, ``string``, ``array of integer``, ``table``..."""
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "float"
    if annotation is str:
        return "string"
    if typing.get_origin(annotation) is Literal:
        kinds = {type_name(type(a)) for a in _args(annotation)}
        return " or ".join(sorted(kinds))
    if _is_model(annotation):
        return "table"
    if _is_list(annotation):
        (item, *_) = _args(annotation) or (Any,)
        inner = type_name(item)
        return "array of tables" if inner == "table" else f"array of {inner}"
    if _is_union(annotation):
        return " or ".join(type_name(a) for a in _args(annotation) if a is not type(None))
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in info.metadata:
        for k in (*_BOUNDS, "min_length", "max_length"):
            v = getattr(m, k, None)
            if v is not None:
                out[k] = v
    return out


def _range(b: dict[str, Any]) -> str:
    lo = ("[", b["ge"]) if "ge" in b else ("(", b["gt"]) if "gt" in b else None
    hi = ("]", b["le"]) if "le" in b else (")", b["lt"]) if "lt" in b else None
    if lo and hi:
        return f"{lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {_num(lo[1])}"
    if hi:
        return f"{'<=' if hi[0] == ']' else '<'} {_num(hi[1])}"
    return ""


def _choices(annotation: Any) -> str:
    return ", ".join(json.dumps(a) if isinstance(a, str) else _toml(a) for a in _args(annotation))


def _validated(model: type[BaseModel], name: str) -> bool:
    """Whether a field validator of ``model`` checks ``name`` beyond its ``Field`` constraints."""
    decorators = model.__pydantic_decorators__
    for dec in decorators.field_validators.values():
        if name in dec.info.fields or "*" in dec.info.fields:
            return True
    return False


def _derived(annotation: Any, info: FieldInfo) -> list[str]:
    parts: list[str] = []
    b = _bounds(info)
    if typing.get_origin(annotation) is Literal:
        parts.append(f"one of {_choices(annotation)}")
    elif _is_model(annotation):
        parts.append(f"table with keys {', '.join(annotation.model_fields)}")
    elif _is_list(annotation):
        item = (_args(annotation) or (Any,))[0]
        if typing.get_origin(item) is Literal:
            parts.append(f"each one of {_choices(item)}")
        elif _is_model(item):
            parts.append(f"tables with keys {', '.join(item.model_fields)}")
        lo, hi = b.get("min_length"), b.get("max_length")
        if lo is not None and hi is not None:
            parts.append(f"{lo} to {hi} items")
        elif lo is not None:
            parts.append(f"at least {lo} item{'s' if lo != 1 else ''}")
        elif hi is not None:
            parts.append(f"at most {hi} items")
    else:
        r = _range(b)
        if r:
            kind = {int: "integer", float: "number"}.get(annotation)
            parts.append(r if kind is None else f"{kind} in {r}" if r[0] in "[(" else f"{kind} {r}")
    return parts


def allowed(model: type[BaseModel], name: str, with_description: bool = True) -> str:
    """What ``name`` accepts: range/choices from the ``Field`` constraints, plus the description where a
    validator checks more (or nothing is derivable); with ``with_description=False`` (docs that show the
    description beside it) just "see description" there."""
    info = model.model_fields[name]
    parts = _derived(info.annotation, info)
    if (_validated(model, name) or not parts) and info.description:
        parts.append(info.description if with_description else "see description")
    return "; ".join(parts)


def default_text(info: FieldInfo) -> str:
    """The default as a TOML value (``required`` if none)."""
    if info.is_required():
        return "required"
    return _toml(_plain(info.get_default(call_default_factory=True)))


# ----------------------------------------------------------------------------- documents


def help_text(exp: Any) -> str:
    """Plain-text reference of an experiment's config keys, for ``tokensde run NAME --help``."""
    model = _config_of(exp)
    name = getattr(exp, "name", model.__name__)
    lines = []
    if hasattr(exp, "summary"):
        lines += [f"{name}: {exp.summary}", ""]
    lines.append(
        f"Config keys of {name} (TOML file given with --config; every key is optional, unknown keys are refused):"
    )
    for key, info in model.model_fields.items():
        lines.append("")
        lines.append(f"  {key}: {type_name(info.annotation)} = {default_text(info)}")
        if info.description:
            lines.append(f"      {info.description}")
        lines.append(f"      allowed: {allowed(model, key, with_description=False)}")
    quick = getattr(exp, "quick", None)
    if quick:
        lines += ["", f"  --quick sets: {', '.join(f'{k} = {_toml(_plain(v))}' for k, v in quick.items())}"]
    return "\n".join(lines) + "\n"


def _cell(s: str) -> str:
    return _one_line(s).replace("|", "\\|")


def markdown_section(exp: Any) -> str:
    """One ``##`` section: summary and a table of keys (key, type, default, allowed, description)."""
    model = _config_of(exp)
    name = getattr(exp, "name", model.__name__)
    out = [f"## {name}", ""]
    if hasattr(exp, "summary"):
        out += [_one_line(exp.summary), ""]
    out += [
        f"`tokensde run {name} --config FILE.toml` -- JSON Schema: [schema/{name}.json](schema/{name}.json)",
        "",
        "| key | type | default | allowed | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, info in model.model_fields.items():
        cells = [f"`{key}`", type_name(info.annotation), f"`{default_text(info)}`", allowed(model, key, False)]
        cells.append(info.description or "")
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    quick = getattr(exp, "quick", None)
    if quick:
        out += ["", "`--quick` sets: " + ", ".join(f"`{k} = {_toml(_plain(v))}`" for k, v in quick.items())]
    return "\n".join(out) + "\n"


_PREAMBLE = """\
# Experiment configuration

<!-- Generated by `python -m tokensde.experiments.schema` from the experiments' pydantic Configs; do not edit. -->

Every experiment reads an optional TOML file, `tokensde run NAME --config FILE.toml`, whose top-level keys
are the keys below (every key has a default; `--quick` applies the listed overrides first, then the file).
Unknown keys, values of the wrong type, NaN or infinite numbers and out-of-range values are refused before
anything is written: exit status 2 and one line on stderr naming the field and the allowed range, e.g.

    error: d: Input should be less than or equal to 64, got 100 (allowed: integer in [2, 64])

Types are strict, nothing is converted: a string is never a number (`seed = "7"`), a boolean never a number
(`beta = [true]`), a float never an integer (`runs = 3000.0`); an integer is a valid float (`T = 1`).

Ranges are written `[a, b]` (inclusive), `(a, b)` (exclusive) and mixed. The same reference is printed by
`tokensde schema NAME` (`--format text|markdown|json`); the JSON Schemas are in [schema/](schema/).
"""


def markdown_doc(registry: dict[str, Any] | None = None) -> str:
    """The whole ``docs/config.md``: a preamble, a list of experiments, one section each."""
    registry = _registry() if registry is None else registry
    toc = "\n".join(f"- [{n}](#{n})" for n in registry)
    return _PREAMBLE + "\n" + toc + "\n\n" + "\n".join(markdown_section(e) for e in registry.values())


def json_schema(exp: Any) -> dict[str, Any]:
    """pydantic's JSON Schema of the Config (ranges as ``minimum``/``maximum`` ...), titled by the experiment."""
    model = _config_of(exp)
    schema = model.model_json_schema()
    out: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    if hasattr(exp, "name"):
        schema["title"] = exp.name
        schema["description"] = exp.summary
    out.update(schema)
    return out


def _json_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _registry() -> dict[str, Any]:
    # the catalogue only: the generated docs of the repository must not depend on $TOKENSDE_EXPERIMENTS
    # (`tokensde schema` passes tokensde.experiments.registry.available_experiments() instead)
    from . import REGISTRY

    return REGISTRY


def generated_files(out: Path, schema_dir: Path, registry: dict[str, Any] | None = None) -> dict[Path, str]:
    """Every generated file and its text: ``out`` (Markdown) and ``schema_dir/NAME.json`` per experiment."""
    registry = _registry() if registry is None else registry
    files = {Path(out): markdown_doc(registry)}
    for name, exp in registry.items():
        files[Path(schema_dir) / f"{name}.json"] = _json_text(json_schema(exp))
    return files


# ----------------------------------------------------------------------------- error lines


def _loc_text(loc: tuple[Any, ...]) -> str:
    s = ""
    for p in loc:
        if isinstance(p, int):
            s += f"[{p}]"
        else:
            p = str(p)
            k = p if _PLAIN_KEY.fullmatch(p) else json.dumps(p)
            s += f".{k}" if s else k
    return s or "config"


def _item_model(annotation: Any) -> type[BaseModel] | None:
    if _is_model(annotation):
        return annotation
    if _is_list(annotation):
        item = (_args(annotation) or (Any,))[0]
        return item if _is_model(item) else None
    return None


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel], str | None]:
    """The (model, field) that the deepest named key of ``loc`` belongs to; ``(model, None)`` if none."""
    current: type[BaseModel] | None = model
    found: tuple[type[BaseModel], str | None] = (model, None)
    for p in loc:
        if isinstance(p, int):
            continue
        if current is None or str(p) not in current.model_fields:
            break
        found = (current, str(p))
        current = _item_model(current.model_fields[str(p)].annotation)
    return found


def _container(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model whose keys the last element of ``loc`` is looked up in."""
    current = model
    for p in loc[:-1]:
        if isinstance(p, int):
            continue
        sub = _item_model(current.model_fields[str(p)].annotation) if str(p) in current.model_fields else None
        if sub is None:
            break
        current = sub
    return current


def _raising_field(model: type[BaseModel], exc: BaseException) -> str | None:
    """The field whose validator raised ``exc`` (found on the traceback), if any."""
    validators = model.__pydantic_decorators__.field_validators
    found = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        dec = validators.get(frame.f_code.co_name)
        if dec is not None:
            name = getattr(frame.f_locals.get("info"), "field_name", None)
            found = name if name in model.model_fields else dec.info.fields[0]
        tb = tb.tb_next
    return found if found in model.model_fields else None


def error_line(model: type[BaseModel], exc: BaseException, data: dict[str, Any] | None = None) -> str:
    """One line for a config that ``model`` refused: ``field: what is wrong, got VALUE (allowed: RANGE)``.

    ``exc`` is the :class:`~pydantic.ValidationError` (its first error is reported), or any other exception a
    validator let escape (the field is then found from the validator on the traceback).
    """
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        if first.get("type") == "extra_forbidden":
            keys = ", ".join(_container(model, loc).model_fields)
            return _one_line(f"{_loc_text(loc)}: unknown key (allowed keys: {keys})")
        msg = str(first.get("msg", "invalid value"))
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        # strict types (no coercion): say what was given, "should be a valid integer, not a string"
        kind = _kind(first.get("input")) if str(first.get("type", "")).endswith("_type") else None
        if kind == "an integer" and first.get("type") == "float_type":
            msg += ", an integer too large for a float"  # ints are allowed floats unless they overflow
        elif kind is not None:
            msg += f", not {kind}"
        # a validator's message that already quotes the bad entry ("..., got 0.3") needs no second value
        quoted = first.get("type") == "value_error" and "got " in msg
        got = "" if quoted or first.get("type") == "missing" else f", got {_short(first.get('input'))}"
        if not loc:  # a model validator: its message starts with the field, "depths: ..."
            head, sep, rest = msg.partition(": ")
            if sep and head in model.model_fields:
                loc, msg = (head,), rest
            got = ""
    else:
        field = _raising_field(model, exc)
        loc = (field,) if field else ()
        msg = f"invalid value ({type(exc).__name__}: {exc})"
        got = f", got {_short(data[field])}" if field and data is not None and field in data else ""
    owner, name = _walk(model, loc)
    rng = f" (allowed: {allowed(owner, name)})" if name else ""
    return _one_line(f"{_loc_text(loc)}: {msg}{got}{rng}")


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tokensde.experiments.schema",
        description="Write the config reference (Markdown) and one JSON Schema per registered experiment.",
    )
    p.add_argument("--out", type=Path, default=Path("docs/config.md"), help="Markdown file (default docs/config.md)")
    p.add_argument("--schema-dir", type=Path, default=None, help="JSON Schema folder (default: schema/ beside --out)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is missing or stale")
    a = p.parse_args(argv)
    schema_dir = a.schema_dir if a.schema_dir is not None else a.out.parent / "schema"
    files = generated_files(a.out, schema_dir)
    stale = sorted(
        str(path) for path in schema_dir.glob("*.json") if path not in files
    )  # experiments no longer registered
    changed = [str(path) for path, text in files.items() if not path.exists() or path.read_text() != text]
    if a.check:
        for s in changed + stale:
            print(f"out of date: {s}", file=sys.stderr)
        return 1 if changed or stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    for s in stale:
        Path(s).unlink()
    print(f"wrote {a.out} and {len(files) - 1} schemas in {schema_dir} ({len(changed)} changed, {len(stale)} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
