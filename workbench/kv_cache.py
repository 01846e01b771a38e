"""The KV cache: keys and values preallocated per layer, sliding layers as ring buffers, positions on the device.

Columns and positions. Each forward call appends T *columns* to the cache, one per input token, padding
included. A column's *position* (what RoPE and the masks use) counts the real tokens of its sequence: with
left padding, sequence b's first real token is at position 0 whatever its column. A padding column is held
with position -1, and no query ever sees it.

Per layer: ``k``, ``v`` [B, C, Hkv, D] (post-RoPE) and ``pos`` [B, C] (the position held in each slot,
-1 = nothing). Full-attention layers put column c in slot c; C grows by doubling when needed, or is fixed
when the cache was made with ``max_len``. Sliding layers (window W) are rings of C = W slots, column c in
slot c % W: a query at position p sees keys p - W < j <= p, so the key a new token overwrites is exactly
the one that just left its window. Nothing is concatenated or reallocated per decode step.

The cache also keeps ``length`` (columns so far) as a host int and, on the device, ``col`` (the same number
as a 0-dim tensor) and ``next_pos`` [B] (the next position of each sequence). A decode step that reads only
those (``LayerCache.write_at``) needs no host-side number, which is what a CUDA graph replay needs.
"""

from __future__ import annotations

import dataclasses

import torch

from .config import ModelConfig

Tensor = torch.Tensor
_INITIAL_CAPACITY = 256  # columns a growable full layer starts with


@dataclasses.dataclass(frozen=True)
class Positions:
    """Where the queries and keys of one attention call sit.

    ``q`` [B or 1, T] and ``k`` [B or 1, S] (int64): the position of each query and key; a key at -1 does not
    exist (padding, an empty cache slot). Query i sees key j iff k_j >= 0, k_j <= q_i and, with a window W,
    q_i - W < k_j.
    ``offset``: when the keys are consecutive columns and query t is key column ``offset + t``, that int
    (fused paths use it to skip key ranges nobody sees); None when the keys are in cache-slot order.
    ``plain``: no key is missing and positions equal columns (no padding anywhere): the mask is then a
    function of ``offset`` and the window alone.
    """

    q: Tensor
    k: Tensor
    offset: int | None
    plain: bool

    @staticmethod
    def columns(T: int, S: int, offset: int, device=None) -> "Positions":
        """The plain layout: S keys at positions 0..S-1, queries at offset..offset+T-1."""
        q = torch.arange(offset, offset + T, device=device)[None]
        return Positions(q, torch.arange(S, device=device)[None], offset, True)

    def visible(self, window: int | None, q_slice: slice = slice(None), k_slice: slice = slice(None)) -> Tensor:
        """Bool [B or 1, T, S]: query i sees key j (restricted to the given query / key ranges)."""
        q, k = self.q[:, q_slice, None], self.k[:, None, k_slice]
        ok = (k >= 0) & (k <= q)
        if window:
            ok &= k > q - window
        return ok


class LayerCache:
    """One layer's keys, values and their positions: k, v [B, C, Hkv, D], pos [B, C] (-1 = empty).

    ``window`` None: a full layer (slot = column); else a ring of ``window`` slots (slot = column % window).
    ``growable``: a full layer's C doubles when a write needs more room (else writing past C is an error).
    """

    def __init__(self, window: int | None, batch: int, capacity: int, growable: bool = True):
        self.window, self.batch, self.growable = window, batch, growable and window is None
        self.capacity = window if window is not None else capacity
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.pos: Tensor | None = None

    def allocate(self, heads: int, head_dim: int, dtype: torch.dtype, device) -> None:
        """Make the buffers (zeros; every slot empty)."""
        shape = (self.batch, self.capacity, heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.pos = torch.full((self.batch, self.capacity), -1, dtype=torch.long, device=device)

    def reset(self) -> None:
        """Forget every key (the buffers stay where they are, so a captured CUDA graph stays valid)."""
        if self.pos is not None:
            self.pos.fill_(-1)

    def _reserve(self, end: int) -> None:
        if end <= self.capacity:
            return
        if not self.growable:
            raise ValueError(f"the KV cache holds {self.capacity} columns (max_len); this call needs {end}. "
                             "Make the cache with a larger max_len")
        old = (self.k, self.v, self.pos)
        self.capacity = max(end, 2 * self.capacity)
        self.allocate(old[0].shape[2], old[0].shape[3], old[0].dtype, old[0].device)
        n = old[0].shape[1]
        self.k[:, :n], self.v[:, :n], self.pos[:, :n] = old

    def update(self, k: Tensor, v: Tensor, pos: Tensor, start: int) -> tuple[Tensor, Tensor, Tensor, int | None]:
        """Write T new columns starting at column ``start`` (host int); return what the new queries attend to.

        k, v [B, T, Hkv, D], pos [B or 1, T] (-1 = padding). Returns (keys [B, S, Hkv, D], values, key
        positions [B or 1, S], offset): ``offset`` is the key index of the first new query's column when
        the keys are in column order, None when they are the ring in slot order (T = 1 on a sliding layer).
        """
        if self.k is None:
            self.allocate(k.shape[2], k.shape[3], k.dtype, k.device)
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)  # (a cache may hold a wider dtype than the model's)
        B, T = k.shape[:2]
        pos = pos.expand(B, T)
        if self.window is None:  # full layer: columns are slots
            end = start + T
            self._reserve(end)
            self.k[:, start:end], self.v[:, start:end], self.pos[:, start:end] = k, v, pos
            return self.k[:, :end], self.v[:, :end], self.pos[:, :end], start
        C = self.capacity
        if T == 1:  # decode: write into the ring, attend to the whole ring (by position)
            s = start % C
            self.k[:, s:s + 1], self.v[:, s:s + 1], self.pos[:, s:s + 1] = k, v, pos
            return self.k, self.v, self.pos, None
        # several tokens: earlier new queries may need keys the later ones push out of the ring, so attend
        # to (the ring's columns in order) + (the new keys), then keep the last C columns
        held = min(start, C)
        order = torch.arange(start - held, start, device=k.device) % C
        keys = torch.cat([self.k[:, order], k], 1)
        values = torch.cat([self.v[:, order], v], 1)
        kpos = torch.cat([self.pos[:, order], pos], 1)
        n = min(T, C)
        slots = torch.arange(start + T - n, start + T, device=k.device) % C
        self.k[:, slots], self.v[:, slots], self.pos[:, slots] = k[:, T - n:], v[:, T - n:], pos[:, T - n:]
        return keys, values, kpos, held

    def write_at(self, k: Tensor, v: Tensor, pos: Tensor, col: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Write one column at the device-side column ``col`` (0-dim int64); no host-side number is read.

        k, v [B, 1, Hkv, D], pos [B, 1]. Returns the whole buffers (keys in slot order, empty ones at -1).
        A full layer must have room (the caller checks ``length < capacity`` on the host).
        """
        slot = (col % self.capacity if self.window is not None else col).view(1)
        self.k.index_copy_(1, slot, k.to(self.k.dtype))
        self.v.index_copy_(1, slot, v.to(self.v.dtype))
        self.pos.index_copy_(1, slot, pos.expand(k.shape[0], 1))
        return self.k, self.v, self.pos

    def select(self, rows: Tensor) -> None:
        """Keep only the sequences ``rows`` (int64 indices), in that order."""
        self.batch = rows.numel()
        if self.k is not None:
            self.k, self.v, self.pos = self.k[rows], self.v[rows], self.pos[rows]

    def held(self) -> Tensor:
        """Number of keys held per sequence [B] (slots with a position)."""
        return (self.pos >= 0).sum(1) if self.pos is not None else torch.zeros(self.batch, dtype=torch.long)


class KVCache:
    """Per-layer caches (``layers``), the columns processed so far (``length``) and per-sequence positions.

    ``max_len``: preallocate full layers for this many columns and never grow (what a CUDA graph needs);
    None: start small and double when needed. ``dtype``/``device``: allocate now (else at the first write).
    """

    def __init__(self, config: ModelConfig, batch: int = 1, *, max_len: int | None = None,
                 dtype: torch.dtype | None = None, device=None):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.batch, self.max_len = batch, max_len
        capacity = max_len if max_len is not None else _INITIAL_CAPACITY
        self.layers = [LayerCache(config.sliding_window if config.is_sliding(i) else None, batch, capacity,
                                  growable=max_len is None) for i in range(config.num_hidden_layers)]
        self.length = 0
        self.padded = False  # some column was padding: positions differ from columns
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.col = torch.zeros((), dtype=torch.long, device=device)
        self.next_pos = torch.zeros(batch, dtype=torch.long, device=device)
        if dtype is not None:
            for layer in self.layers:
                layer.allocate(config.num_key_value_heads, config.head_dim, dtype, device)

    def reset(self) -> None:
        """Empty the cache in place (buffers kept)."""
        self.length, self.padded = 0, False
        self.col.zero_()
        self.next_pos.zero_()
        for layer in self.layers:
            layer.reset()

    def select(self, rows: Tensor) -> None:
        """Keep only the sequences ``rows`` (int64 indices into the batch), in that order: e.g. drop the
        sequences that finished generating. Copies the kept rows once."""
        for layer in self.layers:
            layer.select(rows)
        self.next_pos = self.next_pos[rows]
        self.batch = rows.numel()

    def positions(self, T: int, attention_mask: Tensor | None) -> tuple[Tensor, Tensor, bool]:
        """Positions of T new columns: (query positions [B or 1, T], key positions [B or 1, T] with -1 at
        padding, plain). Advances ``next_pos``; ``length`` and ``col`` advance in ``advance``."""
        if attention_mask is not None:
            late = (self.next_pos > 0) & ~attention_mask.all(1)
            tail = attention_mask[:, :-1] & ~attention_mask[:, 1:]
            if late.any() or tail.any():
                row = int((late | tail.any(1)).nonzero()[0])
                raise ValueError(f"attention_mask row {row}: with a KV cache, padding may only come before a "
                                 "sequence's first token (left padding): the sliding layers' rings hold the last "
                                 "window columns, which must be the last window positions")
        q, k, plain = column_positions(T, attention_mask, None if not self.padded and attention_mask is None
                                       else self.next_pos, self.length, self.next_pos.device)
        self.next_pos += T if attention_mask is None else attention_mask.long().sum(1)
        self.padded |= not plain
        return q, k, plain

    def advance(self, T: int) -> None:
        self.length += T
        self.col += T

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for c in self.layers for t in (c.k, c.v, c.pos) if t is not None)

    def __repr__(self) -> str:
        cap = f", max_len={self.max_len}" if self.max_len is not None else ""
        return f"KVCache(length={self.length}, batch={self.batch}{cap}, {self.nbytes / 2**20:.1f} MiB)"


def column_positions(T: int, attention_mask: Tensor | None, base: Tensor | None, start: int,
                     device) -> tuple[Tensor, Tensor, bool]:
    """Positions of T new columns after ``start`` columns: (q [B or 1, T], k [B or 1, T], plain).

    ``attention_mask`` [B, T] (1 = token, 0 = padding) or None (all tokens). ``base`` [B]: each sequence's
    next position, or None when it equals ``start`` for every sequence (no padding so far). A token's
    position is base + (tokens before it in this call); a padding column gets key position -1 (never seen)
    and, as a query, the position of the token before it (clamped at 0), which only its own output uses.
    """
    if attention_mask is None:
        if base is None:
            p = torch.arange(start, start + T, device=device)[None]
            return p, p, True
        p = base[:, None] + torch.arange(T, device=device)[None]
        return p, p, False
    m = attention_mask.bool()
    q = (m.long().cumsum(1) - 1) + (base[:, None] if base is not None else start)
    k = torch.where(m, q, torch.full_like(q, -1))
    plain = base is None and bool(m.all())
    return q.clamp_min(0), k, plain
