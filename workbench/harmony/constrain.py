"""Harmony-constrained decoding: a logits processor that keeps generation inside the Harmony grammar.

>>> constraint = HarmonyConstraint(recipients=["functions.get_weather"])
>>> from workbench.harmony import encoding
>>> sorted(encoding().decode([i]) for i in constraint.allowed_next([]))  # a header starts " to=..." or <|channel|>
[' ', ' t', ' to', '<|channel|>']

Used as ``generate(..., logits_processor=HarmonyConstraint.from_conversation(conv))``: it sees the
ids generated so far and the next-token logits ``[V]`` and returns the logits with every token that
would break the grammar set to -inf. The grammar, from right after ``<|start|>assistant``:

    message  := header "<|message|>" content end
    header   := [" to=" R] "<|channel|>" C [" to=" R] [content-type]   (one recipient at most)
    content  := any non-special tokens (at most ``max_content_tokens`` if set)
    end      := "<|call|>" if addressed to a tool, "<|return|>" on final, "<|end|>" otherwise
    after <|end|>: "<|start|>" then "assistant" header ...

Options for serving: ``require_call=True`` (``tool_choice`` "required" or a named function) allows at
most one analysis message and then only calls; ``final_format`` (a ``jsonformat`` format, for
``response_format``) makes a final message's text a JSON value of that format, ending with
``<|return|>`` only once the value is complete (and drops free-text commentary headers).

C comes from the system message's channels; R from the declared tools (``functions.*`` only on
commentary, built-ins on analysis or commentary, nothing on final). Content types: ``<|constrain|>json``
(after a space) for any call, `` code`` for built-ins. Header text is matched character by
character, so any tokenisation of an allowed header is accepted.
"""

from __future__ import annotations

import codecs
import functools
from dataclasses import dataclass
from typing import Iterable, Sequence

from . import tokens as T

DEFAULT_CHANNELS = ("analysis", "commentary", "final")
# Special tokens inside a header are matched as single private-use characters.
_SYM = {T.CHANNEL: "\ue000", T.CONSTRAIN: "\ue001", T.MESSAGE: "\ue002"}
_SYM_ID = {v: k for k, v in _SYM.items()}


@functools.lru_cache(maxsize=1)
def _text_tokens() -> tuple[dict[str, list[int]], "object"]:
    """(text -> ids of non-special tokens with exactly that text, bool mask [V] of non-special tokens)."""
    import torch

    index: dict[str, list[int]] = {}
    table = T.token_bytes_table()
    for i in range(T.FIRST_SPECIAL):
        try:
            text = table[i].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if text:
            index.setdefault(text, []).append(i)
    mask = torch.zeros(T.VOCAB_SIZE, dtype=torch.bool)
    mask[: T.FIRST_SPECIAL] = True
    return index, mask


@functools.lru_cache(maxsize=1)
def _utf8_tables():
    """Per token: leading continuation bytes, whether the rest is a valid UTF-8 prefix, first byte,
    and whether it is all continuation bytes."""
    import torch

    n = T.FIRST_SPECIAL
    lead, valid, first, only = [0] * T.VOCAB_SIZE, [False] * T.VOCAB_SIZE, [0] * T.VOCAB_SIZE, [False] * T.VOCAB_SIZE
    table = T.token_bytes_table()
    for i in range(n):
        b = table[i]
        k = 0
        while k < len(b) and 0x80 <= b[k] <= 0xBF:
            k += 1
        lead[i], first[i], only[i] = min(k, 4), b[0] if b else 0, 0 < k == len(b)
        try:
            b[k:].decode("utf-8")
            valid[i] = True
        except UnicodeDecodeError as e:  # fine if only the last character is unfinished
            valid[i] = e.reason == "unexpected end of data"
    lead, first = torch.tensor(lead, dtype=torch.int8), torch.tensor(first, dtype=torch.int16)
    valid, only = torch.tensor(valid, dtype=torch.bool), torch.tensor(only, dtype=torch.bool)
    return lead, valid, first, only


# Allowed range of the first continuation byte after a lead byte (Unicode table 3-7).
_SECOND = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}


@functools.lru_cache(maxsize=64)
def _content_mask(pending: bytes):
    """Non-special tokens that keep ``pending + token`` a valid UTF-8 prefix (bool [V]; do not modify)."""
    lead, valid, first, only = _utf8_tables()
    if not pending:
        return (lead == 0) & valid
    total = 2 if pending[0] < 0xE0 else 3 if pending[0] < 0xF0 else 4
    need = total - len(pending)
    mask = ((lead == need) & valid) | ((lead < need) & only)  # finish the character, or continue it
    if len(pending) == 1:
        lo, hi = _SECOND.get(pending[0], (0x80, 0xBF))
        mask &= (first >= lo) & (first <= hi)
    return mask


@functools.lru_cache(maxsize=1)
def _first_char_index() -> dict[str, "object"]:
    """First character -> LongTensor of the non-special tokens whose (valid UTF-8) text starts with it."""
    import torch

    index, _ = _text_tokens()
    by_first: dict[str, list[int]] = {}
    for text, ids in index.items():
        by_first.setdefault(text[0], []).extend(ids)
    return {c: torch.tensor(sorted(ids), dtype=torch.long) for c, ids in by_first.items()}


def _token_text(token: int) -> str:
    try:
        return T.token_bytes(token).decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd"  # a partial character: no JSON format accepts it


@dataclass(frozen=True)
class _Target:
    channel: str
    recipient: str | None


def header_strings(channels: Sequence[str], recipients: Iterable[str]) -> dict[str, _Target]:
    """Every allowed header (specials as private-use characters, ending in <|message|>) -> what it declares."""
    ch, co, ms = _SYM[T.CHANNEL], _SYM[T.CONSTRAIN], _SYM[T.MESSAGE]
    out: dict[str, _Target] = {}
    for c in channels:
        out[f"{ch}{c}{ms}"] = _Target(c, None)
    for r in recipients:
        is_function = r.startswith("functions.")
        for c in channels:
            if c == "final" or (is_function and c != "commentary") or (not is_function and c not in ("analysis", "commentary")):
                continue
            types = ["", f" {co}json"] + ([] if is_function else [" code"])
            for ct in types:
                out[f" to={r}{ch}{c}{ct}{ms}"] = _Target(c, r)
                out[f"{ch}{c} to={r}{ct}{ms}"] = _Target(c, r)
    return out


class HarmonyConstraint:
    """Logits processor ``(generated_ids, logits[V]) -> logits[V]`` for an assistant completion."""

    def __init__(self, channels: Sequence[str] | None = DEFAULT_CHANNELS, recipients: Iterable[str] = (),
                 *, max_content_tokens: int | None = None, require_call: bool = False, final_format=None):
        self.channels = tuple(channels or DEFAULT_CHANNELS)
        self.recipients = tuple(recipients)
        self.max_content_tokens = max_content_tokens
        first = later = header_strings(self.channels, self.recipients)
        if require_call:  # tool_choice "required": at most one analysis message, then a call to a recipient
            if not self.recipients:
                raise ValueError("require_call needs at least one recipient")
            later = {h: t for h, t in first.items() if t.recipient}
            first = {h: t for h, t in first.items() if t.recipient or t.channel == "analysis"}
        if final_format is not None:  # the answer is JSON: no free-text preamble beside it
            first = {h: t for h, t in first.items() if t.recipient or t.channel in ("analysis", "final")}
            later = {h: t for h, t in later.items() if t.recipient or t.channel in ("analysis", "final")}
        self._headers = {"first": first, "later": {"assistant" + h: t for h, t in later.items()}}
        self.final_format = final_format  # a jsonformat format: the final message's text must be one
        self._json_masks: dict = {}
        self.reset()

    @classmethod
    def from_conversation(cls, conversation, **options) -> "HarmonyConstraint":
        return cls(conversation.channels, conversation.recipients, **options)

    def reset(self) -> None:
        self._seen: list[int] = []
        self._mode, self._header, self._which = "header", "", "first"
        self._target: _Target | None = None
        self._count = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._json = None  # the final_format's state inside a final message

    # -- the state machine ---------------------------------------------------------------------

    def _feed(self, token: int) -> None:
        if self._mode == "header":
            self._header += _SYM.get(token) or T.token_bytes(token).decode("utf-8", "replace")
            if token == T.MESSAGE:
                self._target = self._headers[self._which].get(self._header)
                self._mode, self._count = "content", 0
                self._utf8 = codecs.getincrementaldecoder("utf-8")()
                final = self._target is not None and self._target.channel == "final" and not self._target.recipient
                self._json = self.final_format.start() if final and self.final_format is not None else None
        elif self._mode == "content":
            if token in T.MESSAGE_END:
                self._mode = "start" if token == T.END else "done"
            else:
                self._count += 1
                if self._json is not None:
                    for ch in _token_text(token):
                        self._json = self.final_format.step(self._json, ch) if self._json is not None else None
                try:
                    self._utf8.decode(T.token_bytes(token) if T.in_range(token) else b"", False)
                except UnicodeDecodeError:  # only if a token slipped past us: start clean
                    self._utf8.reset()
        elif token == T.START:
            self._mode, self._header, self._which = "header", "", "later"

    def _sync(self, generated: Sequence[int]) -> None:
        n = len(self._seen)
        if len(generated) < n or list(generated[:n]) != self._seen:
            self.reset()
            n = 0
        for t in generated[n:]:
            self._feed(int(t))
            self._seen.append(int(t))

    def _pending(self) -> bytes:
        """Bytes of a UTF-8 character begun but not finished in the content so far."""
        return self._utf8.getstate()[0]

    def _terminators(self) -> list[int]:
        t = self._target
        if t is None:  # a header we did not constrain (cannot happen when every token went through us)
            return [T.END, T.CALL, T.RETURN]
        if t.recipient:
            return [T.CALL]
        return [T.RETURN] if t.channel == "final" else [T.END]

    def allowed_next(self, generated: Sequence[int]) -> set[int] | None:
        """Ids allowed next; None means "any non-special token, plus ``terminators``" (content)."""
        self._sync(generated)
        if self._mode == "start" or self._mode == "done":
            return {T.START}
        if self._mode == "content":
            if self.max_content_tokens is not None and self._count >= self.max_content_tokens and self._json is None \
                    and not self._pending():
                return set(self._terminators())
            return None
        index, _ = _text_tokens()
        p = self._header
        allowed: set[int] = set()
        for h in self._headers[self._which]:
            if not h.startswith(p) or len(h) == len(p):
                continue
            rest = h[len(p):]
            if rest[0] in _SYM_ID:
                allowed.add(_SYM_ID[rest[0]])
                continue
            for k in range(1, len(rest) + 1):
                if rest[k - 1] in _SYM_ID:
                    break
                allowed.update(index.get(rest[:k], ()))
        return allowed

    def _json_mask(self, logits, keep: int = 32):
        """The best ``keep`` tokens (by logit) whose whole text the format accepts next, and
        ``<|return|>`` once the value is complete; every other token -inf. Candidates are found through
        their first character, so a structural step (a quote, a colon) scans few tokens. (Sampling then
        renormalises over these candidates: exact for greedy decoding, a truncated tail otherwise.)"""
        import torch

        fmt, state = self.final_format, self._json
        index = _first_char_index()
        key = fmt.key(state) if hasattr(fmt, "key") else state
        firsts = self._json_masks.get(key)
        if firsts is None:
            firsts = [c for c in index if fmt.step(state, c) is not None]
            if len(self._json_masks) < 4096:
                self._json_masks[key] = firsts
        mask = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        if fmt.done(state) and T.RETURN < logits.shape[-1]:
            mask[T.RETURN] = True
        if firsts:
            ids = torch.cat([index[c] for c in firsts])
            ids = ids[ids < logits.shape[-1]]
            order = ids[torch.argsort(logits[ids].float().cpu(), descending=True)].tolist()
            found = 0
            for i in order:
                s = state
                for ch in _token_text(i):
                    s = fmt.step(s, ch)
                    if s is None:
                        break
                if s is not None:
                    mask[i] = True
                    found += 1
                    if found >= keep:
                        break
        if not mask.any():  # nothing can follow: end the message rather than break the grammar
            mask[T.RETURN] = True
        return logits.masked_fill(~mask, float("-inf"))

    def __call__(self, generated_ids: Sequence[int], logits):
        import torch

        allowed = self.allowed_next(generated_ids)
        if allowed is None and self._json is not None:  # a final message in a JSON format
            return self._json_mask(logits)
        if allowed is None:  # content: text that keeps UTF-8 valid; terminators between characters
            mask = _content_mask(self._pending())
            if mask.shape[0] != logits.shape[-1]:
                mask = torch.nn.functional.pad(mask, (0, max(0, logits.shape[-1] - mask.shape[0])))[: logits.shape[-1]]
            mask = mask.to(logits.device).clone()
            if not self._pending():
                mask[[t for t in self._terminators() if t < logits.shape[-1]]] = True
        else:
            mask = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            ids = [i for i in allowed if i < logits.shape[-1]]
            mask[ids] = True
        return logits.masked_fill(~mask, float("-inf"))
