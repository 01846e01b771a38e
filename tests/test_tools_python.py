"""The python tool: a stateful sandboxed session whose description (what the model is told) matches
what happens, and whose limits stop hostile code with a clear result while this process carries on.
The attacks themselves are in tests/security/."""

from __future__ import annotations

import os
import re
import time

import pytest

from workbench.harmony import Conversation
from workbench.tools import Limits, PythonSession, PythonTool, describe, run_python
from workbench.toolloop import chat

FAST = dict(timeout=6, cpu_seconds=2, memory_mb=512, max_output=4096, max_processes=8)


def test_stateful_session_keeps_variables_and_files_across_calls():
    tool = PythonTool(**FAST)
    try:
        assert tool.call("python", "x = 6 * 7\nwith open('notes.txt', 'w') as f:\n    f.write('kept')").text == ""
        assert tool.call("python", "x").text == "42\n"  # the last expression is shown, as in Jupyter
        assert tool.call("python", "import os\nprint(os.getcwd(), open('/mnt/data/notes.txt').read())").text == "/mnt/data kept\n"
        assert tool.call("python", "def f(n):\n    return n + x\nf(1)").text == "43\n"
        tool.restart()
        after = tool.call("python", "x")
        assert "NameError" in after.text and after.error == "exit code 1: NameError"
        assert "FileNotFoundError" in tool.call("python", "open('notes.txt').read()").text
    finally:
        tool.close()


def test_stateless_mode_keeps_nothing():
    tool = PythonTool(stateful=False, **FAST)
    assert tool.call("python", "x = 1\nopen('f', 'w').write('a')\nprint(x)").text == "1\n"
    assert "NameError" in tool.call("python", "x").text
    assert "FileNotFoundError" in tool.call("python", "open('f')").text
    assert not tool.session.alive


def _numbers(text: str) -> dict:
    """The limits as the model reads them in the description."""
    return {"timeout": float(re.search(r"time out after ([\d.]+) seconds", text)[1]),
            "disk_mb": int(re.search(r"up to (\d+) MB\)", text)[1]),
            "memory_mb": int(re.search(r"up to (\d+) MB of memory", text)[1]),
            "drive": re.search(r"The drive at '([^']+)'", text)[1]}


@pytest.mark.parametrize("limits", [dict(timeout=2.5, disk_mb=8, memory_mb=384), dict(timeout=4, disk_mb=20, memory_mb=640)])
def test_description_states_the_configured_limits_and_they_hold(limits):
    tool = PythonTool(**{**FAST, **limits})
    told = _numbers(tool.config().description)
    assert told == {"timeout": limits["timeout"], "disk_mb": limits["disk_mb"], "memory_mb": limits["memory_mb"],
                    "drive": "/mnt/data"}
    assert "stateful" in tool.config().description and "Internet access for this session is disabled" in tool.config().description
    try:
        # the drive is the working directory and holds what it says, not more
        fill = tool.call("python", f"import os\nprint(os.getcwd())\ntry:\n    open('big', 'wb').write(b'x' * ({told['disk_mb']} + 2) * 2**20)\n"
                                   "except OSError as e:\n    print('full', e.errno)\nprint(os.path.getsize('big') <= "
                                   f"{told['disk_mb']} * 2**20)")
        assert fill.text.splitlines()[0] == told["drive"] and "full" in fill.text and fill.text.endswith("True\n")
        # memory: just under the limit works, past it is a MemoryError (the session lives on)
        assert tool.call("python", f"b = bytearray({told['memory_mb'] // 4} * 2**20); len(b) > 0").text == "True\n"
        mem = tool.call("python", f"b = bytearray({told['memory_mb']} * 2**20)")
        assert "MemoryError" in mem.text and mem.error == f"MemoryError: memory limit of {told['memory_mb']} MB reached"
        # time: a call stops at the stated timeout, interrupted, and the session keeps its state
        tool.call("python", "kept = 'yes'")
        start = time.monotonic()
        slow = tool.call("python", "import time\nprint('start', flush=True)\ntime.sleep(1000)")
        took = time.monotonic() - start
        assert slow.data["timed_out"] and told["timeout"] <= took < told["timeout"] + 3
        assert slow.text.startswith("start\n") and "KeyboardInterrupt" in slow.text
        assert slow.error == f"stopped: wall-time limit of {told['timeout']:g} s exceeded (interrupted)"
        assert tool.call("python", "kept").text == "'yes'\n"
    finally:
        tool.close()


def test_stateless_description_says_so():
    text = PythonTool(stateful=False, timeout=7).config().description
    assert "nothing persists between calls" in text and "time out after 7 seconds" in text and "stateful" not in text
    assert describe(Limits(timeout=7), stateful=False) == text


def test_the_tool_loop_declares_the_truthful_description():
    from workbench.backends import ScriptedBackend

    tool = PythonTool(**FAST)
    conv = Conversation.new(python=True).user("x?")  # the stock declaration is replaced by the tool's own
    backend = ScriptedBackend(['<|channel|>analysis to=python code<|message|>y = 2 ** 10<|call|>',
                               '<|channel|>analysis to=python code<|message|>y + 1<|call|>',
                               '<|channel|>final<|message|>1025<|return|>'])
    try:
        result = chat(backend, conv, tools=[tool])
    finally:
        tool.close()
    assert result.conversation.namespaces["python"].description == tool.config().description
    assert [s.result for s in result.trace] == ["", "1025\n"]


def test_errors_come_back_as_text():
    with PythonSession(Limits(**FAST)) as session:
        run = session.run("1/0")
    assert "ZeroDivisionError" in run.output and run.exit_code == 1 and run.error == "ZeroDivisionError"
    assert run.report().rstrip().endswith("[exit code 1: ZeroDivisionError]")
    assert 'File "<cell 1>", line 1' in run.output  # the traceback shows the cell, not the tool's frames


def test_infinite_loop_is_stopped_by_cpu_limit_and_the_session_goes_on():
    with PythonSession(Limits(**{**FAST, "timeout": 30})) as session:  # wall time is generous: CPU stops it
        session.run("a = 1")
        run = session.run("while True: pass")
        assert not run.ok and run.reason == "stopped: CPU time limit of 2 s exceeded" and not run.timed_out
        assert 2 <= run.cpu_seconds < 4 and session.run("a").output == "1\n"


def test_uninterruptible_code_restarts_the_session():
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(1000)"
    with PythonSession(Limits(**{**FAST, "timeout": 1.5, "grace": 0.5})) as session:
        session.run("a = 1")
        run = session.run(code)
        assert run.timed_out and run.restarted
        assert run.reason == "stopped: wall-time limit of 1.5 s exceeded; the session was restarted (variables and files lost)"
        assert "NameError" in session.run("a").output


def test_huge_output_is_truncated():
    run = run_python("while True: print('x' * 1000)", **FAST)
    assert run.output_truncated and len(run.output) == FAST["max_output"]
    assert run.reason.startswith("stopped: output limit of 4096 bytes exceeded (output truncated)")


def test_systemexit_and_os_exit():
    with PythonSession(Limits(**FAST)) as session:
        session.run("a = 3")
        assert session.run("import sys; sys.exit(2)").error == "SystemExit"
        assert session.run("a").output == "3\n"  # like Jupyter: SystemExit does not end the session
        run = session.run("import os; os._exit(0)")
        assert run.restarted and "restarted" in run.reason


def test_unisolated_mode_needs_the_explicit_flag_and_warns(tmp_path):
    with pytest.warns(RuntimeWarning, match="WITHOUT the sandbox"):
        tool = PythonTool(isolate=False, **FAST)
    try:
        assert "not restricted" in tool.config().description
        assert tool.call("python", "print(6 * 7)").text == "42\n"
        assert not tool.session.isolation.get("seccomp") and "user_namespace" not in tool.session.isolation
    finally:
        tool.close()
