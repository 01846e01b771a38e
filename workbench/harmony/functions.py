"""Declare function tools from plain Python callables: a JSON schema from type hints and docstrings.

>>> def get_weather(location: str, unit: Literal["c", "f"] = "c") -> str:
...     '''Gets the current weather.
...
...     Args:
...         location: City and country, e.g. "Paris, France".
...         unit: Temperature unit.
...     '''
>>> describe_function(get_weather).parameters["properties"]["unit"]
{'type': 'string', 'enum': ['c', 'f'], 'description': 'Temperature unit.', 'default': 'c'}

Supported hints: str, int, float, bool, None, list[X], tuple[X, ...], dict[str, X], Literal[...],
Enum subclasses, Optional[X] / X | None, and unions of these. A parameter with no hint accepts any
JSON value. Docstrings may use Google style (``Args:``) or NumPy/Sphinx style (``:param x:``).
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import types
import typing
from typing import Any, Callable, Literal

from openai_harmony import ToolDescription

_GOOGLE_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments)\s*:\s*$", re.I)
_NUMPY_SECTION = re.compile(r"^(Parameters|Other Parameters)\s*$", re.I)
_ANY_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:\s*$|^[A-Z][A-Za-z ]*$")
_ARG = re.compile(r"^\*{0,2}(\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")
_SPHINX_ARG = re.compile(r"^:param\s+(?:[^:]*\s+)?(\w+)\s*:\s*(.*)$")


def type_schema(hint: Any) -> dict:
    """The JSON schema of a type hint (``{}`` means any value)."""
    if hint is inspect.Parameter.empty or hint is Any:
        return {}
    if hint is type(None) or hint is None:
        return {"type": "null"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if hint in simple:
        return {"type": simple[hint]}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [m.value for m in hint]
        return {**_common_type(values), "enum": values}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return {**_common_type(list(args)), "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return type_schema(options[0])
        return {"anyOf": [type_schema(a) for a in options]}
    if hint in (list, tuple, set) or origin in (list, tuple, set, frozenset):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return {"type": "array", "prefixItems": [type_schema(a) for a in args]}
        return {"type": "array", **({"items": type_schema(args[0])} if args else {})}
    if hint is dict or origin is dict:
        out: dict = {"type": "object"}
        if len(args) == 2 and type_schema(args[1]):
            out["additionalProperties"] = type_schema(args[1])
        return out
    raise TypeError(f"cannot describe type hint {hint!r} as JSON schema")


def _common_type(values: list) -> dict:
    kinds = {type_schema(type(v)).get("type") for v in values}
    return {"type": kinds.pop()} if len(kinds) == 1 else {}


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring into (first paragraph, {parameter: description}).

    >>> parse_docstring("Add two numbers.\\n\\nArgs:\\n    a: first\\n    b (int): second,\\n        continued")
    ('Add two numbers.', {'a': 'first', 'b': 'second, continued'})
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SPHINX_ARG.match(line.strip()) or _GOOGLE_SECTION.match(line.strip()):
            break
        summary.append(line.strip())
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        sphinx = _SPHINX_ARG.match(line)
        if sphinx:
            params[sphinx.group(1)] = sphinx.group(2).strip()
            i += 1
            continue
        numpy = _NUMPY_SECTION.match(line) and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}
        if not (_GOOGLE_SECTION.match(line) or numpy):
            i += 1
            continue
        i += 2 if numpy else 1
        base, current = None, None
        while i < len(lines):
            raw = lines[i]
            text = raw.strip()
            indent = len(raw) - len(raw.lstrip())
            if not text:
                i += 1
                if numpy and i < len(lines) and _ANY_SECTION.match(lines[i].strip()) and lines[i][:1] != " ":
                    break
                continue
            if base is None:
                base = indent
            if indent < base or (numpy and indent == base and _ANY_SECTION.match(text) and i + 1 < len(lines)
                                 and set(lines[i + 1].strip()) == {"-"}):
                break
            arg = _ARG.match(text) if indent == base else None
            if arg:
                current = arg.group(1)
                params[current] = "" if numpy else arg.group(3).strip()
            elif current:
                params[current] = (params[current] + " " + text).strip()
            i += 1
    return " ".join(summary), params


def describe_function(fn: Callable, name: str | None = None, description: str | None = None) -> ToolDescription:
    """An openai_harmony ``ToolDescription`` for ``fn``: name, first docstring paragraph, parameters."""
    doc_description, doc_params = parse_docstring(fn.__doc__)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        hints = getattr(fn, "__annotations__", {})
    properties: dict[str, dict] = {}
    required: list[str] = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        schema = type_schema(hints.get(p.name, inspect.Parameter.empty))
        if doc_params.get(p.name):
            schema["description"] = doc_params[p.name]
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        elif p.default is not None:
            default = p.default.value if isinstance(p.default, enum.Enum) else p.default
            default = list(default) if isinstance(default, (tuple, set, frozenset)) else default
            try:
                json.dumps(default)
                schema["default"] = default
            except TypeError:
                pass  # not a JSON value: leave it out of the schema
        properties[p.name] = schema
    parameters: dict = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return ToolDescription.new(
        name or fn.__name__, description if description is not None else doc_description, parameters
    )
