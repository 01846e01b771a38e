"""The examples in the Harmony, tools, backends and chat docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "workbench.harmony.conversation", "workbench.harmony.functions", "workbench.harmony.header",
    "workbench.harmony.stream", "workbench.harmony.transcript", "workbench.harmony.constrain",
    "workbench.harmony.tokens", "workbench.tools.search", "workbench.tools.browser", "workbench.tools.functions",
    "workbench.tools.python", "workbench.tools.sandbox", "workbench.tools.trace", "workbench.backends.scripted",
    "workbench.toolloop",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
