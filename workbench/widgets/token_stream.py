"""``TokenStreamView``: a Harmony token stream, coloured by channel and role, live or finished.

>>> from workbench.harmony import encoding, parse_tokens
>>> ids = encoding().encode("<|channel|>final<|message|>Hi!<|return|>", allowed_special="all")
>>> TokenStreamView(parse_tokens(ids)).count
6

Live: ``view = TokenStreamView().show()`` (or ``display(view)``), then ``view.push(token_id, logprob)`` for each
generated token (the view is itself a callback: ``view(token_id)``), then ``view.finish()``. The
view parses with its own ``StreamDecoder`` and sends events to the browser in batches (every
``batch_size`` tokens or ``interval`` seconds), as one binary buffer per batch.

Wire format of a batch (little-endian, n tokens): uint32 n, uint32 text_bytes; float64 id[n];
int32 message[n] (-1: none); float32 logprob[n] (NaN: none); uint32 text_offset[n+1] (UTF-16 code
units into the text); uint32 role[n], channel[n], recipient[n], error[n] (indexes into ``strings``,
0: none); uint8 kind[n] (index into ``KINDS``); then the UTF-8 text of all tokens.

Events a parser may still change (header tokens before ``<|message|>``: their role and channel are
only known then) are held back until they settle. A batch carries the position it starts at; the
browser drops anything it has from there on before appending, so a re-sent token replaces the old.
It carries the string table and the error list only when they grew.

A view that starts after the first batches went out (the browser renders it while the kernel is
already streaming, and a busy kernel cannot answer requests) catches up from the synced ``data``
trait, which holds everything sent so far whenever the unsnapshotted part reaches the size of the
last snapshot (at least ``snapshot_every`` tokens): the snapshots add at most about twice the
stream's bytes, and a late view waits at most until the stream has doubled.
"""

from __future__ import annotations

import math
import sys
import time
from array import array
from typing import Iterable, Sequence

import traitlets

from ..harmony import StreamDecoder, TokenEvent, parse_tokens
from ._base import WorkbenchWidget

KINDS = ("special", "header", "content", "stray", "invalid")
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}


class _Strings:
    """Append-only string table; index 0 is None."""

    def __init__(self):
        self.items: list[str] = [""]
        self._index: dict[str, int] = {}

    def __call__(self, s: str | None) -> int:
        if s is None:
            return 0
        i = self._index.get(s)
        if i is None:
            i = self._index[s] = len(self.items)
            self.items.append(s)
        return i


def encode_events(events: Sequence[TokenEvent], logprobs: Sequence[float], strings: _Strings) -> bytes:
    """The batch wire format above, for ``events`` (and one logprob per event, NaN for none)."""
    n = len(events)
    texts = [e.text for e in events]
    offsets, total = array("I", [0]), 0
    for t in texts:
        total += len(t.encode("utf-16-le")) // 2
        offsets.append(total)
    text = "".join(texts).encode("utf-8")
    parts = [
        array("I", [n, len(text)]),
        array("d", [e.id for e in events]),
        array("i", [-1 if e.message is None else e.message for e in events]),
        array("f", logprobs),
        offsets,
        array("I", [strings(e.role) for e in events]),
        array("I", [strings(e.channel) for e in events]),
        array("I", [strings(e.recipient) for e in events]),
        array("I", [strings(e.error) for e in events]),
        array("B", [_KIND_CODE.get(e.kind, 4) for e in events]),
    ]
    if sys.byteorder == "big":
        for p in parts:
            p.byteswap()
    return b"".join(p.tobytes() for p in parts) + text


class TokenStreamView(WorkbenchWidget):
    """Tokens of a Harmony stream: one span per token, message boundaries, recipients and errors.

    ``source``: a ``Transcript`` (or anything with ``.events`` and ``.errors``), a list of
    ``TokenEvent``, a list of token ids (parsed with ``role``), or None for a live stream fed by
    ``push``. ``logprobs``: one per token, for a finished source. Hover a token for its id,
    position and logprob; click to pin it (``selected`` holds its position). ``highlight = [a, b]``
    marks tokens a..b (inclusive) and scrolls to them.
    """

    _module = "token_stream"

    data = traitlets.Bytes(b"").tag(sync=True)
    strings = traitlets.List(traitlets.Unicode()).tag(sync=True)
    errors = traitlets.List().tag(sync=True)  # [[position, code, detail], ...]
    show_special = traitlets.Bool(True).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    highlight = traitlets.List(traitlets.Int()).tag(sync=True)
    finished = traitlets.Bool(False).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(self, source=None, *, role: str | None = "assistant", logprobs: Sequence[float] | None = None,
                 show_special: bool = True, batch_size: int = 512, interval: float = 0.1, snapshot_every: int = 1024,
                 title: str = "", channels="auto", recipients=None, **kwargs):
        super().__init__(show_special=show_special, title=title, **kwargs)
        self.batch_size, self.interval, self.snapshot_every = batch_size, interval, snapshot_every
        self._table = _Strings()
        self._decoder: StreamDecoder | None = None
        self._source = None
        if source is None:
            self._decoder = StreamDecoder(role, channels=channels, recipients=recipients)
            self._events, self._errors = self._decoder.events, self._decoder.errors
        else:
            if not hasattr(source, "events"):
                items = list(source)
                source = (_EventList(items) if items and isinstance(items[0], TokenEvent)
                          else parse_tokens(items, role, channels=channels, recipients=recipients))
            self._source = source if hasattr(source, "messages") else None
            self._events, self._errors = list(source.events), list(getattr(source, "errors", []))
        given = [] if logprobs is None else [math.nan if x is None else float(x) for x in logprobs]
        if len(given) > len(self._events):
            raise ValueError(f"{len(given)} logprobs for {len(self._events)} tokens")
        self._logprobs = given + [math.nan] * (len(self._events) - len(given))
        self._sent = self._stable = self._snapped = 0
        self._told = (0, 0)  # sizes of the string table and error list the browser was last sent
        self._watch: tuple[int, str] | None = None  # (index, text) of the last content token sent
        self._last_flush = time.monotonic()
        self.on_msg(self._on_frontend_msg)
        if self._decoder is None:
            self._stable = len(self._events)
            self._snapshot(final=True)

    # -- reading -------------------------------------------------------------------------------

    @property
    def events(self) -> list[TokenEvent]:
        return self._events

    @property
    def count(self) -> int:
        return len(self._events)

    @property
    def transcript(self):
        """The parsed transcript so far (a live view: what its decoder has)."""
        if self._decoder is not None:
            return self._decoder.transcript
        if self._source is not None:
            return self._source
        from ..harmony import Transcript

        return Transcript(self._events, [], self._errors)

    # -- live ----------------------------------------------------------------------------------

    def push(self, token, logprob: float | None = None) -> TokenEvent:
        """Add one token: an id, a ``TokenEvent`` (its id is used), or a generated token with ``.token``
        and ``.logprob`` (``workbench.generate``'s); returns its event."""
        if self._decoder is None or self.finished:
            raise RuntimeError("this TokenStreamView is finished; make a new one to stream into")
        if isinstance(token, TokenEvent):
            token = token.id
        elif hasattr(token, "token") and hasattr(token, "logprob"):
            token, logprob = token.token, token.logprob if logprob is None else logprob
        dec = self._decoder
        before, n0 = dec.state, len(dec.events)
        event = dec.push(token)
        self._logprobs.append(math.nan if logprob is None else float(logprob))
        if dec.state != "header":
            self._stable = len(dec.events)
        elif before != "header":
            self._stable = n0  # a header began: its tokens settle at <|message|>
        if self._stable - self._sent >= self.batch_size or (
                self._stable > self._sent and time.monotonic() - self._last_flush >= self.interval):
            self.flush()
        return event

    __call__ = push

    def extend(self, tokens: Iterable, logprobs: Iterable[float] | None = None) -> "TokenStreamView":
        if logprobs is None:
            for t in tokens:
                self.push(t)
        else:
            for t, lp in zip(tokens, logprobs):
                self.push(t, lp)
        return self

    def flush(self) -> None:
        """Send the settled tokens not yet sent (and any already sent that changed since)."""
        start, end = self._sent, self._stable
        if self._watch is not None:
            i, text = self._watch
            if i < start and self._events[i].text != text:
                start = i  # a message ended inside a UTF-8 character: its last token got the tail
        if end > start:
            self._send_batch(start, end)
            last = next((j for j in range(end - 1, start - 1, -1) if self._events[j].kind == "content"), None)
            if last is not None:
                self._watch = (last, self._events[last].text)
            self._sent = end
            if self._sent - self._snapped >= max(self._snapped, self.snapshot_every):
                self._snapshot(final=False)
        self._last_flush = time.monotonic()

    def show(self) -> "TokenStreamView":
        """Display the view and remember where: ``finish()`` then refreshes that output, so a saved or
        converted notebook holds the whole stream as static HTML (``display(view)`` keeps the
        snapshot taken when it was displayed)."""
        from IPython.display import display

        self._handle = display(self, display_id=True)
        return self

    def finish(self):
        """End of stream: settle and send everything, store the full state; returns the transcript."""
        if self._decoder is not None and not self.finished:
            self._decoder.finish()
            self._stable = len(self._events)
            self.flush()
            self._snapshot(final=True)
            if getattr(self, "_handle", None) is not None:
                self._handle.update(self)
        return self.transcript

    # -- internals -----------------------------------------------------------------------------

    def _error_rows(self) -> list:
        return [[e.position, e.code, e.detail] for e in self._errors]

    def _send_batch(self, start: int, end: int, reply: bool = False) -> None:
        buf = encode_events(self._events[start:end], self._logprobs[start:end], self._table)
        msg = {"type": "append", "start": start, "end": end, "reply": reply}
        # the string table and the error list go along only when they grew (replies always carry them)
        if reply or len(self._table.items) != self._told[0]:
            msg["strings"] = self._table.items
        if reply or len(self._errors) != self._told[1]:
            msg["errors"] = self._error_rows()
        self._told = (len(self._table.items), len(self._errors))
        self.send(msg, [buf])

    def _snapshot(self, final: bool) -> None:
        """Store everything sent so far in the synced state (what a view that starts late reads)."""
        n = len(self._events) if final else self._sent
        data = encode_events(self._events[:n], self._logprobs[:n], self._table)
        with self.hold_sync():
            self.data, self.strings, self.errors = data, list(self._table.items), self._error_rows()
            self.finished = final
        self._sent = max(self._sent, n)
        self._snapped = n

    def _on_frontend_msg(self, _widget, content, _buffers) -> None:
        # A view that missed batches asks for what it lacks (answered once the kernel is free).
        if isinstance(content, dict) and content.get("type") == "hello":
            have = int(content.get("have", 0))
            if 0 <= have < self._sent:
                self._send_batch(have, self._sent, reply=True)

    def fallback_text(self) -> str:
        return "".join(e.text for e in self._events)

    def __repr__(self) -> str:
        state = "finished" if self.finished else "live"
        return f"TokenStreamView({self.count} tokens, {len(self._errors)} errors, {state})"


class _EventList:
    def __init__(self, events):
        self.events, self.errors = events, []
