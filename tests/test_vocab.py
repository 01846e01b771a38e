"""The offline Harmony vocabulary: built from quicktok, checked by sha256, atomic under concurrency."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.harmony import vocab

SPECIALS = {"<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002, "<|constrain|>": 200003,
            "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008, "<|call|>": 200012}


def _run(code: str, cache: Path, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_ENCODINGS_BASE"} | {"WORKBENCH_CACHE": str(cache)} | env
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)


def test_encoding_from_empty_cache_has_the_special_ids(tmp_path):
    r = _run("import workbench.harmony as h; e = h.encoding(); "
             "print({t: e.encode(t, allowed_special='all') for t in %r})" % list(SPECIALS), tmp_path)
    assert r.returncode == 0, r.stderr
    assert eval(r.stdout) == {t: [i] for t, i in SPECIALS.items()}
    written = tmp_path / "tiktoken" / vocab.VOCAB_FILE
    assert hashlib.sha256(written.read_bytes()).hexdigest() == vocab.VOCAB_SHA256


def test_truncated_cache_file_is_rebuilt(tmp_path):
    folder = tmp_path / "tiktoken"
    path = vocab.write_vocab(folder)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])
    r = _run("import workbench.harmony as h; print(h.encoding().encode('hello world'))", tmp_path)
    assert r.returncode == 0, r.stderr
    assert path.read_bytes() == good


def test_wrong_hash_is_a_clear_error_and_leaves_no_file(tmp_path):
    with pytest.raises(vocab.VocabularyError, match="sha256"):
        vocab.write_vocab(tmp_path, expected_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_truncated_source_is_a_clear_error(tmp_path):
    data = (Path(__import__("quicktok").__file__).parent / "data" / "o200k.vocab").read_bytes()
    with pytest.raises(vocab.VocabularyError, match="truncated"):
        vocab.write_vocab(tmp_path, source=data[:1000])
    assert list(tmp_path.iterdir()) == []


def test_concurrent_first_calls_do_not_corrupt_the_cache(tmp_path):
    code = "import workbench.harmony as h; assert h.encoding().encode('<|start|>', allowed_special='all') == [200006]"
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_ENCODINGS_BASE"} | {"WORKBENCH_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE) for _ in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs), [p.stderr.read() for p in procs]
    files = sorted(p.name for p in (tmp_path / "tiktoken").iterdir())
    assert files == [vocab.VOCAB_FILE]  # no temp files left behind
    assert vocab.sha256_of(tmp_path / "tiktoken" / vocab.VOCAB_FILE) == vocab.VOCAB_SHA256


def test_existing_tiktoken_encodings_base_is_used(tmp_path):
    folder = tmp_path / "mine"
    vocab.write_vocab(folder)
    r = _run("import workbench.harmony as h; print(h.encoding().encode('hi'))", tmp_path / "cache",
             TIKTOKEN_ENCODINGS_BASE=str(folder))
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "cache" / "tiktoken").exists()
