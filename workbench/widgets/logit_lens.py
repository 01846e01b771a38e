"""``LogitLensView``: the logit lens as a grid, stages (embed, 0.mid, 0.post, ...) x token positions,
each cell the most likely next token at that stage.

Reads the DataFrame ``workbench.lens.logit_lens`` returns (columns ``stage``, ``position``,
``top_tokens``, ``top_probs`` and, with a target, ``target_prob``). Sent as binary: ``top_ids`` int32
[stages, positions, k], ``top_probs`` float32 [stages, positions, k], ``target_prob`` float32 [stages,
positions] (empty without a target); ``id_text`` holds the text of every id shown. A cell's background
is 255 - p * (255 - green (22, 163, 74)) with p the top token's probability (``value="top"``) or the
target's (``value="target"``). Hover a cell for its top-k tokens.
"""

from __future__ import annotations

import torch
import traitlets

from ._base import WorkbenchWidget, as_bytes, token_labels


class LogitLensView(WorkbenchWidget):
    """The logit-lens grid of ``table`` (from ``workbench.lens.logit_lens``); ``tokens`` (ids, strings or
    a transcript) label the input positions; ``value`` "top" or "target" picks what colours a cell."""

    _module = "logit_lens"

    stages = traitlets.List(traitlets.Unicode()).tag(sync=True)
    positions = traitlets.List(traitlets.Int()).tag(sync=True)
    k = traitlets.Int(1).tag(sync=True)
    top_ids = traitlets.Bytes(b"").tag(sync=True)
    top_probs = traitlets.Bytes(b"").tag(sync=True)
    target_prob = traitlets.Bytes(b"").tag(sync=True)
    id_text = traitlets.List(traitlets.List()).tag(sync=True)
    value = traitlets.Unicode("top").tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(self, table, tokens=None, *, value: str | None = None, title: str = "", **kwargs):
        missing = [c for c in ("stage", "position", "top_tokens", "top_probs") if c not in table]
        if missing:
            raise ValueError(f"table lacks {missing}: pass what workbench.lens.logit_lens returns")
        stages = list(dict.fromkeys(table["stage"]))
        positions = sorted(set(int(p) for p in table["position"]))
        k = len(table["top_tokens"].iloc[0])
        S, P = len(stages), len(positions)
        ids = torch.zeros((S, P, k), dtype=torch.int32)
        probs = torch.zeros((S, P, k))
        target = torch.zeros((S, P)) if "target_prob" in table else None
        srow, pcol = {s: i for i, s in enumerate(stages)}, {p: i for i, p in enumerate(positions)}
        for row in table.itertuples(index=False):
            i, j = srow[row.stage], pcol[int(row.position)]
            ids[i, j] = torch.tensor(row.top_tokens, dtype=torch.int32)
            probs[i, j] = torch.tensor(row.top_probs)
            if target is not None:
                target[i, j] = float(row.target_prob)
        value = value or ("target" if target is not None else "top")
        if value not in ("top", "target") or (value == "target" and target is None):
            raise ValueError(f"value must be 'top' or (with a target column) 'target', not {value!r}")
        self.table = table
        text = _texts(sorted(set(ids.reshape(-1).tolist())))
        super().__init__(stages=stages, positions=positions, k=k, top_ids=as_bytes(ids, "int32"),
                         top_probs=as_bytes(probs, "float32"),
                         target_prob=as_bytes(target, "float32") if target is not None else b"",
                         id_text=[[i, t] for i, t in text.items()], value=value,
                         labels=_position_labels(tokens, positions), title=title, **kwargs)

    def fallback_text(self) -> str:
        return (f"LogitLensView: {len(self.stages)} stages x {len(self.positions)} positions; top token at the "
                f"last stage: {self.table[self.table.stage == self.stages[-1]].top_tokens.map(lambda t: t[0]).tolist()}")


def _texts(ids: list[int]) -> dict[int, str]:
    from ..harmony import encoding

    enc, out = encoding(), {}
    for i in ids:
        try:
            out[i] = enc.decode([i])
        except Exception:  # noqa: BLE001 - an id the vocabulary cannot decode still gets a label
            out[i] = f"<{i}>"
    return out


def _position_labels(tokens, positions: list[int]) -> list[str]:
    if tokens is None:
        return []
    n = len(tokens.events) if hasattr(tokens, "events") else len(tokens)
    labels = token_labels(tokens, n)
    if positions and max(positions) >= n:
        raise ValueError(f"the table has position {max(positions)} but tokens has {n}")
    return [labels[p] for p in positions]
