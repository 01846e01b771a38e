"""Activations of a sweep's samples: each finished record's conversation + completion, run through an
in-process model, stored per token with Harmony labels and the record's fields (``workbench.store``).

>>> store = record_sweep("runs/tiny", model, ["blocks.*.moe.expert_idx", "blocks.*.resid_post"],   # doctest: +SKIP
...                      tasks=["arithmetic"])
>>> store.labels.groupby(["effort", "channel", "correct"]).size()                                  # doctest: +SKIP

The prompt is rebuilt exactly as the sweep built it (``runner.conversation``) and checked against the
record's prompt text; the completion is the record's token ids. Keys are the record keys joined with
"/", so re-running (after a kill, or after the sweep grew) stores only what is missing. Records with an
error or without token ids (text-only servers) are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .logs import KEY_FIELDS, latest_records
from .runner import conversation
from .tasks import Task, get_task

LABEL_FIELDS = ("task", "sample", "model", "repeat", "correct", "score")
"""Record fields added to every stored token's labels (``effort`` comes with the Harmony labels)."""


def record_sweep(out, model, names, *, tasks: Iterable[str | Task], model_name: str | None = None,
                 folder=None, dtype=None, shard_bytes: int = 256 << 20, seed: int = 0, progress: bool = True):
    """Store ``names`` for every finished record of sweep ``out`` made by ``model_name`` (default: every
    record). ``model``: the loaded model (or a ``LocalBackend``) that made them; ``tasks``: the sweep's
    tasks (names or ``Task``s, ``seed`` as the sweep's). ``folder``: default ``out/activations``.
    Returns the ``ActivationStore``."""
    from workbench.store import record_activations

    model = getattr(model, "model", model)  # a LocalBackend holds its model
    by_name = {t.name: t for t in (get_task(t, seed=seed) for t in tasks)}
    items, keys = [], []
    for record in latest_records(out).values():
        if (model_name is not None and record["model"] != model_name) or record.get("error") or not record.get("tokens"):
            continue
        task = by_name.get(record["task"])
        if task is None:
            raise ValueError(f"the sweep has records of task {record['task']!r}; pass it in tasks=")
        conv = conversation_for_record(task, record)
        items.append((conv, record["tokens"], {f: record.get(f) for f in LABEL_FIELDS}))
        keys.append("/".join(str(record[k]) for k in KEY_FIELDS))
    return record_activations(model, items, Path(folder) if folder else Path(out) / "activations", names,
                              keys=keys, dtype=dtype, shard_bytes=shard_bytes, progress=progress,
                              meta={"sweep": str(out)})


def conversation_for_record(task: Task, record: dict):
    """The conversation a sweep record's completion answered, rebuilt as the sweep built it; a ValueError
    if the task no longer has that sample or now asks another question (the task or its seed changed)."""
    for sample in task.samples(record["repeat"], None):
        if sample.id == record["sample"]:
            break
    else:
        raise ValueError(f"task {task.name!r} has no sample {record['sample']!r} (repeat {record['repeat']})")
    if task.prompt(sample) != record["prompt"]:
        raise ValueError(f"task {task.name!r} sample {sample.id!r} now asks another question than the sweep "
                         f"recorded; the task (or its seed) changed")
    return conversation(task, sample, record["effort"])
