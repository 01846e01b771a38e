"""Conversation builder: renders exactly what openai-harmony renders for the same messages; function
tools get JSON schemas from type hints and docstrings."""

from __future__ import annotations

import enum
import json
from typing import Literal, Optional

import pytest
from openai_harmony import (
    Author,
    Conversation as HConversation,
    DeveloperContent,
    Message,
    ReasoningEffort,
    RenderConversationConfig,
    Role,
    SystemContent,
    ToolDescription,
    ToolNamespaceConfig,
)

from workbench.harmony import Conversation, describe_function, encoding
from workbench.harmony.functions import parse_docstring, type_schema

ENC = encoding()


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


def get_weather(location: str, unit: Unit = Unit.C, days: Optional[int] = None) -> str:
    """Gets the current weather for a location.

    Args:
        location: City and country,
            e.g. "Paris, France".
        unit: Temperature unit.
        days: How many days ahead.
    """
    return "sunny"


WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": 'City and country, e.g. "Paris, France".'},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit.", "default": "celsius"},
        "days": {"type": "integer", "description": "How many days ahead."},
    },
    "required": ["location"],
}


def test_function_schema_from_hints_and_docstring():
    d = describe_function(get_weather)
    assert d.name == "get_weather" and d.description == "Gets the current weather for a location."
    assert d.parameters == WEATHER_SCHEMA


def test_type_schemas():
    assert type_schema(list[int]) == {"type": "array", "items": {"type": "integer"}}
    assert type_schema(dict[str, float]) == {"type": "object", "additionalProperties": {"type": "number"}}
    assert type_schema(int | str) == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert type_schema(Literal[1, 2]) == {"type": "integer", "enum": [1, 2]}
    assert type_schema(tuple[int, str]) == {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}
    assert type_schema(bool) == {"type": "boolean"}
    with pytest.raises(TypeError, match="cannot describe"):
        type_schema(object)


def test_docstring_styles():
    numpy = """Add.

    Parameters
    ----------
    x : float
        The x.
    y : int
        The y,
        continued.

    Returns
    -------
    z : float
        not a parameter
    """
    assert parse_docstring(numpy) == ("Add.", {"x": "The x.", "y": "The y, continued."})
    assert parse_docstring(":param a: the a\n:returns: b") == ("", {"a": "the a"})
    assert parse_docstring("One line.") == ("One line.", {})
    assert parse_docstring(None) == ("", {})


def test_render_identical_to_openai_harmony():
    conv = (Conversation.new("Answer like a pirate.", reasoning_effort="high", date="2025-08-05",
                             browser=True, python=True, functions=[get_weather])
            .user("Weather in Paris?")
            .assistant("Need the weather.", channel="analysis")
            .assistant('{"location": "Paris"}', channel="commentary", recipient="functions.get_weather",
                       content_type="<|constrain|>json")
            .tool("functions.get_weather", '"sunny"')
            .assistant("Sunny.", channel="final")
            .user("Thanks!"))
    system = (SystemContent.new().with_reasoning_effort(ReasoningEffort.HIGH)
              .with_conversation_start_date("2025-08-05").with_browser_tool().with_python_tool())
    developer = DeveloperContent.new().with_instructions("Answer like a pirate.").with_function_tools(
        [ToolDescription.new("get_weather", "Gets the current weather for a location.", WEATHER_SCHEMA)])
    theirs = HConversation.from_messages([
        Message.from_role_and_content(Role.SYSTEM, system),
        Message.from_role_and_content(Role.DEVELOPER, developer),
        Message.from_role_and_content(Role.USER, "Weather in Paris?"),
        Message.from_role_and_content(Role.ASSISTANT, "Need the weather.").with_channel("analysis"),
        Message.from_role_and_content(Role.ASSISTANT, '{"location": "Paris"}').with_channel("commentary")
        .with_recipient("functions.get_weather").with_content_type("<|constrain|>json"),
        Message.from_author_and_content(Author.new(Role.TOOL, "functions.get_weather"), '"sunny"')
        .with_channel("commentary").with_recipient("assistant"),
        Message.from_role_and_content(Role.ASSISTANT, "Sunny.").with_channel("final"),
        Message.from_role_and_content(Role.USER, "Thanks!"),
    ])
    assert conv.render() == ENC.render_conversation_for_completion(theirs, Role.ASSISTANT)
    assert conv.render_all() == ENC.render_conversation(theirs, RenderConversationConfig(auto_drop_analysis=False))
    assert conv.render_all(auto_drop_analysis=True) == ENC.render_conversation(theirs)
    text = ENC.decode(conv.render())
    assert "Reasoning: high" in text and "namespace functions" in text and "// Temperature unit." in text
    assert "Need the weather." not in text  # analysis before a final answer is dropped, as Harmony specifies
    assert sorted(conv.stop_tokens()) == [200002, 200012]


def test_reading_back_declarations():
    conv = Conversation.new(browser=True, python=True, functions=[get_weather])
    assert conv.channels == ("analysis", "commentary", "final")
    assert conv.recipients == ("browser.search", "browser.open", "browser.find", "python", "functions.get_weather")
    assert conv.functions == {"get_weather": get_weather}
    assert conv.reasoning_effort == "medium"
    conv.set_reasoning_effort("LOW")
    assert conv.reasoning_effort == "low" and "Reasoning: low" in ENC.decode(conv.render())
    with pytest.raises(ValueError, match="low, medium or high"):
        conv.set_reasoning_effort("extreme")
    # the built-in descriptions are openai-harmony's own
    assert conv.namespaces["browser"] == ToolNamespaceConfig.browser()
    assert conv.namespaces["python"] == ToolNamespaceConfig.python()


def test_copy_and_json_round_trip():
    conv = Conversation.new("x", functions=[get_weather]).user("hi")
    other = conv.copy().user("more")
    assert len(conv) == 3 and len(other) == 4
    back = Conversation.from_dict(json.loads(json.dumps(conv.to_dict())))
    assert back.render() == conv.render()
    assert "Conversation(3 messages: system developer user)" == repr(conv)


def test_declare_adds_missing_tools_once():
    def lookup(term: str) -> str:
        """Look a term up."""
        return term

    conv = Conversation.new().user("hi")
    conv.declare([lookup, lookup])
    assert conv.recipients == ("functions.lookup",)
    assert "Calls to these tools must go to the commentary channel: 'functions'." in ENC.decode(conv.render())
