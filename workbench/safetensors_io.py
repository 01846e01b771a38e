"""Reading safetensors headers and writing safetensors files one tensor at a time.

Format: an 8-byte little-endian header length N, N bytes of JSON ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}`` (padded with spaces to 8 bytes), then the
raw little-endian data. Our writer streams: it computes the header from shapes, then asks for each
tensor in turn, so a 60 GB checkpoint is written holding one tensor at a time. Output is byte-for-byte
deterministic for the same inputs.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import torch

from .cache import atomic_path

DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file that is truncated, corrupt or not safetensors at all."""


class Entry(NamedTuple):
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    make: Callable[[], torch.Tensor]  # called once, when the writer reaches this tensor


def read_header(path: str | os.PathLike) -> dict[str, dict]:
    """Parse and check a safetensors header as the format requires: a regular file; valid JSON; every
    entry a known dtype, a shape of non-negative ints and ``data_offsets`` [begin, end] holding exactly
    that many bytes; the entries, sorted by offset, tile the data area contiguously from 0 to its end.
    Errors name the file and tensor and never echo the file's raw bytes."""
    path = Path(path)
    try:  # O_NONBLOCK: a FIFO named *.safetensors must not hang us; it is refused below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise SafetensorsError(f"{path}: cannot open ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SafetensorsError(f"{path}: not a regular file")
        size = st.st_size
        raw = f.read(8)
        if len(raw) < 8:
            raise SafetensorsError(f"{path}: file is {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > min(MAX_HEADER, size - 8):
            raise SafetensorsError(f"{path}: header length {n} exceeds the file ({size} bytes): truncated or not safetensors")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except UnicodeDecodeError as e:
            raise SafetensorsError(f"{path}: corrupt header (not UTF-8 at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise SafetensorsError(f"{path}: corrupt header (invalid JSON at byte {e.pos})") from None
        except RecursionError:
            raise SafetensorsError(f"{path}: corrupt header (JSON nested too deeply)") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    spans = []
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            dtype = DTYPES[info["dtype"]]
            shape = info["shape"]
            if not all(type(x) is int and x >= 0 for x in (begin, end, *shape)):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r:.200} has a malformed header entry "
                                   "(needs dtype, shape of non-negative ints, data_offsets [begin, end])") from None
        if end > data_size:
            raise SafetensorsError(
                f"{path}: tensor {name!r:.200} ends at byte {end} of the data but the file holds only {data_size}: truncated"
            )
        if end < begin or end - begin != math.prod(shape) * dtype.itemsize:
            raise SafetensorsError(f"{path}: tensor {name!r:.200} has offsets [{begin}, {end}] for shape {shape} {info['dtype']}")
        spans.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            what = "overlaps the tensor before it" if begin < at else f"leaves a gap at byte {at}"
            raise SafetensorsError(f"{path}: tensor {name!r:.200} starts at byte {begin} and {what} (offsets must tile the data)")
        at = end
    if at != data_size:
        raise SafetensorsError(f"{path}: the tensors end at byte {at} but the data area holds {data_size} bytes")
    return header


def write_safetensors(path: str | os.PathLike, entries: Iterable[Entry], metadata: dict[str, str] | None = None) -> int:
    """Write ``entries`` to ``path`` atomically, one tensor at a time; return the bytes written."""
    entries = list(entries)
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for e in entries:
        nbytes = math.prod(e.shape) * e.dtype.itemsize
        header[e.name] = {"dtype": DTYPE_NAMES[e.dtype], "shape": list(e.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for e in entries:
            t = e.make()
            if t.dtype != e.dtype or tuple(t.shape) != tuple(e.shape):
                raise ValueError(f"{e.name}: made {t.dtype} {list(t.shape)}, declared {e.dtype} {list(e.shape)}")
            f.write(memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
    return 8 + len(blob) + offset
