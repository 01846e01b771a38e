"""Issue 14's attacks through files: the browser's folder, eval output folders and records, crafted
checkpoints, names printed by the CLI, the lab manifest. Each asserts containment and a clear error."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest
import torch

from workbench.checkpoint import CheckpointError, open_checkpoint
from workbench.safetensors_io import Entry, write_safetensors
from workbench.tools import BrowserTool, LocalSearch


@pytest.fixture
def victim(tmp_path):
    """A file outside every folder the workbench is given; it must be neither read nor changed."""
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir()
    path.write_text("# private: sinks secret-marker-7f3\n")
    return path


# -- the browser stays inside its folder ----------------------------------------------------------


def test_browser_does_not_follow_symlinks_out_of_its_folder(tmp_path, victim):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "ok.md").write_text("# Sinks\nA sink logit per head.")
    (folder / "passwd.txt").symlink_to("/etc/passwd")
    (folder / "victim.md").symlink_to(victim)
    (folder / "outside").symlink_to(victim.parent, target_is_directory=True)
    (folder / "big.txt").write_text("sinks " * 300_000)  # 1.8 MB > the cap below
    (folder / "binary.txt").write_bytes(b"sinks\0\x01\x02")
    os.mkfifo(folder / "fifo.md")  # must not hang the index
    index = LocalSearch(folder, max_file_bytes=1 << 20)
    assert [Path(u).name for u in index.pages] == ["ok.md"]
    assert {Path(p).name: why.split(" (")[0] for p, why in index.skipped.items()} == {
        "passwd.txt": "symbolic link", "victim.md": "symbolic link", "outside": "symbolic link",
        "big.txt": "not a regular text file of at most 1048576 bytes",
        "binary.txt": "not a regular text file of at most 1048576 bytes",
        "fifo.md": "not a regular text file of at most 1048576 bytes"}
    browser = BrowserTool(index)
    for query in ("secret-marker-7f3", "root"):
        text = browser.call("browser.search", json.dumps({"query": query})).text
        assert "No results" in text and "# private" not in text
    for url in (victim.as_uri(), (folder / "victim.md").as_uri(), "file:///etc/passwd"):
        result = browser.call("browser.open", json.dumps({"id": url}))
        assert result.error and "root:" not in result.text and "# private" not in result.text


# -- eval output folders ----------------------------------------------------------------------------


def _sweep(out, url_with_credentials):
    from workbench.evals import run_sweep, server

    return run_sweep(["arithmetic"], [server("fake", url_with_credentials)], out=out, efforts=["low"], limit=2,
                     progress=False, retries=0)


@pytest.fixture
def fake_server():
    from workbench.evals.fake import FakeServer

    with FakeServer().start() as fake:
        yield fake


def test_eval_output_refuses_planted_symlinks(tmp_path, victim, fake_server):
    before = victim.read_text()
    linked = tmp_path / "linked-out"
    linked.symlink_to(victim.parent, target_is_directory=True)
    with pytest.raises(ValueError, match="refuse symlinks"):
        _sweep(linked, fake_server.url)
    for i, name in enumerate(("samples.jsonl", "samples.jsonl.lock", "sweep.json")):
        out = tmp_path / f"out-{i}"
        out.mkdir()
        (out / name).symlink_to(victim)
        with pytest.raises(ValueError, match="refuse symlinks"):
            _sweep(out, fake_server.url)
    assert victim.read_text() == before


def test_eval_files_are_atomic_and_honour_the_umask(tmp_path, victim, fake_server):
    from workbench.evals import load, summary, write_plots

    out = tmp_path / "run"
    out.mkdir()
    # an attacker plants links where the old code wrote its temp files: they must not be written through
    (out / "sweep.json.tmp").symlink_to(victim)
    (out / "accuracy_vs_effort.png.tmp").symlink_to(victim)
    old = os.umask(0o027)
    try:
        _sweep(out, fake_server.url)
        paths = write_plots(summary(load(out)), out)
    finally:
        os.umask(old)
    assert victim.read_text() == "# private: sinks secret-marker-7f3\n"
    for path in [out / "sweep.json", out / "samples.jsonl", *paths]:
        assert path.is_file() and not path.is_symlink()
        assert oct(path.stat().st_mode & 0o777) == oct(0o640), path  # 0o666 & ~0o027
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


def test_credentials_in_base_urls_never_reach_records(tmp_path, fake_server):
    from workbench.backends.openai_compat import redact_url

    host = fake_server.url.split("://", 1)[1]
    url = f"http://alice:hunter2-secret@{host}"
    _sweep(tmp_path / "run", url)
    text = (tmp_path / "run" / "samples.jsonl").read_text() + (tmp_path / "run" / "sweep.json").read_text()
    assert "hunter2-secret" not in text and "alice" not in text and "***@" in text
    assert redact_url("see https://u:p@h/v1?key=abc&api_key=def#x and http://h/") == \
        "see https://***@h/v1?key=***&api_key=***#x and http://h/"


# -- crafted checkpoints -----------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _raw_safetensors(path: Path, header: dict | bytes, data: bytes = b"") -> None:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def _only_file_of(folder: Path) -> Path:
    return next(folder.glob("*.safetensors"))


def _assert_clean_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert excinfo.type is CheckpointError, excinfo.type
    for needle in needles:
        assert needle in msg, msg
    assert "\\x" not in msg and "\x00" not in msg and "\xff" not in msg and "\x1b" not in msg


CRAFTED_HEADERS = {
    "overlap": ({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                 "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, 8, "overlaps"),
    "gap": ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
             "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}, 6, "gap"),
    "past_end": ({"a": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]}}, 8, "truncated"),
    "negative": ({"a": {"dtype": "U8", "shape": [-2], "data_offsets": [4, 2]}}, 4, "malformed"),
    "reversed": ({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 2]}}, 4, "offsets [4, 2]"),
    "float_shape": ({"a": {"dtype": "U8", "shape": [2.5], "data_offsets": [0, 2]}}, 2, "malformed"),
    "unknown_dtype": ({"a": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 2]}}, 2, "malformed"),
    "not_object": ([1, 2, 3], 0, "not a JSON object"),
    "trailing_bytes": ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, 5, "data area holds 5"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_HEADERS))
def test_crafted_safetensors_headers_give_one_clear_error(tmp_path, tiny_dir, case):
    header, nbytes, needle = CRAFTED_HEADERS[case]
    ckpt = _copy(tiny_dir, tmp_path / "ck")
    bad = ckpt / "extra.safetensors"
    _raw_safetensors(bad, header, b"\xff" * nbytes)
    with pytest.raises(Exception) as excinfo:
        open_checkpoint(ckpt)
    _assert_clean_error(excinfo, str(bad), needle)


def test_out_of_order_but_tiling_offsets_are_valid(tmp_path, tiny_dir):
    ckpt = _copy(tiny_dir, tmp_path / "ck")
    _raw_safetensors(ckpt / "extra.safetensors", {"b": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]},
                                                  "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"abcd")
    assert open_checkpoint(ckpt).layout == "original"  # the format allows any header order


@pytest.mark.parametrize("header", [b"[" * 100_000, b'{"\xff\xfe\x1b]0;pwned\x07": 1}', b"\x1b[2J not json at all"])
def test_hostile_header_bytes_are_never_echoed(tmp_path, tiny_dir, header):
    ckpt = _copy(tiny_dir, tmp_path / "ck")
    bad = ckpt / "extra.safetensors"
    _raw_safetensors(bad, header + b" " * (-len(header) % 8))
    with pytest.raises(Exception) as excinfo:
        open_checkpoint(ckpt)
    _assert_clean_error(excinfo, str(bad), "corrupt header")
    assert "pwned" not in str(excinfo.value) and "not json" not in str(excinfo.value)


def test_a_fifo_named_safetensors_is_refused_not_waited_on(tmp_path, tiny_dir):
    ckpt = _copy(tiny_dir, tmp_path / "ck")
    os.mkfifo(ckpt / "zz.safetensors")
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("error", _error_of(ckpt)), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "loading hung on a FIFO"
    assert isinstance(result["error"], CheckpointError) and "not a regular file" in str(result["error"])


def _error_of(path):
    try:
        open_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - the test inspects what came out
        return e
    return None


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors"])
def test_shard_paths_stay_inside_the_folder(tmp_path, tiny_hf_dir, shard):
    ckpt = _copy(tiny_hf_dir, tmp_path / "hf")
    shutil.copy(next(ckpt.glob("model-*.safetensors")), tmp_path / "outside.safetensors")
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = shard
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="is not a file in") as excinfo:
        open_checkpoint(ckpt)
    _assert_clean_error(excinfo, "model.safetensors.index.json", first)


def test_a_huge_layer_count_fails_before_allocating(tmp_path, tiny_hf_dir):
    ckpt = _copy(tiny_hf_dir, tmp_path / "hf")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_hidden_layers"] = 3_000_000
    cfg.pop("layer_types", None)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="claims 3000000 layers but the safetensors files hold tensors for"):
            open_checkpoint(ckpt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # the old code took 3.4 GB here


@pytest.mark.parametrize("field,value", [("num_attention_heads", 0), ("num_key_value_heads", 0), ("hidden_size", "2880"),
                                         ("num_hidden_layers", 2.5), ("rope_parameters", [1, 2]), ("layer_types", "x"),
                                         ("num_local_experts", None), ("vocab_size", -5)])
def test_malformed_config_values_give_a_checkpoint_error(tmp_path, tiny_hf_dir, field, value):
    ckpt = _copy(tiny_hf_dir, tmp_path / "hf")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg[field] = value
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(ckpt)
    assert "config.json" in str(excinfo.value)


# -- names printed by the CLI ------------------------------------------------------------------------


def test_workbench_info_escapes_control_characters_and_bidi_overrides(tmp_path, tiny_dir):
    ckpt = _copy(tiny_dir, tmp_path / "ck")
    evil = "x\x1b]0;pwned\x07\x1b[2J\u202eevil\u2066name"
    write_safetensors(ckpt / "extra.safetensors", [Entry(evil, torch.uint8, (2,), lambda: torch.zeros(2, dtype=torch.uint8))])
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "info", str(ckpt), "--no-scales"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout and "\u202e" not in proc.stdout
    assert "x\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil\\u2066name" in proc.stdout


def test_cli_errors_escape_hostile_names(tmp_path):
    path = tmp_path / "no\x1b[2Jsuch\u202echeckpoint"
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "info", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "\x1b" not in proc.stderr and "\u202e" not in proc.stderr
    assert "no\\x1b[2Jsuch\\u202echeckpoint" in proc.stderr


# -- the lab manifest -------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest", ["[1, 2]", "null", '"text"', '{"01_tour.ipynb": 5}', "{", "\xff"])
def test_lab_survives_a_damaged_manifest(tmp_path, manifest):
    from workbench.lab import MANIFEST, copy_notebooks, shipped_notebooks

    (tmp_path / MANIFEST).write_bytes(manifest.encode("latin-1"))
    report = copy_notebooks(tmp_path)
    assert sorted(report["copied"]) == sorted(p.name for p in shipped_notebooks())
    assert isinstance(json.loads((tmp_path / MANIFEST).read_text()), dict)
