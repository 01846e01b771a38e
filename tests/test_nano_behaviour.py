"""The shipped nano model's behaviour on held-out questions, with smaller n than benchmarks/nano.py (fast): it
writes clean Harmony unconstrained at temperature 1, works harder and gets more right at higher reasoning
effort, calls the real python tool and functions correctly, and keeps its probability on trained ids.

Thresholds sit below the measured figures (docs/nano-model.md) by a margin for the smaller n; a random
model of the same shape scores 0 on every one of them (checked in the last test)."""

from __future__ import annotations

import re

import pytest
import torch

import workbench
from workbench.nano import data
from workbench.nano import evaluate as ev

pytestmark = pytest.mark.usefixtures("one_thread")

# Bars from the targets scaled to these n (measured on the shipped weights, same seeds, in brackets):
HIGH_MIN, LOW_MAX = 21, 14      # of 24 greedy additions: high >= ~90%, low <= 60%   [24 and 0]
MEDIUM_MIN = 12                 # medium in between: at least half right, at most high  [21: the 21 within budget]
CLEAN_MIN = 0.97                # share of sampled generations with zero Harmony errors (target 0.99)  [1.0]
MASS_MAX = 1e-3                 # mean probability on untrained ids per sampled step (the target)  [2.4e-5]
PY_CALLS_MIN = 11               # of 12 sampled: well-formed python calls >= 90%  [12]
PY_RIGHT_MIN, FN_RIGHT_MIN = 8, 10    # of 12 sampled, right answers (python: >= 85% is met greedy, not sampled)
                                      # [10 and 12]


@pytest.fixture(scope="module")
def nano():
    return workbench.load_model(workbench.default_checkpoint(), dtype=torch.float32)


@pytest.fixture(scope="module")
def addition(nano):
    """Greedy answers (temperature 0, as the model card's effort sweep) at every effort."""
    return {effort: ev.measure(nano, "addition", effort, 24, seed=1, temperature=0.0)
            for effort in ("low", "medium", "high")}


def test_addition_accuracy_rises_with_effort(addition):
    low, medium, high = (sum(r.correct for r in addition[e]) for e in ("low", "medium", "high"))
    assert high >= HIGH_MIN and low <= LOW_MAX, (low, high)
    assert MEDIUM_MIN <= medium <= high, (low, medium, high)
    analysis = {e: sum(r.analysis_tokens for r in rs) / len(rs) for e, rs in addition.items()}
    assert 4 * analysis["low"] < analysis["medium"] < analysis["high"]  # the working grows with effort


def test_medium_effort_works_within_its_budget(addition):
    """Medium writes the column working exactly when both numbers are below ``data.MEDIUM_BUDGET`` and is then
    right as often as high effort; over budget it writes one sentence and, like low effort, gets the sum wrong."""
    within, over = [], []
    for r in addition["medium"]:
        a, b = (int(x.replace(",", "")) for x in re.findall(r"[\d,]+(?=[ ?])", r.question))
        (within if max(a, b) < data.MEDIUM_BUDGET else over).append(r)
    assert len(within) >= 6 and len(over) >= 3  # both sides of the budget (21 and 3 of these 24)
    assert all(r.analysis_tokens > 60 for r in within) and all(r.analysis_tokens < 40 for r in over)
    assert sum(r.correct for r in within) >= len(within) - 2 and sum(r.correct for r in over) <= 1


def test_sampled_harmony_is_clean_and_stays_on_trained_ids(nano):
    """Unconstrained sampling at temperature 1, every effort and kind of question."""
    records = [r for family, effort in (("addition", "high"), ("addition", "medium"), ("weekday", "low"),
                                        ("function", "medium"), ("counting", "high"))
               for r in ev.measure(nano, family, effort, 8, seed=2)]
    clean = sum(r.clean_generations for r in records) / sum(r.generations for r in records)
    assert clean >= CLEAN_MIN, clean
    masses = [m for r in records for m in r.untrained_mass]
    assert sum(masses) / len(masses) < MASS_MAX


def test_python_tool_in_the_loop(nano):
    records = ev.measure(nano, "python", "medium", 12, seed=1)
    ok_calls = sum(any(c["recipient"] == "python" and c["content_type"] == "code" and c["channel"] == "analysis"
                       and c["error"] is None for c in r.tool_calls) for r in records)
    assert ok_calls >= PY_CALLS_MIN and sum(r.correct for r in records) >= PY_RIGHT_MIN


def test_function_tools_in_the_loop(nano):
    records = ev.measure(nano, "function", "high", 12, seed=1)
    assert all(r.tool_calls and r.tool_calls[0]["channel"] == "commentary" for r in records)
    assert sum(r.correct for r in records) >= FN_RIGHT_MIN


def test_a_random_model_of_the_same_shape_fails_these_checks(tmp_path):
    from workbench.nano.ship import read_weights

    cfg = read_weights()[0]
    random = workbench.load_model(workbench.make_tiny_checkpoint(tmp_path, config=cfg), dtype=torch.float32)
    records = ev.measure(random, "addition", "high", 4, seed=1, max_new_tokens=60)
    assert sum(r.correct for r in records) == 0 and sum(r.clean_generations for r in records) < len(records)
