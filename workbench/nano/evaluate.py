"""Measure the nano model on held-out tasks, in process, with the real tools in the loop.

``measure(model, family, effort, n)`` asks ``n`` held-out questions (``data.heldout_tasks``: never trained on)
through ``workbench.chat`` with the real ``PythonTool`` and the nano functions declared when the family needs
them, samples at ``temperature`` (1.0 by default: unconstrained sampling, as a user gets it) and returns one
``Record`` per question: the answer's correctness, every generation's Harmony parse errors, the tool calls, and
the probability the model put on ids it was never trained on at each generated step.

>>> model = load_model(nano_checkpoint())                                   # doctest: +SKIP
>>> records = measure(model, "addition", "high", 50)                         # doctest: +SKIP
>>> summarize(records)                                                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import torch

from ..backends import LocalBackend
from ..evals.report import wilson
from ..evals.scorers import numeric
from ..harmony import tokens as T
from . import data


@dataclass
class Record:
    family: str
    effort: str
    question: str
    target: str
    final: str | None
    correct: bool
    stop_reason: str
    generations: int
    clean_generations: int  # generations whose Harmony parse had no error
    parse_errors: list[str]
    tool_calls: list[dict]
    generated_tokens: int
    analysis_tokens: int
    untrained_mass: list[float] = field(repr=False, default_factory=list)  # per generated step

    def to_dict(self) -> dict:
        return asdict(self)


class _ProbeBackend(LocalBackend):
    """LocalBackend that records, at every step, the probability of the ids outside ``trained``."""

    def __init__(self, model, trained: torch.Tensor):
        super().__init__(model)
        self.untrained = torch.ones(model.config.vocab_size, dtype=torch.bool)
        self.untrained[trained] = False
        self.masses: list[float] = []

    def processor(self, prompt):
        def record(generated, logits):
            self.masses.append(float(torch.softmax(logits.float(), -1)[self.untrained].sum()))
            return logits
        return record


def trained_ids(model) -> torch.Tensor:
    """Ids whose unembedding row is not zero: the rows training updated."""
    return (model.unembedding.detach().float().abs().sum(-1) > 0).nonzero()[:, 0]


def score(task: data.Task, final: str | None, trace) -> bool:
    """Whether the final answer is right: the number (addition, counting, python), the weekday named last, the
    greeting given, or for function tasks the tool's result values quoted."""
    if final is None:
        return False
    if task.family in ("addition", "counting", "python"):
        return numeric(rel_tol=0.0)(final, task).correct
    if task.family == "weekday":
        named = re.findall("|".join(data.DAYS), final)
        return bool(named) and named[-1] == task.target
    if task.family == "function":
        calls = [s for s in trace if s.recipient == f"functions.{task.meta['function']}" and not s.error]
        if not calls:
            return False
        result = json.loads(calls[-1].result)
        want = [result["city"], str(result["temperature_c"]), result["conditions"]] if "city" in result else \
            [str(result["result"]), result["to_currency"]]
        return all(w in final for w in want)
    return final.strip() == task.target


def measure(model, family: str, effort: str, n: int, *, seed: int = 0, temperature: float = 1.0,
            max_new_tokens: int = 600, progress: bool = False) -> list[Record]:
    """Ask ``n`` held-out ``family`` questions at ``effort`` (see the module docstring)."""
    from tqdm.auto import tqdm

    from ..toolloop import chat

    backend = _ProbeBackend(model, trained_ids(model))
    python_tool, function_tools = data.tools()
    out = []
    for i, task in enumerate(tqdm(data.heldout_tasks(family, n, seed), desc=f"{family}/{effort}", disable=not progress,
                                  leave=False)):
        conv = data.prompt(task, effort)
        tools = [t for name, t in (("python", python_tool), ("functions", function_tools)) if name in task.tools]
        backend.masses = []
        result = chat(backend, conv, tools=tools, max_turns=4, max_new_tokens=max_new_tokens,
                      temperature=temperature, seed=seed * 1_000_003 + i)
        tokens = [e for t in result.transcripts for e in t.events]
        out.append(Record(
            family, effort, task.question, task.target, result.final, score(task, result.final, result.trace),
            result.stop_reason, len(result.transcripts), sum(not t.errors for t in result.transcripts),
            [f"{e.code}: {e.detail}" for _, e in result.errors],
            [{"recipient": s.recipient, "arguments": s.arguments, "error": s.error, "channel": s.channel}
             for s in result.trace],
            len(tokens), sum(e.channel == "analysis" for e in tokens), list(backend.masses)))
    return out


@dataclass
class Summary:
    family: str
    effort: str
    n: int
    accuracy: float
    low: float
    high: float
    parse_clean: float  # share of generations with zero Harmony errors
    python_call_ok: float | None  # share of questions with a well-formed python call that ran (python family)
    mean_untrained_mass: float
    mean_analysis_tokens: float


def summarize(records: Sequence[Record]) -> list[Summary]:
    """One row per (family, effort): accuracy with its Wilson 95% interval and the other measures."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.family, r.effort), []).append(r)
    rows = []
    for (family, effort), rs in groups.items():
        k = sum(r.correct for r in rs)
        lo, hi = wilson(k, len(rs))
        gens, clean = sum(r.generations for r in rs), sum(r.clean_generations for r in rs)
        masses = [m for r in rs for m in r.untrained_mass]
        py = None
        if family == "python":
            py = sum(any(c["recipient"] == "python" and c["error"] is None for c in r.tool_calls) for r in rs) / len(rs)
        rows.append(Summary(family, effort, len(rs), k / len(rs), lo, hi, clean / max(1, gens), py,
                            sum(masses) / max(1, len(masses)), sum(r.analysis_tokens for r in rs) / len(rs)))
    return rows


def format_summary(rows: Iterable[Summary]) -> str:
    lines = [f"{'family':<9} {'effort':<7} {'n':>4}  {'accuracy':>8}  {'95% Wilson':>15}  {'clean':>6}  "
             f"{'python ok':>9}  {'untrained':>9}  {'analysis':>8}"]
    for r in rows:
        py = "" if r.python_call_ok is None else f"{r.python_call_ok:.1%}"
        lines.append(f"{r.family:<9} {r.effort:<7} {r.n:>4}  {r.accuracy:>8.1%}  [{r.low:6.1%}, {r.high:6.1%}]  "
                     f"{r.parse_clean:>6.1%}  {py:>9}  {r.mean_untrained_mass:>9.1e}  {r.mean_analysis_tokens:>8.1f}")
    return "\n".join(lines)
