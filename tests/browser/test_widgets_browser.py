"""Every widget in a real browser, twice: live in JupyterLab (a notebook that builds them from the tiny
model, run with notebook:run-all-cells) and as a static HTML export opened from file:// with no server.
The DOM and canvas pixels are compared with what the inputs say they must show; hostile token text must
run nothing; no request may leave 127.0.0.1."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

import widget_checks as C
import widget_demo as demo

HERE = Path(__file__).parent
ORDER = ["stream", "hostile", "completion", "tools", "router", "sinks", "mxfp4"]
WB = {"stream": "token-stream", "hostile": "token-stream", "completion": "token-stream", "tools": "tool-trace",
      "router": "router", "sinks": "sinks", "mxfp4": "mxfp4"}
LIVE_TOKENS = 3000
GEN_TOKENS = 24


@pytest.fixture(scope="session")
def data():
    return demo.build_data()


def roots(page) -> dict:
    """Widget root elements by demo name, in page order (the live stream, when there, comes last)."""
    found, seen = {}, {}
    for name in ORDER:
        kind = WB[name]
        found[name] = page.locator(f'[data-wb="{kind}"]').nth(seen.get(kind, 0))
        seen[kind] = seen.get(kind, 0) + 1
    return found


def wait_rendered(page, data, timeout=60_000) -> None:
    counts = [len(data[k].events) for k in ("conversation", "hostile", "completion")]
    page.wait_for_function("""counts => {
        const streams = [...document.querySelectorAll('[data-wb="token-stream"]')];
        return streams.length >= 3 && counts.every((n, i) => streams[i].dataset.count === String(n)) &&
          ['tool-trace', 'router', 'sinks', 'mxfp4'].every(k => document.querySelector(`[data-wb="${k}"]`));
    }""", arg=counts, timeout=timeout)


NOTEBOOK_CELLS = [
    f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport widget_demo as demo\nw = demo.build_widgets()",
    *[f'w["{name}"]' for name in ORDER],
    "from workbench.widgets import TokenStreamView\n"
    "live = TokenStreamView(title='live', batch_size=256, interval=0.02).show()\n"
    f"for i, t in enumerate(demo.live_tokens({LIVE_TOKENS})):\n"
    "    live.push(t, logprob=-0.01 * (i % 50))\n"
    "live.finish()",
    # a real generation: the tiny model, Harmony-constrained, streamed token by token with logprobs
    "import json, workbench\n"
    "from workbench.backends import LocalBackend\n"
    "from workbench.harmony import Conversation\n"
    "backend = LocalBackend(workbench.load_model(workbench.default_checkpoint()), constrained=True, max_content_tokens=8)\n"
    "gen = TokenStreamView(title='generation', interval=0).show()\n"
    f"for t in backend.generate(Conversation.new().user('What is 2 + 3?'), max_new_tokens={GEN_TOKENS}, seed=0):\n"
    "    gen.push(t, backend.last_steps[-1].logprob)\n"
    "gen.finish()\n"
    "print('WB-GEN', json.dumps([[s.token, s.logprob] for s in backend.last_steps], separators=(',', ':')))",
    "print('WB-DONE')",
]


def notebook(cells) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [],
                       "source": src} for i, src in enumerate(cells)]}


@pytest.fixture(scope="module", params=["static", "lab"])
def shown(request, browser, data, artifacts, tmp_path_factory, guard_factory):
    """(where, page, guard): the demo widgets rendered statically (file://) or live in JupyterLab."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    guard = guard_factory(page)
    started = time.monotonic()
    if request.param == "static":
        from workbench.widgets import export_html

        path = export_html(tmp_path_factory.mktemp("static") / "widgets.html", demo.build_widgets(data).values())
        page.goto(path.as_uri())
        wait_rendered(page, data)
    else:
        url, token, root = request.getfixturevalue("jupyterlab")
        (root / "widgets.ipynb").write_text(json.dumps(notebook(NOTEBOOK_CELLS)))
        page.goto(f"{url}/lab/tree/widgets.ipynb?token={token}")
        page.wait_for_function("""() => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel &&
              w.sessionContext.session.kernel.status === 'idle';
        }""", timeout=90_000)
        # remember how many live batches any stream view received (show() replaces the live view at the end)
        page.evaluate("""() => { window.__wbBatches = 0; new MutationObserver((records) => { for (const r of records)
            window.__wbBatches = Math.max(window.__wbBatches, Number(r.target.dataset.batches || 0)); })
            .observe(document.body, {subtree: true, attributes: true, attributeFilter: ['data-batches']}); }""")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.locator(".jp-OutputArea-output pre", has_text="WB-DONE").wait_for(timeout=120_000)
        wait_rendered(page, data)
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    print(f"\n{request.param}: widgets rendered {time.monotonic() - started:.1f} s after opening")
    yield request.param, page, guard
    page.close()


def test_token_streams(shown, data, artifacts):
    where, page, guard = shown
    r = roots(page)
    for name, key in (("stream", "conversation"), ("hostile", "hostile"), ("completion", "completion")):
        C.check_token_stream(r[name], data[key])
    C.check_toggle_hover_click(r["stream"], data["conversation"], demo.logprobs(len(data["conversation"].events)))
    r["stream"].screenshot(path=artifacts / f"widgets-{where}-token-stream.png")
    r["completion"].screenshot(path=artifacts / f"widgets-{where}-parse-errors.png")


def test_hostile_stream_runs_nothing(shown, data):
    where, page, guard = shown
    r = roots(page)
    assert r["hostile"].locator(".wb-title").text_content() == demo.HOSTILE[0]  # shown as text
    assert r["tools"].locator(".wb-title").text_content() == demo.HOSTILE[1]
    for name in ORDER:
        C.check_no_active_content(r[name])
    # click the tokens that carry markup or a javascript: URL: still nothing runs
    spans = r["hostile"].locator(".wb-stream .tok")
    marked = [e.position for e in data["hostile"].events if "<" in e.text or "javascript" in e.text]
    assert marked
    for i in marked[:12]:
        spans.nth(i).click()
    page.wait_for_timeout(200)
    assert page.evaluate("() => window.__wbPwned") is None
    assert guard.dialogs == []
    assert not [u for u in guard.urls if "wb-pwned" in u]
    assert guard.errors == []


def test_tool_trace(shown, data, artifacts):
    where, page, _ = shown
    root = roots(page)["tools"]
    C.check_tool_trace(root, data["tool_trace"], [data["conversation"]])
    if where == "lab":  # selecting a step highlights its tokens in the linked stream (through the kernel)
        root.locator(".wb-step").nth(0).locator("button.wb-show").click()
        a, b = data["tool_trace"][0].token_span
        stream = roots(page)["stream"]
        page.wait_for_function("([el, n]) => el.querySelectorAll('.tok.hl').length === n",
                               arg=[stream.element_handle(), b - a + 1])
        lit = stream.evaluate("el => [...el.querySelectorAll('.tok.hl')].map(s => s.textContent).join('')")
        assert lit == "".join(e.text for e in data["conversation"].events[a:b + 1])
    else:  # no kernel: no control that would need one
        assert root.locator("button.wb-show").count() == 0
    root.screenshot(path=artifacts / f"widgets-{where}-tool-trace.png")


def test_router(shown, data, artifacts):
    where, page, _ = shown
    root = roots(page)["router"]
    C.check_router(page, root, data["trace"])
    root.screenshot(path=artifacts / f"widgets-{where}-router.png")


def test_sinks(shown, data, artifacts):
    where, page, _ = shown
    root = roots(page)["sinks"]
    C.check_sinks(page, root, data["trace"])
    root.screenshot(path=artifacts / f"widgets-{where}-sinks.png")


def test_mxfp4(shown, data, artifacts):
    where, page, _ = shown
    root = roots(page)["mxfp4"]
    C.check_mxfp4(root, data["ckpt"])
    root.screenshot(path=artifacts / f"widgets-{where}-mxfp4.png")


def test_live_stream_in_jupyterlab(shown, artifacts):
    where, page, guard = shown
    if where != "lab":
        return  # a static page has no kernel to stream from; the 20,000-token test covers its size
    live = page.locator('[data-wb="token-stream"]').nth(3)
    page.wait_for_function("el => el.dataset.count === String(%d)" % LIVE_TOKENS, arg=live.element_handle())
    tokens = demo.live_tokens(LIVE_TOKENS)
    texts = live.evaluate("el => [...el.querySelectorAll('.wb-stream .tok')].map(s => s.textContent).join('')")
    from workbench.harmony import encoding

    assert texts == encoding().decode(tokens)
    assert page.evaluate("() => window.__wbBatches") > 1, "tokens arrived in several live batches"
    assert "live" not in live.locator(".wb-count").inner_text()  # finished
    live.screenshot(path=artifacts / "widgets-lab-live-stream.png")


def test_generation_streams_into_a_view_in_jupyterlab(shown, artifacts):
    where, page, _ = shown
    if where != "lab":
        return  # generation needs a kernel
    from workbench.harmony import parse_tokens

    steps = json.loads(page.locator(".jp-OutputArea-output pre", has_text="WB-GEN").inner_text().split()[1])
    ids, logprobs = [t for t, _ in steps], [lp for _, lp in steps]
    assert 0 < len(ids) <= GEN_TOKENS
    gen = page.locator('[data-wb="token-stream"]').nth(4)
    page.wait_for_function("([el, n]) => el.dataset.count === String(n)", arg=[gen.element_handle(), len(ids)])
    C.check_token_stream(gen, parse_tokens(ids))  # colours, groups, errors: as the parser sees the tokens
    gen.locator(".wb-stream .tok").nth(len(ids) - 1).hover()
    assert f"logprob {logprobs[-1]:.3f}" in gen.locator(".wb-info").inner_text()
    gen.screenshot(path=artifacts / "widgets-lab-generation.png")


def test_notebook_saved_from_jupyterlab_exports_to_html_that_works_offline(shown, request, browser, data, tmp_path,
                                                                           guard_factory, artifacts):
    """JupyterLab's own "export as HTML" (nbconvert on the saved notebook): every widget shows from
    file:// with no kernel, the live streams complete (``show()`` refreshed their outputs)."""
    where, page, _ = shown
    if where != "lab":
        return
    import urllib.request

    url, token, root = request.getfixturevalue("jupyterlab")
    saved = json.loads((root / "widgets.ipynb").read_text())
    assert "widgets" not in saved["metadata"]  # JupyterLab does not save widget state by default
    with urllib.request.urlopen(f"{url}/nbconvert/html/widgets.ipynb?download=true&token={token}", timeout=60) as r:
        (tmp_path / "exported.html").write_bytes(r.read())
    steps = json.loads(page.locator(".jp-OutputArea-output pre", has_text="WB-GEN").inner_text().split()[1])
    static = browser.new_page(viewport={"width": 1280, "height": 1000})
    guard = guard_factory(static)
    static.goto((tmp_path / "exported.html").as_uri())
    counts = [len(data[k].events) for k in ("conversation", "hostile", "completion")] + [LIVE_TOKENS, len(steps)]
    static.wait_for_function("""counts => {
        const s = [...document.querySelectorAll('[data-wb="token-stream"]')];
        return s.length === counts.length && counts.every((n, i) => s[i].dataset.count === String(n));
    }""", arg=counts, timeout=60_000)
    for kind in ("tool-trace", "router", "sinks", "mxfp4"):
        assert static.locator(f'[data-wb="{kind}"]').count() == 1
    C.check_router(static, static.locator('[data-wb="router"]'), data["trace"])
    assert static.evaluate("() => window.__wbPwned") is None and guard.dialogs == []
    # nbconvert's template links require.js and MathJax from a CDN (they fail offline); the widgets ask for nothing
    assert {u.split("/")[2] for u in guard.outside()} <= {"cdnjs.cloudflare.com"}, guard.outside()
    static.locator('[data-wb="token-stream"]').nth(3).screenshot(path=artifacts / "widgets-nbconvert-live-stream.png")
    static.close()


def test_no_request_left_127_0_0_1(shown):
    where, page, guard = shown
    assert guard.urls, "the listener saw the page's own requests"
    assert guard.outside() == []
    if where == "static":
        assert {u.split(":", 1)[0] for u in guard.urls} <= {"file", "blob", "data"}


def test_20000_tokens_static(browser, tmp_path, artifacts, guard_factory):
    """A 20,000-token transcript renders fully from file:// and stays usable (hover, toggle)."""
    from workbench.harmony import parse_tokens
    from workbench.widgets import TokenStreamView

    tokens = demo.live_tokens(20_000)
    t = parse_tokens(tokens)
    path = TokenStreamView(t, title="20k").export_html(tmp_path / "20k.html")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    guard = guard_factory(page)
    start = time.monotonic()
    page.goto(path.as_uri())
    page.wait_for_function("() => document.querySelector('[data-wb]')?.dataset.count === '20000'", timeout=60_000)
    took = time.monotonic() - start
    root = page.locator('[data-wb="token-stream"]')
    start = time.monotonic()
    root.locator(".wb-stream .tok").nth(19_990).hover()
    assert "position 19990" in root.locator(".wb-info").inner_text()
    root.locator(".wb-toggle input").uncheck()
    assert root.evaluate("el => el.querySelector('.wb-stream .k-special').getClientRects().length") == 0
    print(f"\n20,000 tokens: rendered {took:.2f} s after navigation; hover + toggle {time.monotonic() - start:.2f} s")
    assert guard.outside() == [] and guard.errors == []
    root.screenshot(path=artifacts / "widgets-static-20k.png")
    page.close()
