"""Every teaching notebook opens in JupyterLab, runs all its cells there, and shows its widgets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# widget kind (data-wb) -> how many each notebook must show at least
EXPECTED = {
    "01_harmony": {"token-stream": 4},
    "02_moe": {"router": 1},
    "03_mxfp4": {"mxfp4": 1},
    "04_sinks": {"sinks": 1},
    "05_tools": {"tool-trace": 2},
    "06_sweep": {"sweep": 1},
    "07_kernels": {},
    "08_research": {"logit-lens": 1, "attention-grid": 1},
}


def test_expectations_cover_every_notebook():
    assert sorted(EXPECTED) == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_in_jupyterlab(name, jupyterlab, browser, artifacts, guard_factory):
    url, token, root = jupyterlab
    shutil.copy(NOTEBOOKS / f"{name}.ipynb", root / f"{name}.ipynb")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    guard = guard_factory(page)
    # A workspace of its own (and reset), so no notebook from an earlier test is restored beside it.
    page.goto(f"{url}/lab/workspaces/{name}/tree/{name}.ipynb?token={token}&reset")
    page.wait_for_function("""() => {
        const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel &&
          w.sessionContext.session.kernel.status === 'idle';
    }""", timeout=120_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # Done when every code cell has an execution count and the kernel is idle again, or a cell failed
    # (JupyterLab then stops running the rest).
    page.wait_for_function("""() => {
        const w = window.jupyterapp.shell.currentWidget;
        const cells = w.content.widgets.filter(c => c.model.type === 'code');
        const failed = cells.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'));
        return failed || (cells.every(c => c.model.executionCount !== null) &&
          w.sessionContext.session.kernel.status === 'idle');
    }""", timeout=480_000, polling=500)
    errors = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets
        .filter(c => c.model.type === 'code')
        .flatMap(c => c.model.outputs.toJSON()).filter(o => o.output_type === 'error')
        .map(o => o.ename + ': ' + o.evalue)""")
    assert errors == []
    for kind, count in EXPECTED[name].items():
        page.wait_for_function("([k, n]) => document.querySelectorAll(`[data-wb='${k}']`).length >= n",
                               arg=[kind, count], timeout=60_000)
    page.screenshot(path=str(artifacts / f"notebook-{name}.png"))
    assert guard.outside() == [] and guard.dialogs == []
    page.close()
