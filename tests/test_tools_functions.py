"""Function tools: arguments validated against the schema the model was shown."""

from __future__ import annotations

import enum
import json
from typing import Literal, Optional

from workbench.tools import FunctionTools, validate


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def paint(color: Color, times: int = 1, finish: Literal["matte", "gloss"] = "matte", note: Optional[str] = None) -> dict:
    """Paint something."""
    return {"color": color.value, "times": times, "finish": finish, "note": note}


def test_valid_call_converts_enums_and_applies_defaults():
    tools = FunctionTools([paint])
    r = tools.call("functions.paint", '{"color": "red", "times": 2.0}')
    assert r.error is None and json.loads(r.text) == {"color": "red", "times": 2, "finish": "matte", "note": None}


def test_invalid_calls_give_clear_errors():
    tools = FunctionTools({"paint_it": paint})
    call = lambda args: tools.call("functions.paint_it", args).error
    assert call('{"times": 1}') == "missing required argument 'color'"
    assert call('{"color": "green"}') == "argument 'color': 'green' is not one of ['red', 'blue']"
    assert call('{"color": "red", "times": true}') == "argument 'times': expected integer, got boolean"
    assert call('{"color": "red", "extra": 1}') == "unknown argument 'extra' (expected color, times, finish, note)"
    assert call('[1, 2]') == "arguments: expected object, got array"
    assert call('{"color": ') .startswith("Invalid JSON arguments for paint_it")
    assert tools.call("functions.paint", "{}").error.startswith("Unknown function 'functions.paint' (available: paint_it)")
    assert tools.config().tools[0].name == "paint_it"


def test_validate_nested_schemas():
    schema = {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "number"}},
                                               "u": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}}
    assert validate({"xs": [1, 2.5], "u": "a"}, schema) is None
    assert validate({"xs": [1, "2"]}, schema) == "argument 'xs'[1]: expected number, got string"
    assert validate({"u": 1.5}, schema) == "argument 'u': does not match any allowed type"


def test_kwargs_functions_accept_extra_arguments():
    def anything(**kwargs) -> str:
        """Take anything."""
        return ",".join(sorted(kwargs))

    assert FunctionTools([anything]).call("functions.anything", '{"b": 1, "a": 2}').text == "a,b"
