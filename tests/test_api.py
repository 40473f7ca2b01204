"""The flat public API: ``import tokensde as tsd`` is cheap and every name of ``__all__`` resolves."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import tokensde as tsd


@pytest.mark.parametrize("name", tsd.__all__)
def test_name_resolves(name: str) -> None:
    value = getattr(tsd, name)
    assert value is not None
    target = tsd._LAZY.get(name)
    if target is not None:  # the same object as in its defining module
        module, _, attr = target.partition(":")
        assert value is getattr(importlib.import_module(module), attr)


def test_all_is_listed_and_unique() -> None:
    assert len(set(tsd.__all__)) == len(tsd.__all__)
    assert set(tsd.__all__) <= set(dir(tsd))
    for name in tsd._LAZY:
        assert name not in tsd._SUBMODULES  # a lazy name must not shadow a submodule


def test_docstring_lists_every_name() -> None:
    """``help(tsd)`` starts with the module docstring: it must name the whole surface."""
    doc = tsd.__doc__ or ""
    missing = [n for n in tsd._LAZY if f"\n    {n} " not in doc]
    assert not missing, missing


def test_unknown_name() -> None:
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        tsd.not_a_name  # noqa: B018
    assert not hasattr(tsd, "not_a_name")


def test_submodules_as_attributes() -> None:
    from tokensde import metrics

    assert tsd.metrics is metrics
    assert tsd.theory.value_noise.beta_c is tsd.beta_c


def test_import_is_cheap() -> None:
    """``import tokensde`` (done by ``tokensde --help``) imports no submodule and not torch."""
    code = (
        "import sys, tokensde; "
        "print(sorted(m for m in sys.modules if m.startswith('tokensde') or m in ('torch', 'numpy', 'typing')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['tokensde']"
