"""Doctests of every module of the package, and a count of public names without an ``Examples`` section.

The modules are found on disk (no import at collection time); each is imported only when its
test runs, so collection stays cheap and a module that fails to import fails its own test.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import time
from pathlib import Path

import pytest

import tokensde

ROOT = Path(tokensde.__file__).parent


def _modules() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


MODULES = _modules()
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    slow: list[str] = []
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        if not test.examples:
            continue
        t0 = time.perf_counter()
        runner.run(test, out=report.append)
        # examples are meant to take < 0.5 s; the limit leaves room for a busy machine and for the first
        # import of a heavy module inside an example
        if time.perf_counter() - t0 > 5.0:
            slow.append(test.name)
    failed, _ = runner.summarize(verbose=False)
    assert failed == 0, "".join(report)
    assert not slow, f"doctests slower than 5 s: {slow}"


#: the modules whose public functions and classes must each carry a runnable ``Examples`` section
DOCUMENTED = [
    "tokensde.sphere",
    "tokensde.attention",
    "tokensde.metrics",
    "tokensde.stats",
    "tokensde.activations",
    "tokensde.noise",
    "tokensde.theory.value_noise",
    "tokensde.theory.homogenized",
    "tokensde.theory.synchronization",
    "tokensde.theory.two_point",
    "tokensde.engine",
    "tokensde.solvers",
    "tokensde.laws",
    "tokensde.models.base",
    "tokensde.models.value_noise",
    "tokensde.models.multihead",
    "tokensde.models.mlp_noise",
    "tokensde.models.kernel",
]
#: documented elsewhere
EXEMPT: set[str] = set()


def _lacking_examples(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    lacking = []
    for attr in getattr(module, "__all__", []):
        obj = getattr(module, attr)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != module_name:
            continue  # constants, type aliases and re-exports are documented where they are defined
        qual = f"{module_name}.{attr}"
        if qual in EXEMPT:
            continue
        doc = inspect.getdoc(obj) or ""
        if "Examples\n--------" not in doc or ">>>" not in doc.split("Examples\n--------", 1)[1]:
            lacking.append(qual)
    return lacking


def test_every_public_name_has_examples() -> None:
    lacking = [q for m in DOCUMENTED for q in _lacking_examples(m)]
    assert not lacking, f"{len(lacking)} public functions/classes without a doctested Examples section: {lacking}"


def test_the_examples_check_can_fail() -> None:
    def undocumented() -> None:
        """No examples here."""

    module = type(tokensde)("tokensde_fake_module")
    undocumented.__module__ = module.__name__
    module.undocumented = undocumented  # type: ignore[attr-defined]
    module.__all__ = ["undocumented"]  # type: ignore[attr-defined]
    import sys

    sys.modules[module.__name__] = module
    try:
        assert _lacking_examples(module.__name__) == ["tokensde_fake_module.undocumented"]
    finally:
        del sys.modules[module.__name__]
