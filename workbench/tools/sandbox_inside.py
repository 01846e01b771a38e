"""The two programs that run inside the python tool's sandbox: the supervisor and the worker.

This file is never imported inside the sandbox: ``sandbox.py`` reads its source and runs it with
``python -I -S -c SOURCE supervisor CONFIG`` (no site: fast, no .pth files run) as the first process
bwrap starts (pid 2 of the sandbox's pid namespace). It imports nothing but the standard library.

- The **supervisor** is trusted: it never runs model code. It makes itself non-dumpable (so the
  code cannot ptrace it or open its ``/proc/<pid>/fd``), joins a fresh session keyring, measures
  what isolation actually took effect (namespaces, uid map, capabilities, mounts, devices, network,
  groups, keyring), starts the worker, and then relays calls between the host (two pipes whose
  numbers come in its config, held by it alone) and the worker. It enforces each call's wall time (SIGINT, then the kill of every
  process in the sandbox) and output size, and reads the worker's messages size-capped.
- The **worker** is a fork of the supervisor that applies the per-process layers (rlimits,
  Landlock, seccomp), closes every descriptor but its own three pipes, and runs the cells (in the
  same interpreter: no exec, so the session starts faster). Before it reads any code it measures
  its own state (seccomp mode, capabilities, limits, Landlock) and reports it; then it runs cells in
  one namespace, like a Jupyter kernel: the value of a last expression is printed, exceptions print
  a traceback, and a process a cell forks never returns to read the next cell.

Frames on every pipe are a 4-byte big-endian length and a UTF-8 JSON object.

What the code can and cannot forge: the worker runs the code in its own process, so a cell's own
end message (whether it raised, its CPU time) is the code's word, like its output; the supervisor
tags each cell with a fresh random id, so a forged or stale end message can only end the code's own
cell early, never a later one. Everything else (the isolation report, made before any code ran;
time-outs, output caps, kills, restarts) is decided by the supervisor and the host, which the code
cannot reach, and garbage from the worker restarts the session instead of being believed.
"""

import ctypes
import json
import os
import select
import signal
import struct
import sys
import time

FRAME_CAP = 64 << 20  # the largest frame anyone here accepts (code is capped lower by the host)
WORKER_FRAME_CAP = 1 << 16  # worker -> supervisor messages are small; a longer one is a protocol error


# -- framing ------------------------------------------------------------------------------------


def send(fd, obj):
    data = json.dumps(obj).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("pipe closed")
        buf += chunk
    return buf


def recv(fd, cap=FRAME_CAP):
    (n,) = struct.unpack(">I", read_exact(fd, 4))
    if n > cap:
        raise ValueError(f"frame of {n} bytes exceeds the cap of {cap}")
    obj = json.loads(read_exact(fd, n))
    if not isinstance(obj, dict):
        raise ValueError("frame is not a JSON object")
    return obj


def mount_point(path: str) -> str:
    """Where the sandbox mounts the host runtime path ``path``: /tmp is a symlink to /mnt/tmp in there
    (the sandbox's own tmpfs), so a runtime under /tmp (a CI checkout's venv, say) is mounted below it."""
    return "/mnt/tmp" + path[len("/tmp"):] if path.startswith("/tmp/") else path


# -- kernel interfaces (ctypes over libc and libseccomp) ------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 2, 4, 38


_libseccomp = []


def load_libseccomp():
    """libseccomp via ctypes (its soname, not ``find_library``, which would run ldconfig or gcc), or None."""
    if _libseccomp:
        return _libseccomp[0]
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        _libseccomp.append(None)
        return None
    _libseccomp.append(lib)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.c_void_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def syscall_number(name):
    """The native syscall number of ``name`` (libseccomp knows every architecture), or None."""
    lib = load_libseccomp()
    nr = lib.seccomp_syscall_resolve_name(name.encode()) if lib else -1
    return nr if nr >= 0 else None


class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


SCMP_ACT_ALLOW, SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 0x7FFF0000, 4, 7
# Syscalls the code never needs and that widen the kernel's attack surface or reach outside the
# sandbox: debugging other processes, keyrings, (re)mounting and namespaces, kernel modules, BPF,
# perf, userfaultfd and io_uring (frequent exploit primitives), handles by inode, raw I/O ports.
DENIED = """ptrace process_vm_readv process_vm_writev keyctl add_key request_key mount umount2 pivot_root
chroot setns unshare bpf perf_event_open userfaultfd kexec_load kexec_file_load init_module finit_module
delete_module open_by_handle_at name_to_handle_at iopl ioperm swapon swapoff reboot acct quotactl syslog
lookup_dcookie fanotify_init io_uring_setup io_uring_enter io_uring_register move_mount open_tree fsopen
fsconfig fsmount fspick mount_setattr pidfd_getfd kcmp""".split()


def apply_seccomp():
    """Load the filter (default allow; ``DENIED`` fail with EPERM, clone3 with ENOSYS so libc falls
    back to clone, clone with CLONE_NEW* flags and the TIOCSTI/TIOCLINUX ioctls with EPERM)."""
    lib = load_libseccomp()
    if lib is None:
        return "libseccomp not found"
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    errno_ = lambda e: 0x00050000 | e  # SCMP_ACT_ERRNO
    try:
        def rule(name, action, *cmps):
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                return  # not on this architecture
            arr = (ArgCmp * max(1, len(cmps)))(*cmps)
            if lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr) != 0:
                raise OSError(f"seccomp rule for {name} refused")

        for name in DENIED:
            rule(name, errno_(1))
        rule("clone3", errno_(38))
        for flag in (0x10000000, 0x00020000, 0x04000000, 0x08000000, 0x20000000, 0x40000000, 0x02000000):  # NEWUSER NEWNS UTS IPC PID NET CGROUP
            rule("clone", errno_(1), ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag))
        for request in (0x5412, 0x541C):  # TIOCSTI, TIOCLINUX
            rule("ioctl", errno_(1), ArgCmp(1, SCMP_CMP_EQ, request, 0))
        if lib.seccomp_load(ctx) != 0:
            return "seccomp_load failed"
    except OSError as e:
        return str(e)
    finally:
        lib.seccomp_release(ctx)
    return None


# Landlock (syscalls 444-446 on every architecture). Access rights by ABI version.
LL_FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
LL_FS_ALL = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}


def landlock_abi():
    return max(0, libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))


def apply_landlock(readable, writable):
    """Restrict the filesystem to reading ``readable`` and anything under ``writable``; with ABI 4+
    no TCP bind/connect; with ABI 6+ no abstract unix sockets and no signals to processes outside
    this domain (the supervisor). Returns (abi, error or None)."""
    abi = landlock_abi()
    if abi < 1:
        return 0, None
    fs_all = LL_FS_ALL.get(abi, LL_FS_ALL[5])
    attr = struct.pack("=QQQ", fs_all, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    buf = ctypes.create_string_buffer(attr[:size], size)
    fd = libc.syscall(444, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        return abi, f"landlock_create_ruleset: errno {ctypes.get_errno()}"
    try:
        for paths, access in ((readable, LL_FS_READ), (writable, fs_all)):
            for path in paths:
                try:
                    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                mask = access if os.path.isdir(path) else access & ((1 << 0) | (1 << 1) | (1 << 2) | (1 << 14))
                rule = ctypes.create_string_buffer(struct.pack("=Qi", mask & fs_all, pfd), 12)
                r = libc.syscall(445, ctypes.c_int(fd), ctypes.c_int(1), rule, ctypes.c_uint32(0))
                os.close(pfd)
                if r != 0:
                    return abi, f"landlock_add_rule {path}: errno {ctypes.get_errno()}"
        if libc.syscall(446, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            return abi, f"landlock_restrict_self: errno {ctypes.get_errno()}"
    finally:
        os.close(fd)
    return abi, None


# -- measuring what took effect --------------------------------------------------------------------


def status_fields():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def ns_ids():
    return {name: os.readlink(f"/proc/self/ns/{name}") for name in ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup")
            if os.path.exists(f"/proc/self/ns/{name}")}


def keyring_id():
    nr = syscall_number("keyctl")
    if nr is None:
        return None
    r = libc.syscall(nr, ctypes.c_int(0), ctypes.c_int(-3), ctypes.c_int(0))  # GET_KEYRING_ID, SESSION
    return r if r >= 0 else -ctypes.get_errno()


def join_fresh_keyring():
    nr = syscall_number("keyctl")
    return nr is not None and libc.syscall(nr, ctypes.c_int(1), None) >= 0  # KEYCTL_JOIN_SESSION_KEYRING, anonymous


def mounts():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            point = parts[4].encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")
            fstype = parts[parts.index("-") + 1]
            out.append({"point": point, "options": parts[5], "fstype": fstype})
    return out


def supervisor_probe(cfg):
    """What the sandbox is, measured from inside (the host compares it with what it asked for)."""
    host = cfg["host"]
    st = status_fields()
    caps = {k: int(st.get(k, "1"), 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    with open("/proc/self/uid_map") as f:
        uid_map = [line.split() for line in f if line.strip()]
    with open("/proc/self/gid_map") as f:
        gid_map = [line.split() for line in f if line.strip()]
    ns = ns_ids()
    fresh_ns = {name: ns.get(name) is not None and ns.get(name) != host["ns"].get(name) for name in host["ns"]}
    root = os.stat("/")
    ms = mounts()
    allowed = {mount_point(p) for p in cfg["runtime"]} | {"/", "/proc", "/dev", "/dev/null", "/dev/zero", "/dev/random", "/dev/urandom",
                                     "/mnt"} | set(cfg["files"])
    writable = [m["point"] for m in ms if "rw" in m["options"].split(",")
                and m["point"] not in ("/mnt", "/proc") and not m["point"].startswith("/proc/")
                and m["point"] not in ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")]
    try:
        probe_path = "/.workbench-write-probe"
        os.close(os.open(probe_path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.unlink(probe_path)
        root_writable = True
    except OSError:
        root_writable = False
    try:
        import socket
        interfaces = sorted(name for _, name in socket.if_nameindex())
    except OSError:
        interfaces = ["?"]
    groups = [int(g) for g in st.get("Groups", "").split()]
    disk = os.statvfs("/mnt")
    return {
        "user_namespace": fresh_ns.get("user", False),
        "mount_namespace": fresh_ns.get("mnt", False),
        "pid_namespace": fresh_ns.get("pid", False) and os.getpid() < 10,
        "network_namespace": fresh_ns.get("net", False) and interfaces == ["lo"],
        "ipc_namespace": fresh_ns.get("ipc", False),
        "uts_namespace": fresh_ns.get("uts", False),
        "not_host_root": process_limit_binds() and os.getuid() != 0 and len(uid_map) == 1 and uid_map[0][2] == "1",
        "uid_map": uid_map, "gid_map": gid_map,
        "no_capabilities": not any(caps.values()),
        "no_new_privs": st.get("NoNewPrivs") == "1",
        "own_root_fs": (root.st_dev, root.st_ino) != tuple(host["root"]) and all(m["point"] in allowed for m in ms),
        "read_only_fs": not root_writable and not writable,
        "minimal_dev": sorted(os.listdir("/dev")) == ["null", "random", "shm", "urandom", "zero"],
        "no_supplementary_groups": all(g == cfg["overflow_gid"] for g in groups),
        "groups": groups,
        "fresh_keyring": cfg.get("keyring_joined", False) and keyring_id() not in (None, host["keyring"]),
        "parent_death_signal": pdeathsig() == signal.SIGKILL,
        "disk_limit": disk.f_blocks * disk.f_frsize <= cfg["disk_bytes"] + (1 << 20),
        "mounts": [m["point"] for m in ms],
    }


def process_limit_binds():
    """Whether RLIMIT_NPROC binds here, tried: a child limited to 1 process must fail to fork. (It never
    binds for host uid 0, even in a user namespace, so this also proves the code is not host root.)"""
    import resource

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        ok = b"0"
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
            child = os.fork()
            if child == 0:
                os._exit(0)
            os.waitpid(child, 0)
        except BlockingIOError:
            ok = b"1"
        except OSError:
            ok = b"0"
        os.write(w, ok)
        os._exit(0)
    os.close(w)
    answer = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    return answer == b"1"


def pdeathsig():
    sig = ctypes.c_int(0)
    libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0)
    return sig.value


# -- the supervisor --------------------------------------------------------------------------------


def start_worker(cfg, extra):
    """Fork the worker: limits, Landlock, seccomp, then ``worker_main`` in the same interpreter (no
    exec: the supervisor's imports are reused, which saves an interpreter start per session)."""
    code_r, code_w = os.pipe()
    out_r, out_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 127
        try:
            os.setsid()
            libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # the supervisor is not; the code may read its own /proc
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            os.dup2(code_r, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.dup2(done_w, 3)
            os.closerange(4, 1 << 16)  # the host's pipes and everything else the supervisor holds
            import resource

            lim = cfg["limits"]
            for name, value in (("RLIMIT_AS", lim["memory_bytes"]), ("RLIMIT_FSIZE", lim["disk_bytes"]),
                                ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", lim["max_processes"]),
                                ("RLIMIT_CPU", lim["session_cpu_seconds"]), ("RLIMIT_NOFILE", 256)):
                resource.setrlimit(getattr(resource, name), (value, value))
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            facts = dict(extra)
            if cfg["isolate"]:
                readable = cfg["runtime"] + cfg["files"] + ["/proc", "/dev"]
                facts["landlock_abi"], facts["landlock_error"] = apply_landlock(readable, ["/mnt", "/dev/null"])
                facts["seccomp_error"] = apply_seccomp()
            os.environ.clear()
            os.environ.update(cfg["env"])
            sys.path[:] = cfg["sys_path"]
            worker_main(facts)
            status = 0
        except BaseException as e:  # pragma: no cover - reported as a failed start
            try:
                os.write(2, f"worker failed: {e!r}\n".encode())
            except OSError:
                pass
        os._exit(status)
    for fd in (code_r, out_w, done_w):
        os.close(fd)
    return pid, code_w, out_r, done_r


def kill_all(cfg, worker):
    """SIGKILL every process of the sandbox but this one (and bwrap's pid 1); without the sandbox's
    pid namespace, only the worker's process group."""
    try:
        os.kill(-1 if cfg["isolate"] else -worker, signal.SIGKILL)
    except OSError:
        pass


def supervisor_main(cfg):
    host_in, host_out = cfg["host_in"], cfg["host_out"]
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    report = {}
    if cfg["isolate"]:
        cfg["keyring_joined"] = join_fresh_keyring()
        report = supervisor_probe(cfg)
    pid, code_w, out_r, done_r = start_worker(cfg, {"supervisor_pid": os.getpid()})
    try:
        worker_report = recv(done_r, WORKER_FRAME_CAP)
    except (EOFError, ValueError, OSError) as e:
        send(host_out, {"ready": False, "error": f"the worker did not start: {e}", "isolation": report,
                        "output": drain(out_r, 1 << 14).decode("utf-8", "replace")})
        return
    report.update(worker_report.get("isolation", {}))
    send(host_out, {"ready": True, "isolation": report})
    while True:
        try:
            request = recv(host_in)
        except (EOFError, ValueError, OSError):
            break  # the host went away or sent garbage: end the sandbox
        if request.get("op") != "run":
            break
        reply = run_call(pid, code_w, out_r, done_r, request)
        send(host_out, reply)
        if reply.get("restart"):
            break
    kill_all(cfg, pid)


def drain(fd, cap):
    out = b""
    while len(out) < cap and select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out[:cap]


def run_call(pid, code_w, out_r, done_r, request):
    """One cell: send it, collect output (capped), stop it at the deadline, read its end message."""
    timeout, max_output = float(request["timeout"]), int(request["max_output"])
    cell = os.urandom(16).hex()  # the worker echoes it: a stale or forged end message of an earlier cell is ignored
    send(code_w, {"code": request["code"], "cpu_seconds": request["cpu_seconds"], "cell": cell})
    start = time.monotonic()
    deadline, interrupted_at = start + timeout, None
    out, truncated, timed_out, done = bytearray(), False, False, None
    open_fds = [out_r, done_r]
    while done is None:
        now = time.monotonic()
        if now >= deadline and interrupted_at is None:
            timed_out = True
            interrupted_at = now
            os.kill(pid, signal.SIGINT)
        if interrupted_at is not None and now >= interrupted_at + request["grace"]:
            break  # it did not stop: the session restarts
        wait = (deadline if interrupted_at is None else interrupted_at + request["grace"]) - now
        ready, _, _ = select.select(open_fds, [], [], max(0.0, wait))
        if out_r in ready:
            chunk = os.read(out_r, 65536)
            if not chunk:
                open_fds.remove(out_r)
            elif not truncated:
                out += chunk
                if len(out) > max_output:
                    del out[max_output:]
                    truncated = True
                    if interrupted_at is None:
                        interrupted_at = time.monotonic()
                        os.kill(pid, signal.SIGINT)
        if done_r in ready:
            try:
                done = recv(done_r, WORKER_FRAME_CAP)
            except (EOFError, ValueError, OSError):
                break  # the worker died or wrote garbage
            if done.get("cell") != cell:
                done = None
        if not open_fds:
            break
    if done is not None and not truncated:
        out += drain(out_r, max_output - len(out) + 1)
        if len(out) > max_output:
            del out[max_output:]
            truncated = True
    reply = {"output": out.decode("utf-8", "replace"), "timed_out": timed_out, "truncated": truncated,
             "duration": time.monotonic() - start}
    if done is None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        _, status = os.waitpid(pid, 0)
        reply.update(restart=True, exit_code=os.waitstatus_to_exitcode(status))
    else:
        reply.update(exit_code=0 if done.get("error") is None else 1,
                     error=str(done.get("error"))[:200] if done.get("error") is not None else None,
                     cpu_seconds=done.get("cpu") if isinstance(done.get("cpu"), (int, float)) else None)
    return reply


# -- the worker ------------------------------------------------------------------------------------


class CPUTimeExceeded(Exception):
    """Raised in the cell when its CPU-time limit is reached."""


def worker_probe(facts):
    import resource

    st = status_fields()
    iso = {"seccomp": st.get("Seccomp") == "2" and not facts.get("seccomp_error"),
           "landlock": facts.get("landlock_abi", 0) >= 1 and not facts.get("landlock_error"),
           "landlock_abi": facts.get("landlock_abi", 0),
           "worker_no_capabilities": not any(int(st.get(k, "1"), 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")),
           "worker_no_new_privs": st.get("NoNewPrivs") == "1",
           "limits": {name: resource.getrlimit(getattr(resource, "RLIMIT_" + name.upper()))[1]
                      for name in ("as", "nproc", "fsize", "cpu", "core", "nofile")}}
    for key in ("seccomp_error", "landlock_error"):
        if facts.get(key):
            iso[key] = facts[key]
    try:  # Landlock ABI 6+: the supervisor is outside this domain, so it cannot be signalled
        os.kill(facts["supervisor_pid"], 0)
        iso["supervisor_signalable"] = True
    except PermissionError:
        iso["supervisor_signalable"] = False
    except OSError:
        iso["supervisor_signalable"] = True
    return iso


def worker_main(facts):
    """Run cells from fd 0 until it closes; output goes to fds 1 and 2, one end message per cell to fd 3."""
    import ast
    import builtins
    import linecache
    import resource
    import traceback

    code_fd = os.dup(0)
    os.set_inheritable(code_fd, False)
    done_fd = os.dup(3)
    os.set_inheritable(done_fd, False)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.close(3)
    sys.stdin = open(os.devnull)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    import site  # not run at start-up (-S: no .pth files, fast); give the code exit(), quit() and help()

    site.setquit()
    site.sethelper()
    my_pid = os.getpid()

    def on_xcpu(signum, frame):
        raise CPUTimeExceeded("CPU time limit reached")

    signal.signal(signal.SIGXCPU, on_xcpu)
    send(done_fd, {"isolation": worker_probe(facts)})
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    cell = 0
    while True:
        try:
            request = recv(code_fd)
        except (EOFError, ValueError, OSError):
            return
        cell += 1
        name = f"<cell {cell}>"
        source = str(request.get("code", ""))
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = usage.ru_utime + usage.ru_stime
        soft = min(hard, int(used) + 1 + int(request.get("cpu_seconds", 10))) if hard >= 0 else -1
        error = None
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
            tree = ast.parse(source, name, "exec")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, name, "exec"), namespace)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), name, "eval"), namespace)
                if value is not None:
                    namespace["_"] = value
                    print(repr(value))
        except BaseException as e:  # SystemExit and KeyboardInterrupt included: the session goes on
            error = type(e).__name__
            tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
            try:
                sys.stdout.flush()
            except BaseException:
                pass
            traceback.print_exception(type(e), e, tb)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        if os.getpid() != my_pid:  # a process the cell forked got here: it must not read the next cell
            os._exit(0 if error is None else 1)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        try:
            send(done_fd, {"error": error, "cpu": usage.ru_utime + usage.ru_stime - used, "cell": request.get("cell")})
        except OSError:
            return


if __name__ == "__main__":
    if sys.argv[1] == "supervisor":
        supervisor_main(json.loads(sys.argv[2]))
