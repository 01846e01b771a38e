"""Shared fixtures: an isolated user cache and the built-in "tiny" checkpoints, made once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Every test process gets its own empty cache, so tests never touch (or depend on) the user's.
_CACHE = tempfile.mkdtemp(prefix="workbench-test-cache-")
os.environ["WORKBENCH_CACHE"] = _CACHE
os.environ.pop("TIKTOKEN_ENCODINGS_BASE", None)


@pytest.fixture(scope="session")
def cache_root() -> Path:
    return Path(_CACHE)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """The "tiny" preset, original layout, seed 0."""
    from workbench import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-original"), preset="tiny", layout="original")


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    """The "tiny" preset, Hugging Face layout (sharded, MXFP4 experts), seed 0: the same weights."""
    from workbench import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-hf"), preset="tiny", layout="hf")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny-model ops are too small to gain from threads; on a busy 2-core machine OpenMP waits dominate.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def m32(tiny_dir):
    """The tiny model in fp32 (session-wide: tests must not modify it)."""
    import torch

    from workbench import load_model

    return load_model(tiny_dir, dtype=torch.float32)
