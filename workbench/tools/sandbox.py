"""Run untrusted Python in a contained subprocess: ``run_python(code) -> PythonRun``.

Limits: wall time (the whole process tree is killed), CPU seconds (RLIMIT_CPU), address space
(RLIMIT_AS), processes (RLIMIT_NPROC, against fork bombs), file size (RLIMIT_FSIZE), output bytes.
The code runs with ``python -I`` in a fresh temporary folder (deleted afterwards) with a scrubbed
environment. Where the kernel allows, a small launcher also puts it in new Linux namespaces before
running it:

- user namespace: the code keeps no capabilities on the host, so RLIMIT_NPROC binds even for root;
- network namespace: no interfaces but a down loopback, so no network at all;
- pid namespace: when the code's first process dies, every process it started dies too;
- mount namespace: every mount is remounted read-only except the working folder.

Which of these took effect is reported in ``PythonRun.isolation``; where one is refused (no
unprivileged user namespaces, a seccomp filter) the code still runs under the rlimits.

>>> run = run_python("print(6 * 7)")
>>> run.output, run.exit_code
('42\\n', 0)
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

# The launcher runs as `python -I -c LAUNCHER CONFIG` inside the working folder. It is our code
# (trusted); it isolates itself, forks, and the child applies the limits and execs the model's code.
LAUNCHER = r'''
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
status_fd = cfg["status_fd"]
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
NEWUSER, NEWNS, NEWNET, NEWPID = 0x10000000, 0x00020000, 0x40000000, 0x20000000
iso = {"user_namespace": False, "network_namespace": False, "pid_namespace": False, "read_only_fs": False}
uid, gid, work = os.getuid(), os.getgid(), os.getcwd()

def write(path, text):
    with open(path, "w") as f:
        f.write(text)

if cfg["isolate"]:
    if libc.unshare(NEWUSER | NEWNS | NEWNET | NEWPID) == 0:
        try:
            write("/proc/self/setgroups", "deny")
        except OSError:
            pass
        write("/proc/self/uid_map", f"0 {uid} 1")
        write("/proc/self/gid_map", f"0 {gid} 1")
        iso.update(user_namespace=True, network_namespace=True, pid_namespace=True)
    elif libc.unshare(NEWNS | NEWNET | NEWPID) == 0:
        iso.update(network_namespace=True, pid_namespace=True)
    elif libc.unshare(NEWNET) == 0:
        iso.update(network_namespace=True)
    if iso["pid_namespace"]:  # we also got a mount namespace: make every mount read-only but `work`
        FLAGS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
        REMOUNT, BIND, REC, PRIVATE = 32, 4096, 16384, 1 << 18
        libc.mount(None, b"/", None, REC | PRIVATE, None)
        libc.mount(work.encode(), work.encode(), None, BIND | REC, None)
        points, ok = [], True
        for line in open("/proc/self/mountinfo"):
            f = line.split()
            point = f[4].encode().decode("unicode_escape").encode("latin-1")
            flags = sum(FLAGS.get(o, 0) for o in f[5].split(","))
            points.append((point, flags))
        for point, flags in points:
            if libc.mount(None, point, None, REMOUNT | BIND | flags | 1, None) != 0 and point == b"/":
                ok = False
        wflags = [fl for p, fl in points if p == work.encode()]
        rw = libc.mount(None, work.encode(), None, REMOUNT | BIND | (wflags[-1] if wflags else 0) & ~1, None) == 0
        iso["read_only_fs"] = ok and rw
        os.chdir(work)

nproc = cfg["max_processes"]
if not iso["user_namespace"]:  # the limit counts all of this user's processes on the host
    try:
        mine = sum(1 for p in os.listdir("/proc") if p.isdigit() and os.stat("/proc/" + p).st_uid == uid)
    except OSError:
        mine = 0
    nproc += mine
iso["process_limit"] = bool(iso["user_namespace"] or uid != 0)  # root outside a user namespace ignores it

pid = os.fork()
if pid == 0:  # pid 1 of the new pid namespace, if there is one: a tiny init that runs the code as its child
    libc.prctl(1, 9)  # PR_SET_PDEATHSIG: SIGKILL when the launcher dies (and with it the whole namespace)
    resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_seconds"], cfg["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (cfg["memory_bytes"], cfg["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["file_bytes"], cfg["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if iso["user_namespace"]:
        for cap in range(64):
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: no capabilities survive exec
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    child = os.fork()
    if child == 0:
        os.execve(sys.executable, [sys.executable, "-I", cfg["script"]], cfg["env"])
    _, st, usage = os.wait4(child, 0)
    end = {"exit": os.waitstatus_to_exitcode(st), "cpu": usage.ru_utime + usage.ru_stime}
    os.write(status_fd, (json.dumps(end) + "\n").encode())
    os._exit(0)
os.write(status_fd, (json.dumps(iso) + "\n").encode())
os.waitpid(pid, 0)
sys.exit(0)
'''


@dataclass
class PythonRun:
    """What happened to one run. ``exit_code`` is negative for a signal (-9: killed)."""

    output: str
    exit_code: int | None
    timed_out: bool = False
    output_truncated: bool = False
    cpu_seconds: float | None = None
    duration: float = 0.0
    isolation: dict = field(default_factory=dict)
    reason: str | None = None  # why it was stopped, in words

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.output_truncated

    def to_dict(self) -> dict:
        return asdict(self)

    def report(self) -> str:
        """The text the model sees: output, then a bracketed note if it did not end normally."""
        note = self.reason or (f"exit code {self.exit_code}" if self.exit_code else None)
        return self.output + (("" if not self.output or self.output.endswith("\n") else "\n") + f"[{note}]" if note else "")


def _env(work: str) -> dict:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8",
           "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # needed for correct BLAS on some CPUs here
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def run_python(
    code: str,
    *,
    timeout: float = 20.0,
    cpu_seconds: int = 10,
    memory_mb: int = 1024,
    max_output: int = 65536,
    max_processes: int = 16,
    max_file_mb: int = 16,
    isolate: bool = True,
) -> PythonRun:
    """Run ``code`` statelessly under the limits; never raises for anything the code does."""
    start = time.monotonic()
    work = tempfile.mkdtemp(prefix="workbench-python-")
    status_r, status_w = os.pipe()
    try:
        script = os.path.join(work, "main.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(code)
        cfg = {"status_fd": status_w, "script": script, "isolate": isolate, "cpu_seconds": int(cpu_seconds),
               "memory_bytes": int(memory_mb) << 20, "file_bytes": int(max_file_mb) << 20,
               "max_processes": int(max_processes), "env": _env(work)}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", LAUNCHER, json.dumps(cfg)], cwd=work, env=_env(work),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(status_w,), start_new_session=True,
        )
        os.close(status_w)
        status_w = -1
        out, status, timed_out, truncated = _collect(proc, status_r, start + timeout, max_output)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - the group was killed
            _kill(proc)
            proc.wait()
        iso = next((d for d in status if "user_namespace" in d), {})
        end = next((d for d in status if "exit" in d), {})
        code_ = end.get("exit")
        if code_ is None and proc.returncode:
            code_ = proc.returncode
        run = PythonRun(output=out.decode("utf-8", "replace"), exit_code=code_, timed_out=timed_out,
                        output_truncated=truncated, cpu_seconds=end.get("cpu"),
                        duration=time.monotonic() - start, isolation=iso)
        run.reason = _reason(run, timeout, cpu_seconds, memory_mb, max_output)
        return run
    finally:
        if status_w >= 0:
            os.close(status_w)
        os.close(status_r)
        shutil.rmtree(work, ignore_errors=True)


def _collect(proc, status_r, deadline, max_output):
    """Read output and launcher status until the output closes, the deadline passes, or too much output."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(status_r, selectors.EVENT_READ, "status")
    out, status_buf = bytearray(), b""
    timed_out = truncated = False
    open_streams = 2
    while open_streams:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for key, _ in sel.select(timeout=min(left, 0.5)):
            fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
            data = os.read(fd, 65536)
            if not data:
                sel.unregister(key.fileobj)
                open_streams -= 1
            elif key.data == "out":
                out += data
                if len(out) > max_output:
                    del out[max_output:]
                    truncated = True
                    open_streams = 0
                    break
            else:
                status_buf += data
        if proc.poll() is not None and key_closed(sel, proc):
            break
    if timed_out or truncated or proc.poll() is None:
        _kill(proc)
    try:  # whatever status the launcher managed to write
        while True:
            more = os.read(status_r, 65536) if _readable(status_r) else b""
            if not more:
                break
            status_buf += more
    except OSError:
        pass
    sel.close()
    status = [json.loads(line) for line in status_buf.decode().splitlines() if line.strip()]
    return bytes(out), status, timed_out, truncated


def key_closed(sel, proc) -> bool:
    """The launcher exited and its output pipe is drained (no other holder keeps it open)."""
    try:
        sel.get_key(proc.stdout)
        return False
    except KeyError:
        return True


def _readable(fd) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reason(run: PythonRun, timeout, cpu_seconds, memory_mb, max_output) -> str | None:
    if run.timed_out:
        return f"stopped: wall-time limit of {timeout:g} s exceeded"
    if run.output_truncated:
        return f"stopped: output limit of {max_output} bytes exceeded (output truncated)"
    if run.exit_code in (-signal.SIGKILL, -signal.SIGXCPU) and run.cpu_seconds is not None and run.cpu_seconds >= cpu_seconds - 0.5:
        return f"stopped: CPU time limit of {cpu_seconds} s exceeded"
    if run.exit_code == -signal.SIGXFSZ:
        return "stopped: file size limit exceeded"
    if "MemoryError" in run.output[-2000:]:
        return f"MemoryError: memory limit of {memory_mb} MB reached"
    if run.exit_code is not None and run.exit_code < 0:
        return f"killed by signal {-run.exit_code} ({signal.Signals(-run.exit_code).name})"
    return None
