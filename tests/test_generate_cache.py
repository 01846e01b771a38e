"""KV cache and generate(): incremental decode equals full forwards; sampling, seeds, stops, processors, traces."""

from __future__ import annotations

import pytest
import torch

from workbench import load_model
from workbench.generate import GeneratedToken, generate, sample



pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def prompt():
    return torch.randint(0, 201088, (9,), generator=torch.Generator().manual_seed(3)).tolist()


def test_incremental_decode_equals_full_forward_past_the_window(m32):
    cfg = m32.config
    seq = torch.randint(0, 201088, (cfg.sliding_window * 2 + 7,), generator=torch.Generator().manual_seed(4))
    full = m32(seq)
    cache = m32.new_cache()
    parts = [m32(seq[:5], cache), m32(seq[5:11], cache)]  # a prefill, then a chunk
    for t in range(11, seq.shape[0]):
        parts.append(m32(seq[t:t + 1], cache))
        for i, layer in enumerate(cache.layers):  # sliding layers hold only their window, in a ring of it
            assert int(layer.held()[0]) == (min(t + 1, cfg.sliding_window) if cfg.is_sliding(i) else t + 1)
            if cfg.is_sliding(i):
                assert layer.k.shape[1] == cfg.sliding_window
    torch.testing.assert_close(torch.cat(parts), full, rtol=1e-4, atol=1e-4)
    assert cache.length == seq.shape[0] and "KVCache(length=" in repr(cache)


@pytest.mark.parametrize("schedule,batch", [
    ((20, 1, 1, 1), 1),               # a prefill longer than the window (16), then decode past it
    ((3, 17, 1, 1, 19), 2),           # a chunk longer than the window mid-cache; batch > 1
    ((1,) * 35, 1),                   # decode from an empty cache, the ring wraps twice
    ((15, 1, 1, 1, 2, 16, 1), 3),     # fill the ring exactly, wrap by one, chunks of 2 and of the window
])
def test_ring_buffer_cache_equals_full_forward(m32, schedule, batch):
    """Sliding layers hold a ring of exactly ``window`` slots; any prefill/chunk/decode schedule, with the
    ring wrapping, gives the full forward's logits (which transformers' parity tests pin down)."""
    n = sum(schedule)
    seq = torch.randint(0, 201088, (batch, n), generator=torch.Generator().manual_seed(n + batch))
    full = m32(seq)
    for max_len in (None, n):  # growable, and preallocated for exactly n columns (static)
        cache = m32.new_cache(batch, max_len=max_len)
        parts, t = [], 0
        for T in schedule:
            parts.append(m32(seq[:, t:t + T], cache))
            t += T
            ring = cache.layers[0]
            assert ring.k.shape[1] == ring.capacity == m32.config.sliding_window
            assert torch.equal(ring.held(), torch.full((batch,), min(t, ring.capacity)))
            assert torch.equal(cache.layers[1].held(), torch.full((batch,), t))
        torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-4)
        assert int(cache.col) == cache.length == n and torch.equal(cache.next_pos, torch.full((batch,), n))
    with pytest.raises(ValueError, match="max_len"):
        m32(seq[:, :2], m32.new_cache(batch, max_len=1))


def test_full_layer_buffers_grow_by_doubling(m32, monkeypatch):
    import workbench.kv_cache as kc

    seq = torch.randint(0, 201088, (30,), generator=torch.Generator().manual_seed(9))
    monkeypatch.setattr(kc, "_INITIAL_CAPACITY", 4)
    cache = m32.new_cache()
    assert cache.layers[1].capacity == 4
    out = torch.cat([m32(seq[:3], cache)] + [m32(seq[t:t + 1], cache) for t in range(3, 30)])
    assert cache.layers[1].capacity == 32  # 4 -> 8 -> 16 -> 32: a few copies, not one per step
    torch.testing.assert_close(out, m32(seq), rtol=1e-4, atol=1e-4)


def test_long_input_goes_through_the_cache_in_chunks(m32, monkeypatch):
    """Without hooks a long input with a cache is processed a chunk at a time (bounded memory); same logits."""
    import workbench.model as wm

    seq = torch.randint(0, 201088, (2, 23), generator=torch.Generator().manual_seed(2))
    want = m32(seq)
    monkeypatch.setattr(wm, "_PREFILL_CHUNK", 5)
    cache = m32.new_cache(2)
    torch.testing.assert_close(m32(seq, cache), want, rtol=1e-4, atol=1e-4)
    cache = m32.new_cache(2)
    torch.testing.assert_close(m32(seq, cache, last_only=True), want[:, -1:], rtol=1e-4, atol=1e-4)
    assert cache.length == 23


def test_incremental_decode_bf16_and_batched(tiny_dir):
    m = load_model(tiny_dir)
    seq = torch.randint(0, 201088, (2, 30), generator=torch.Generator().manual_seed(5))
    full = m(seq).float()
    cache = m.new_cache(batch=2)
    inc = torch.cat([m(seq[:, :20], cache)] + [m(seq[:, t:t + 1], cache) for t in range(20, 30)], dim=1).float()
    scale = full.abs().max()
    assert (inc - full).abs().max() < 0.05 * scale  # bf16 rounding differs between shapes, nothing more
    with pytest.raises(ValueError, match="batch 2"):
        m(seq[:1, :3], cache)


def test_greedy_generation_follows_full_forward_argmax(m32, prompt):
    out = list(generate(m32, prompt, max_new_tokens=16, temperature=0))
    assert len(out) == 16 and all(isinstance(t, GeneratedToken) for t in out)
    seq = list(prompt) + [t.token for t in out]
    logits = m32(torch.tensor(seq))  # one full forward: row p predicts the token at p + 1
    for i, tok in enumerate(out):
        p = len(prompt) + i
        assert tok.position == p and tok.trace is None
        assert tok.token == int(logits[p - 1].argmax())
        assert tok.logprob == pytest.approx(float(logits[p - 1].log_softmax(-1)[tok.token]), abs=1e-4)


def test_seeded_sampling_is_reproducible(m32, prompt):
    a = [t.token for t in generate(m32, prompt, max_new_tokens=8, seed=7)]
    b = [t.token for t in generate(m32, prompt, max_new_tokens=8, seed=7)]
    c = [t.token for t in generate(m32, prompt, max_new_tokens=8, seed=8)]
    assert a == b and a != c
    # top_p tiny keeps only the most likely token: greedy
    g = [t.token for t in generate(m32, prompt, max_new_tokens=6, temperature=0)]
    assert [t.token for t in generate(m32, prompt, max_new_tokens=6, top_p=1e-6, seed=1)] == g


def test_sample_top_p_and_temperature():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    probs = torch.softmax(logits, -1)  # .64 .24 .09 .03 .01
    g = torch.Generator().manual_seed(0)
    draws = [sample(logits, top_p=0.8, generator=g) for _ in range(400)]
    assert set(draws) == {0, 1}  # .64 < .8, .64 + .24 >= .8: the nucleus is the first two
    assert abs(draws.count(0) / 400 - probs[0] / (probs[0] + probs[1])) < 0.08
    assert sample(logits, temperature=0) == 0
    hot = [sample(logits, temperature=100.0, generator=g) for _ in range(400)]
    assert len(set(hot)) == 5


def test_stop_tokens_are_yielded_then_stop(m32, prompt):
    first = next(iter(generate(m32, prompt, max_new_tokens=5, temperature=0))).token
    out = list(generate(m32, prompt, max_new_tokens=5, temperature=0, stop_tokens=[first]))
    assert [t.token for t in out] == [first]
    assert list(generate(m32, prompt, max_new_tokens=0)) == []


def test_logits_processor_constrains_and_sees_history(m32, prompt):
    allowed = torch.tensor([10, 20, 30, 200002])
    history = []

    def only_allowed(generated, logits):
        history.append(list(generated))
        out = torch.full_like(logits, float("-inf"))
        out[allowed] = logits[allowed]
        return out

    out = list(generate(m32, prompt, max_new_tokens=6, seed=0, logits_processor=only_allowed))
    tokens = [t.token for t in out]
    assert set(tokens) <= set(allowed.tolist())
    assert history == [tokens[:i] for i in range(len(tokens))]
    # logprob is the model's own (unconstrained) log-probability
    logits = m32(torch.tensor(prompt))[-1]
    assert out[0].logprob == pytest.approx(float(logits.log_softmax(-1)[tokens[0]]), abs=1e-4)
    with pytest.raises(ValueError, match="masked every token"):
        list(generate(m32, prompt, max_new_tokens=2, logits_processor=lambda g, l: torch.full_like(l, -float("inf"))))
    with pytest.raises(ValueError, match="shape"):
        list(generate(m32, prompt, max_new_tokens=2, logits_processor=lambda g, l: l[:5]))


def test_generation_traces(m32, prompt):
    names = ["blocks.*.moe.expert_idx", "blocks.*.attn.sink_prob"]
    out = list(generate(m32, prompt, max_new_tokens=5, temperature=0, trace_names=names))
    k, Hq = m32.config.experts_per_token, m32.config.num_attention_heads
    seq = list(prompt) + [t.token for t in out]
    _, full = m32.run_with_trace(torch.tensor(seq), names=names)
    for i, tok in enumerate(out):
        assert set(tok.trace) == {f"blocks.{l}.moe.expert_idx" for l in range(4)} | {
            f"blocks.{l}.attn.sink_prob" for l in range(4)}
        p = tok.position - 1  # the position whose forward predicted this token
        for layer in range(4):
            idx = tok.trace[f"blocks.{layer}.moe.expert_idx"]
            assert idx.shape == (1, k) and torch.equal(idx[0], full[f"blocks.{layer}.moe.expert_idx"][p])
            sp = tok.trace[f"blocks.{layer}.attn.sink_prob"]
            assert sp.shape == (Hq, 1)
            torch.testing.assert_close(sp[:, 0], full[f"blocks.{layer}.attn.sink_prob"][:, p], rtol=1e-4, atol=1e-5)


def test_argument_errors(m32, prompt):
    with pytest.raises(ValueError, match="temperature"):
        generate(m32, prompt, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        generate(m32, prompt, top_p=0)
    with pytest.raises(ValueError, match="at least one prompt token"):
        generate(m32, [])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(m32, prompt, max_new_tokens=-1)
