"""Attribution patching against real activation patching on the shipped nano model (issue 13's "done when").

The setup a researcher would pick, fixed before looking at any correlation: the first held-out addition
question (``data.heldout_tasks("addition", 1)``) at low effort (no working: the model must produce the sum
itself), against the same question with b's ones digit changed by one (``nano.pairs.addition_pair``), each cut
before the final answer's last token; metric = logit[clean answer] - logit[corrupt answer] at the last position.
Every layer x every position of the residual stream is patched for real (``patching_sweep``) and estimated to
first order in one backward pass (``attribution_patching``); the two must correlate (Pearson >= 0.9).
``benchmarks/attribution.py`` reports more pairs and hook points.
"""

from __future__ import annotations

import pytest
import torch

import workbench
from workbench.attribution import compare_with_patching
from workbench.harmony import encoding
from workbench.nano import data
from workbench.nano.pairs import addition_pair

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nano():
    return workbench.load_model(workbench.default_checkpoint(), dtype=torch.float32)


@pytest.fixture(scope="module")
def task():
    return data.heldout_tasks("addition", 1)[0]


@pytest.fixture(scope="module")
def pair(task):
    return addition_pair(task.meta["a"], task.meta["b"])


def test_addition_pair_is_two_questions_a_digit_apart(task, pair):
    a, b = task.meta["a"], task.meta["b"]
    b2 = b - 1 if b % 10 == 9 else b + 1
    enc = encoding()
    assert pair.questions == (data.addition_question(a, b), data.addition_question(a, b2))
    assert enc.decode([pair.answer]) == f"{a + b:,}".split(",")[-1]
    assert enc.decode([pair.corrupt_answer]) == f"{a + b2:,}".split(",")[-1]
    clean, corrupt = enc.decode(pair.clean.tolist()), enc.decode(pair.corrupt.tolist())
    head = f"{a + b:,}".rpartition(",")
    assert clean.endswith(f"<|channel|>final<|message|>{a:,} + {b:,} = {head[0]}{head[1]}")
    assert clean.replace(f"{b:,}", f"{b2:,}") == corrupt  # b's text is all that differs
    assert len(pair.differ) == 3  # question, analysis ("Add a and b."), final line
    logits = torch.zeros(len(pair.clean), 201088)
    logits[-1, pair.answer], logits[-1, pair.corrupt_answer], logits[-2, pair.answer] = 2.5, -1.0, 9.0
    assert float(pair.metric(logits)) == 3.5 and float(pair.metric(logits[-1:])) == 3.5  # full, or last_only [1, V]
    with pytest.raises(ValueError, match="render to"):
        addition_pair(999, 0)  # 999 vs 1,000: one more token


def test_attribution_patching_tracks_real_patching_on_nano(nano, pair):
    L, T = nano.config.num_hidden_layers, len(pair.clean)
    check = compare_with_patching(nano, pair.clean, pair.corrupt, pair.metric, point="resid_post", last_only=True)
    assert len(check) == L * T  # every layer x every position
    clean, corrupt = check.attrs["clean"], check.attrs["corrupt"]
    with torch.no_grad():
        assert clean == pytest.approx(float(pair.metric(nano(pair.clean))), rel=1e-4, abs=1e-4)
        assert corrupt == pytest.approx(float(pair.metric(nano(pair.corrupt))), rel=1e-4, abs=1e-4)
    assert abs(clean - corrupt) > 0.5  # the digit matters to the model: there is something to attribute
    # before the first differing token both runs are identical: nothing to patch, nothing estimated
    early = check[check.position < pair.differ[0]]
    assert (early.actual.abs() < 1e-5).all() and (early.estimate.abs() < 1e-5).all()
    # the last layer's last position decides the last logits alone: patching it restores the clean metric
    last = check[(check.layer == L - 1) & (check.position == T - 1)].iloc[0]
    assert last.actual == pytest.approx(clean - corrupt, rel=1e-4, abs=1e-4)
    assert check.attrs["pearson"] >= 0.9, check.sort_values("actual", key=abs).tail(8).to_string()
