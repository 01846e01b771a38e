"""Issue 14's attacks on the python tool, each asserting containment: nothing read, written, signalled
or left running. Three ways to be the host:

- as this process's user (root in CI): the sandbox is made and every attack is contained;
- as an unprivileged user created for the test (where this machine lets root create one): same;
- on a host that refuses user namespaces (simulated: a user namespace whose
  ``user.max_user_namespaces`` is 0, entered as root, so bwrap's real refusal path runs): the tool
  refuses, runs nothing, says why; only ``isolate=False`` runs code, with a warning.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SECRET_VALUE = "sk-" + uuid.uuid4().hex
pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (README: Debian packages)")


def _tokens_running(token: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
        except OSError:
            pass
    return pids


@pytest.fixture
def host(tmp_path):
    """Host-side bait: a secret file, a canary path, a victim process, unix sockets, a secret env var."""
    tmp_path.chmod(0o755)
    token = "wb-attack-" + uuid.uuid4().hex
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET " + SECRET_VALUE)
    secret.chmod(0o644)  # readable by anyone on the host: only the sandbox keeps it out of reach
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "agent.sock"))
    server.listen(4)
    os.chmod(tmp_path / "agent.sock", 0o777)
    abstract_name = "wb-agent-" + uuid.uuid4().hex
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0" + abstract_name)
    abstract.listen(4)
    _add_session_key(token)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# bait\n")
    cfg = {"home_bashrc": str(home / ".bashrc"), "token": token, "canary": str(tmp_path / "canary"), "secret": str(secret), "victim": victim.pid,
           "socket": str(tmp_path / "agent.sock"), "abstract": abstract_name, "parent": os.getpid(),
           "secret_value": SECRET_VALUE, "isolate": True}
    yield cfg
    victim.kill()
    victim.wait()
    server.close()
    abstract.close()
    for pid in _tokens_running(token):
        os.kill(pid, signal.SIGKILL)


def _add_session_key(description: str) -> None:
    """A key in this process's session keyring (inherited by the children), named ``description``."""
    import platform

    if platform.machine() == "x86_64":  # add_key is syscall 248 there
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        payload = SECRET_VALUE.encode()
        libc.syscall(248, b"user", description.encode(), payload, len(payload), -3)


def _run(cfg, *, user=None, refused=False, env_extra=None):
    """Play the attacks in a child process (as ``user``, and/or on a host that refuses user namespaces)."""
    env = {**os.environ, "OPENAI_API_KEY": SECRET_VALUE, "AWS_SECRET": SECRET_VALUE,
           "HOME": str(Path(cfg["home_bashrc"]).parent), **(env_extra or {})}
    cmd = [sys.executable, str(HERE / "attacks.py"), json.dumps(cfg)]
    if refused:
        cmd = [sys.executable, str(HERE / "refuse_userns.py"), *cmd]
    if user is not None:
        cmd = [sys.executable, str(HERE / "as_user.py"), str(user.pw_uid), str(user.pw_gid),
               ",".join(map(str, _bait_groups())), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _bait_groups() -> list[int]:
    """Supplementary groups an attacker would love (disk, docker, adm) where they exist."""
    import grp

    out = []
    for name in ("disk", "docker", "adm"):
        try:
            out.append(grp.getgrnam(name).gr_gid)
        except KeyError:
            pass
    return out


def assert_contained(cfg, out):
    """Every attack failed to reach the host."""
    text = {k: v["text"] for k, v in out.items() if isinstance(v, dict) and "text" in v}
    assert not any(v["refused"] for v in out.values() if isinstance(v, dict) and "refused" in v), text
    assert not Path(cfg["canary"]).exists() and not Path(cfg["canary"] + ".bashrc").exists()
    assert Path(cfg["home_bashrc"]).read_text() == "# bait\n"
    assert "WROTE" not in text["remount_root"] and "remount -1" in text["remount_root"]
    assert "READ" not in text["read_host_files"], text["read_host_files"]
    assert "LEAK" not in text["environment"] and "env clean" in text["environment"]
    # the sandbox's own pid namespace: only its own few processes are visible
    assert len(json.loads(text["environment"].splitlines()[-1].replace("'", '"'))) <= 6
    assert "wrote /mnt/data/x" in text["write_home"] and "wrote /tmp/x" in text["write_home"]
    assert os.path.exists(f"/proc/{cfg['victim']}") and "SIGNALLED" not in text["signal_and_ptrace"]
    assert "ptrace -1 1" in text["signal_and_ptrace"]  # EPERM (seccomp)
    assert "CONNECTED" not in text["unix_sockets"] and text["unix_sockets"].count("no socket") == 2
    groups_line = text["groups_caps_devices"].splitlines()[0]
    assert groups_line.startswith("groups [") and "uid 1000 1000" in groups_line
    assert all(int(g) == 65534 for g in groups_line.split("[")[1].split("]")[0].replace(",", " ").split())
    assert "WROTE" not in text["groups_caps_devices"]
    assert "dev ['null', 'random', 'shm', 'urandom', 'zero']" in text["groups_caps_devices"]
    assert "CapEff:\\t0000000000000000" in text["groups_caps_devices"] and "Seccomp:\\t2" in text["groups_caps_devices"]
    forked = int(text["fork_bomb"].split("forked")[1].split()[0])
    assert forked < 16, text["fork_bomb"]  # the process limit binds, root included
    # writing forged end messages and garbage to every descriptor it has reaches only its own cell's
    # report (the code's own word anyway): the next call is answered correctly, nothing raised
    # (garbage there restarts the session instead of being believed)
    assert "wrote to" in text["control_channel"] or "session was restarted" in text["control_channel"]
    assert text["after_control"] == "after\n"
    # 64 MiB written to every descriptor: 8 KiB of it reaches the host, whose memory does not grow
    assert len(text["flood"].rsplit("\n[", 1)[0]) <= 8192 and "output limit of 8192 bytes" in (out["flood"]["error"] or "")
    assert out["flood"]["host_rss_mb"] - out["after_control"]["host_rss_mb"] < 32  # MB: the host did not grow
    # keyrings: keyctl is refused (seccomp) and the host's session key is not even listed
    assert "keyctl -1 1" in text["ipc_and_keys"] and cfg["token"] not in text["ipc_and_keys"]
    assert "shm -1" not in text["ipc_and_keys"]  # made, in the sandbox's own IPC namespace ...
    assert "0x005ec0de" not in Path("/proc/sysvipc/shm").read_text().lower()  # ... and gone with it
    mb = int(text["disk_fill"].split("MB")[1].split()[0])
    assert mb <= 32 and "stopped" in text["disk_fill"]
    time.sleep(0.5)
    assert _tokens_running(cfg["token"]) == []  # the daemon died with the session
    iso = out["isolation"]
    assert iso["user_namespace"] and iso["not_host_root"] and iso["seccomp"] and iso["read_only_fs"]


def test_attacks_are_contained_as_this_user(host):
    out = _run(host)
    assert_contained(host, out)


@pytest.fixture(scope="module")
def unprivileged_user():
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create an unprivileged user for the test")
    name = "wbsec" + uuid.uuid4().hex[:6]
    subprocess.run(["useradd", "--system", "--create-home", "--home-dir", f"/tmp/{name}", name], check=True,
                   capture_output=True)
    user = pwd.getpwnam(name)
    probe = subprocess.run([sys.executable, str(HERE / "as_user.py"), str(user.pw_uid), str(user.pw_gid), "",
                            sys.executable, "-c", "import workbench"], capture_output=True, cwd="/")
    if probe.returncode != 0:
        subprocess.run(["userdel", "--remove", name], capture_output=True)
        pytest.skip("this checkout or its venv is not readable by an unprivileged user")
    yield user
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)  # only that user's processes
    subprocess.run(["userdel", "--remove", name], capture_output=True)


def test_attacks_are_contained_as_an_unprivileged_user(host, unprivileged_user):
    out = _run(host, user=unprivileged_user)
    assert out["uid"] == unprivileged_user.pw_uid and out["groups"]  # the bait groups were held outside
    assert_contained(host, out)


def _refusal_possible():
    return os.geteuid() == 0 and shutil.which("unshare") is not None


@pytest.mark.skipif(not _refusal_possible(), reason="simulating a host without user namespaces needs root")
@pytest.mark.parametrize("who", ["root", "user"])
def test_without_user_namespaces_the_tool_refuses_and_runs_nothing(host, who, request):
    user = request.getfixturevalue("unprivileged_user") if who == "user" else None
    out = _run({**host, "expect_refusal": True}, refused=True, user=user)
    assert "NOT_REFUSED" not in out  # root: the critical case; user: the high one
    assert out["uid"] == (0 if user is None else user.pw_uid)
    for name in ("remount_root", "read_host_files", "write_home", "signal_and_ptrace", "daemon"):
        result = out[name]
        assert result["refused"] and result["text"].startswith("python is unavailable:"), result
        assert "namespace" in result["text"] and "ENOSPC" in result["text"]  # bwrap's own refusal, passed on
    assert not Path(host["canary"]).exists() and os.path.exists(f"/proc/{host['victim']}")
    assert sum("refused to run code" in w for w in out["warnings"]) == 1  # the user is told once
    assert _tokens_running(host["token"]) == []


@pytest.mark.skipif(not _refusal_possible(), reason="simulating a host without user namespaces needs root")
def test_without_user_namespaces_only_the_explicit_opt_out_runs_code(host):
    out = _run({**host, "isolate": False}, refused=True)  # a benign cell only: nothing would contain an attack
    assert any("WITHOUT the sandbox" in w for w in out["warnings"])
    assert out["write_canary"]["text"] == "wrote canary\n" and Path(host["canary"]).read_text() == "ran"


SLEEPER = ("import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', {token!r}])\n"
           "time.sleep(120)")


def _interrupted_host(token: str, after) -> tuple[str, int]:
    """A fresh host interpreter with Python's default SIGINT handler (set explicitly: a runner started in the
    background, e.g. under nohup, passes SIGINT on ignored) calls the python tool with SLEEPER; ``after()``
    returns once it is time to send SIGINT (Ctrl-C in a terminal, Jupyter's interrupt). Returns (stdout, rc)."""
    script = (f"import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
              f"from workbench.tools import PythonTool\nt = PythonTool(timeout=60)\n"
              f"try:\n    print('ready', flush=True)\n    t.call('python', {SLEEPER.format(token=token)!r})\n"
              f"except KeyboardInterrupt:\n    print('interrupted', t.session.alive, flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    after(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while _tokens_running(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    return out.strip(), proc.returncode


def test_interrupted_call_leaves_nothing_running(host):
    """Ctrl-C while the sandboxed code runs: the call raises KeyboardInterrupt, the session is closed and nothing
    it started outlives it."""
    def running(host_pid):  # the host's own command line holds the token too
        deadline = time.monotonic() + 30
        while not set(_tokens_running(host["token"])) - {host_pid} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(_tokens_running(host["token"])) - {host_pid}

    assert _interrupted_host(host["token"], running) == ("interrupted False", 0)
    assert _tokens_running(host["token"]) == []


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.1, 0.3])
def test_interrupt_while_the_sandbox_starts(host, delay):
    """Ctrl-C while the first call is still starting its sandbox (found 2026-11-29: an interrupt that lands while
    the spawner thread starts left the interpreter hanging at exit, and one during the fork left a sandbox
    running): the host exits at once and nothing survives it."""
    assert _interrupted_host(host["token"], lambda pid: time.sleep(delay)) == ("interrupted False", 0)
    assert _tokens_running(host["token"]) == []


def test_killed_host_takes_the_sandbox_down(host):
    script = (f"from workbench.tools import PythonTool\nimport sys\nt = PythonTool(timeout=60)\nprint('ready', flush=True)\n"
              f"t.call('python', {SLEEPER.format(token=host['token'])!r})")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 20
    while not _tokens_running(host["token"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _tokens_running(host["token"])
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while _tokens_running(host["token"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _tokens_running(host["token"]) == []


def test_unisolated_cleanup_removes_what_the_code_made_unreadable():
    """``chmod 000`` leftovers: only the explicit opt-out uses a host folder, and it is removed all the same
    (a benign cell: it touches nothing but its own working folder)."""
    from workbench.tools import PythonTool

    with pytest.warns(RuntimeWarning):
        tool = PythonTool(isolate=False, timeout=20)
    code = ("import os\nos.makedirs('locked/inner')\nopen('locked/inner/f', 'w').write('x')\n"
            "os.chmod('locked/inner', 0)\nos.chmod('locked', 0)\nprint(os.getcwd())")
    workdir = tool.call("python", code).text.strip()
    assert os.path.isdir(workdir) and workdir.startswith(("/tmp/", os.path.realpath("/tmp") + "/"))
    tool.close()
    assert not os.path.exists(workdir)
