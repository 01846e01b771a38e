"""AttentionGridView and LogitLensView in a real browser, static (file://, no server) and live in
JupyterLab: canvas pixels, cells, colours and hover text against what the trace and the lens table say;
hostile token text stays text; nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import widget_checks as C

HERE = Path(__file__).parent
GREEN = (22, 163, 74)
LAYER = 1

# A prompt with markup in it: the lens and the grid both show these tokens' text.
PROMPT = "<|start|>user<|message|>What is 17 + 25? <script>window.__wbPwned = 1</script> <img src=x onerror=alert(1)><|end|>"


def build(layer: int = LAYER):
    """(data, widgets) from the built-in tiny model: the trace and the lens table, and the two views."""
    import torch

    import workbench
    from workbench import lens
    from workbench.harmony import encoding
    from workbench.widgets import AttentionGridView, LogitLensView

    model = workbench.load_model(workbench.default_checkpoint())
    ids = torch.tensor(encoding().encode(PROMPT, allowed_special="all"))
    _, trace = model.run_with_trace(ids, names=lens.NAMES + [f"blocks.{layer}.attn.probs", f"blocks.{layer}.attn.sink_prob"])
    table = lens.logit_lens(model, trace, top=3, target=int(ids[-1]))
    data = {"ids": ids, "probs": trace[f"blocks.{layer}.attn.probs"].float().numpy(),
            "sink": trace[f"blocks.{layer}.attn.sink_prob"].float().numpy(), "table": table}
    return data, [AttentionGridView(trace, layer, ids, title="attention grid"), LogitLensView(table, ids, title="lens")]


@pytest.fixture(scope="module")
def built():
    return build()


NOTEBOOK = [f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport test_research_widgets as t\ndata, w = t.build()",
            "w[0]", "w[1]", "print('WB-DONE')"]


@pytest.fixture(scope="module", params=["static", "lab"])
def shown(request, browser, built, tmp_path_factory, guard_factory):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    guard = guard_factory(page)
    if request.param == "static":
        from workbench.widgets import export_html

        path = export_html(tmp_path_factory.mktemp("static") / "research.html", built[1])
        page.goto(path.as_uri())
    else:
        from test_widgets_browser import notebook

        url, token, root = request.getfixturevalue("jupyterlab")
        (root / "research.ipynb").write_text(json.dumps(notebook(NOTEBOOK)))
        page.goto(f"{url}/lab/tree/research.ipynb?token={token}")
        page.wait_for_function("""() => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel &&
              w.sessionContext.session.kernel.status === 'idle';
        }""", timeout=90_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.locator(".jp-OutputArea-output pre", has_text="WB-DONE").wait_for(timeout=120_000)
    page.wait_for_function("""() => ['attention-grid', 'logit-lens'].every(k => {
        const el = document.querySelector(`[data-wb="${k}"]`); return el && el.dataset.ready === '1'; })""",
                           timeout=60_000)
    yield request.param, page, guard
    page.close()


def test_attention_grid(shown, built, artifacts):
    where, page, _ = shown
    data = built[0]
    probs, sink = data["probs"], data["sink"]
    H, T, S = probs.shape
    root = page.locator('[data-wb="attention-grid"]')
    means = root.evaluate("el => [...el.querySelectorAll('.wb-head')].map(b => Number(b.dataset.meanSink))")
    assert np.allclose(means, sink.mean(-1), atol=1e-5)
    thumbs = root.locator("canvas.wb-thumb")
    assert thumbs.count() == H
    for hd in range(H):
        px = C.canvas_pixels(root.locator(".wb-head").nth(hd), "canvas.wb-thumb")
        assert px.shape[:2] == (T, S + 1)
        assert np.abs(px[:, 0] - C.shade(C.ORANGE, sink[hd][:, None])).max() <= 1
        assert np.abs(px[:, 1:] - C.shade(C.BLUE, probs[hd][..., None])).max() <= 1
    root.locator(".wb-head").nth(2).click()
    big = root.locator("canvas.wb-big")
    assert big.get_attribute("data-head") == "2"
    assert np.abs(C.canvas_pixels(root, "canvas.wb-big")[:, 1:] - C.shade(C.BLUE, probs[2][..., None])).max() <= 1
    box = big.bounding_box()
    t, key = T - 1, 3
    big.hover(position={"x": (key + 1 + 0.5) * box["width"] / (S + 1), "y": (t + 0.5) * box["height"] / T})
    info = root.locator(".wb-info").inner_text()
    assert f"head 2 · query token {t}" in info and f"{probs[2, t, key]:.4f}" in info, info
    C.check_no_active_content(root)
    root.screenshot(path=artifacts / f"widgets-{where}-attention-grid.png")


def test_logit_lens(shown, built, artifacts):
    where, page, _ = shown
    from workbench.harmony import encoding

    table = built[0]["table"]
    enc = encoding()
    root = page.locator('[data-wb="logit-lens"]')
    cells = root.evaluate("""el => [...el.querySelectorAll('td.wb-cell')].map(c => [c.dataset.stage,
        Number(c.dataset.position), Number(c.dataset.token), c.textContent, getComputedStyle(c).backgroundColor])""")
    assert len(cells) == len(table)
    want = {(r.stage, int(r.position)): r for r in table.itertuples()}
    for stage, pos, token, text, bg in cells:
        r = want[stage, pos]
        assert token == r.top_tokens[0]
        assert text == enc.decode([token]).replace("\n", "↵").replace("\t", "⇥").replace(" ", "·")
        rgb = [int(x) for x in bg[4:-1].split(",")]
        assert np.abs(np.asarray(rgb) - C.shade(GREEN, r.target_prob)).max() <= 1, (stage, pos)
    heads = root.evaluate("el => [...el.querySelectorAll('th.wb-pos')].map(c => c.textContent)")
    assert heads[-1] == enc.decode([int(built[0]["ids"][-1])]).replace(" ", "·")
    last = table.iloc[-1]
    root.locator("td.wb-cell").nth(len(table) - 1).hover()
    info = root.locator(".wb-info").inner_text()
    assert last.stage in info and json.dumps(enc.decode([last.top_tokens[1]])) in info, info
    C.check_no_active_content(root)
    root.screenshot(path=artifacts / f"widgets-{where}-logit-lens.png")


def test_nothing_ran_and_nothing_left(shown):
    where, page, guard = shown
    assert page.evaluate("() => window.__wbPwned") is None and guard.dialogs == [] and guard.errors == []
    assert guard.outside() == []
    if where == "static":
        assert {u.split(":", 1)[0] for u in guard.urls} <= {"file", "blob", "data"}


if __name__ == "__main__":  # pragma: no cover - for a look by hand: python test_research_widgets.py OUT.html
    from workbench.widgets import export_html

    print(export_html(sys.argv[1], build()[1]))
