"""The o200k_base vocabulary for openai-harmony, made offline from the copy quicktok-v1 ships.

openai-harmony downloads ``o200k_base.tiktoken`` unless ``TIKTOKEN_ENCODINGS_BASE`` names a folder
holding it. We never download: in order we use an existing ``TIKTOKEN_ENCODINGS_BASE``, else the file
in the workbench cache if its sha256 is right, else we write it there from quicktok's
``quicktok/data/o200k.vocab`` (little-endian u32 count; per token a u16 byte length, the bytes, a u32
rank), one line per rank ``base64(bytes) rank``, check the hash, and rename it into place.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from importlib import resources
from pathlib import Path

from ..cache import atomic_path, cache_dir

VOCAB_FILE = "o200k_base.tiktoken"
VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


class VocabularyError(RuntimeError):
    """The vocabulary could not be made or failed its checksum."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiktoken_bytes_from_quicktok(data: bytes) -> bytes:
    """Convert quicktok's binary o200k vocabulary into tiktoken's text format (sorted by rank)."""
    if len(data) < 4:
        raise VocabularyError("quicktok o200k.vocab is shorter than its 4-byte header")
    (count,) = struct.unpack_from("<I", data, 0)
    offset, items = 4, []
    try:
        for _ in range(count):
            (length,) = struct.unpack_from("<H", data, offset)
            token = data[offset + 2 : offset + 2 + length]
            (rank,) = struct.unpack_from("<I", data, offset + 2 + length)
            offset += 6 + length
            items.append((rank, token))
    except struct.error as e:
        raise VocabularyError(f"quicktok o200k.vocab is truncated after {len(items)} of {count} tokens") from e
    items.sort()
    return b"".join(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n" for rank, tok in items)


def _quicktok_vocab() -> bytes:
    try:
        return resources.files("quicktok").joinpath("data/o200k.vocab").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise VocabularyError(
            "the o200k vocabulary is not in the cache and quicktok-v1 (which ships it) is not installed: "
            "pip install quicktok-v1"
        ) from e


def write_vocab(folder: Path, source: bytes | None = None, expected_sha256: str = VOCAB_SHA256) -> Path:
    """Write ``folder/o200k_base.tiktoken`` atomically; raise VocabularyError (leaving no file) on a bad hash."""
    text = tiktoken_bytes_from_quicktok(_quicktok_vocab() if source is None else source)
    digest = hashlib.sha256(text).hexdigest()
    if digest != expected_sha256:
        raise VocabularyError(
            f"the o200k vocabulary built from quicktok has sha256 {digest}, expected {expected_sha256}; "
            "nothing was written"
        )
    final = folder / VOCAB_FILE
    with atomic_path(final) as tmp:
        tmp.write_bytes(text)
    return final


def ensure_vocab() -> Path:
    """Return the folder to use as TIKTOKEN_ENCODINGS_BASE, making the vocabulary if needed."""
    existing = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    if existing:
        return Path(existing)
    folder = cache_dir() / "tiktoken"
    path = folder / VOCAB_FILE
    if not (path.is_file() and sha256_of(path) == VOCAB_SHA256):
        write_vocab(folder)  # missing, truncated or corrupt: rebuild
    return folder
