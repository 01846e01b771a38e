"""The ``functions`` tool: plain Python callables the model calls with JSON arguments, validated first.

>>> def add(a: int, b: int = 1) -> int:
...     '''Add two integers.'''
...     return a + b
>>> tools = FunctionTools([add])
>>> tools.call("functions.add", '{"a": 2}').text
'3'
>>> tools.call("functions.add", '{"a": "two"}').error
"argument 'a': expected integer, got string"

The schema is the one the model was shown (``describe_function``): required arguments, types,
enums, no unknown arguments. A string result goes back as is; anything else as JSON.
"""

from __future__ import annotations

import enum
import inspect
import json
import typing
from typing import Any, Callable, Iterable

from openai_harmony import ToolNamespaceConfig

from ..harmony.functions import describe_function
from .base import ToolResult, error_result

_TYPES = {"string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}


def validate(value: Any, schema: dict, where: str = "arguments") -> str | None:
    """The first way ``value`` breaks ``schema`` (the JSON-schema subset describe_function emits), or None."""
    if "anyOf" in schema:
        if all(validate(value, s, where) for s in schema["anyOf"]):
            return f"{where}: does not match any allowed type"
        return None
    kind = schema.get("type")
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
    elif kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind in _TYPES:
        ok = isinstance(value, _TYPES[kind])
    else:
        ok = True
    if not ok:
        return f"{where}: expected {kind}, got {_json_type(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: {value!r} is not one of {schema['enum']}"
    if kind == "array":
        items = schema.get("prefixItems")
        if items is not None:
            if len(value) != len(items):
                return f"{where}: expected {len(items)} items, got {len(value)}"
            for i, (v, s) in enumerate(zip(value, items)):
                if err := validate(v, s, f"{where}[{i}]"):
                    return err
        elif "items" in schema:
            for i, v in enumerate(value):
                if err := validate(v, schema["items"], f"{where}[{i}]"):
                    return err
    if kind == "object":
        props = schema.get("properties")
        for name in schema.get("required", []):
            if name not in value:
                return f"missing required argument {name!r}"
        for name, v in value.items():
            if props is not None and name in props:
                if err := validate(v, props[name], f"argument {name!r}"):
                    return err
            elif props is not None and not schema.get("_open"):
                return f"unknown argument {name!r} (expected {', '.join(props) or 'none'})"
            elif "additionalProperties" in schema:
                if err := validate(v, schema["additionalProperties"], f"{where}[{name!r}]"):
                    return err
    return None


def _json_type(value: Any) -> str:
    for name, t in (("null", type(None)), ("boolean", bool), ("integer", int), ("number", float), ("string", str),
                    ("array", list), ("object", dict)):
        if isinstance(value, t):
            return name
    return type(value).__name__


class FunctionTools:
    """The ``functions`` namespace: callables by name (``name`` defaults to ``fn.__name__``)."""

    namespace = "functions"
    builtin = False

    def __init__(self, functions: Iterable[Callable] | dict[str, Callable] = ()):
        items = functions.items() if isinstance(functions, dict) else ((f.__name__, f) for f in functions)
        self.callables: dict[str, Callable] = {}
        self.descriptions = {}
        for name, fn in items:
            self.add(fn, name)

    def add(self, fn: Callable, name: str | None = None) -> None:
        desc = describe_function(fn, name=name)
        self.callables[desc.name] = fn
        self.descriptions[desc.name] = desc

    def config(self) -> ToolNamespaceConfig:
        return ToolNamespaceConfig(name="functions", description=None, tools=list(self.descriptions.values()))

    def call(self, recipient: str, arguments: str) -> ToolResult:
        name = recipient.partition(".")[2]
        fn = self.callables.get(name)
        if fn is None:
            known = ", ".join(self.callables) or "none"
            return error_result(f"Unknown function {recipient!r} (available: {known})")
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            return error_result(f"Invalid JSON arguments for {name}: {e.msg} at character {e.pos}")
        schema = dict(self.descriptions[name].parameters or {"type": "object"})
        if any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()):
            schema["_open"] = True
        if err := validate(args, schema):
            return error_result(err)
        try:
            result = fn(**_convert(fn, args))
        except Exception as e:  # the model sees what went wrong; the loop goes on
            return error_result(f"{type(e).__name__}: {e}", exception=type(e).__name__)
        text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
        return ToolResult(text=text)

    def __repr__(self) -> str:
        return f"FunctionTools({', '.join(self.callables)})"


def _convert(fn: Callable, args: dict) -> dict:
    """Turn enum values into Enum members and integral floats into ints, following the hints."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return args
    out = dict(args)
    for name, value in args.items():
        hint = hints.get(name)
        for option in (hint, *typing.get_args(hint)):
            if isinstance(option, type) and issubclass(option, enum.Enum):
                try:
                    out[name] = option(value)
                    break
                except ValueError:
                    pass
            elif option is int and isinstance(value, float):
                out[name] = int(value)
                break
    return out
