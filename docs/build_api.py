"""Build docs/API.md from the docstrings: ``python docs/build_api.py`` (a test checks it is current)."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

MODULES = [
    "workbench", "workbench.config", "workbench.checkpoint", "workbench.mxfp4", "workbench.tiny",
    "workbench.hooks", "workbench.model", "workbench.cpu_kernels", "workbench.kv_cache", "workbench.decode",
    "workbench.trace", "workbench.interventions", "workbench.lens", "workbench.attribution", "workbench.generate",
    "workbench.harmony", "workbench.harmony.hf_tokenizer", "workbench.tools", "workbench.backends",
    "workbench.toolloop", "workbench.harmony_stats", "workbench.widgets", "workbench.kernels", "workbench.evals",
    "workbench.wire", "workbench.serve", "workbench.demo", "workbench.lab", "workbench.progress",
]


def _public(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and
                 (inspect.isfunction(v) or inspect.isclass(v)) and getattr(v, "__module__", "") == module.__name__]
    return sorted(names)


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def _doc(obj) -> str:
    if not (inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj)):
        return ""  # a value: its type's docstring says nothing about it
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and doc.startswith(obj.__name__ + "("):
        return ""  # a dataclass's generated docstring repeats the signature
    return doc.split("\n\n")[0].strip()


def render() -> str:
    out = ["# API reference", "", "Generated from the docstrings by `python docs/build_api.py`; each entry is the",
           "first paragraph of its docstring. `help(name)` in Python shows the rest.", ""]
    for name in MODULES:
        module = importlib.import_module(name)
        out += [f"## `{name}`", "", _doc(module), ""]
        for public in _public(module):
            obj = getattr(module, public, None)
            if obj is None or inspect.ismodule(obj):
                continue
            kind = "class" if inspect.isclass(obj) else "def" if callable(obj) else "value"
            head = f"{public}{_signature(obj)}" if kind != "value" else public
            out.append(f"- **`{head}`**" + (f" — {_doc(obj)}".replace("\n", " ") if _doc(obj) else ""))
        out.append("")
        if name == "workbench.hooks":
            out += _hook_table(module)
    return "\n".join(out).rstrip() + "\n"


def _hook_table(hooks) -> list[str]:
    """The hook point contract as a table, straight from ``workbench.hooks.POINTS``."""
    rows = ["### Hook points", "", "| name | shape (no batch) | token axis | dtype | meaning |", "| --- | --- | --- | --- | --- |"]
    for p in hooks.POINTS:
        meaning = p.meaning + (f" (hooking it switches on the {p.needs} path)" if p.needs else "")
        rows.append(f"| `{p.pattern}` | [{', '.join(p.dims)}] | {p.token_axis} | {p.dtype} | {meaning} |")
    return rows + [""]


if __name__ == "__main__":
    target = Path(__file__).with_name("API.md")
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
