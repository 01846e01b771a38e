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
