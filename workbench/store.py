"""Activation stores: chosen hook points, per token, with Harmony labels, in sharded files on disk.

>>> store = record_activations(model, conversations, "acts/", names=["blocks.*.resid_post"])  # doctest: +SKIP
>>> store.labels                                  # one row per stored token: key, position, role, channel, ...  # doctest: +SKIP
>>> x = store["blocks.3.resid_post"]              # lazy: memory-mapped shards, nothing read yet         # doctest: +SKIP
>>> x[store.labels.channel == "final"]            # reads only those rows                                  # doctest: +SKIP

Layout of a store folder:

    store.json                      names, per-token shapes and dtypes, model description (written once)
    shard-00000.safetensors         one tensor per hook point, [rows, ...] (token axis first)
    shard-00000.parquet             one label row per token (same order)
    shard-00000.json                the shard's commit marker: its keys and row count, written last

Every file is written to a temporary name, fsynced and renamed, and a shard counts only once its marker
exists, so a writer killed at any moment (SIGKILL included) leaves whole shards and at worst some
unmarked files that the next writer overwrites. Resuming skips the keys the marked shards hold: nothing
is lost or stored twice. A lock file keeps two writers out of one folder (as the eval sweep logs do).

Hook points with a key axis (``attn.scores``, ``attn.probs``: [Hq, T, S]) vary in size per sequence and
cannot be stored per token; every other point can (``attn.sink_prob`` [Hq, T] is stored as [T, Hq]).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch

from . import hooks
from .cache import atomic_path
from .safetensors_io import DTYPE_NAMES, Entry, write_safetensors

Tensor = torch.Tensor
FORMAT = 1
_SHARD = "shard-{:05d}"


class StoreError(ValueError):
    """A store folder that does not match what is asked of it (other names, another format)."""


def per_token_shape(name: str, config) -> tuple[int, ...]:
    """The shape of one token's row of hook point ``name`` (its dims without T), or a StoreError for
    points whose size depends on the sequence (a key axis S)."""
    p = hooks.point(name)
    if "S" in p.dims:
        raise StoreError(f"{name} has a key axis {list(p.dims)}: its size varies per sequence, so it cannot be "
                         f"stored per token (store attn.z, attn.sink_prob or the residual instead)")
    shape = p.shape(config, 1)
    return tuple(s for d, s in zip(p.dims, shape) if d != "T")


def rows_of(t: Tensor, name: str) -> Tensor:
    """An unbatched activation with its token axis moved first: [T, ...]."""
    return t.movedim(hooks.token_axis(name), 0)


# ================================================================================================
# writing
# ================================================================================================

class StoreWriter:
    """Appends sequences to a store folder in shards of about ``shard_bytes``; resumes an existing one.

    ``add(key, activations, labels)`` buffers one sequence (activations: name -> unbatched tensor as the
    hook point gives it; labels: a DataFrame with one row per token); a shard is written when the buffer
    reaches ``shard_bytes`` and on ``close()``. ``done`` holds the keys already stored. Thread-safe.
    """

    def __init__(self, folder, names: Sequence[str], *, config, dtype: torch.dtype | None = None,
                 shard_bytes: int = 256 << 20, meta: Mapping[str, Any] | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"another writer holds the activation store {self.folder}") from None
        try:
            self._open(names, config, dtype, shard_bytes, meta)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self, names, config, dtype, shard_bytes, meta) -> None:
        for stale in self.folder.glob(".shard-*.tmp"):  # a killed writer's half-written file (we hold the lock)
            stale.unlink()
        self.names = list(names)
        self.shapes = {n: per_token_shape(n, config) for n in self.names}
        self.dtype = dtype
        self.shard_bytes = shard_bytes
        self._check_or_write_spec(config, meta or {})
        self.done: set[str] = set()
        self._next = 0
        for marker in _markers(self.folder):
            self.done.update(json.loads(marker.read_text())["keys"])
            self._next = max(self._next, int(marker.stem.split("-")[1]) + 1)
        self._buffer: list[tuple[str, dict[str, Tensor], Any]] = []
        self._buffered = 0
        self._lock = threading.Lock()

    def _check_or_write_spec(self, config, meta) -> None:
        spec_path = self.folder / "store.json"
        spec = {"format": FORMAT, "names": self.names, "shapes": {n: list(s) for n, s in self.shapes.items()},
                "dtype": DTYPE_NAMES[self.dtype] if self.dtype else None, "config": config.to_original_json(),
                **dict(meta)}
        if spec_path.exists():
            old = json.loads(spec_path.read_text())
            for field in ("format", "names", "shapes", "dtype"):
                if old.get(field) != spec[field]:
                    raise StoreError(f"{self.folder} was written with {field}={old.get(field)!r}; this run asks "
                                     f"for {spec[field]!r}. Use another folder or the same settings.")
            return
        with atomic_path(spec_path) as tmp:
            tmp.write_text(json.dumps(spec, indent=1))

    def add(self, key: str, activations: Mapping[str, Tensor], labels) -> None:
        key = str(key)
        rows = {}
        for name in self.names:
            if name not in activations:
                raise KeyError(f"sequence {key!r} lacks {name}; trace it")
            r = rows_of(activations[name].detach().to("cpu"), name)
            if tuple(r.shape[1:]) != self.shapes[name]:
                raise ValueError(f"{name} of sequence {key!r} has per-token shape {list(r.shape[1:])}, the store "
                                 f"holds {list(self.shapes[name])}")
            rows[name] = r.to(self.dtype) if self.dtype else r
        T = {r.shape[0] for r in rows.values()}
        if len(T) > 1 or (T and len(labels) not in T):
            raise ValueError(f"sequence {key!r}: {len(labels)} label rows for activations of {sorted(T)} tokens")
        with self._lock:
            if key in self.done or any(k == key for k, _, _ in self._buffer):
                raise ValueError(f"key {key!r} is already in the store")
            self._buffer.append((key, rows, labels))
            self._buffered += sum(r.nbytes for r in rows.values())
            if self._buffered >= self.shard_bytes:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        import pandas as pd

        base = self.folder / _SHARD.format(self._next)
        keys = [k for k, _, _ in self._buffer]
        tensors = {n: torch.cat([rows[n] for _, rows, _ in self._buffer]) for n in self.names}
        labels = pd.concat([lab.assign(key=k) for k, _, lab in self._buffer], ignore_index=True)
        write_safetensors(base.with_suffix(".safetensors"),
                          [Entry(n, t.dtype, tuple(t.shape), (lambda t=t: t)) for n, t in tensors.items()])
        with atomic_path(base.with_suffix(".parquet")) as tmp:
            labels.to_parquet(tmp, index=False)
        with atomic_path(base.with_suffix(".json")) as tmp:  # the commit point
            tmp.write_text(json.dumps({"keys": keys, "rows": len(labels)}))
        self.done.update(keys)
        self._next += 1
        self._buffer, self._buffered = [], 0

    def close(self) -> None:
        if self._lock_fd is None:
            return
        try:
            self.flush()
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _markers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("shard-*.json") if p.stem.split("-")[1].isdigit())


def resolve_names(model, names) -> list[str]:
    """Concrete hook names (in forward order) from names, globs or a predicate; points with a key axis
    are refused with a StoreError."""
    keep = hooks.name_filter(names, model.hook_names())
    chosen = [n for n in model.hook_names() if keep(n)]
    if not chosen:
        raise ValueError(f"names {names!r} select no hook point")
    for n in chosen:
        per_token_shape(n, model.config)
    return chosen


def _item(item) -> tuple[list[int], int, str | None, dict]:
    """(tokens, prompt length, effort, extra label columns) from a Conversation, (conversation or prompt
    ids, completion ids) or (.., .., extra dict)."""
    extra: dict = {}
    if isinstance(item, tuple):
        if len(item) == 3:
            conv, completion, extra = item
        elif len(item) == 2:
            conv, completion = item
        else:
            raise TypeError(f"an item is a Conversation or (conversation, completion[, extra]); got {len(item)} parts")
    else:
        conv, completion = item, ()
    if hasattr(conv, "render"):
        prompt, effort = conv.render(), conv.reasoning_effort
    else:
        prompt, effort = [int(t) for t in conv], None
    return prompt + [int(t) for t in completion], len(prompt), effort, dict(extra)


def record_activations(model, items: Iterable, folder, names, *, keys: Iterable[str] | None = None,
                       dtype: torch.dtype | None = None, shard_bytes: int = 256 << 20, progress: bool = True,
                       meta: Mapping[str, Any] | None = None) -> "ActivationStore":
    """Run each item through ``model`` and store hook points ``names`` per token with Harmony labels.

    ``items``: ``Conversation``s (the rendered prompt is run), ``(conversation, completion_ids)`` pairs or
    ``(conversation, completion_ids, extra)`` with ``extra`` a dict of label columns (e.g. an eval
    record's task, sample, correct). ``keys``: one unique string per item (default "0", "1", ...).
    Resumes: items whose key is already stored are skipped. ``dtype`` converts (e.g. torch.float16 to
    halve a bf16/fp32 store); default keeps the hook point's dtype. Returns the ``ActivationStore``.
    """
    from .harmony_stats import token_labels

    chosen = resolve_names(model, names)
    writer = StoreWriter(folder, chosen, config=model.config, dtype=dtype, shard_bytes=shard_bytes,
                         meta={"model": getattr(model, "checkpoint_path", None) and str(model.checkpoint_path),
                               **dict(meta or {})})
    items = list(items)
    keys = [str(i) for i in range(len(items))] if keys is None else [str(k) for k in keys]
    if len(keys) != len(items):
        raise ValueError(f"{len(keys)} keys for {len(items)} items")
    if len(set(keys)) != len(keys):
        raise ValueError("keys must be unique")
    todo = [(k, it) for k, it in zip(keys, items) if k not in writer.done]
    bar = _progress(len(todo), len(items) - len(todo), progress)
    with writer, torch.no_grad():
        for n, (key, item) in enumerate(todo):
            tokens, prompt_length, effort, extra = _item(item)
            _, trace = model.run_with_trace(torch.tensor(tokens), names=chosen, last_only="logits" not in chosen)
            labels = token_labels(tokens, prompt_length=prompt_length, effort=effort).assign(**extra)
            writer.add(key, trace, labels)
            bar.update(1)
    bar.close()
    return ActivationStore(folder)


def _progress(total: int, skipped: int, enabled: bool):
    from .progress import progress

    return progress(total=total, desc=f"activations ({skipped} already stored)" if skipped else "activations",
                    unit="seq", quiet=not enabled)


# ================================================================================================
# reading
# ================================================================================================

class StoredTensor:
    """One hook point across every shard, memory-mapped: nothing is read until rows are indexed.

    ``len``, ``shape`` and ``dtype`` come from the headers. ``x[rows]`` (an int, a slice, a list or
    LongTensor of row numbers, or a boolean mask such as ``store.labels.channel == "final"``) returns a
    torch tensor of just those rows; ``x.shards()`` yields the per-shard memory-mapped tensors;
    ``x.load()`` reads everything.
    """

    def __init__(self, name: str, parts: list[Tensor]):
        self.name, self._parts = name, parts
        self._starts = [0]
        for p in parts:
            self._starts.append(self._starts[-1] + p.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._starts[-1], *self._parts[0].shape[1:]) if self._parts else (0,)

    @property
    def dtype(self) -> torch.dtype:
        return self._parts[0].dtype if self._parts else torch.float32

    def __len__(self) -> int:
        return self._starts[-1]

    def shards(self) -> Iterator[Tensor]:
        return iter(self._parts)

    def load(self) -> Tensor:
        return torch.cat(self._parts) if self._parts else torch.empty(0)

    def __getitem__(self, index) -> Tensor:
        n = len(self)
        if isinstance(index, int):
            if not -n <= index < n:
                raise IndexError(f"row {index} is out of range for {n} rows")
            return self[[index % n]][0]
        if isinstance(index, slice):
            rows = torch.arange(n)[index]
        else:
            if hasattr(index, "to_numpy"):  # a pandas Series (mask or row numbers)
                index = index.to_numpy().copy()
            rows = torch.as_tensor(index)
            if rows.dtype == torch.bool:
                if rows.shape != (n,):
                    raise IndexError(f"a boolean mask needs {n} entries, got {list(rows.shape)}")
                rows = rows.nonzero()[:, 0]
            rows = rows.long().reshape(-1)
            if rows.numel() and not (-n <= int(rows.min()) and int(rows.max()) < n):
                raise IndexError(f"rows out of range for {n} rows")
            rows = rows % max(n, 1)
        starts = torch.tensor(self._starts)
        shard = torch.bucketize(rows, starts[1:], right=True)
        out = torch.empty((rows.numel(), *self.shape[1:]), dtype=self.dtype)
        for s in shard.unique().tolist():
            sel = shard == s
            out[sel] = self._parts[s][rows[sel] - self._starts[s]]
        return out

    def __repr__(self) -> str:
        return (f"StoredTensor({self.name!r}, {list(self.shape)}, {str(self.dtype).replace('torch.', '')}, "
                f"{len(self._parts)} shards, memory-mapped)")


class ActivationStore:
    """A store folder, read lazily: ``labels`` (a DataFrame, one row per stored token, in row order),
    ``store[name]`` (a ``StoredTensor``), ``keys``, ``names``, ``frame(name, rows)``."""

    def __init__(self, folder):
        from safetensors import safe_open

        self.folder = Path(folder)
        spec_path = self.folder / "store.json"
        if not spec_path.exists():
            raise StoreError(f"{self.folder} is not an activation store (no store.json)")
        self.spec = json.loads(spec_path.read_text())
        if self.spec.get("format") != FORMAT:
            raise StoreError(f"{self.folder}: store format {self.spec.get('format')!r}, this reader knows {FORMAT}")
        self.names: list[str] = self.spec["names"]
        self._markers = _markers(self.folder)
        self._handles = [safe_open(str(m.with_suffix(".safetensors")), framework="pt") for m in self._markers]
        self._labels = None

    @property
    def keys(self) -> list[str]:
        return [k for m in self._markers for k in json.loads(m.read_text())["keys"]]

    @property
    def labels(self):
        """One row per stored token (``row`` = its row number in every ``store[name]``); read on first use."""
        if self._labels is None:
            import pandas as pd

            frames = [pd.read_parquet(m.with_suffix(".parquet")) for m in self._markers]
            df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
            df.insert(0, "row", range(len(df)))
            self._labels = df
        return self._labels

    def __getitem__(self, name: str) -> StoredTensor:
        if name not in self.names:
            raise KeyError(f"{name!r} is not in this store; it holds {', '.join(self.names)}")
        return StoredTensor(name, [h.get_tensor(name) for h in self._handles])

    def __contains__(self, name) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return sum(json.loads(m.read_text())["rows"] for m in self._markers)

    @property
    def nbytes(self) -> int:
        return sum(m.with_suffix(s).stat().st_size for m in self._markers for s in (".safetensors", ".parquet"))

    def frame(self, name: str, rows=None):
        """A DataFrame of the labels of ``rows`` (a mask or row numbers; default all) with the activation
        flattened into columns ``name[0]``, ``name[1]``, ... (reads only those rows)."""
        import pandas as pd

        labels = self.labels if rows is None else self.labels[rows] if _is_mask(rows, len(self.labels)) \
            else self.labels.iloc[list(rows)]
        values = self[name][torch.tensor(labels["row"].to_numpy())].float().reshape(len(labels), -1)
        cols = pd.DataFrame(values.numpy(), columns=[f"{name}[{i}]" for i in range(values.shape[1])],
                            index=labels.index)
        return pd.concat([labels, cols], axis=1)

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.folder)!r}, {len(self.keys)} sequences, {len(self)} tokens, "
                f"{len(self._markers)} shards, {self.nbytes / 2**20:.1f} MiB; {', '.join(self.names)})")


def _is_mask(rows, n: int) -> bool:
    dtype = getattr(rows, "dtype", None)
    return dtype is not None and str(dtype) == "bool" and len(rows) == n
