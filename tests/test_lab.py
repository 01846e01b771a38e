"""``workbench lab``: the notebooks copied without overwriting edits, and JupyterLab really starting."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from workbench.lab import MANIFEST, copy_notebooks, shipped_notebooks


def test_copy_never_overwrites_edits(tmp_path):
    names = sorted(p.name for p in shipped_notebooks())
    assert names and all(n.endswith(".ipynb") for n in names)
    assert copy_notebooks(tmp_path)["copied"] == names
    assert copy_notebooks(tmp_path)["same"] == names
    edited = tmp_path / names[0]
    edited.write_text(edited.read_text().replace("# ", "# MY-EDIT ", 1))
    report = copy_notebooks(tmp_path)
    assert report["kept"] == [names[0]] and "MY-EDIT" in edited.read_text()
    edited.unlink()
    assert copy_notebooks(tmp_path)["copied"] == [names[0]]


def test_unedited_old_version_is_updated(tmp_path):
    name = shipped_notebooks()[0].name
    (tmp_path / name).write_text("{}")  # an older shipped version the user never touched
    (tmp_path / MANIFEST).write_text(json.dumps({name: hashlib.sha256(b"{}").hexdigest()}))
    assert name in copy_notebooks(tmp_path)["updated"]
    assert (tmp_path / name).read_bytes() == shipped_notebooks()[0].read_bytes()


def test_lab_starts_jupyterlab_on_the_copied_notebooks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    proc = subprocess.Popen(
        ["workbench", "lab", "--dir", str(tmp_path / "nb"), "--port", str(port), "--no-browser", "--",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.token=t0k", "--allow-root"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token=t0k", timeout=2) as r:
                    listing = json.load(r)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-2000:]
                time.sleep(0.5)
        assert {c["name"] for c in listing["content"]} >= {p.name for p in shipped_notebooks()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
