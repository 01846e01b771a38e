"""Run untrusted Python isolated from the host: ``PythonSession`` (stateful) and ``run_python`` (one-shot).

>>> with PythonSession() as session:
...     session.run("x = 6 * 7").output, session.run("x").output
('', '42\\n')

The code runs in a sandbox made by bubblewrap (Debian's ``bwrap``, the sandbox Flatpak uses: a
small, audited setuid-free C program; we use it rather than hand-rolled namespace code). It fails
closed: when the sandbox cannot be made, or any layer it reports did not take effect, ``run``
raises ``SandboxUnavailable`` naming the reason, and nothing runs. ``isolate=False`` is the only way
to run without it (the code then runs as you, with your files and network; ``PythonTool`` warns).

Layers, and what each defends against:

- **user namespace**, mapped to one uid that is not host root (root drops to ``SANDBOX_UID``
  with no supplementary groups before starting bwrap, see ``_as_root_helper``): the code has no capabilities on the host,
  cannot use root's or your groups' file rights (``docker``, ``disk``), and the process limit binds
  (the kernel exempts host uid 0 from RLIMIT_NPROC even inside a user namespace).
- **mount namespace with its own root**: a tmpfs root holding only the Python runtime, read-only
  (the interpreter, its prefixes, the shared libraries under /usr/lib and /lib); a fresh ``/proc``;
  a ``/dev`` with only null, zero, random, urandom; a size-limited tmpfs at ``/mnt`` holding the
  working directory ``/mnt/data`` and ``/tmp``. Host files (``~/.ssh``, ``/etc/shadow``, other
  processes' ``/proc/<pid>/environ``), host unix sockets (ssh-agent, D-Bus, docker.sock), block
  devices and your terminal are simply not there; disk fill stops at the tmpfs size.
- **pid namespace** (with bwrap's init as pid 1): host processes cannot be seen, signalled or
  ptraced; when pid 1 dies every process of the sandbox dies with it.
- **network namespace**: only a down loopback, so no network and no abstract unix sockets of the host.
- **IPC and UTS namespaces**: SysV shared memory and message queues die with the sandbox; own hostname.
- **fresh session keyring** (joined by the supervisor) and no ``keyctl`` for the code (seccomp):
  the host's keys are out of reach.
- **no_new_privs, no capabilities** (bounding set empty): setuid binaries grant nothing.
- **seccomp** (a libseccomp filter, second layer): no ptrace, process_vm_*, keyrings, mount,
  namespaces, BPF, perf, userfaultfd, io_uring, kernel modules, handle-based opens, TIOCSTI.
  It shrinks the kernel attack surface an escape would need.
- **Landlock** (where the kernel has it, second layer): even if a mount were wrong, the code can
  only read the runtime and write under /mnt; with ABI 4+ no TCP; with ABI 6+ no abstract unix
  sockets and no signals to processes outside its domain (the supervisor).
- **limits** that bind for root too: wall time per call (interrupt, then kill of everything), CPU
  seconds per call (an exception in the cell) and per process (a hard kill), address space per
  process, processes and threads, file size, disk (tmpfs size), output bytes per call.
- **lifetime**: bwrap runs with ``--die-with-parent`` (started from one long-lived thread, since the
  parent-death signal follows the thread that forked), the supervisor kills the sandbox when the
  host's pipe closes, and an interrupted ``run`` (Ctrl-C, a Jupyter interrupt) ends the sandbox.
- **control channel**: the pipes to the host are held by the trusted supervisor only (the worker
  that runs the code closes them, and the supervisor is non-dumpable); every frame is size-capped
  and a bad one ends the session instead of being believed.

The isolation report (``PythonSession.isolation``) is measured inside the sandbox before any code
runs: namespace ids against the host's, the uid map, capability sets, mount table, devices,
interfaces, groups, keyring, seccomp mode, Landlock ABI and the limits read back.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields

from . import sandbox_inside as inside

SANDBOX_UID = 65534  # the host uid root drops to before starting bwrap (nobody)
INNER_UID = 1000  # the uid the code sees
DATA_DIR = "/mnt/data"  # the working directory the model is told about
REQUIRED = ("user_namespace", "mount_namespace", "pid_namespace", "network_namespace", "ipc_namespace",
            "uts_namespace", "not_host_root", "no_capabilities", "no_new_privs", "own_root_fs", "read_only_fs",
            "minimal_dev", "no_supplementary_groups", "fresh_keyring", "parent_death_signal", "disk_limit",
            "worker_no_capabilities", "worker_no_new_privs", "seccomp")
MAX_CODE = 1 << 20  # bytes of code one call may send
START_TIMEOUT = 20.0


class SandboxUnavailable(RuntimeError):
    """The sandbox could not be made, or a layer it needs did not take effect; nothing ran."""


@dataclass(frozen=True)
class Limits:
    """What one call (and one session) may use. Every field binds for root too."""

    timeout: float = 30.0  # wall seconds per call; then an interrupt, then the session restarts
    cpu_seconds: int = 30  # CPU seconds per call (raises in the cell)
    memory_mb: int = 1024  # address space per process
    disk_mb: int = 256  # size of /mnt (the working directory /mnt/data and /tmp); also the largest file
    max_output: int = 65536  # bytes of output per call
    max_processes: int = 16  # processes and threads of the sandbox
    session_cpu_seconds: int = 3600  # CPU seconds per process over a whole session (hard kill)
    grace: float = 2.0  # seconds an interrupted call has to stop before the session restarts


@dataclass
class PythonRun:
    """What happened to one call. ``exit_code``: 0 ok, 1 the cell raised, negative a signal (-9 killed)."""

    output: str
    exit_code: int | None
    timed_out: bool = False
    output_truncated: bool = False
    cpu_seconds: float | None = None
    duration: float = 0.0
    isolation: dict = field(default_factory=dict)
    reason: str | None = None  # why it was stopped, in words
    error: str | None = None  # the exception's type name, when the cell raised
    restarted: bool = False  # the session ended with this call: variables and files are gone

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.output_truncated

    def to_dict(self) -> dict:
        return asdict(self)

    def report(self) -> str:
        """The text the model sees: output, then a bracketed note if it did not end normally."""
        note = self.reason
        if not self.output and self.exit_code == 0 and note is None:
            return ""
        sep = "" if not self.output or self.output.endswith("\n") else "\n"
        return self.output + (sep + f"[{note}]" if note else "")


# -- the runtime the sandbox holds -------------------------------------------------------------------


def runtime_paths() -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(directories and files to bind read-only, extra /etc files, symlinks (target, path)) for this Python."""
    binds: set[str] = set()
    links: list[tuple[str, str]] = []
    for top in ("/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(top):
            links.append((os.readlink(top), top))
        elif os.path.isdir(top):
            binds.add(top)
    for lib in ("/usr/lib", "/usr/lib64", "/usr/lib32"):
        if os.path.isdir(lib) and not os.path.islink(lib):
            binds.add(lib)
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    for p in prefixes - {"/usr", "/"}:
        binds.add(p)
    for entry in sys.path:  # site dirs outside the prefixes (e.g. /usr/local/lib/python3.x/dist-packages)
        real = os.path.realpath(entry) if entry else ""
        if real.startswith(("/usr/local/lib/",)) and os.path.isdir(real):
            binds.add(real)
    exe = sys.executable
    chain = [exe]
    while os.path.islink(chain[-1]) and len(chain) < 16:
        chain.append(os.path.join(os.path.dirname(chain[-1]), os.readlink(chain[-1])))
    for p in chain:
        p = os.path.normpath(p)
        if not any(p == b or p.startswith(b + "/") for b in binds):
            binds.add(p)
    files = [f for f in ("/etc/ld.so.cache", "/etc/localtime") if os.path.exists(f)]
    # keep only top-most directories (a bind under another bind is redundant)
    ordered = sorted(binds, key=len)
    kept = [p for i, p in enumerate(ordered) if not any(p.startswith(q + "/") for q in ordered[:i])]
    return sorted(kept), files, links


def _env(home: str) -> dict:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home if home != DATA_DIR else "/tmp",
           "LANG": "C.UTF-8", "USER": "sandbox", "LOGNAME": "sandbox", "PYTHONIOENCODING": "utf-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # needed for correct BLAS on some CPUs here
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def bwrap_command(bwrap: str, limits: Limits, runtime: list[str], links) -> list[str]:
    args = [bwrap, "--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", str(INNER_UID), "--gid", str(INNER_UID), "--hostname", "sandbox", "--clearenv"]
    # A runtime under /tmp or /mnt (a venv in a CI checkout under /tmp, say) is bound after the sandbox's
    # own /mnt tmpfs exists, under /tmp's real place /mnt/tmp: /tmp itself must stay the symlink.
    late = [p for p in runtime if _under(p, "/tmp") or _under(p, "/mnt")]
    for path in runtime:
        if path not in late:
            args += ["--ro-bind", path, path]
    for target, path in links:
        args += ["--symlink", target, path]
    args += ["--proc", "/proc", "--size", str(1 << 16), "--tmpfs", "/dev"]
    for dev in ("null", "zero", "random", "urandom"):
        args += ["--dev-bind", f"/dev/{dev}", f"/dev/{dev}"]
    args += ["--symlink", "/mnt/tmp", "/dev/shm", "--remount-ro", "/dev",
             "--size", str(limits.disk_mb << 20), "--perms", "0755", "--tmpfs", "/mnt",
             "--dir", DATA_DIR, "--dir", "/mnt/tmp", "--symlink", "/mnt/tmp", "/tmp"]
    for path in late:
        if path in ("/tmp", "/mnt") or _under(path, DATA_DIR):
            raise SandboxUnavailable(f"the Python runtime at {path} would hide the sandbox's own /tmp or "
                                     f"{DATA_DIR}; install Python or the venv elsewhere")
        args += ["--ro-bind", path, inside.mount_point(path)]
    args += ["--remount-ro", "/", "--chdir", DATA_DIR]
    return args


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


_ROOT_HELPER = r"""
import ctypes, json, os, sys
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
def check(ok, what):
    if not ok:
        sys.stderr.write("bwrap: %s: %s\n" % (what, os.strerror(ctypes.get_errno())))
        sys.exit(1)
check(libc.unshare(0x00020000) == 0, "private mount namespace")
check(libc.mount(None, b"/", None, 16384 | (1 << 18), None) == 0, "make mounts private")
# open every source first: the staging tmpfs may hide some of them (a venv under /tmp, say)
fds = [os.open(src, os.O_PATH | os.O_CLOEXEC) for src in cfg["binds"]]
dirs = [os.path.isdir("/proc/self/fd/%d" % fd) for fd in fds]
check(libc.mount(b"tmpfs", cfg["stage"].encode(), b"tmpfs", 2 | 4 | 8, b"mode=0755,size=64k") == 0, "staging tmpfs")
for i, src in enumerate(cfg["binds"]):
    dst = os.path.join(cfg["stage"], str(i))
    if dirs[i]:
        os.mkdir(dst)
    else:
        open(dst, "w").close()
    check(libc.mount(b"/proc/self/fd/%d" % fds[i], dst.encode(), None, 4096 | 16384, None) == 0, "bind " + src)
    os.close(fds[i])
os.setgroups([])
os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
os.execv(cfg["argv"][0], cfg["argv"])
"""
STAGE = "/tmp"  # where root's helper shows the runtime to the sandbox uid (a tmpfs in its own mount namespace)


def _as_root_helper(argv: list[str], runtime: list[str]) -> list[str]:
    """For root: run bwrap through a helper that drops to ``SANDBOX_UID`` with no groups first (so the
    code is never host uid 0, for which the kernel would not enforce the process limit). Root's
    Python may live under /root (mode 0700), which that uid cannot reach: the helper first binds
    each runtime path onto a staging tmpfs in a private mount namespace (invisible to the host), and
    bwrap binds them from there."""
    staged = {path: os.path.join(STAGE, str(i)) for i, path in enumerate(runtime)}
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--ro-bind" and argv[i + 1] in staged:
            out += ["--ro-bind", staged[argv[i + 1]], argv[i + 2]]
            i += 3
        else:
            out.append(argv[i])
            i += 1
    cfg = {"stage": STAGE, "binds": runtime, "uid": SANDBOX_UID, "argv": out}
    return [sys.executable, "-I", "-S", "-c", _ROOT_HELPER, json.dumps(cfg)]


# Every sandbox is started from this one long-lived thread: the parent-death signal that ends a
# sandbox with its host fires when the *thread* that forked it exits, not the process.
# It is started here, at import: a Ctrl-C landing while the executor starts its worker on a first
# submit would leave a worker it never registered, and the interpreter would then hang at exit
# waiting for it.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbench-sandbox-spawner")
_SPAWNER.submit(int).result()


def _spawn(argv: list[str], fds: tuple[int, ...], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(argv, **kwargs)`` on the spawner thread. Interrupted (Ctrl-C) while it starts, the
    process is killed and ``fds`` closed once the spawner is done with them, and the interrupt propagates."""
    future = _SPAWNER.submit(subprocess.Popen, argv, **kwargs)
    try:
        return future.result()
    except BaseException:
        def reap(done: concurrent.futures.Future) -> None:
            if not done.cancelled() and done.exception() is None:
                proc = done.result()
                _killpg(proc)
                proc.wait()
                if proc.stderr is not None:
                    proc.stderr.close()
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

        future.add_done_callback(reap)
        raise


def _host_facts() -> dict:
    ns = {}
    for name in ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup"):
        try:
            ns[name] = os.readlink(f"/proc/self/ns/{name}")
        except OSError:
            pass
    root = os.stat("/")
    return {"ns": ns, "root": [root.st_dev, root.st_ino], "keyring": inside.keyring_id()}


def _rmtree(path: str) -> None:
    """Remove a folder the code may have made unreadable (``chmod 000``) without following links."""
    def fix(func, p, exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


class PythonSession:
    """One sandboxed Python session: ``run(code)`` calls share variables and files until ``restart``.

    Started on the first ``run`` (or ``start()``); ``close()`` (or the end of a ``with`` block, or
    garbage collection) ends it and everything it started. Thread-safe: calls are serialized.
    """

    def __init__(self, limits: Limits | None = None, *, isolate: bool = True):
        self.limits = limits or Limits()
        self.isolate = isolate
        self.isolation: dict = {}
        self.workdir = DATA_DIR if isolate else None
        self._proc: subprocess.Popen | None = None
        self._to, self._from = -1, -1
        self._tmp: str | None = None
        self._lock = threading.RLock()
        self.calls = 0

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "PythonSession":
        with self._lock:
            if self.alive:
                return self
            self.close()
            try:
                self._start()
            except BaseException:
                self.close()
                raise
            return self

    def _start(self) -> None:
        lim = self.limits
        sup_in_r, sup_in_w = os.pipe()
        sup_out_r, sup_out_w = os.pipe()
        runtime, files, links = runtime_paths()
        if self.isolate:
            bwrap = shutil.which("bwrap")
            if bwrap is None:
                raise SandboxUnavailable("bubblewrap is not installed (Debian: apt-get install bubblewrap); "
                                         "the python tool refuses to run code without its sandbox")
            home, cwd = "/tmp", "/"
            prefix = bwrap_command(bwrap, lim, runtime + files, links) + ["--"]
        else:
            self._tmp = tempfile.mkdtemp(prefix="workbench-python-")
            home = cwd = self.workdir = self._tmp
            prefix = []
        cfg = {"isolate": self.isolate, "host_in": sup_in_r, "host_out": sup_out_w, 
               "runtime": runtime, "files": files, "sys_path": _import_path(runtime), "env": _env(home), "overflow_gid": _overflow_gid(),
               "disk_bytes": lim.disk_mb << 20, "host": _host_facts() if self.isolate else {},
               "limits": {"memory_bytes": lim.memory_mb << 20, "disk_bytes": lim.disk_mb << 20,
                          "max_processes": lim.max_processes, "session_cpu_seconds": lim.session_cpu_seconds}}
        argv = prefix + [sys.executable, "-I", "-S", "-c", _SOURCE, "supervisor", json.dumps(cfg)]
        if self.isolate and os.geteuid() == 0:
            argv = _as_root_helper(argv, runtime + files)
        kwargs = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                      pass_fds=(sup_in_r, sup_out_w), start_new_session=True, cwd=cwd, env=_env(home),
                      close_fds=True)
        try:
            self._proc = _spawn(argv, (sup_in_r, sup_in_w, sup_out_r, sup_out_w), **kwargs)
        except OSError as e:
            raise SandboxUnavailable(f"could not start the sandbox: {e}") from None
        os.close(sup_in_r)
        os.close(sup_out_w)
        self._to, self._from = sup_in_w, sup_out_r
        hello = self._recv(time.monotonic() + START_TIMEOUT)
        if hello is None or not hello.get("ready"):
            detail = (hello or {}).get("error") or self._stderr() or "it exited without a word"
            out = (hello or {}).get("output")
            raise SandboxUnavailable(f"the sandbox could not start: {detail}" + (f"\n{out}" if out else ""))
        iso = hello.get("isolation") if isinstance(hello.get("isolation"), dict) else {}
        self.isolation = iso
        if self.isolate:
            missing = [k for k in REQUIRED if iso.get(k) is not True]
            if inside.landlock_abi() >= 1 and iso.get("landlock") is not True:
                missing.append("landlock")
            if missing:
                raise SandboxUnavailable("isolation did not take effect: " + ", ".join(missing)
                                         + "; the python tool refuses to run code without it")

    def _stderr(self) -> str:
        """What bwrap said on failure (capped; never blocks)."""
        if self._proc is None or self._proc.stderr is None:
            return ""
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return ""
        data = self._proc.stderr.read(8192) or b""
        return data.decode("utf-8", "replace").strip()

    def restart(self) -> "PythonSession":
        """End the session (variables and files are lost) and start a fresh one."""
        with self._lock:
            self.close()
            return self.start()

    def close(self) -> None:
        """End the sandbox and every process in it; idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
            for fd in (self._to, self._from):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._to = self._from = -1
            if proc is not None:
                if proc.poll() is None:
                    try:
                        proc.wait(timeout=0.5)  # the supervisor ends the sandbox when its pipe closes
                    except subprocess.TimeoutExpired:
                        _killpg(proc)
                        proc.wait()
                if proc.stderr is not None:
                    proc.stderr.close()
            if not self.isolate and proc is not None:
                _killpg(proc)
            if self._tmp is not None:
                _rmtree(self._tmp)
                self._tmp = None

    def __enter__(self) -> "PythonSession":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"PythonSession({state}, isolate={self.isolate}, calls={self.calls}, {self.limits})"

    # -- calls ------------------------------------------------------------------------------------

    def run(self, code: str) -> PythonRun:
        """Run one cell; never raises for anything the code does (``SandboxUnavailable`` if it cannot run)."""
        lim = self.limits
        start = time.monotonic()
        if len(code.encode("utf-8", "replace")) > MAX_CODE:
            return PythonRun(output="", exit_code=None, reason=f"refused: the code exceeds {MAX_CODE} bytes")
        with self._lock:
            self.start()
            self.calls += 1
            try:
                inside.send(self._to, {"op": "run", "code": code, "timeout": lim.timeout, "grace": lim.grace,
                                       "max_output": lim.max_output, "cpu_seconds": lim.cpu_seconds})
                reply = self._recv(start + lim.timeout + lim.grace + 10)
            except BrokenPipeError:
                reply = None
            except BaseException:  # an interrupt (Ctrl-C, Jupyter): nothing may outlive the call
                self.close()
                raise
            if reply is None:
                timed_out = time.monotonic() - start >= lim.timeout
                self.close()
                run = PythonRun(output="", exit_code=None, timed_out=timed_out, restarted=True,
                                duration=time.monotonic() - start, isolation=self.isolation)
                run.reason = ("stopped: wall-time limit of %g s exceeded" % lim.timeout if timed_out else
                              "the sandbox ended unexpectedly") + "; the session was restarted (variables and files lost)"
                return run
            run = _run_from(reply, lim, self.isolation, time.monotonic() - start)
            if run.restarted:
                self.close()
            return run

    def _recv(self, deadline: float) -> dict | None:
        """One frame from the supervisor before ``deadline``, size-capped; None on EOF, garbage or timeout."""
        buf = b""
        need = 4
        length = None
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                return None
            chunk = os.read(self._from, need - len(buf))
            if not chunk:
                return None
            buf += chunk
            if length is None and len(buf) == 4:
                (length,) = struct.unpack(">I", buf)
                if length > self.limits.max_output * 4 + (1 << 20):
                    return None
                need = 4 + length
        try:
            obj = json.loads(buf[4:])
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None


def _run_from(reply: dict, lim: Limits, isolation: dict, duration: float) -> PythonRun:
    def typed(key, kind, default=None):
        value = reply.get(key, default)
        return value if isinstance(value, kind) and not isinstance(value, bool) or kind is bool and isinstance(value, bool) else default

    run = PythonRun(output=typed("output", str, ""), exit_code=typed("exit_code", int),
                    timed_out=typed("timed_out", bool, False), output_truncated=typed("truncated", bool, False),
                    cpu_seconds=typed("cpu_seconds", (int, float)), duration=duration, isolation=isolation,
                    error=typed("error", str), restarted=typed("restart", bool, False))
    run.output = run.output[:lim.max_output]
    restarted = "; the session was restarted (variables and files lost)" if run.restarted else ""
    if run.timed_out:
        run.reason = f"stopped: wall-time limit of {lim.timeout:g} s exceeded" + (restarted or " (interrupted)")
    elif run.output_truncated:
        run.reason = f"stopped: output limit of {lim.max_output} bytes exceeded (output truncated)" + restarted
    elif run.error == "CPUTimeExceeded":
        run.reason = f"stopped: CPU time limit of {lim.cpu_seconds} s exceeded"
    elif run.error == "MemoryError":
        run.reason = f"MemoryError: memory limit of {lim.memory_mb} MB reached"
    elif run.exit_code is not None and run.exit_code < 0:
        sig = -run.exit_code
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else "?"
        run.reason = f"killed by signal {sig} ({name})" + restarted
    elif run.restarted:
        run.reason = "the session ended" + restarted
    elif run.error is not None:
        run.reason = f"exit code 1: {run.error}"
    return run


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _import_path(runtime: list[str]) -> list[str]:
    """This interpreter's import path, limited to what the sandbox holds (not the project folder)."""
    return [p for p in sys.path if p and any(p == r or p.startswith(r + "/") for r in runtime)]


def _overflow_gid() -> int:
    try:
        return int(pathlib.Path("/proc/sys/kernel/overflowgid").read_text())
    except (OSError, ValueError):
        return 65534


_SOURCE = pathlib.Path(inside.__file__).read_text(encoding="utf-8")


def run_python(code: str, *, isolate: bool = True, **limits) -> PythonRun:
    """Run ``code`` once in a fresh sandbox (stateless); raises ``SandboxUnavailable`` if it cannot run.

    ``limits`` are ``Limits`` fields (timeout, cpu_seconds, memory_mb, disk_mb, max_output, max_processes).
    """
    known = {f.name for f in fields(Limits)}
    unknown = set(limits) - known
    if unknown:
        raise TypeError(f"unknown limits {sorted(unknown)}; expected some of {sorted(known)}")
    with PythonSession(Limits(**limits), isolate=isolate) as session:
        return session.run(code)
