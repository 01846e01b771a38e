"""Run a command as an unprivileged user, for the tests (root only). Usage: as_user.py UID GID GROUPS CMD...

This machine's Python lives under /root (mode 0700), which another user cannot traverse. In a
private mount namespace (invisible to the rest of the machine) /root is covered by a tmpfs that
holds only a bind of /root/.pyenv, so the user can run this interpreter; then the command runs
with that uid, gid and supplementary GROUPS (comma-separated, may be empty), no capabilities.
"""

import ctypes
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def check(ok, what):
    if not ok:
        sys.exit(f"as_user: {what}: {os.strerror(ctypes.get_errno())}")


uid, gid = int(sys.argv[1]), int(sys.argv[2])
groups = [int(g) for g in sys.argv[3].split(",") if g]
check(libc.unshare(0x00020000) == 0, "unshare(CLONE_NEWNS)")
check(libc.mount(None, b"/", None, 16384 | (1 << 18), None) == 0, "make mounts private")
keep = [p for p in ("/root/.pyenv",) if os.path.isdir(p)]
fds = [os.open(p, os.O_PATH) for p in keep]
check(libc.mount(b"tmpfs", b"/root", b"tmpfs", 0, b"mode=0755") == 0, "tmpfs on /root")
for path, fd in zip(keep, fds):
    os.mkdir(path)
    check(libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, 4096 | 16384, None) == 0, "bind " + path)
    os.close(fd)
os.setgroups(groups)
os.setresgid(gid, gid, gid)
os.setresuid(uid, uid, uid)
os.execv(sys.argv[4], sys.argv[4:])
