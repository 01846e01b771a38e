"""Overhead of one python tool call: the sandbox before issue 14 (a fresh launcher process per call,
namespaces where the kernel allowed, no bwrap) against today's (bubblewrap sandbox, stateful session).

    python benchmarks/python_tool.py [--repeat 15]

The "before" tool is read from git (commit c0cab3c, the last one with the old sandbox) and run in
the same process, on the same trivial cell, so the two are measured side by side. Prints the median
wall time per call in ms and the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "c0cab3c"


def old_run_python():
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:workbench/tools/sandbox.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_sandbox.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_sandbox", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_sandbox"] = mod
    spec.loader.exec_module(mod)
    return mod.run_python


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args()
    from workbench.tools import PythonTool, run_python

    code = "x = sum(range(100))\nprint(x)"
    old = old_run_python()
    assert old(code).output == "4950\n"
    before = median_ms(lambda: old(code), args.repeat)
    stateless = median_ms(lambda: run_python(code), args.repeat)

    def fresh_session_first_call():
        tool = PythonTool()
        assert tool.call("python", code).text == "4950\n"
        tool.close()

    first = median_ms(fresh_session_first_call, args.repeat)
    tool = PythonTool()
    tool.call("python", "1")
    warm = median_ms(lambda: tool.call("python", code), args.repeat * 4)
    tool.close()
    print(f"python {sys.version.split()[0]}, {args.repeat} repeats, median ms per call")
    print(f"before (old launcher, stateless)          {before:8.1f}")
    print(f"after: stateless run_python (new sandbox) {stateless:8.1f}   ratio {stateless / before:.2f}")
    print(f"after: first call of a new session        {first:8.1f}   ratio {first / before:.2f}")
    print(f"after: call in a running session          {warm:8.1f}   ratio {warm / before:.3f}")


if __name__ == "__main__":
    main()
