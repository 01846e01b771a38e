"""TokenStreamView without a browser: the binary batch format (read back by an independent decoder),
live streaming that ends with exactly what ``parse_tokens`` gives (held-back headers, re-sent tokens),
batching, the catch-up protocol, and static HTML that carries hostile text only as escaped data."""

from __future__ import annotations

import base64
import json
import math
import random
import struct
from html.parser import HTMLParser

import pytest

from workbench.harmony import encoding, parse_tokens
from workbench.harmony import tokens as T
from workbench.widgets import TokenStreamView

ENC = encoding()
KINDS = ["special", "header", "content", "stray", "invalid"]


def E(text: str) -> list[int]:
    return ENC.encode(text, allowed_special="all")


def decode_batch(buf: bytes, strings: list[str], start: int = 0) -> list[dict]:
    """The wire format as documented in token_stream.py, read with struct (not numpy)."""
    n, n_text = struct.unpack_from("<II", buf, 0)
    o = 8

    def take(fmt: str, count: int):
        nonlocal o
        values = struct.unpack_from(f"<{count}{fmt}", buf, o)
        o += struct.calcsize(f"<{count}{fmt}")
        return values

    ids, msg, lp = take("d", n), take("i", n), take("f", n)
    off = take("I", n + 1)
    role, chan, rcpt, err = take("I", n), take("I", n), take("I", n), take("I", n)
    kind = take("B", n)
    text = buf[o:o + n_text].decode("utf-8")
    utf16 = text.encode("utf-16-le")
    s = lambda i: strings[i] if i else None  # noqa: E731
    return [{"position": start + i, "id": int(ids[i]), "message": None if msg[i] < 0 else msg[i],
             "logprob": lp[i], "text": utf16[2 * off[i]:2 * off[i + 1]].decode("utf-16-le"),
             "role": s(role[i]), "channel": s(chan[i]), "recipient": s(rcpt[i]), "error": s(err[i]),
             "kind": KINDS[kind[i]]} for i in range(n)]


def truth(tokens, role="assistant") -> list[dict]:
    keys = ("position", "id", "message", "text", "role", "channel", "recipient", "error", "kind")
    return [{k: getattr(e, k) for k in keys} for e in parse_tokens(tokens, role).events]


class Frontend:
    """What token_stream.js does with batches: drop from ``start`` on, then append."""

    def __init__(self):
        self.tokens: list[dict] = []
        self.messages: list[tuple[dict, list]] = []
        self.strings: list[str] = [""]

    def receive(self, content, buffers=None):
        self.messages.append((content, buffers))
        assert content["type"] == "append"
        assert content["start"] <= len(self.tokens), "a gap: the view would have to ask for a resend"
        self.strings = content.get("strings", self.strings)
        del self.tokens[content["start"]:]
        self.tokens += decode_batch(bytes(buffers[0]), self.strings, content["start"])


def live_view(**kwargs) -> tuple[TokenStreamView, Frontend]:
    view, front = TokenStreamView(**kwargs), Frontend()
    view.send = front.receive  # the comm
    return view, front


def strip(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "logprob"} for e in events]


CONVERSATION = E("<|channel|>analysis<|message|>Think about it.<|end|>"
                 "<|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": 1}<|call|>"
                 "<|start|>functions.f to=assistant<|channel|>commentary<|message|>{\"ok\": true}<|end|>"
                 "<|start|>assistant<|channel|>final<|message|>Café 日本語 😀 done.<|return|>")
MALFORMED = {
    "start inside header": E("<|channel|>analysis<|message|>x<|end|><|start|><|start|>assistant<|channel|>final<|message|>y<|return|>"),
    "ends mid-header": E("<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>fin"),
    "ends mid-message": E("<|channel|>final<|message|>The ans"),
    "missing end before start": E("<|channel|>analysis<|message|>Plan.<|start|>assistant<|channel|>final<|message|>ok<|return|>"),
    "refusal without message": E("I can't help with that.<|end|><|start|>assistant<|channel|>final<|message|>ok<|return|>"),
    "stray words in header": E("<|channel|>commentary to=functions.f ––commentary json<|message|>{}<|call|>"),
    "non-start where start belongs": E("<|channel|>final<|message|>a<|end|>commentary to=x<|start|>assistant<|channel|>final<|message|>b<|return|>"),
    "message ends inside a UTF-8 character": E("<|channel|>final<|message|>a") + [172] + E("<|end|><|start|>assistant<|channel|>final<|message|>b") + [172],
    "invalid ids": E("<|channel|>final<|message|>a") + [10**12, -3, 200000] + E("b<|return|>"),
}


def test_batch_format_round_trips_a_transcript():
    t = parse_tokens(CONVERSATION)
    lps = [-(i % 7) / 3 for i in range(len(CONVERSATION))]
    view = TokenStreamView(t, logprobs=lps)
    got = decode_batch(view.data, view.strings)
    assert strip(got) == truth(CONVERSATION)
    assert [g["logprob"] for g in got] == pytest.approx(lps, abs=1e-6)
    assert view.finished and view.count == len(CONVERSATION) and view.errors == [] and view.transcript is t
    assert {"functions.f", "commentary", "final", "analysis", "assistant", "tool"} <= set(view.strings)


def test_token_ids_are_parsed_and_missing_logprobs_are_nan():
    view = TokenStreamView(CONVERSATION, logprobs=[-1.0, None])
    got = decode_batch(view.data, view.strings)
    assert strip(got) == truth(CONVERSATION)
    assert got[0]["logprob"] == -1.0 and all(math.isnan(g["logprob"]) for g in got[1:])
    with pytest.raises(ValueError, match="logprobs"):
        TokenStreamView(CONVERSATION[:3], logprobs=[0.0] * 4)


@pytest.mark.parametrize("batch_size", [1, 3, 512])
@pytest.mark.parametrize("name", ["conversation", *MALFORMED])
def test_live_stream_ends_exactly_as_parse_tokens(name, batch_size):
    tokens = CONVERSATION if name == "conversation" else MALFORMED[name]
    view, front = live_view(batch_size=batch_size, interval=1e9)
    for i, t in enumerate(tokens):
        view.push(t, logprob=-i / 10)
    view.finish()
    assert strip(front.tokens) == truth(tokens)
    assert [g["logprob"] for g in front.tokens] == pytest.approx([-i / 10 for i in range(len(tokens))], abs=1e-5)
    assert view.errors == [[e.position, e.code, e.detail] for e in parse_tokens(tokens).errors]
    assert strip(decode_batch(view.data, view.strings)) == truth(tokens)  # the stored state too


def test_header_tokens_are_sent_only_once_settled():
    view, front = live_view(batch_size=1, interval=1e9)
    for t in E("<|channel|>analysis<|message|>Hi<|end|><|start|>assistant<|channel|>fin"):
        view.push(t)
    # the second header has not reached <|message|>: none of its tokens were sent
    sent = front.tokens
    assert [e["text"] for e in sent][-1] == "<|end|>" and all(e["channel"] == "analysis" for e in sent)
    for t in E("al<|message|>"):
        view.push(t)
    assert front.tokens[-1]["text"] == "<|message|>" and front.tokens[-1]["channel"] == "final"
    second = front.tokens[[e["text"] for e in front.tokens].index("<|start|>"):]
    assert all(e["role"] == "assistant" and e["channel"] == "final" and e["message"] == 1 for e in second)


def test_random_streams_match_parse_tokens():
    rng = random.Random(5)
    pool = list(T.NAMES) + [172, 200000, -5] + E("assistant to=functions.f analysis final json hi 😀 <script>")
    for _ in range(60):
        tokens = [rng.choice(pool) if rng.random() < 0.6 else rng.randrange(0, T.VOCAB_SIZE) for _ in range(rng.randint(0, 50))]
        view, front = live_view(batch_size=rng.choice([1, 2, 5, 100]), interval=1e9)
        for t in tokens:
            view.push(t)
        view.finish()
        assert strip(front.tokens) == truth(tokens), tokens


def test_thousands_of_tokens_go_in_few_binary_batches():
    body = E(" lorem ipsum" * 5000)[:10_000]
    tokens = E("<|channel|>analysis<|message|>") + body + E("<|end|>")
    view, front = live_view(batch_size=512, interval=1e9)
    view.extend(tokens)
    assert 18 <= len(front.messages) <= 21  # every 512 settled tokens, not every token
    view.finish()
    assert len(front.tokens) == len(tokens)
    for content, buffers in front.messages:
        assert isinstance(buffers[0], bytes) and len(buffers) == 1
        assert set(content) <= {"type", "start", "end", "reply", "strings", "errors"}  # no per-token JSON
    assert sum("strings" in c for c, _ in front.messages) == 1  # the table went once (it did not grow)
    # with interval=0 every settled token is sent at once (slow models stay live)
    view, front = live_view(batch_size=512, interval=0)
    view.extend(tokens[:50])
    assert len(front.tokens) == 50 - 0 and len(front.messages) >= 45


def test_snapshots_for_late_views_grow_geometrically():
    tokens = E("<|channel|>analysis<|message|>") + E(" lorem ipsum" * 5000)[:10_000]
    view, front = live_view(batch_size=100, interval=1e9, snapshot_every=1000)
    sizes = []
    view.observe(lambda ch: sizes.append(struct.unpack_from("<I", ch["new"])[0]), "data")
    view.extend(tokens)
    assert sizes[:4] == [1000, 2000, 4000, 8000]  # each when the unsnapshotted part reaches the last size
    assert strip(decode_batch(view.data, view.strings)) == strip(front.tokens[:8000]) and not view.finished
    view.finish()
    assert sizes[-1] == len(tokens) and view.finished


def test_a_late_view_catches_up():
    view, front = live_view(batch_size=4, interval=1e9)
    view.extend(CONVERSATION[:30])
    late = Frontend()
    view.send = late.receive
    view._on_frontend_msg(view, {"type": "hello", "have": 0}, [])
    assert strip(late.tokens) == strip(front.tokens)
    view._on_frontend_msg(view, {"type": "hello", "have": len(front.tokens)}, [])
    assert len(late.messages) == 1  # nothing new: no reply


def test_generated_tokens_bring_their_logprobs():
    from dataclasses import dataclass

    @dataclass
    class Generated:  # the shape of workbench.generate's tokens
        token: int
        logprob: float

    view, front = live_view(batch_size=1)
    for i, t in enumerate(CONVERSATION):
        view.push(Generated(t, -i / 8))
    view.finish()
    assert [g["logprob"] for g in front.tokens] == pytest.approx([-i / 8 for i in range(len(CONVERSATION))])


def test_callback_use_and_finish():
    view, front = live_view()
    for t in CONVERSATION:
        view(t)  # the view is a generation callback
    assert view.finished is False
    t = view.finish()
    assert t.final == "Café 日本語 😀 done." and view.finished
    with pytest.raises(RuntimeError, match="finished"):
        view.push(1)
    with pytest.raises(RuntimeError, match="finished"):
        TokenStreamView(CONVERSATION).push(1)


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)


HOSTILE = ['<script>window.__wbPwned = 1</script>', '<img src="x" onerror="window.__wbPwned = 2">',
           "javascript:window.__wbPwned = 3", "</script><script>window.__wbPwned = 4</script>"]


def test_static_html_carries_hostile_text_only_as_data(tmp_path):
    tokens = E("<|channel|>final<|message|>" + " ".join(HOSTILE) + "<|return|>")
    view = TokenStreamView(tokens, title=HOSTILE[1])
    page = view.export_html(tmp_path / "hostile.html").read_text()
    assert page.startswith("<!doctype html>")
    p = Tags()
    p.feed(page)
    tags = [t for t, _ in p.tags]
    assert tags.count("script") == 2 and "img" not in tags  # the spec (JSON) and the runtime module
    assert [a.get("type") for t, a in p.tags if t == "script"] == ["application/json", "module"]
    assert not any(k.startswith("on") or k in ("src", "href") for _, a in p.tags for k in a)
    spec = json.loads(p.script_text[0])
    data = base64.b64decode(spec["state"]["data"]["$binary"])
    text = "".join(e["text"] for e in decode_batch(data, spec["state"]["strings"]))
    assert all(h in text for h in HOSTILE)  # intact as data
    assert spec["state"]["title"] == HOSTILE[1]
    assert "<" not in p.script_text[0]  # escaped inside the JSON
    # the fallback (no JavaScript) shows the text escaped
    assert html_escaped(HOSTILE[0]) in page and "cdn" not in page.lower()


def html_escaped(s: str) -> str:
    import html

    return html.escape(s)


def test_repr_html_is_served_next_to_the_widget_view():
    from IPython.core.interactiveshell import InteractiveShell

    data, _ = InteractiveShell.instance().display_formatter.format(TokenStreamView(CONVERSATION))
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/html"].startswith('<div class="wb-static"') and "wb-spec" in data["text/html"]
