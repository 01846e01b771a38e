"""Tool traces: every tool call of a chat as a ``ToolStep``, JSON-serialisable and loadable into pandas.

>>> step = ToolStep(index=0, generation=0, recipient="python", arguments="print(1)", result="1\\n",
...                 duration=0.05, token_span=(0, 12))
>>> ToolTrace([step]).to_dataframe()[["recipient", "result", "error"]].values.tolist()
[['python', '1\\n', None]]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable


@dataclass
class ToolStep:
    """One tool call: who was called with what, what came back, how long it took, and which tokens asked.

    ``generation`` is the index of the model generation that produced the call; ``token_span`` the
    (first, last) token positions of the call message in that generation's transcript.
    """

    index: int
    generation: int
    recipient: str
    arguments: str
    result: str
    duration: float
    token_span: tuple[int, int] | None = None
    error: str | None = None
    channel: str | None = None
    content_type: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["token_span"] = list(self.token_span) if self.token_span is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ToolStep":
        d = dict(d)
        if d.get("token_span") is not None:
            d["token_span"] = tuple(d["token_span"])
        return cls(**d)

    def __repr__(self) -> str:
        err = f" ERROR {self.error!r}" if self.error else ""
        return f"<ToolStep {self.index} {self.recipient}({self.arguments[:40]!r}) -> {self.result[:40]!r} {self.duration:.3f}s{err}>"


class ToolTrace(list):
    """A list of ``ToolStep`` with JSON and DataFrame views."""

    def __init__(self, steps: Iterable[ToolStep] = ()):
        super().__init__(steps)

    def to_dicts(self) -> list[dict]:
        return [s.to_dict() for s in self]

    def to_json(self) -> str:
        return json.dumps(self.to_dicts(), ensure_ascii=False, default=str)

    @classmethod
    def from_dicts(cls, items: Iterable[dict]) -> "ToolTrace":
        return cls(ToolStep.from_dict(d) for d in items)

    @classmethod
    def from_json(cls, text: str) -> "ToolTrace":
        return cls.from_dicts(json.loads(text))

    def to_dataframe(self):
        import pandas as pd

        columns = ["index", "generation", "recipient", "arguments", "result", "error", "duration", "token_span",
                   "channel", "content_type"]
        return pd.DataFrame([{k: s.to_dict()[k] for k in columns} for s in self], columns=columns)

    def __repr__(self) -> str:
        return f"ToolTrace({len(self)} steps: {', '.join(s.recipient for s in self)})"
