"""A notebook executed by nbclient and converted by nbconvert (widget state dropped with
``without_widget_state``) shows the workbench widgets from file:// with no kernel: the static HTML
that ``_repr_html_`` put next to each widget view. The nbconvert template's own CDN scripts
(require.js, MathJax) fail offline; no request comes from the widgets."""

from __future__ import annotations

from urllib.parse import urlparse

import nbclient
import nbformat
from nbconvert import HTMLExporter

from workbench.harmony import encoding
from workbench.widgets import without_widget_state

HOSTILE = "<|channel|>final<|message|><script>window.__wbPwned = 1</script> hi<|return|>"

CELLS = [
    "import torch\n"
    "from workbench.harmony import encoding\n"
    "from workbench.widgets import TokenStreamView, RouterView\n"
    f"ids = encoding().encode({HOSTILE!r}, allowed_special='all')\n"
    "TokenStreamView(ids, title='nbconvert')",
    "idx = torch.tensor([[0, 1], [2, 3], [1, 0]])\n"
    "RouterView({'blocks.0.moe.expert_idx': idx, 'blocks.0.moe.expert_weights': torch.full((3, 2), 0.5)}, num_experts=4)",
]


def test_nbconvert_html_shows_the_widgets_offline(browser, tmp_path, guard_factory, artifacts):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    assert "widgets" in nb.metadata  # nbclient saved the widget state...
    html, _ = HTMLExporter().from_notebook_node(without_widget_state(nb))
    assert "widgets" in nb.metadata  # ...and the original is left alone
    path = tmp_path / "converted.html"
    path.write_text(html)
    page = browser.new_page()
    guard = guard_factory(page)
    page.goto(path.as_uri())
    n = len(encoding().encode(HOSTILE, allowed_special="all"))
    page.wait_for_function("n => document.querySelector('[data-wb=\"token-stream\"]')?.dataset.count === String(n)",
                           arg=n, timeout=30_000)
    assert page.locator('[data-wb="router"] canvas.wb-heat').count() == 1
    assert page.evaluate("() => window.__wbPwned") is None and guard.dialogs == []
    foreign = {urlparse(u).hostname for u in guard.outside()}
    assert foreign <= {"cdnjs.cloudflare.com"}, guard.outside()  # nbconvert's template, not the widgets
    page.locator('[data-wb="token-stream"]').screenshot(path=artifacts / "widgets-nbconvert-token-stream.png")
    page.close()
