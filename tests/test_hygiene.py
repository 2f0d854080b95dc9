"""The suite's own promises: fixed seeds everywhere, hypothesis included."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hypothesis import settings

TESTS = Path(__file__).parent


def test_the_hypothesis_profile_is_derandomized():
    assert settings.get_current_profile_name() == "vecpress"
    assert settings.default.derandomize is True
    assert settings.default.deadline is None


def _hypothesis_tests():
    for path in sorted(TESTS.glob("test_*.py")):
        if "@given" not in path.read_text() or path.name == Path(__file__).name:
            continue
        module = importlib.import_module(path.stem)
        for name, fn in vars(module).items():
            if name.startswith("test_") and hasattr(fn, "hypothesis"):
                yield f"{path.stem}::{name}", fn


def test_no_hypothesis_test_overrides_the_profile():
    """A test's own ``@settings`` keeps derandomize and the deadline of the profile."""
    found = dict(_hypothesis_tests())
    assert found, "no hypothesis test found: the check would prove nothing"
    for name, fn in found.items():
        own = fn._hypothesis_internal_use_settings
        assert own.derandomize is True, name
        assert own.deadline is None, name


@pytest.mark.parametrize("text", ["derandomize=False", "load_profile(", "@seed("])
def test_no_test_module_changes_the_seeding(text):
    mine = ("conftest.py", Path(__file__).name)
    offenders = [p.name for p in TESTS.glob("*.py") if p.name not in mine and text in p.read_text()]
    assert offenders == []
