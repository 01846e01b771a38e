"""What each widget must show in the page, computed here from the widget's inputs (a transcript, a
trace, a checkpoint) with our own colour rules, and compared with the DOM and canvas pixels."""

from __future__ import annotations

import colorsys
import itertools

import numpy as np
import torch

# The documented palette (workbench.widgets docstring), as computed styles.
CHANNEL_BG = {"analysis": "rgb(254, 243, 199)", "commentary": "rgb(219, 234, 254)", "final": "rgb(220, 252, 231)"}
ROLE_BG = {"user": "rgb(224, 231, 255)", "system": "rgb(241, 245, 249)", "developer": "rgb(241, 245, 249)",
           "tool": "rgb(255, 237, 213)"}
OTHER_CHANNEL_BG, NO_CHANNEL_BG, NO_BG = "rgb(252, 231, 243)", "rgb(243, 244, 246)", "rgba(0, 0, 0, 0)"
ORANGE, BLUE = (234, 88, 12), (29, 78, 216)


def expected_background(e) -> str:
    if e.role and e.role != "assistant":
        return ROLE_BG.get(e.role, "rgb(245, 245, 244)")
    if e.channel:
        return CHANNEL_BG.get(e.channel, OTHER_CHANNEL_BG)
    return NO_CHANNEL_BG if e.role == "assistant" else NO_BG


def shade(rgb, p: float) -> np.ndarray:
    return np.round(255 - np.clip(p, 0, 1) * (255 - np.asarray(rgb, float)))


def expert_rgb(e: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hls_to_rgb(((e * 137.508) % 360) / 360, 0.5, 0.65)
    return round(255 * r), round(255 * g), round(255 * b)


def canvas_pixels(root, selector: str) -> np.ndarray:
    w, h, data = root.evaluate("""(el, sel) => {
        const c = el.querySelector(sel);
        return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];
    }""", selector)
    return np.asarray(data, float).reshape(h, w, 4)[..., :3]


def check_token_stream(root, transcript) -> None:
    """One span per token with its text, background by channel/role, errors marked, one group per message."""
    got = root.evaluate("""el => {
        const spans = [...el.querySelectorAll('.wb-stream .tok')];
        return {
          texts: spans.map(s => s.textContent), bg: spans.map(s => getComputedStyle(s).backgroundColor),
          err: spans.map(s => s.classList.contains('err')), special: spans.map(s => s.classList.contains('k-special')),
          groups: [...el.querySelectorAll('.wb-msg')].map(m => [Number(m.dataset.message), m.querySelector('.wb-msg-head').textContent]),
          errors: [...el.querySelectorAll('.wb-errors li')].map(li => li.textContent),
        };
    }""")
    events = transcript.events
    assert got["texts"] == [e.text for e in events]
    assert got["bg"] == [expected_background(e) for e in events]
    assert got["err"] == [bool(e.error) for e in events]
    assert got["special"] == [e.kind == "special" for e in events]
    runs = [-1 if m is None else m for m, _ in itertools.groupby(e.message for e in events)]
    assert [g[0] for g in got["groups"]] == runs
    heads = dict((i, text) for i, text in got["groups"] if i >= 0)
    for span, m in zip(transcript.spans, transcript.messages):
        if m.recipient:
            assert f"→ {m.recipient}" in heads[span.index]
        if m.channel:
            assert f"· {m.channel}" in heads[span.index]
    assert len(got["errors"]) == len(transcript.errors)
    for li, e in zip(got["errors"], transcript.errors):
        assert e.code in li and e.detail in li


def check_toggle_hover_click(root, transcript, logprobs) -> None:
    toggle = root.locator(".wb-toggle input")
    n_special = sum(e.kind == "special" for e in transcript.events)
    visible = "el => [...el.querySelectorAll('.wb-stream .tok')].filter(s => s.getClientRects().length > 0).length"
    toggle.uncheck()
    assert root.evaluate(visible) == len(transcript.events) - n_special
    toggle.check()
    assert root.evaluate(visible) == len(transcript.events)
    i = next(e.position for e in transcript.events if e.kind == "content" and e.channel == "final")
    span = root.locator(".wb-stream .tok").nth(i)
    span.hover()
    info = root.locator(".wb-info").inner_text()
    e = transcript.events[i]
    assert f"position {i}" in info and f"id {e.id}" in info and f"logprob {logprobs[i]:.3f}" in info, info
    span.click()
    assert "pinned" in span.get_attribute("class")


def check_no_active_content(root) -> None:
    """Nothing a hostile token could have become: no elements that run code or load URLs."""
    assert root.evaluate("el => el.querySelectorAll('script, img, svg, a, iframe, object, embed, link').length") == 0
    assert root.evaluate("el => [...el.querySelectorAll('*')].filter(n => [...n.attributes].some(a => a.name.startsWith('on') || /javascript:/i.test(a.value))).length") == 0


def check_tool_trace(root, steps, transcripts) -> None:
    rows = root.locator(".wb-step")
    assert rows.count() == len(steps)
    for i, s in enumerate(steps):
        row = rows.nth(i)
        assert ("wb-error" in row.get_attribute("class")) == bool(s.error)
        assert row.locator(".wb-recipient").inner_text() == s.recipient
        row.locator("summary").click()
        assert row.locator("pre.wb-args").text_content() == s.arguments
        if s.result:
            assert row.locator("pre.wb-result").text_content() == s.result
        if s.error:
            assert row.locator("pre.wb-error-text").text_content() == s.error
        if s.token_span and s.generation < len(transcripts):
            a, b = s.token_span
            want = "".join(e.text for e in transcripts[s.generation].events[a:b + 1])
            assert row.locator("pre.wb-span-text").text_content() == want


def stack(trace, name):
    layers = sorted(int(k.split(".")[1]) for k in trace if k.endswith(name))
    return torch.stack([trace[f"blocks.{i}.{name}"].float() for i in layers]).numpy()


def check_router(page, root, trace) -> None:
    idx, w = stack(trace, "moe.expert_idx").astype(int), stack(trace, "moe.expert_weights")
    logits = stack(trace, "moe.router_logits")
    L, T, k = idx.shape
    E = logits.shape[-1]
    px = canvas_pixels(root, "canvas.wb-heat")
    assert px.shape[:2] == (L * (k + 1) - 1, T)
    want = np.full(px.shape, 255.0)
    for l, t, j in itertools.product(range(L), range(T), range(k)):
        want[l * (k + 1) + j, t] = shade(expert_rgb(idx[l, t, j]), w[l, t, j])
    assert np.abs(px - want).max() <= 2, "heatmap cells: colour = expert, intensity = weight"
    counts = root.evaluate("el => [...el.querySelectorAll('.wb-load-cell')].map(c => Number(c.dataset.count))")
    assert counts == [int(c) for l in range(L) for c in np.bincount(idx[l].ravel(), minlength=E)]
    # click the cell of layer 2, token 7: the logits panel shows that token's router logits
    heat = root.locator("canvas.wb-heat")
    heat.scroll_into_view_if_needed()
    box = heat.bounding_box()
    heat.click(position={"x": (7 + 0.5) * box["width"] / T, "y": (2 + 0.5) * box["height"] / L})
    bars = root.evaluate("el => [...el.querySelectorAll('.wb-logit')].map(b => [Number(b.dataset.value), b.classList.contains('picked')])")
    assert len(bars) == E
    assert np.allclose([v for v, _ in bars], logits[2, 7], atol=1e-4)
    assert {e for e, (_, picked) in enumerate(bars) if picked} == set(idx[2, 7])


def check_sinks(page, root, trace) -> None:
    sink, probs = stack(trace, "attn.sink_prob"), stack(trace, "attn.probs")
    L, H, T = sink.shape
    means = root.evaluate("el => [...el.querySelectorAll('.wb-grid-cell')].map(c => Number(c.dataset.mean))")
    assert np.allclose(means, sink.mean(-1).ravel(), atol=1e-5)
    px = canvas_pixels(root, "canvas.wb-map")
    assert px.shape[:2] == (L * (H + 1) - 1, T)
    for l, hd in itertools.product(range(L), range(H)):
        assert np.abs(px[l * (H + 1) + hd] - shade(ORANGE, sink[l, hd][:, None])).max() <= 1
    root.locator(".wb-grid-cell").nth(1 * H + 2).click()  # layer 1, head 2
    pattern = root.locator("canvas.wb-pattern")
    assert pattern.get_attribute("data-layer") == "1" and pattern.get_attribute("data-head") == "2"
    px = canvas_pixels(root, "canvas.wb-pattern")
    assert px.shape[:2] == (T, T + 1)
    assert np.abs(px[:, 0] - shade(ORANGE, sink[1, 2][:, None])).max() <= 1  # the sink column
    assert np.abs(px[:, 1:] - shade(BLUE, probs[1, 2][..., None])).max() <= 1


def check_mxfp4(root, ckpt, layer=0, expert=1) -> None:
    w = ckpt[f"block.{layer}.mlp.mlp1_weight"][expert]
    b = w.blocks.numpy().ravel()
    codes = np.bincount(np.concatenate([b & 15, b >> 4]), minlength=16)
    bars = root.evaluate("""el => Object.fromEntries(['wb-scales', 'wb-codes', 'wb-errors'].map(c =>
        [c, [...el.querySelectorAll('.' + c + ' .wb-bar-item')].map(b => [b.dataset.label, Number(b.dataset.count)])]))""")
    assert [c for _, c in bars["wb-codes"]] == [int(codes[c]) for c in (15, 14, 13, 12, 11, 10, 9, 8, 0, 1, 2, 3, 4, 5, 6, 7)]
    assert [lab for lab, _ in bars["wb-codes"]][:3] == ["-6", "-4", "-3"]
    scales = np.bincount(w.scales.numpy().ravel(), minlength=256)
    assert {int(lab): c for lab, c in bars["wb-scales"] if c} == {s - 127: int(c) for s, c in enumerate(scales) if c}
    assert sum(c for _, c in bars["wb-errors"]) == w.scales.numel()  # one relative error per block
