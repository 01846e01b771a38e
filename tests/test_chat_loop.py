"""The tool loop, driven by a ScriptedBackend replaying completions rendered by openai-harmony,
through the browser, python and a function tool."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from openai_harmony import Author, Conversation as HConversation, Message, Role

from workbench.backends import ScriptedBackend
from workbench.toolloop import chat
from workbench.harmony import Conversation, TokenEvent, encoding
from workbench.harmony import tokens as T
from workbench.tools import BrowserTool, LocalSearch, PythonTool, ToolStep, ToolTrace

ENC = encoding()


def completion(*messages: Message, end: int | None = None) -> list[int]:
    """Tokens a model would generate after <|start|>assistant: openai-harmony's rendering of the messages."""
    tokens = []
    for m in messages:
        tokens += ENC.render(m)
    assert tokens[:2] == ENC.encode("<|start|>assistant", allowed_special="all")
    tokens = tokens[2:]
    if end is not None:
        tokens[-1] = end
    return tokens


def analysis(text):
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel("analysis")


def call(recipient, args, channel="analysis", content_type=None):
    m = Message.from_role_and_content(Role.ASSISTANT, args).with_channel(channel).with_recipient(recipient)
    return m.with_content_type(content_type) if content_type else m


def final(text):
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel("final")


def get_weather(location: str) -> dict:
    """Gets the current weather.

    Args:
        location: A city.
    """
    return {"location": location, "sky": "sunny"}


@pytest.fixture
def docs(tmp_path):
    (tmp_path / "sinks.md").write_text("# Attention sinks\nEach head has one learned sink logit.\nIt is not scaled.\n")
    (tmp_path / "moe.html").write_text("<html><title>Experts</title><body><p>Top-4 routing.</p></body></html>")
    return tmp_path


def test_full_tool_loop_python_browser_function(docs):
    generations = [
        [analysis("Search the notes."), call("browser.search", '{"query": "sink logit"}')],
        [analysis("Open the first hit."), call("browser.open", '{"id": 0}')],
        [call("python", "print(2 ** 10)", content_type="code")],
        [call("functions.get_weather", '{"location": "Paris"}', channel="commentary", content_type="<|constrain|>json")],
        [analysis("Done."), final("Sinks are unscaled 【1†L2】; 2**10 = 1024; Paris is sunny.")],
    ]
    script = [completion(*g) for g in generations[:-1]] + [completion(*generations[-1], end=T.RETURN)]
    backend = ScriptedBackend(script)
    browser = BrowserTool(LocalSearch(docs))
    conv = Conversation.new("Use the tools.", date="2025-08-05").user("Tell me about sinks, 2^10 and Paris weather.")
    seen = []
    result = chat(backend, conv, tools=[browser, PythonTool(timeout=20), get_weather], on_event=seen.append,
                  max_turns=8)

    assert result.stop_reason == "return"
    assert result.final == "Sinks are unscaled 【1†L2】; 2**10 = 1024; Paris is sunny."
    assert [s.recipient for s in result.trace] == ["browser.search", "browser.open", "python", "functions.get_weather"]
    search, open_, py, fn = result.trace
    assert "【0†Attention sinks†local】" in search.result and search.error is None
    assert open_.result.startswith("[1] Attention sinks (file://") and "L2: It is not scaled." in open_.result
    assert py.result == "1024\n" and py.error is None and py.data["exit_code"] == 0
    assert json.loads(fn.result) == {"location": "Paris", "sky": "sunny"}
    assert browser.citations(result.final)[0]["lines"] == ["It is not scaled."]

    # what the model was shown at each step is exactly openai-harmony's rendering of the history,
    # with the analysis of earlier steps kept while tool calls continue
    history = list(result.conversation.messages[:len(conv)])  # conv plus the tools chat() declared
    system, developer = history[0].content[0], history[1].content[0]
    assert set(system.tools) == {"browser", "python"} and set(developer.tools) == {"functions"}
    tool_answers = [(s.recipient, s.result, s.channel) for s in result.trace]
    for g, prompt in enumerate(backend.prompts):
        expected = HConversation.from_messages(history)
        assert prompt == ENC.render_conversation_for_completion(expected, Role.ASSISTANT), f"prompt {g}"
        if g < len(tool_answers):
            recipient, text, channel = tool_answers[g]
            history += generations[g] + [Message.from_author_and_content(Author.new(Role.TOOL, recipient), text)
                                         .with_channel(channel).with_recipient("assistant")]
    assert "Search the notes." in ENC.decode(backend.prompts[3])
    assert "Open the first hit." in ENC.decode(backend.prompts[4])
    # the returned conversation holds everything, and its original is untouched
    assert len(result.conversation) == len(conv) + sum(map(len, generations)) + len(result.trace)
    assert len(conv.messages) == 3

    # trace: token spans point at the call messages; JSON and pandas views
    for step in result.trace:
        first, last = step.token_span
        events = result.transcripts[step.generation].events[first:last + 1]
        assert {e.recipient for e in events} == {step.recipient}
        assert events[-1].id == T.CALL
    again = ToolTrace.from_json(json.dumps(result.trace.to_dicts()))
    assert again == result.trace
    df = result.trace.to_dataframe()
    assert isinstance(df, pd.DataFrame) and list(df["recipient"]) == [s.recipient for s in result.trace]
    assert (df["duration"] >= 0).all()
    json.dumps(result.to_dict())

    # on_event: every generated token as a TokenEvent, and each ToolStep after its tokens
    tokens = [e for e in seen if isinstance(e, TokenEvent)]
    assert len(tokens) == sum(len(s) for s in script)
    assert [e for e in seen if isinstance(e, ToolStep)] == list(result.trace)


def test_tool_errors_are_messages_the_model_sees():
    def explode(x: int) -> int:
        """Always fails."""
        raise RuntimeError("boom")

    backend = ScriptedBackend([
        completion(call("functions.nope", "{}", channel="commentary")),
        completion(call("functions.explode", "{not json", channel="commentary")),
        completion(call("functions.explode", '{"x": "one"}', channel="commentary")),
        completion(call("functions.explode", '{"x": 1}', channel="commentary")),
        completion(call("teleport.now", "{}", channel="commentary")),
        completion(final("Sorry."), end=T.RETURN),
    ])
    result = chat(backend, Conversation.new().user("go"), tools=[explode])
    errors = [s.error for s in result.trace]
    assert errors[0].startswith("Unknown function 'functions.nope'")
    assert errors[1].startswith("Invalid JSON arguments for explode")
    assert errors[2] == "argument 'x': expected integer, got string"
    assert errors[3] == "RuntimeError: boom"
    assert errors[4].startswith("Unknown tool 'teleport.now'")
    assert result.final == "Sorry." and result.stop_reason == "return"
    # the model saw each error as the tool's answer
    last_prompt = ENC.decode(backend.prompts[-1])
    assert '<|start|>functions.explode to=assistant<|channel|>commentary<|message|>{"error": "RuntimeError: boom"}' in last_prompt


def test_turn_limit_and_stop_reasons():
    looping = completion(call("python", "print(1)", content_type="code"))
    result = chat(ScriptedBackend([looping] * 3), Conversation.new().user("x"), tools=[PythonTool()], max_turns=3)
    assert result.stop_reason == "max_turns" and len(result.trace) == 3 and result.final is None

    cut = ENC.encode("<|channel|>final<|message|>I was cut", allowed_special="all")
    result = chat(ScriptedBackend([cut]), Conversation.new().user("x"))
    assert result.stop_reason == "length" and result.final == "I was cut"
    assert [e.code for _, e in result.errors] == ["truncated"]

    result = chat(ScriptedBackend([completion(final("Hi."))]), Conversation.new().user("x"))
    assert result.stop_reason == "final" and result.final == "Hi."


def test_reasoning_effort_and_tool_declarations_reach_the_prompt():
    backend = ScriptedBackend([completion(final("ok"), end=T.RETURN)])
    chat(backend, Conversation.new().user("x"), tools=[PythonTool(), get_weather], reasoning_effort="high")
    prompt = ENC.decode(backend.prompts[0])
    assert "Reasoning: high" in prompt and "## python" in prompt and "type get_weather = " in prompt
