"""The package layout contracts: dependency lists agree, kernels/evals install under workbench."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_name(r) for r in extra}
    pip_lines = []
    in_pip = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"\s+- pip:\s*$", line):
            in_pip = True
            continue
        m = re.match(r"\s+- (.+)$", line)
        if in_pip and m and not m.group(1).startswith("-e"):
            pip_lines.append(m.group(1))
    assert pip_lines, "environment.yml has no pip section"
    assert {_name(r) for r in pip_lines} == declared


def test_kernels_and_evals_are_workbench_subpackages():
    import workbench.evals
    import workbench.kernels

    assert Path(workbench.kernels.__file__).resolve().parent == ROOT / "kernels"
    assert Path(workbench.evals.__file__).resolve().parent == ROOT / "evals"


def test_console_script_runs():
    out = subprocess.run(["workbench", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("make-tiny", "info", "demo"):
        assert command in out
    assert subprocess.run([sys.executable, "-m", "workbench.cli", "info"], capture_output=True).returncode == 2


def test_every_subpackage_is_listed_for_installation():
    """A regular (non-editable) install ships only the listed packages: none may be forgotten."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"workbench." + ".".join(p.parent.relative_to(ROOT / "workbench").parts)
             for p in (ROOT / "workbench").rglob("__init__.py") if p.parent != ROOT / "workbench"}
    found |= {"workbench", "workbench.kernels", "workbench.evals", "workbench.notebooks"}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
