"""LocalBackend on the built-in tiny model (random weights, full vocabulary): real token ids stream
through generate(); with the Harmony constraint the output always parses cleanly."""

from __future__ import annotations

import pytest
import torch

from workbench.backends import LocalBackend
from workbench.toolloop import chat
from workbench.harmony import Conversation, encoding
from workbench.harmony import tokens as T


@pytest.fixture(scope="module")
def model(tiny_dir):
    import workbench

    return workbench.load_model(tiny_dir)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_unconstrained_stream_matches_generate(model, one_thread):
    from workbench.generate import generate

    conv = Conversation.new().user("Hello")
    backend = LocalBackend(model)
    ids = list(backend.generate(conv, max_new_tokens=12, seed=1))
    expected = [s.token for s in generate(model, conv.render(), max_new_tokens=12, seed=1, stop_tokens=(T.RETURN, T.CALL))]
    assert ids == expected and [s.token for s in backend.last_steps] == ids
    t = backend.complete(conv, max_new_tokens=12, seed=1)
    assert len(t.events) == len(ids)  # whatever a random model says, every token has its event


def test_constrained_random_model_writes_wellformed_harmony(model, one_thread):
    def lookup(term: str) -> str:
        """Look a term up."""
        return term.upper()

    conv = Conversation.new(functions=[lookup]).user("Hi")
    backend = LocalBackend(model, constrained=True, max_content_tokens=5)
    for seed in range(2):
        ids = list(backend.generate(conv, max_new_tokens=40, seed=seed))
        t = backend.complete(conv, max_new_tokens=40, seed=seed)
        assert t.tokens == ids  # same seed, same tokens
        codes = [e.code for e in t.errors]
        assert codes == ([] if ids[-1] in T.STOP_FOR_ACTIONS else ["truncated"]), (codes, encoding().decode(ids))
    result = chat(backend, conv, max_turns=2, max_new_tokens=40, seed=0)
    assert all(e.code == "truncated" for _, e in result.errors)
    assert result.stop_reason in ("return", "final", "max_turns", "length", "no_recipient")


def test_generate_batch_equals_each_prompt_alone(model, one_thread):
    """LocalBackend.generate_batch decodes several conversations as one batch (each with its own seed and
    Harmony constraint): the same ids as generate() one at a time. The base class's default is sequential."""
    from workbench.backends.base import Backend

    convs = [Conversation.new().user(text) for text in ("Hi", "What is 2 + 2? Say it twice.", "Name a colour")]
    backend = LocalBackend(model, constrained=True, max_content_tokens=4)
    batch = backend.generate_batch(convs, seeds=[3, 4, 5], max_new_tokens=10, reasoning_effort="high")
    alone = [list(backend.generate(c, seed=s, max_new_tokens=10, reasoning_effort="high"))
             for c, s in zip(convs, [3, 4, 5])]
    assert batch == alone and all(ids for ids in batch)
    assert Backend.generate_batch(backend, convs, seeds=[3, 4, 5], max_new_tokens=10, reasoning_effort="high") == alone
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        backend.generate_batch(convs, seeds=[1, 2])


def test_sweep_in_batches_logs_what_one_at_a_time_logs(tiny_dir, tmp_path, one_thread):
    """run_sweep(batch_size=4) hands the local model 4 samples at a time: every record's tokens equal the
    one-at-a-time sweep's (same per-sample seeds), and every key is logged once."""
    from workbench.evals import local, run_sweep
    from workbench.evals.logs import read_records

    target = local(tiny_dir, name="tiny", constrained=True)
    runs = {}
    for size in (1, 4):
        out = tmp_path / f"b{size}"
        result = run_sweep(["arithmetic"], [target], out=out, efforts=["low", "high"], limit=5, max_tokens=6,
                           batch_size=size, progress=False)
        assert (result.ran, result.failed) == (10, 0)
        runs[size] = {(r["sample"], r["effort"]): r["tokens"] for r in read_records(out)}
    assert len(runs[4]) == 10 and runs[4] == runs[1]
    with pytest.raises(ValueError, match="batch_size"):
        run_sweep(["arithmetic"], [target], out=tmp_path / "bad", batch_size=0, progress=False)
