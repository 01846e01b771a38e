"""The foundation's commands, run as a user runs them: the installed console script in a subprocess."""

import json
import os
import subprocess
from pathlib import Path

from workbench import open_checkpoint


def _wb(*args, cache=None):
    env = dict(os.environ)
    if cache:
        env["WORKBENCH_CACHE"] = str(cache)
    return subprocess.run(["workbench", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_make_tiny_then_info(tmp_path):
    r = _wb("make-tiny", tmp_path / "ck", "--layout", "hf", "--seed", "3")
    assert r.returncode == 0, r.stderr
    ck = open_checkpoint(tmp_path / "ck")
    assert ck.layout == "hf"
    assert (tmp_path / "ck" / "tokenizer.json").is_file()  # as a real HF checkpoint
    r = _wb("info", tmp_path / "ck")
    assert r.returncode == 0, r.stderr
    assert "model.layers.3.mlp.experts.down_proj_scales" in r.stdout  # the tensor table
    assert f"num_experts = {ck.config.num_experts}" in r.stdout  # the config
    assert "scale exp" not in r.stdout  # the fast summary reads no weights
    r = _wb("info", tmp_path / "ck", "--scan")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("3 ") and "mlp2_weight" in l]
    assert len(lines) == 1  # one MXFP4 row per layer and weight


def test_info_errors_are_one_clear_line(tmp_path):
    r = _wb("info", tmp_path / "missing")
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "config.json").write_text("{}")
    r = _wb("info", tmp_path)
    assert r.returncode == 1 and "missing fields" in r.stderr and "Traceback" not in r.stderr


def test_readme_test_setup_is_what_ci_runs():
    """README's test set-up line is one command (Debian packages, installs, the test command); .ci/run reads
    the packages and the test command from that very line (its own parsing lines, run here on it)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text().splitlines()
    i = readme.index("<!-- test-setup -->")
    line = readme[i + 2]
    assert readme[i + 1].startswith("```") and line.startswith("apt-get update && apt-get install -y ")
    assert "chromium" in line and "bubblewrap" in line and line.endswith("&& python -m pytest -q -p no:cacheprovider")
    ci = (root / ".ci" / "run").read_text()
    assert "<!-- test-setup -->" in ci and 'eval "$cmd"' in ci
    parsing = [x for x in ci.splitlines() if x.startswith(("pkgs=", "cmd="))]
    out = subprocess.run(["bash", "-c", f"line={json.dumps(line)}\n" + "\n".join(parsing) + '\necho "$pkgs|$cmd"'],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "bubblewrap libseccomp2 chromium|python -m pytest -q -p no:cacheprovider"
