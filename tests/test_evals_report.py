"""Reports on a hand-made log: load (last record per key wins), summary numbers, Wilson intervals, plots, parquet."""

import math

import pandas as pd
import pytest

from workbench.evals import format_summary, load, summary, to_parquet, wilson, write_plots
from workbench.evals.logs import LogWriter


def record(task, sample, effort, score, *, reasoning_tokens=10, latency=1.0, error=None, model="m"):
    return {"task": task, "sample": str(sample), "model": model, "effort": effort, "repeat": 0, "prompt": "q",
            "target": "1", "tokens": [1, 2, 3], "reasoning": "r", "answer": "a", "extracted": "1", "score": score,
            "correct": score == 1.0, "reasoning_tokens": reasoning_tokens, "answer_tokens": 2, "completion_tokens": 3,
            "stop_reason": "return", "parse_errors": [], "latency": latency, "attempts": 1, "backend": "b",
            "error": error, "time": 0.0}


@pytest.fixture
def folder(tmp_path):
    with LogWriter(tmp_path) as log:
        for i in range(10):  # high: 7 of 10 right, 100 reasoning tokens, latency i seconds
            log.write(record("t", i, "high", 1.0 if i < 7 else 0.0, reasoning_tokens=100, latency=float(i)))
        for i in range(4):  # low: 1 of 4 right, one errored sample (wrong) re-run later and right
            log.write(record("t", i, "low", 1.0 if i == 0 else 0.0, error="boom" if i == 3 else None))
        log.write(record("t", 3, "low", 1.0))
        log.write(record("t", 0, "medium", 0.0))
    return tmp_path


def test_wilson_matches_hand_computed_values():
    # p = 0.7, n = 10, z = 1.96: centre (0.7 + 0.19208) / 1.38416, half 1.96 * sqrt(0.021 + 0.0096040) / 1.38416
    low, high = wilson(7, 10)
    assert low == pytest.approx(0.39676, abs=1e-4) and high == pytest.approx(0.89221, abs=1e-4)
    assert wilson(0, 20)[0] == 0.0 and wilson(0, 20)[1] == pytest.approx(0.16113, abs=1e-4)
    assert wilson(20, 20)[0] == pytest.approx(0.83887, abs=1e-4) and wilson(20, 20)[1] == 1.0
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_load_and_summary(folder):
    df = load(folder)
    assert len(df) == 15  # 16 records, the errored one superseded
    assert list(df["effort"].cat.categories) == ["low", "medium", "high"]
    table = summary(df)
    assert list(table["effort"].astype(str)) == ["low", "medium", "high"]
    low, medium, high = (table.iloc[i] for i in range(3))
    assert (low["n"], low["correct"], low["accuracy"], low["errors"]) == (4, 2.0, 0.5, 0)
    assert (medium["n"], medium["accuracy"]) == (1, 0.0)
    assert (high["n"], high["correct"], high["accuracy"]) == (10, 7.0, 0.7)
    assert (high["ci_low"], high["ci_high"]) == pytest.approx(wilson(7, 10))
    assert high["reasoning_tokens"] == 100 and high["latency"] == 4.5 and high["latency_p50"] == 4.5
    text = format_summary(table)
    assert "0.700 [0.397, 0.892]" in text and "accuracy [95% CI]" in text


def test_errors_count_as_wrong(tmp_path):
    with LogWriter(tmp_path) as log:
        log.write(record("t", 0, "low", 0.0, error="ConnectionError"))
        log.write(record("t", 1, "low", 1.0))
    row = summary(load(tmp_path)).iloc[0]
    assert (row["n"], row["accuracy"], row["errors"]) == (2, 0.5, 1)


def test_plots_and_parquet(folder, tmp_path):
    df = load(folder)
    table = summary(df)
    for png in write_plots(table, tmp_path / "plots"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    back = pd.read_parquet(to_parquet(df, tmp_path / "samples.parquet"))
    assert len(back) == 15 and list(back["tokens"].iloc[0]) == [1, 2, 3]
    assert sorted(back["effort"].unique()) == ["high", "low", "medium"]
    assert pd.read_parquet(to_parquet(table, tmp_path / "summary.parquet"))["accuracy"].tolist() == [0.5, 0.0, 0.7]


def test_empty_folder(tmp_path):
    df = load(tmp_path)
    assert len(df) == 0 and "score" in df.columns
    assert len(summary(df)) == 0 and format_summary(summary(df)) == "(no samples)"
