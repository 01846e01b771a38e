"""The docs stay true: the API reference matches the docstrings, and the guide names real things."""

import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_reference_is_current():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import build_api
    finally:
        sys.path.pop(0)
    assert (ROOT / "docs" / "API.md").read_text() == build_api.render(), "run: python docs/build_api.py"


def test_guide_names_exist():
    """Every `workbench.x.y` / `model.Name` the reference guide mentions is a real attribute."""
    text = (ROOT / "docs" / "from-reference.md").read_text()
    names = set(re.findall(r"`(workbench(?:\.\w+)+)", text))
    code_tables = text.split("## Checkpoint names")[0]  # later tables quote other libraries' names
    names |= {f"workbench.model.{n}" for n in re.findall(r"`model\.(\w+)[`(]", code_tables)}
    assert len(names) > 15
    for dotted in sorted(names):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        for attr in parts[cut:]:
            assert hasattr(obj, attr), f"{dotted}: no attribute {attr!r}"
            obj = getattr(obj, attr)


def test_transformerlens_and_nnsight_table_names_exist():
    """The workbench column of the TransformerLens / nnsight table: every ``model.x`` is a Model attribute,
    every ``trace.x`` a Trace attribute, and every ``f(..., arg=)`` keyword one of f's parameters."""
    import inspect

    from workbench.model import Model
    from workbench.trace import Trace

    text = (ROOT / "docs" / "from-reference.md").read_text()
    section = text[text.index("## TransformerLens and nnsight habits"):].split("\n## ")[0]
    rows = [line.rsplit(" | ", 1)[-1] for line in section.splitlines()[1:] if line.startswith("| ")][2:]  # no header
    assert len(rows) > 15
    column = "\n".join(rows)
    trace = Trace({})
    for name in re.findall(r"\bmodel\.(\w+)", column):
        assert hasattr(Model, name), f"Model has no {name!r}"
    for name in re.findall(r"\btrace\.(\w+)", column):
        assert hasattr(trace, name), f"Trace has no {name!r}"
    for fn, args in re.findall(r"(run_with_trace|run_with_hooks)\(([^)]*)\)", column):
        params = inspect.signature(getattr(Model, fn)).parameters
        for arg in re.findall(r"(\w+)=", args):
            assert arg in params, f"{fn} has no parameter {arg!r}"
