"""A sampled conversation round-trips through ``workbench serve`` (the public CLI, a subprocess on port 0) with
OpenAI's own client: the nano model's reasoning comes back as reasoning_content, its function call as a
tool_call, the tool's answer goes back as a tool message, and the final answer uses it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

openai = pytest.importorskip("openai")

from workbench.harmony.functions import describe_function  # noqa: E402
from workbench.nano.functions import NANO_FUNCTIONS, get_weather  # noqa: E402


@pytest.fixture(scope="module")
def server(cache_root):
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "serve", "--port", "0", "--name", "nano"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    url, lines, deadline = None, [], time.time() + 300
    while url is None and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        url = m.group(1) if m else None
    if url is None:
        proc.kill()
        pytest.fail("workbench serve did not start: " + "".join(lines)[-2000:])
    yield openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=300)
    proc.terminate()
    proc.wait(timeout=30)


def test_reasoning_and_answer(server):
    r = server.chat.completions.create(model="nano", messages=[{"role": "user", "content": "What is 1,234 + 5,678?"}],
                                       reasoning_effort="high", temperature=0, max_tokens=400)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop"
    reasoning = (msg.model_extra or {}).get("reasoning_content") or ""
    assert "column by column" in reasoning and "ones 4+8+0=12 carry 1" in reasoning
    assert msg.content.strip().endswith("6,912")


def test_function_call_round_trip(server):
    # the functions nano was trained with, declared as a client declares them (it calls tools only in that setting)
    tools = [{"type": "function", "function": {"name": d.name, "description": d.description, "parameters": d.parameters}}
             for d in map(describe_function, NANO_FUNCTIONS)]
    messages = [{"role": "user", "content": "What's the weather like in Oslo?"}]
    first = server.chat.completions.create(model="nano", messages=messages, tools=tools, reasoning_effort="medium",
                                           temperature=0, max_tokens=200)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    result = get_weather(**json.loads(call.function.arguments))
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}]
    second = server.chat.completions.create(model="nano", messages=messages, tools=tools, reasoning_effort="medium",
                                            temperature=0, max_tokens=200)
    answer = second.choices[0].message.content
    assert second.choices[0].finish_reason == "stop"
    assert "Oslo" in answer and f"{result['temperature_c']} °C" in answer and result["conditions"] in answer
