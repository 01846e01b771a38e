"""JSON output formats the Harmony constraint can enforce on the final message, character by character.

>>> fmt = json_format({"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}}})
>>> state = fmt.start()
>>> for ch in '{"n": -12, "ok": true}':
...     state = fmt.step(state, ch)
>>> fmt.done(state)
True
>>> fmt.step(fmt.start(), "[") is None      # an object must start with '{'
True

Two formats (``json_format(schema)``):

- any JSON object (``response_format`` ``json_object``, or the schema ``{"type": "object"}``): a JSON
  grammar with a stack; whitespace where JSON allows it, in runs of at most 8, none around the object;
- a flat object schema (``json_schema`` whose ``properties`` are strings, integers, numbers, booleans,
  nulls or ``enum``\\s of those): the object is written with every property, in the schema's order, as
  ``{"name": value, ...}`` (one space after each colon and comma), each value matching its type (strings
  without escapes, integers up to 15 digits, numbers up to 12 decimals). Any output that passes is valid
  for the schema (required or not, every property is present).

Anything else (nested objects, arrays of objects, patterns, numeric ranges) is refused by
``json_format`` with ``ValueError`` naming the unsupported part, so the server can say so instead of
promising what it does not enforce. States are hashable tuples: ``step`` returns a new one (or None
when the character cannot follow), ``done`` says whether the text so far is a complete value.
"""

from __future__ import annotations

import json
import re
from typing import Any

_WS = " \t\n\r"
_MAX_WS = 8  # whitespace characters in a row (JSON allows any number; a model need not write pages of it)
_SIMPLE = {"string", "integer", "number", "boolean", "null"}


class AnyObject:
    """Any JSON object (nesting allowed). State: (mode, stack, buffer)."""

    def start(self):
        return ("value", (), "")

    def key(self, state):
        """What the next character's fate depends on: the mode, the innermost bracket, depth 0/1/more, buffer."""
        mode, stack, buf = state
        return mode, stack[-1:], min(len(stack), 2), buf

    def done(self, state) -> bool:
        return state is not None and state[0] == "end"

    def step(self, state, ch: str):
        mode, stack, buf = state
        if ch in _WS and mode in ("value", "value_or_close", "key_or_close", "key_start", "colon", "after"):
            if not stack or len(buf) >= _MAX_WS:
                return None  # no whitespace before the object; short runs inside it
            return (mode, stack, buf + " ")
        if mode == "end":
            return None  # nothing after the object: the message ends
        if mode == "value":
            if not stack and ch != "{":
                return None  # the top level is an object
            if ch == "{":
                return ("key_or_close", stack + ("{",), "")
            if ch == "[":
                return ("value_or_close", stack + ("[",), "")
            if ch == '"':
                return ("string", stack, "")
            if ch in "-0123456789":
                return ("number", stack, ch)
            if ch in "tfn":
                return ("literal", stack, ch)
            return None
        if mode == "value_or_close":
            if ch == "]":
                return self._close(stack)
            return self.step(("value", stack, ""), ch)
        if mode == "key_or_close":
            if ch == "}":
                return self._close(stack)
            return ("key", stack, "") if ch == '"' else None
        if mode == "key_start":
            return ("key", stack, "") if ch == '"' else None
        if mode in ("string", "key"):
            if buf == "\\":
                return (mode, stack, "") if ch in '"\\/bfnrtu' else None  # (\\u digits are checked loosely)
            if ch == "\\":
                return (mode, stack, "\\")
            if ch == '"':
                return ("colon", stack, "") if mode == "key" else self._after_value(stack)
            return None if ord(ch) < 0x20 else (mode, stack, "")
        if mode == "colon":
            return ("value", stack, "") if ch == ":" else None
        if mode == "number":
            if _number_prefix(buf + ch):
                return ("number", stack, buf + ch)
            if not _is_number(buf):
                return None
            return self.step(self._after_value(stack), ch)
        if mode == "literal":
            candidates = [w for w in ("true", "false", "null") if w.startswith(buf + ch)]
            if candidates:
                return ("literal", stack, buf + ch) if buf + ch not in candidates else self._after_value(stack)
            return None
        if mode == "after":
            top = stack[-1]
            if ch == ",":
                return ("key_start", stack, "") if top == "{" else ("value", stack, "")
            if ch == ("}" if top == "{" else "]"):
                return self._close(stack)
            return None
        return None

    def _close(self, stack):
        return self._after_value(stack[:-1])

    def _after_value(self, stack):
        return ("end", (), "") if not stack else ("after", stack, "")


_INT_PREFIX = re.compile(r"-?(?:0|[1-9][0-9]{0,14})?")
_NUM_PREFIX = re.compile(r"-?(?:(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{0,12})?(?:(?<=[0-9])[eE][-+]?[0-9]{0,3})?)?")


def _number_prefix(text: str, integer: bool = False) -> bool:
    return bool((_INT_PREFIX if integer else _NUM_PREFIX).fullmatch(text))


def _is_number(text: str, integer: bool = False) -> bool:
    return _number_prefix(text, integer) and text[-1:].isdigit()


class FlatObject:
    """``{"a": value, "b": value}`` with every property in order, each value of its type.
    State: (field index, phase, buffer); phase "lit" writes the literal text before a value."""

    def __init__(self, properties: dict[str, dict]):
        self.fields = list(properties.items())
        self.literals = []
        for i, (name, _) in enumerate(self.fields):
            self.literals.append(("{" if i == 0 else ", ") + json.dumps(name) + ": ")
        self.closing = "}" if self.fields else "{}"

    def start(self):
        return (0, "lit", "")

    def done(self, state) -> bool:
        return state is not None and state[1] == "end"

    def step(self, state, ch: str):
        i, phase, buf = state
        if phase == "end":
            return None
        if phase == "lit":
            text = self.literals[i] if i < len(self.fields) else self.closing
            if not text.startswith(buf + ch):
                return None
            if buf + ch == text:
                return (i, "end", "") if i >= len(self.fields) else (i, "val", "")
            return (i, "lit", buf + ch)
        spec = self.fields[i][1]
        if spec.get("type") == "string" and "enum" not in spec:  # phases: val (expect the quote), str, str_end
            if phase == "val":
                return (i, "str", "") if ch == '"' else None
            if phase == "str":
                if ch == '"':
                    return (i, "str_end", "")
                return None if ch == "\\" or ord(ch) < 0x20 else state
            return self.step((i + 1, "lit", ""), ch)
        nxt = buf + ch  # a number, boolean, null or enum value: short, kept whole
        if self._prefix(spec, nxt):
            return (i, "val", nxt)
        if self._complete(spec, buf):
            return self.step((i + 1, "lit", ""), ch)
        return None

    def _prefix(self, spec: dict, text: str) -> bool:
        if "enum" in spec:
            return any(json.dumps(v).startswith(text) for v in spec["enum"])
        kind = spec["type"]
        if kind in ("integer", "number"):
            return _number_prefix(text, kind == "integer")
        if kind == "boolean":
            return "true".startswith(text) or "false".startswith(text)
        return "null".startswith(text)

    def _complete(self, spec: dict, text: str) -> bool:
        if "enum" in spec:
            return any(json.dumps(v) == text for v in spec["enum"])
        kind = spec["type"]
        if kind in ("integer", "number"):
            return _is_number(text, kind == "integer")
        return text in (("true", "false") if kind == "boolean" else ("null",))


def json_format(schema: dict | None):
    """The format for ``response_format``: None (json_object) or a JSON schema; raises ``ValueError``
    naming what it cannot enforce."""
    if schema is None or schema == {} or schema == {"type": "object"}:
        return AnyObject()
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ValueError("the schema's top level must be {'type': 'object', ...}")
    props = schema.get("properties") or {}
    if not isinstance(props, dict):
        raise ValueError("'properties' must be an object")
    for name, spec in props.items():
        if not isinstance(spec, dict):
            raise ValueError(f"property {name!r}: its schema must be an object")
        extra = set(spec) - {"type", "enum", "description", "title"}
        if extra:
            raise ValueError(f"property {name!r}: {', '.join(sorted(extra))} cannot be enforced")
        if "enum" in spec:
            if not isinstance(spec["enum"], list) or not spec["enum"] or not all(
                    isinstance(v, (str, int, float, bool)) or v is None for v in spec["enum"]):
                raise ValueError(f"property {name!r}: an enum of strings, numbers, booleans or null")
        elif spec.get("type") not in _SIMPLE:
            raise ValueError(f"property {name!r}: type {spec.get('type')!r} cannot be enforced "
                             f"(string, integer, number, boolean, null or an enum)")
    missing = set(schema.get("required") or ()) - set(props)
    if missing:
        raise ValueError(f"'required' names properties the schema does not define: {sorted(missing)}")
    return FlatObject(props)


def valid(fmt, text: str) -> bool:
    """Whether ``text`` is a complete value of ``fmt``."""
    state: Any = fmt.start()
    for ch in text:
        state = fmt.step(state, ch)
        if state is None:
            return False
    return fmt.done(state)
