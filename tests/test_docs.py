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
