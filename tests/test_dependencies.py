"""DESIGN.md's dependency rules, checked on the real imports.

Every module of the installed package is read with ``ast``: each import it makes (at the top or inside
a function, relative or absolute) is resolved to a workbench module and must not point into a layer
its own layer may not use. Then a few packages are imported in a fresh interpreter and ``sys.modules``
shows what importing them really loads (transitively).

Layers (DESIGN.md): formats know nothing above them; kernels are tensor functions plus the MXFP4
layout facts; the model knows formats (and kernels); harmony knows formats only; tools know harmony;
the wire formats know harmony; backends join model and harmony; widgets draw data (never load sweeps
or run a model); evals drive backends and never import widgets; the CLI, demo and lab sit on top.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

import workbench

ROOT = Path(workbench.__file__).resolve().parent.parent
PACKAGES = {"workbench": ROOT / "workbench", "workbench.kernels": ROOT / "kernels", "workbench.evals": ROOT / "evals"}

LAYER_OF = {  # module (or package prefix) -> layer
    "workbench.config": "formats", "workbench.checkpoint": "formats", "workbench.mxfp4": "formats",
    "workbench.safetensors_io": "formats", "workbench.cache": "formats", "workbench.tiny": "formats",
    "workbench.progress": "formats",
    "workbench.summary": "formats",
    "workbench.kernels": "kernels", "workbench.cpu_kernels": "model",  # builds native kernels into the cache
    "workbench.model": "model", "workbench.trace": "model", "workbench.generate": "model", "workbench.hooks": "model",
    "workbench.kv_cache": "model", "workbench.interventions": "model", "workbench.lens": "model",
    "workbench.decode": "model", "workbench.attribution": "model",
    "workbench.harmony": "harmony",
    "workbench.tools": "tools",
    "workbench.wire": "wire",
    "workbench.backends": "backends", "workbench.toolloop": "backends", "workbench.harmony_stats": "backends",
    "workbench.store": "backends",
    "workbench.widgets": "widgets",
    "workbench.evals": "evals",
    "workbench.serve": "serve",
    "workbench.cli": "top", "workbench.demo": "top", "workbench.lab": "top", "workbench": "top",
    "workbench.notebooks": "top",
    "workbench.nano": "top",  # trains the built-in model from the eval tasks' generators
    "workbench.nano.ship": "formats",  # writes the shipped checkpoint: formats only
}
ABOVE_ALL = {"tools", "wire", "backends", "widgets", "evals", "serve", "top"}
FORBIDDEN = {  # layer -> layers it must not import
    "formats": {"model", "kernels", "harmony"} | ABOVE_ALL,
    "kernels": {"model", "harmony"} | ABOVE_ALL,  # and of formats only workbench.mxfp4 (checked below)
    "model": {"harmony"} | ABOVE_ALL,
    "harmony": {"model", "kernels"} | ABOVE_ALL,
    "tools": {"model", "kernels", "wire", "backends", "widgets", "evals", "serve", "top"},
    "wire": {"model", "kernels", "tools", "backends", "widgets", "evals", "serve", "top"},
    "backends": {"widgets", "evals", "serve", "top"},
    "widgets": {"backends", "evals", "serve", "top"},
    "evals": {"widgets", "top"},
    "serve": {"widgets", "evals", "top"},
    "top": set(),
}
RUNS_A_MODEL = {"workbench.generate"}  # widgets must not import these either


def layer(module: str) -> str:
    best = max((p for p in LAYER_OF if module == p or (p != "workbench" and module.startswith(p + "."))), key=len,
               default=None)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYER_OF in {__file__}")
    return LAYER_OF[best]


@functools.lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if "csrc" in parts or any(p.startswith(".") for p in parts):
                continue
            out[".".join([pkg, *parts])] = path
    return out


def imports(module: str, path: Path) -> set[str]:
    """Every workbench module named by an import in the file, resolved."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names = [stem] + [f"{stem}.{a.name}" for a in node.names]
        else:
            continue
        out.update(n for n in names if n == "workbench" or n.startswith("workbench."))
    known = modules()
    return {n for n in out if n in known or any(k.startswith(n + ".") for k in known)}


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_follow_the_layers(module):
    own = layer(module)
    bad = []
    for target in imports(module, modules()[module]):
        if target == "workbench":
            continue  # the package root re-exports lazily; what a module really loads is checked below
        other = layer(target)
        if other in FORBIDDEN[own] or (own == "kernels" and other == "formats" and target != "workbench.mxfp4") \
                or (own == "widgets" and target in RUNS_A_MODEL):
            bad.append(f"{target} ({other})")
    assert not bad, f"{module} ({own}) imports {', '.join(sorted(bad))}"


LOADED = """
import json, sys
import {module}
print(json.dumps(sorted(m for m in sys.modules if m.startswith("workbench"))))
"""


@pytest.mark.parametrize("module, never", [
    ("workbench.harmony, workbench.wire", ["workbench.model", "workbench.widgets", "workbench.evals",
                                           "workbench.backends", "workbench.serve"]),
    ("workbench.widgets", ["workbench.evals", "workbench.backends", "workbench.serve", "workbench.generate"]),
    ("workbench.evals, workbench.serve", ["workbench.widgets"]),
])
def test_what_importing_really_loads(module, never):
    out = subprocess.run([sys.executable, "-c", LOADED.format(module=module)], capture_output=True, text=True,
                         check=True, timeout=300)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if any(m == n or m.startswith(n + ".") for n in never)], loaded
