"""TokenStreamView's cost per streamed token, against the model's own time per token.

    python benchmarks/widgets.py [--tokens 10000] [--model-tokens 200] [--threads N] [--no-browser]

1. Generation: the built-in tiny model samples ``--model-tokens`` tokens (KV cache, one token per
   step) into a live TokenStreamView; the time inside ``view.push`` is measured apart from the rest.
2. Replay: ``--tokens`` tokens (the generated ids, cycled, inside one analysis message) pushed as
   fast as possible into a fresh view: the pure per-token overhead of parsing, batching, encoding
   and the JSON+buffer serialisation a kernel does for each comm message (the comm here is a sink).
3. Browser: the batches of (2) delivered to token_stream.js in chromium one per animation frame
   (as a kernel would stream them), timing until every span is on the page and the longest frame.

By default (1) generates 200 tokens (seconds); ``--model-tokens 10000`` streams a full 10,000-token
generation (about 5 minutes on the development CPU; figures in RESULTS.md).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import workbench
from workbench.harmony import encoding
from workbench.widgets import TokenStreamView
from workbench.widgets._base import module_source

HEAD = "<|start|>user<|message|>Think aloud.<|end|><|start|>assistant"
OPEN = "<|channel|>analysis<|message|>"  # the completion starts here (after <|start|>assistant)


def sample_loop(model, prompt: list[int], n: int, seed: int):
    """Yield (token, logprob): workbench.generate when present, else the same KV-cache loop by hand."""
    try:
        from workbench.generate import generate
    except ImportError:
        generate = None
    if generate is not None:
        for t in generate(model, prompt, max_new_tokens=n, temperature=1.0, seed=seed):
            yield t.token, t.logprob
        return
    g = torch.Generator().manual_seed(seed)
    cache, inputs = model.new_cache(), torch.tensor(prompt)
    with torch.no_grad():
        for _ in range(n):
            logp = torch.log_softmax(model(inputs, cache, last_only=True)[-1].float(), -1)
            tok = int(torch.multinomial(logp.exp(), 1, generator=g))
            yield tok, float(logp[tok])
            inputs = torch.tensor([tok])


class Sink:
    """Stands in for the comm: serialises like a kernel would (JSON content, raw buffers) and counts."""

    def __init__(self):
        self.batches: list[tuple[dict, bytes]] = []
        self.bytes = 0

    def __call__(self, content, buffers=None):
        self.bytes += len(json.dumps(content)) + sum(len(b) for b in buffers or [])
        self.batches.append((content, bytes(buffers[0]) if buffers else b""))


def bench_generation(n: int, seed: int) -> dict:
    enc = encoding()
    model = workbench.load_model(workbench.default_checkpoint("tiny"))  # random: it never stops on its own
    view = TokenStreamView(title="generation")
    view.send = Sink()
    opening = enc.encode(OPEN, allowed_special="all")
    for t in opening:
        view.push(t)
    push = 0.0
    ids = []
    start = time.perf_counter()
    for tok, lp in sample_loop(model, enc.encode(HEAD + OPEN, allowed_special="all"), n, seed):
        t0 = time.perf_counter()
        view.push(tok, lp)
        push += time.perf_counter() - t0
        ids.append(tok)
    total = time.perf_counter() - start
    view.finish()
    return {"tokens": len(ids), "model_s_per_token": (total - push) / len(ids), "push_s_per_token": push / len(ids),
            "ids": ids}


def bench_replay(ids: list[int], n: int, repeats: int = 3) -> tuple[dict, Sink]:
    enc = encoding()
    stream = enc.encode(OPEN, allowed_special="all")
    body = [t for t in ids if t < 199998] or enc.encode(" lorem ipsum")
    while len(stream) < n - 1:
        stream += body[: n - 1 - len(stream)]
    stream += enc.encode("<|end|>", allowed_special="all")
    best, sink = None, None
    for _ in range(repeats):
        view, s = TokenStreamView(title="replay"), Sink()
        view.send = s
        t0 = time.perf_counter()
        for t in stream:
            view.push(t, -1.0)
        view.finish()
        dt = time.perf_counter() - t0
        if best is None or dt < best:
            best, sink = dt, s
    state_bytes = len(view.data)
    return {"tokens": len(stream), "s_per_token": best / len(stream), "batches": len(sink.batches),
            "message_bytes": sink.bytes, "final_state_bytes": state_bytes}, sink


PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>%(css)s</style></head><body><div id="root"></div>
<script type="application/json" id="batches">%(batches)s</script>
<script type="module">
const src = %(esm)s;
const mod = await import(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
const handlers = {};
const state = {data: new DataView(new ArrayBuffer(0)), strings: [""], errors: [], show_special: true, selected: -1,
               highlight: [], finished: false, title: "benchmark"};
const model = {get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() {}, send() {},
               on: (e, f) => { (handlers[e] ||= []).push(f); }, off() {}};
const el = document.getElementById("root");
mod.default.render({model, el});
const batches = JSON.parse(document.getElementById("batches").textContent).map(([m, b]) => {
  const raw = atob(b), bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return [m, new DataView(bytes.buffer)];
});
const total = batches.reduce((a, [m]) => Math.max(a, m.end), 0);
// First an idle animation loop (the frame-gap floor of this machine right now), then the stream:
// one batch per frame, as a kernel streaming faster than the screen refreshes would deliver them.
const idle = [], busy = [];
let last = null, i = 0, t0 = 0;
function frame(now) {
  if (last !== null) (idle.length < 30 ? idle : busy).push(now - last);
  last = now;
  if (idle.length < 30) return requestAnimationFrame(frame);
  if (!t0) t0 = now;
  if (i < batches.length) { const [m, b] = batches[i++]; for (const f of handlers["msg:custom"]) f(m, [b]); }
  if (el.dataset.count === String(total)) {
    const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
    window.result = {ms: performance.now() - t0, frames: busy.length, medianFrameMs: med(busy), worstFrameMs: Math.max(...busy),
                     idleMedianFrameMs: med(idle), idleWorstFrameMs: Math.max(...idle)};
    return;
  }
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);
</script></body></html>"""


def bench_browser(sink: Sink) -> dict:
    from playwright.sync_api import sync_playwright

    here = Path(workbench.widgets.__file__).parent
    batches = [[c, base64.b64encode(b).decode()] for c, b in sink.batches]
    page_html = PAGE % {"css": (here / "token_stream.css").read_text(),
                        "batches": json.dumps(batches).replace("<", "\\u003c"),
                        "esm": json.dumps(module_source("token_stream")).replace("<", "\\u003c")}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        path = Path(tmp) / "bench.html"
        path.write_text(page_html)
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        page.goto(path.as_uri())
        page.wait_for_function("() => window.result", timeout=120_000)
        result = page.evaluate("() => window.result")
        browser.close()
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--model-tokens", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    gen = bench_generation(args.model_tokens, args.seed)
    print(f"generation: {gen['tokens']} tokens from the tiny model: model {gen['model_s_per_token'] * 1e3:.1f} ms/token, "
          f"view.push {gen['push_s_per_token'] * 1e6:.1f} us/token "
          f"({gen['push_s_per_token'] / gen['model_s_per_token'] * 100:.3f}% of the model's time)")
    rep, sink = bench_replay(gen["ids"], args.tokens)
    print(f"replay: {rep['tokens']} tokens in {rep['batches']} batches, {rep['s_per_token'] * 1e6:.1f} us/token "
          f"(parse + batch + encode + serialise), {rep['message_bytes'] / rep['tokens']:.1f} bytes/token on the wire, "
          f"final state {rep['final_state_bytes'] / 1e3:.0f} kB")
    print(f"ratio: view overhead / model time per token = {rep['s_per_token'] / gen['model_s_per_token']:.5f} "
          f"({gen['model_s_per_token'] / rep['s_per_token']:.0f}x below)")
    if not args.no_browser:
        b = bench_browser(sink)
        print(f"browser: {rep['tokens']} tokens, one batch per frame, all on the page after {b['ms']:.0f} ms "
              f"({b['ms'] * 1e3 / rep['tokens']:.0f} us/token); frames median {b['medianFrameMs']:.0f} ms, longest "
              f"{b['worstFrameMs']:.0f} ms (idle loop in the same page: median {b['idleMedianFrameMs']:.0f} ms, "
              f"longest {b['idleWorstFrameMs']:.0f} ms)")


if __name__ == "__main__":
    sys.exit(main())
