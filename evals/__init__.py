"""Eval sweeps across reasoning efforts (installed as ``workbench.evals``).

- tasks: ``get_task("arithmetic:3")``, built-in generated tasks and file loaders (``datasets``);
- scorers: ``exact``, ``numeric``, ``choice``, ``boxed`` (+ extraction helpers); integers compare exactly;
- ``run_sweep(tasks, models, efforts=..., out=DIR)``: models x efforts x tasks x repeats, resumable;
  models are ``local(path)`` (in-process) or ``server(name, base_urls)`` (OpenAI-compatible servers);
- ``load(DIR)`` -> DataFrame, ``summary(df)``, plots and parquet (``report``);
- ``rescore(DIR)``: score a stored sweep again with the current scorers, without running a model;
- ``record_sweep(DIR, model, names, tasks=...)``: the samples' activations per token, with Harmony labels.

Evals drive backends; they never import widgets.
"""

from .activations import conversation_for_record, record_sweep
from .datasets import aime, gpqa, jsonl
from .logs import KEY_FIELDS, read_records
from .report import (format_summary, load, plot_accuracy_vs_effort, plot_accuracy_vs_tokens, summary, to_parquet,
                     wilson, write_plots)
from .rescore import RescoreResult, rescore
from .runner import EFFORTS, SweepResult, Target, local, plan, run_sweep, server
from .scorers import (Score, Scorer, boxed, choice, exact, extract_boxed, extract_choice, extract_number,
                      model_graded, numeric, read_number)
from .tasks import Sample, Task, generated, get_task, task_names

__all__ = [
    "EFFORTS", "KEY_FIELDS", "model_graded", "RescoreResult", "Sample", "Score", "Scorer", "SweepResult", "Target", "Task", "aime",
    "boxed", "choice", "conversation_for_record", "exact", "extract_boxed", "extract_choice", "extract_number",
    "format_summary", "generated", "get_task", "gpqa", "jsonl", "load", "local", "numeric", "plan",
    "plot_accuracy_vs_effort", "plot_accuracy_vs_tokens", "read_number", "read_records", "record_sweep", "rescore",
    "run_sweep", "server", "summary", "task_names", "to_parquet", "wilson", "write_plots",
]
