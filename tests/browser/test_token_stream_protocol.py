"""token_stream.js's live protocol in chromium, fed the exact wire sequence a Python view produced:
batches that re-send changed tokens, and a view that starts late (missed batches, then heals from a
snapshot in the synced state) must both end with exactly the parsed transcript on the page."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

import widget_checks as C
from workbench.harmony import encoding, parse_tokens
from workbench.widgets import TokenStreamView
from workbench.widgets._base import module_source

WIDGETS = Path(__import__("workbench.widgets", fromlist=["x"]).__file__).parent

HARNESS = """<!doctype html><html><head><meta charset="utf-8"><style>%(css)s</style></head><body><div id="root"></div>
<script type="application/json" id="esm">%(esm)s</script>
<script type="module">
const src = JSON.parse(document.getElementById("esm").textContent);
const mod = await import(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
const b64 = (s) => { const r = atob(s), a = new Uint8Array(r.length); for (let i = 0; i < r.length; i++) a[i] = r.charCodeAt(i); return new DataView(a.buffer); };
const state = {data: new DataView(new ArrayBuffer(0)), strings: [""], errors: [], show_special: true, selected: -1,
               highlight: [], finished: false, title: "protocol"};
const handlers = {};
window.sent = [];
const model = {get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() {}, send: (m) => window.sent.push(m),
               on: (e, f) => (handlers[e] ||= []).push(f), off() {}};
const fire = (e, ...a) => (handlers[e] || []).forEach((f) => f(...a));
mod.default.render({model, el: document.getElementById("root")});
const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
window.deliver = async (items) => {  // one item per frame, so the page renders between batches
  for (const [kind, a, b] of items) {
    if (kind === "msg") fire("msg:custom", a, [b64(b)]);
    else { Object.assign(state, a, {data: b64(a.data)}); fire("change:data"); fire("change:finished"); }
    await frame();
  }
};
window.ready = true;
</script></body></html>"""


def wire(tokens, **kw) -> tuple[list, TokenStreamView]:
    """Everything a live view sends, in order: ("msg", content, buffer) and ("state", synced state)."""
    view, out = TokenStreamView(**kw), []
    view.send = lambda content, buffers=None: out.append(["msg", content, base64.b64encode(buffers[0]).decode()])
    snapshot = view._snapshot

    def record(final):
        snapshot(final)
        out.append(["state", {"data": base64.b64encode(view.data).decode(), "strings": list(view.strings),
                              "errors": list(view.errors), "finished": view.finished}])

    view._snapshot = record
    for i, t in enumerate(tokens):
        view.push(t, -i / 100)
    view.finish()
    return out, view


def reply(view, start: int, end: int) -> list:
    """The answer the kernel gives a view that asked for tokens start..end (``hello``)."""
    out = []
    view.send = lambda content, buffers=None: out.append(["msg", content, base64.b64encode(buffers[0]).decode()])
    view._sent, sent = end, view._sent
    view._on_frontend_msg(view, {"type": "hello", "have": start}, [])
    view._sent = sent
    return out


@pytest.fixture(scope="module")
def harness(browser, tmp_path_factory):
    path = tmp_path_factory.mktemp("protocol") / "harness.html"
    esm = json.dumps(module_source("token_stream")).replace("<", "\\u003c")
    path.write_text(HARNESS % {"css": (WIDGETS / "token_stream.css").read_text(), "esm": esm})

    def open_page():
        page = browser.new_page()
        page.goto(path.as_uri())
        page.wait_for_function("() => window.ready")
        return page

    return open_page


def run(page, items, n) -> None:
    page.evaluate("items => window.deliver(items)", items)
    page.wait_for_function("n => document.querySelector('[data-wb]').dataset.count === String(n)", arg=n)


ENC = encoding()
TOKENS = (ENC.encode("<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>commentary to=functions.f"
                     "<|message|>{}<|call|><|start|>assistant<|channel|>final<|message|>a", allowed_special="all")
          + [172] + ENC.encode("<|end|><|start|>assistant<|channel|>final<|message|>" + "word " * 60, allowed_special="all")
          + [172])


def test_resent_tokens_replace_the_old_ones(harness):
    items, _ = wire(TOKENS, batch_size=1, interval=1e9, snapshot_every=10_000)
    spans = [(m[1]["start"], m[1]["end"]) for m in items if m[0] == "msg"]
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "the stream re-sends a token (UTF-8 tail at message end)"
    page = harness()
    run(page, [m for m in items if m[0] == "msg"], len(TOKENS))  # batches only: no help from the state
    C.check_token_stream(page.locator("[data-wb]"), parse_tokens(TOKENS))
    page.close()


def test_a_view_that_starts_late_heals_from_snapshots(harness):
    items, _ = wire(TOKENS, batch_size=3, interval=1e9, snapshot_every=8)
    first_state = next(i for i, m in enumerate(items) if m[0] == "state")
    late = [m for m in items[first_state - 2:] if m[0] == "msg"][:1] + items[first_state + 3:]  # missed the start
    assert late[0][1]["start"] > 0
    page = harness()
    run(page, late, len(TOKENS))
    C.check_token_stream(page.locator("[data-wb]"), parse_tokens(TOKENS))
    sent = page.evaluate("() => window.sent")
    assert sent and all(m["type"] == "hello" for m in sent) and len(sent) <= 3  # asked, but not per batch
    page.close()


def test_a_late_view_heals_from_a_reply_while_batches_keep_coming(harness):
    """The kernel is free (a generation in a thread): the reply to ``hello`` arrives after more batches."""
    items, view = wire(TOKENS, batch_size=3, interval=1e9, snapshot_every=10_000)
    batches = [m for m in items if m[0] == "msg"]
    answer = reply(view, 0, batches[5][1]["end"])
    page = harness()
    run(page, batches[2:7] + answer + batches[7:], len(TOKENS))  # 2..6 missed the start; 6 is newer than the reply
    C.check_token_stream(page.locator("[data-wb]"), parse_tokens(TOKENS))
    assert page.evaluate("() => window.sent") == [{"type": "hello", "have": 0}]
    page.close()
