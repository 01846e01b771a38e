"""``SweepView``: an eval sweep's summary (model x effort x task) and any sample's token stream.

>>> df = workbench.evals.load("runs/demo")                            # doctest: +SKIP
>>> SweepView(df, workbench.evals.summary(df), title="runs/demo")      # doctest: +SKIP

The view draws what it is given: the sample records and the summary table that ``workbench.evals``
made (DataFrames, or lists of dicts); it never loads a sweep itself. Click a summary row to list its
samples, a sample to open it.

The summary table shows accuracy with its 95% Wilson interval (as a bar), mean reasoning tokens and
latency per model x effort x task. Clicking a sample shows its prompt, target, extracted answer and its
Harmony token stream coloured by channel (the palette of ``TokenStreamView``). With a kernel the
stream is sent when a sample is opened (``selected``); a static export embeds the streams of the first
``static_streams`` samples. ``token_stream(i)`` gives sample i as a full ``TokenStreamView``.

Model text is inserted with textContent only, like every workbench widget.
"""

from __future__ import annotations

import math
import os

import traitlets

from ._base import WorkbenchWidget

SAMPLE_FIELDS = ("task", "sample", "model", "effort", "repeat", "score", "correct", "target", "extracted",
                 "reasoning_tokens", "answer_tokens", "latency", "stop_reason", "error")


def _plain(v):
    """A JSON-ready scalar (numpy numbers, NaN -> None)."""
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, (int, float, str, bool)) else str(v)


class SweepView(WorkbenchWidget):
    _module = "sweep"

    summary = traitlets.List(traitlets.Dict()).tag(sync=True)
    samples = traitlets.List(traitlets.Dict()).tag(sync=True)
    streams = traitlets.Dict().tag(sync=True)  # str(sample index) -> {prompt, reasoning, answer, tokens: [[text, kind, channel, error]]}
    selected = traitlets.Int(-1).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(self, samples, summary, *, title: str = "", static_streams: int = 200, **kwargs):
        import pandas as pd

        if isinstance(samples, (str, os.PathLike)):
            raise TypeError("SweepView draws data it is given: pass workbench.evals.load(folder) and "
                            "workbench.evals.summary(...) of it, not a folder")
        df = samples if hasattr(samples, "columns") else pd.DataFrame(list(samples))
        self._df = df.reset_index(drop=True)
        self.static_streams = static_streams
        table = summary.to_dict("records") if hasattr(summary, "columns") else list(summary)
        rows = [{k: _plain(v) for k, v in row.items()} for row in table]
        records = [{k: _plain(r.get(k)) for k in SAMPLE_FIELDS} for r in self._df.to_dict("records")]
        super().__init__(summary=rows, samples=records, title=title, **kwargs)
        self.observe(self._open, "selected")

    def _record(self, i: int) -> dict:
        if not 0 <= i < len(self._df):
            raise IndexError(f"sample index {i} out of range (0..{len(self._df) - 1})")
        return self._df.iloc[i].to_dict()

    def transcript(self, i: int):
        """Sample i's completion, parsed (from its logged Harmony token ids)."""
        from ..harmony import parse_tokens

        tokens = self._record(i).get("tokens")
        return parse_tokens([int(t) for t in (tokens if tokens is not None else [])])

    def token_stream(self, i: int):
        """Sample i as a ``TokenStreamView``."""
        from .token_stream import TokenStreamView

        r = self._record(i)
        return TokenStreamView(self.transcript(i), title=f"{r['task']} #{r['sample']} · {r['model']} · {r['effort']}")

    def stream_entry(self, i: int) -> dict:
        r = self._record(i)
        events = self.transcript(i).events
        return {"prompt": _plain(r.get("prompt")), "reasoning": _plain(r.get("reasoning")),
                "answer": _plain(r.get("answer")), "token_level": bool(r.get("token_level", True)),
                "tokens": [[e.text, e.kind, e.channel, e.error] for e in events]}

    def _open(self, change) -> None:
        i = change["new"]
        if 0 <= i < len(self._df) and str(i) not in self.streams:
            self.streams = {**self.streams, str(i): self.stream_entry(i)}

    def static_state(self) -> dict:
        state = super().static_state()
        n = min(len(self._df), self.static_streams)
        state["streams"] = {**{str(i): self.stream_entry(i) for i in range(n)}, **self.streams}
        return state

    def fallback_text(self) -> str:
        lines = [f"SweepView: {len(self.samples)} samples"]
        for r in self.summary:
            lines.append(f"{r['model']} {r['effort']} {r['task']}: {r['accuracy']:.3f} "
                         f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] n={r['n']}")
        return "\n".join(lines)
