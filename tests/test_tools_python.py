"""The python tool against hostile code: each attack is stopped or contained with a clear result,
and this (host) process carries on."""

from __future__ import annotations

import os
import uuid

import pytest

from workbench.tools import PythonTool, run_python

FAST = dict(timeout=6, cpu_seconds=2, memory_mb=512, max_output=4096, max_processes=8)


def test_plain_code_runs_and_reports_isolation():
    run = run_python("import sys, os\nprint('hi', sys.flags.isolated)\nprint(os.environ.get('AWS_SECRET'))", **FAST)
    assert run.ok and run.output == "hi 1\nNone\n"
    assert set(run.isolation) >= {"user_namespace", "network_namespace", "pid_namespace", "read_only_fs", "process_limit"}
    if os.geteuid() == 0:  # CI runs as root: every layer must be active there
        assert all(run.isolation.values()), run.isolation


def test_errors_come_back_as_text():
    result = PythonTool(**FAST).call("python", "1/0")
    assert "ZeroDivisionError" in result.text and result.text.rstrip().endswith("[exit code 1]")
    assert result.error == "exit code 1"


def test_infinite_loop_is_stopped_by_cpu_limit():
    run = run_python("while True: pass", **FAST)
    assert not run.ok and run.reason == "stopped: CPU time limit of 2 s exceeded"
    assert run.duration < FAST["timeout"]


def test_sleeping_forever_is_stopped_by_wall_time():
    run = run_python("import time\nprint('start', flush=True)\ntime.sleep(1000)", **{**FAST, "timeout": 2})
    assert run.timed_out and run.reason == "stopped: wall-time limit of 2 s exceeded"
    assert run.output == "start\n" and run.duration < 6


def test_memory_bomb_hits_the_memory_limit():
    run = run_python("x = []\nwhile True:\n    x.append(bytearray(50 * 2**20))", **FAST)
    assert not run.ok and "MemoryError" in run.output
    assert run.reason == "MemoryError: memory limit of 512 MB reached"


def test_fork_bomb_is_contained():
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    run = run_python(code, **{**FAST, "timeout": 4})
    assert not run.ok and run.reason.startswith("stopped:")
    # nothing it started is still running
    leftovers = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and "workbench-python-" in os.readlink(f"/proc/{pid}/cwd"):
                leftovers.append(pid)
        except OSError:
            pass
    assert leftovers == []


def test_huge_output_is_truncated():
    run = run_python("while True: print('x' * 1000)", **FAST)
    assert run.output_truncated and len(run.output) == FAST["max_output"]
    assert run.reason == "stopped: output limit of 4096 bytes exceeded (output truncated)"
    assert run.report().endswith("[stopped: output limit of 4096 bytes exceeded (output truncated)]")


def test_writing_outside_the_working_folder_is_contained(tmp_path):
    target = tmp_path / f"escape-{uuid.uuid4().hex}"
    home = os.path.expanduser("~") + f"/escape-{uuid.uuid4().hex}"
    code = (
        "import os\n"
        "open('inside.txt', 'w').write('ok'); print('inside ok', os.path.exists('inside.txt'))\n"
        f"for p in [{str(target)!r}, {home!r}]:\n"
        "    try:\n"
        "        open(p, 'w').write('x'); print('WROTE', p)\n"
        "    except OSError as e:\n"
        "        print('refused', type(e).__name__, e.errno)\n"
    )
    run = run_python(code, **FAST)
    assert "inside ok True" in run.output
    if run.isolation.get("read_only_fs"):
        assert "WROTE" not in run.output and run.output.count("refused") == 2
        assert not target.exists() and not os.path.exists(home)
    else:  # pragma: no cover - only where the kernel refuses mount namespaces
        pytest.fail(f"no filesystem isolation available here: {run.isolation}")


def test_network_is_unreachable():
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 9), timeout=2); print('CONNECTED')\n"
        "except OSError as e:\n"
        "    print('refused', e)\n"
        "print(sorted(name for _, name in socket.if_nameindex()))\n"
    )
    run = run_python(code, **FAST)
    assert "CONNECTED" not in run.output
    if run.isolation.get("network_namespace"):
        assert run.output.splitlines()[-1] == "['lo']" and "Network is unreachable" in run.output


def test_the_host_survives_and_temp_folders_are_removed():
    before = {p for p in os.listdir("/tmp") if p.startswith("workbench-python-")}
    for code in ("print(1)", "import os; os.kill(os.getpid(), 9)"):
        run_python(code, **FAST)
    after = {p for p in os.listdir("/tmp") if p.startswith("workbench-python-")}
    assert after <= before
    assert run_python("import os; os.kill(os.getpid(), 9)", **FAST).reason == "killed by signal 9 (SIGKILL)"
