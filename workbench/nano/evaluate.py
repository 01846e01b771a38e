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
    tokens: list[int] = field(repr=False, default_factory=list)  # the whole conversation, rendered

    def to_dict(self) -> dict:
        return asdict(self)


def _probe(untrained: torch.Tensor, masses: list[float]):
    """A logits processor that records the probability of the ``untrained`` ids at each step (changes nothing)."""
    def record(generated, logits):
        masses.append(float(torch.softmax(logits.float(), -1)[untrained].sum()))
        return logits
    return record


def trained_ids(model) -> torch.Tensor:
    """Ids whose embedding row is not zero: the rows training updated (see ``nano.ship``)."""
    return (model.embedding.detach().float().abs().sum(-1) > 0).nonzero()[:, 0]


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
            max_new_tokens: int = 600, max_turns: int = 4, batch: int = 32, progress: bool = False) -> list[Record]:
    """Ask ``n`` held-out ``family`` questions at ``effort`` (see the module docstring). The questions run as a
    batch through ``workbench.generate`` (each sequence as if generated alone, with seed ``seed * 1000003 + i``
    in its first turn) and through the tool loop's own turn logic (``toolloop.take_turn``)."""
    from tqdm.auto import tqdm

    from ..generate import generate
    from ..harmony import StreamDecoder
    from ..tools import ToolTrace
    from ..toolloop import collect_tools, take_turn

    python_tool, function_tools = data.tools()
    untrained = torch.ones(model.config.vocab_size, dtype=torch.bool)
    untrained[trained_ids(model)] = False
    tasks = data.heldout_tasks(family, n, seed)
    out: list[Record] = []
    bar = tqdm(total=n, desc=f"{family}/{effort}", disable=not progress, leave=False)
    for first in range(0, n, batch):
        group = list(range(first, min(n, first + batch)))
        convs = {i: data.prompt(tasks[i], effort) for i in group}
        tools = {i: collect_tools([t for name, t in (("python", python_tool), ("functions", function_tools))
                                   if name in tasks[i].tools]) for i in group}
        traces = {i: ToolTrace() for i in group}
        transcripts: dict[int, list] = {i: [] for i in group}
        masses: dict[int, list[float]] = {i: [] for i in group}
        stops: dict[int, str] = {}
        for turn in range(max_turns):
            active = [i for i in group if i not in stops]
            if not active:
                break
            decoders = {i: StreamDecoder("assistant", channels=convs[i].channels,
                                         recipients=convs[i].recipients or None) for i in active}
            for tok in generate(model, [convs[i].render() for i in active], max_new_tokens=max_new_tokens,
                                temperature=temperature, seed=[(seed * 1_000_003 + i) * 16 + turn for i in active],
                                stop_tokens=T.STOP_FOR_ACTIONS,
                                logits_processor=[_probe(untrained, masses[i]) for i in active]):
                decoders[active[tok.sequence]].push(tok.token)
            for i in active:
                transcript = decoders[i].finish()
                transcripts[i].append(transcript)
                stop = take_turn(convs[i], transcript, tools[i], traces[i], turn)
                if stop is not None:
                    stops[i] = stop
        for i in group:
            finals = [t.final for t in transcripts[i] if t.final is not None]
            final = finals[-1] if finals else None
            events = [e for t in transcripts[i] for e in t.events]
            out.append(Record(
                family, effort, tasks[i].question, tasks[i].target, final, score(tasks[i], final, traces[i]),
                stops.get(i, "max_turns"), len(transcripts[i]), sum(not t.errors for t in transcripts[i]),
                [f"{e.code}: {e.detail}" for t in transcripts[i] for e in t.errors],
                [{"recipient": s.recipient, "arguments": s.arguments, "error": s.error, "channel": s.channel,
                  "content_type": s.content_type} for s in traces[i]],
                len(events), sum(e.channel == "analysis" for e in events), masses[i],
                convs[i].render_all(auto_drop_analysis=False)))
            bar.update(1)
    bar.close()
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
