"""Every docstring example of the installed vecpress package runs and gives its output."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import vecpress

MODULES = sorted(m.name for m in pkgutil.walk_packages(vecpress.__path__, prefix="vecpress."))


def test_every_module_is_collected():
    expected = {"vecpress.codecs.codec", "vecpress.search.index", "vecpress.search.scan"}
    assert expected <= set(MODULES)


#: modules of optional extras: the package their examples need
EXTRAS = {
    "vecpress.archive": "constriction",
    "vecpress.integrations.langchain": "langchain_core",
    "vecpress.integrations.llama_index": "llama_index.core",
    "vecpress.service.app": "fastapi",
    "vecpress.service.schemas": "pydantic",
}


#: modules whose examples run elsewhere: those of vecpress.distributed need the local Ray
#: cluster that tests/test_distributed.py starts (one per test process)
ELSEWHERE = {
    "vecpress.distributed",
    "vecpress.distributed.builder",
    "vecpress.distributed.searcher",
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name in ELSEWHERE:
        pytest.skip("run by tests/test_distributed.py under its Ray cluster")
    if name in EXTRAS:
        pytest.importorskip(EXTRAS[name])
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
