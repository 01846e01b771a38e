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
