"""Run a command as root on a host that refuses user namespaces (simulated, for the tests).

As root it enters a new user namespace that maps root and uids 1-65535 to themselves (so the
command is still root, with every capability there); as another user, one that maps that user to
itself. Either way it sets ``user.max_user_namespaces`` to 0 inside it and execs the command: any
user namespace the command tries to make fails with ENOSPC, exactly as on a host with
``user.max_user_namespaces=0``. Usage: python refuse_userns.py CMD...
"""

import ctypes
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
if os.geteuid() != 0:  # an ordinary user: map ourselves to ourselves, as the kernel allows without privilege
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(0x10000000) != 0:
        sys.exit(f"unshare: {os.strerror(ctypes.get_errno())}")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1\n"), ("gid_map", f"{gid} {gid} 1\n")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    with open("/proc/sys/user/max_user_namespaces", "w") as f:  # capabilities in our own namespace allow it
        f.write("0")
    os.execv(sys.argv[1], sys.argv[1:])
r, w = os.pipe()
r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w)
    os.close(r2)
    if libc.unshare(0x10000000) != 0:
        sys.exit(f"unshare: {os.strerror(ctypes.get_errno())}")
    os.write(w2, b"1")
    os.read(r, 1)  # the parent wrote our maps
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")
    os.execv(sys.argv[1], sys.argv[1:])
os.close(r)
os.close(w2)
os.read(r2, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 0 1\n1 1 65535\n")
os.write(w, b"1")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
