"""Reports: records as a DataFrame, a summary table with confidence intervals, PNG plots, parquet.

>>> df = load("runs/demo")                                   # doctest: +SKIP
>>> table = summary(df)                                      # doctest: +SKIP
>>> plot_accuracy_vs_effort(table, "runs/demo/accuracy_vs_effort.png")   # doctest: +SKIP

Accuracy is the mean score; its 95% interval is Wilson's score interval, which stays inside [0, 1]
and is sensible at 0 or n correct (unlike mean +- 1.96 standard errors).
"""

from __future__ import annotations

import math
from pathlib import Path

from .logs import FIELDS, KEY_FIELDS, latest_records
from .runner import EFFORTS

SUMMARY_COLUMNS = ["model", "effort", "task", "n", "correct", "accuracy", "ci_low", "ci_high", "errors",
                   "reasoning_tokens", "answer_tokens", "latency", "latency_p50"]


def wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (nan, nan) when n == 0."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes <= 0 else max(0.0, center - half)  # exact at the edges, no rounding dust
    high = 1.0 if successes >= n else min(1.0, center + half)
    return (low, high)


def load(folder):
    """All samples of a sweep folder (or its ``samples.jsonl``) as a DataFrame, one row per key
    (the last record of a key wins). ``effort`` is an ordered categorical: low < medium < high."""
    import pandas as pd

    records = list(latest_records(folder).values())
    df = pd.DataFrame(records)
    for column in FIELDS:
        if column not in df.columns:
            df[column] = pd.Series(dtype=object)
    if len(df):
        df["effort"] = pd.Categorical(df["effort"], categories=_effort_order(df["effort"]), ordered=True)
    return df


def _effort_order(values) -> list[str]:
    seen = [e for e in EFFORTS if e in set(values)]
    return seen + sorted(set(values) - set(seen))


def summary(df):
    """One row per model x effort x task: n, correct, accuracy with its 95% Wilson interval, errors,
    mean reasoning and answer tokens, mean and median latency (s). Errored samples count as wrong."""
    import pandas as pd

    rows = []
    if len(df):
        for (model, effort, task), g in df.groupby(["model", "effort", "task"], observed=True, sort=True):
            n, correct = len(g), float(g["score"].sum())
            low, high = wilson(correct, n)
            rows.append({"model": model, "effort": effort, "task": task, "n": n, "correct": correct,
                         "accuracy": correct / n, "ci_low": low, "ci_high": high,
                         "errors": int(g["error"].notna().sum()),
                         "reasoning_tokens": float(g["reasoning_tokens"].mean()),
                         "answer_tokens": float(g["answer_tokens"].mean()),
                         "latency": float(g["latency"].mean()), "latency_p50": float(g["latency"].median())})
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if len(table):
        table["effort"] = pd.Categorical(table["effort"], categories=_effort_order(table["effort"]), ordered=True)
        table = table.sort_values(["model", "task", "effort"]).reset_index(drop=True)
    return table


def format_summary(table) -> str:
    """The summary as a fixed-width text table (for the terminal)."""
    if not len(table):
        return "(no samples)"
    t = table.copy()
    t["accuracy"] = [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in zip(t["accuracy"], t["ci_low"], t["ci_high"])]
    t["correct"] = t["correct"].map(lambda c: f"{c:g}")
    for c in ("reasoning_tokens", "answer_tokens"):
        t[c] = t[c].map(lambda v: f"{v:.1f}")
    for c in ("latency", "latency_p50"):
        t[c] = t[c].map(lambda v: f"{v:.3f}")
    t = t.drop(columns=["ci_low", "ci_high"]).rename(columns={"accuracy": "accuracy [95% CI]", "latency": "latency_s"})
    return t.to_string(index=False)


def _figure():
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in threads and notebooks

    fig = Figure(figsize=(7, 4.5), dpi=110)
    return fig, fig.add_subplot()


def _save(fig, path) -> Path:
    from workbench.cache import atomic_path  # a fresh temp name: a planted symlink is never written through

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def plot_accuracy_vs_effort(table, path):
    """Accuracy (with its 95% interval) against reasoning effort, one line per model and task; PNG at ``path``."""
    fig, ax = _figure()
    order = list(table["effort"].cat.categories) if len(table) and hasattr(table["effort"], "cat") else list(EFFORTS)
    groups = list(table.groupby(["model", "task"], sort=True))
    for k, ((model, task), g) in enumerate(groups):
        g = g.sort_values("effort")
        shift = (k - (len(groups) - 1) / 2) * 0.04  # side by side, so intervals do not hide each other
        x = [order.index(e) + shift for e in g["effort"]]
        err = [(g["accuracy"] - g["ci_low"]).clip(lower=0), (g["ci_high"] - g["accuracy"]).clip(lower=0)]
        ax.errorbar(x, g["accuracy"], yerr=err, marker="o", capsize=4, label=f"{model} / {task}")
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel("reasoning effort")
    ax.set_ylabel("accuracy (95% Wilson interval)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    if len(table):
        ax.legend(fontsize=8)
    ax.set_title("Accuracy against reasoning effort")
    return _save(fig, path)


def plot_accuracy_vs_tokens(table, path):
    """Accuracy against mean reasoning tokens, one line per model and task, points labelled by effort."""
    fig, ax = _figure()
    for (model, task), g in table.groupby(["model", "task"], sort=True):
        g = g.sort_values("effort")
        ax.plot(g["reasoning_tokens"], g["accuracy"], marker="o", label=f"{model} / {task}")
        for x, y, effort in zip(g["reasoning_tokens"], g["accuracy"], g["effort"]):
            ax.annotate(str(effort), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("mean reasoning tokens per sample")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    if len(table):
        ax.legend(fontsize=8)
    ax.set_title("Accuracy against reasoning tokens")
    return _save(fig, path)


def write_plots(table, folder) -> list[Path]:
    folder = Path(folder)
    return [plot_accuracy_vs_effort(table, folder / "accuracy_vs_effort.png"),
            plot_accuracy_vs_tokens(table, folder / "accuracy_vs_tokens.png")]


def to_parquet(df, path) -> Path:
    """Write records (or a summary) to parquet (needs pyarrow), atomically."""
    from workbench.cache import atomic_path

    path = Path(path)
    df = df.copy()
    if "effort" in df.columns:
        df["effort"] = df["effort"].astype(str)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


__all__ = ["KEY_FIELDS", "load", "summary", "format_summary", "wilson", "plot_accuracy_vs_effort",
           "plot_accuracy_vs_tokens", "write_plots", "to_parquet"]
