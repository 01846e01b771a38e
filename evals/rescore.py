"""Re-score a stored sweep with the current scorers, without running the model again (as inspect_ai's
``inspect score`` does), so sweeps scored by an older, wrong scorer can be corrected.

>>> result = rescore("runs/demo")                    # doctest: +SKIP
>>> result                                           # doctest: +SKIP
RescoreResult('runs/demo': 600 records, 600 scored again, 4 changed (0 now right, 4 now wrong), written)
>>> result.frame()                                   # doctest: +SKIP  (one row per changed record)

Each record's stored final answer (its ``answer`` field; None for a sample that failed) is scored again
by its task's current scorer. A record whose score, correctness, extracted answer or target changes
is rewritten with the new values and the name of the scorer, and what it had before is appended to
its ``rescored_from`` list (score, correct, extracted, target, scorer, time), so no earlier score is
lost; a record that does not change stays byte for byte. The log is rewritten whole into a temp file
that replaces it in one rename, under the sweep folder's lock (a sweep writing the folder makes
``rescore`` refuse), so a crash leaves the old log or the new one, never half of each.

Tasks are found by name: a built-in task's name (``arithmetic:3@7``) is its own spec; a file task
needs its spec (``tasks=["gpqa:data/gpqa.csv"]``), whose task name must match the logged one. A sample
is regenerated from its task when the task still asks the question the record holds (then the current
target counts: a target fixed since the sweep is picked up); otherwise the record's own question and
target are scored. Records whose task resolves to nothing are left alone and counted in ``unresolved``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .logs import KEY_FIELDS, lock_log, log_path, replace_log
from .tasks import GENERATED, Sample, Task, get_task

SCORE_FIELDS = ("score", "correct", "extracted", "target", "scorer")


@dataclass
class RescoreResult:
    """What ``rescore`` did: ``changes`` holds one dict per changed record (its key, then ``old_*`` and
    new score, correct, extracted and target); ``unresolved`` counts records per task name not found."""

    out: Path
    records: int = 0
    scored: int = 0
    changes: list[dict] = field(default_factory=list)
    unresolved: dict[str, int] = field(default_factory=dict)
    written: bool = False

    @property
    def now_right(self) -> int:
        return sum(c["correct"] and not c["old_correct"] for c in self.changes)

    @property
    def now_wrong(self) -> int:
        return sum(c["old_correct"] and not c["correct"] for c in self.changes)

    def frame(self):
        """The changes as a DataFrame (one row per changed record)."""
        import pandas as pd

        columns = [*KEY_FIELDS, "old_score", "score", "old_correct", "correct", "old_extracted", "extracted",
                   "old_target", "target"]
        return pd.DataFrame(self.changes, columns=columns)

    def __repr__(self) -> str:
        missing = "".join(f", {n} of task {t!r} not found" for t, n in sorted(self.unresolved.items()))
        state = "written" if self.written else ("nothing to write" if not self.changes else "dry run, not written")
        return (f"RescoreResult({str(self.out)!r}: {self.records} records, {self.scored} scored again, "
                f"{len(self.changes)} changed ({self.now_right} now right, {self.now_wrong} now wrong){missing}, "
                f"{state})")


class _Tasks:
    """Task name -> Task (given specs first, then built-in names), and their samples by (repeat, id)."""

    def __init__(self, specs: Iterable[str | Task], seed: int):
        self.by_name: dict[str, Task | None] = {}
        for spec in specs:
            task = get_task(spec, seed=seed)
            self.by_name[task.name] = task
        self._samples: dict[tuple[str, int], dict[str, Sample]] = {}

    def task(self, name: str) -> Task | None:
        if name not in self.by_name:  # only a built-in name is a spec ('jsonl:nums' names no file)
            task = None
            if name.partition(":")[0].partition("@")[0] in GENERATED:
                try:
                    task = get_task(name)
                except ValueError:
                    pass
            self.by_name[name] = task if task is not None and task.name == name else None
        return self.by_name[name]

    def sample(self, task: Task, record: dict) -> Sample:
        key = (task.name, int(record["repeat"]))
        if key not in self._samples:
            self._samples[key] = {s.id: s for s in task.samples(int(record["repeat"]))}
        sample = self._samples[key].get(str(record["sample"]))
        if sample is not None and task.prompt(sample) == record.get("prompt"):
            return sample
        return Sample(str(record["sample"]), str(record.get("prompt") or ""), str(record["target"]))


def rescore(out, tasks: Iterable[str | Task] = (), *, seed: int | None = None, dry_run: bool = False) -> RescoreResult:
    """Score every record of the sweep in ``out`` again with its task's current scorer; see the module
    docstring. ``tasks``: specs or Tasks for file tasks (built-in ones resolve by name); ``seed``: the
    seed for those specs (default: the sweep's, from ``sweep.json``); ``dry_run``: report, write nothing."""
    path = log_path(out)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no sweep log to re-score")
    if seed is None:
        config = path.with_name("sweep.json")
        seed = int(json.loads(config.read_text()).get("seed", 0)) if config.exists() else 0
    resolver = _Tasks(tasks, seed)
    result = RescoreResult(Path(out))
    lock = lock_log(path)
    try:
        lines = path.read_bytes().split(b"\n")
        for i, line in enumerate(lines[:-1]):  # the last piece has no newline: empty, or a torn record
            record = _record(line)
            if record is None:
                continue
            result.records += 1
            task = resolver.task(str(record["task"]))
            if task is None:
                result.unresolved[str(record["task"])] = result.unresolved.get(str(record["task"]), 0) + 1
                continue
            new = _rescored(record, task, resolver.sample(task, record))
            result.scored += 1
            if new is not None:
                lines[i] = json.dumps(new, ensure_ascii=False, allow_nan=False).encode()
                result.changes.append({**{k: record[k] for k in KEY_FIELDS},
                                       **{f"old_{k}": record.get(k) for k in SCORE_FIELDS[:4]},
                                       **{k: new[k] for k in SCORE_FIELDS[:4]}})
        if result.changes and not dry_run:
            replace_log(path, b"\n".join(lines))
            result.written = True
    finally:
        os.close(lock)
    return result


def _record(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # blank or corrupt: kept as it is
    return record if isinstance(record, dict) and all(k in record for k in KEY_FIELDS) else None


def _rescored(record: dict, task: Task, sample: Sample) -> dict | None:
    """The record scored again, or None when nothing changes."""
    score = task.scorer(record.get("answer"), sample)
    now = {"score": float(score.value), "correct": bool(score.correct), "extracted": score.answer,
           "target": sample.target}
    if all(record.get(k) == v for k, v in now.items()):
        return None
    before = {k: record.get(k) for k in SCORE_FIELDS}
    before["time"] = record.get("rescored_at", record.get("time"))
    new = {**record, **now, "scorer": repr(task.scorer), "rescored_at": time.time()}
    new["rescored_from"] = [*record.get("rescored_from", []), before]
    return new
