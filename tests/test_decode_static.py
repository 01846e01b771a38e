"""The static decode step behind CUDA-graph decoding (workbench.decode), exercised on the CPU.

Everything but the capture itself runs here: ``Model.decode_step`` through a preallocated cache with
device-side positions must equal the ordinary cached decode (torch backend, and the Triton kernels under
the interpreter), must read no host-side number (a corrupted host counter changes nothing; reading a
tensor's value on the host raises during the step), and the CUDA-only parts refuse with a clear error.
"""

from __future__ import annotations

import pytest
import torch

from workbench import decode
from workbench.decode import StaticDecoder, decoder_for, graph_unavailable
from workbench.generate import generate
from workbench.model import TorchBackend, load_model, swiglu

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ["blocks.*.moe.router_logits", "blocks.*.moe.expert_idx", "blocks.*.moe.expert_weights",
         "blocks.*.attn.sink_prob"]


def eager_decode(model, prompts, mask, steps):
    """Reference: the ordinary growable cache, token by token; logits [B, V] per step and traces."""
    cache = model.new_cache(prompts.shape[0])
    logits, trace = model.run_with_trace(prompts, NAMES, cache=cache, last_only=True, attention_mask=mask)
    outs, traces = [logits[:, -1]], [trace]
    for t in steps.T:
        logits, trace = model.run_with_trace(t[:, None], NAMES, cache=cache, last_only=True)
        outs.append(logits[:, -1])
        traces.append(trace)
    return outs, traces


@pytest.mark.parametrize("lengths", [(5,), (3, 9, 6)])
def test_static_step_equals_ordinary_cached_decode(m32, lengths):
    """Prompts (left-padded), then decode well past the sliding window (16): same logits and traces."""
    B, T = len(lengths), max(lengths)
    g = torch.Generator().manual_seed(sum(lengths))
    prompts = torch.randint(0, 201088, (B, T), generator=g)
    mask = torch.tensor([[0] * (T - n) + [1] * n for n in lengths]).bool()
    steps = torch.randint(0, 201088, (B, 24), generator=g)
    want, want_traces = eager_decode(m32, prompts, mask if B > 1 else None, steps)
    dec = StaticDecoder(m32, B, max_len=T + 24, trace_names=NAMES, graph=False)
    assert not dec.graph and "eager" in repr(dec)
    got = [dec.prefill(prompts, mask if B > 1 else None)]
    traces = [dec.trace()]
    for t in steps.T:
        got.append(dec.step(t).clone())
        traces.append(dec.trace())
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for tr, wt in zip(traces[1:], want_traces[1:]):
        for n in wt:
            torch.testing.assert_close(tr[n].float(), wt[n].float(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="max_len=.*all are used"):
        for _ in range(300):
            dec.step(steps[:, 0])
    dec.reset()  # reusable: the same answers again
    torch.testing.assert_close(dec.prefill(prompts, mask if B > 1 else None), want[0], rtol=1e-5, atol=1e-5)


class GraphSafeTorch(TorchBackend):
    """Torch pieces that read nothing on the host: dense experts gathered per pick (tiny models only)."""

    name = "graph-safe-torch"
    graph_safe = True

    def __init__(self, model):
        blocks = [b.mlp.experts for b in model.block]
        E = model.config.num_experts
        self.dense = {id(x): (x.weights("mlp1_weight", range(E), torch.float32),
                              x.weights("mlp2_weight", range(E), torch.float32)) for x in blocks}

    def experts(self, x, idx, weights, experts, limit):
        w1, w2 = self.dense[id(experts)]
        h = torch.einsum("nh,nkoh->nko", x.float(), w1[idx]) + experts.mlp1_bias.float()[idx]
        y = torch.einsum("nki,nkoi->nko", swiglu(h, limit), w2[idx]) + experts.mlp2_bias.float()[idx]
        return (y * weights.float()[..., None]).sum(1).to(x.dtype)


def test_decode_step_reads_no_host_side_number(m32, monkeypatch):
    """What a CUDA graph needs: the step's result does not depend on the host's counters, and nothing in
    it reads a tensor's value on the host (each such read would be a device sync, impossible in a graph)."""
    backend = GraphSafeTorch(m32)
    monkeypatch.setattr(m32, "backend", backend)
    prompts = torch.randint(0, 201088, (2, 7), generator=torch.Generator().manual_seed(1))
    cache = m32.new_cache(2, max_len=64)
    m32(prompts, cache)
    tok = torch.tensor([[5], [6]])
    ref_cache = m32.new_cache(2)
    m32(prompts, ref_cache)
    want = m32(tok, ref_cache)
    cache.length = 10**6  # a wrong host counter: the static step must not care

    def no_host_read(*a, **k):
        raise AssertionError("the static decode step read a tensor value on the host")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, no_host_read)
    with pytest.raises(AssertionError, match="read a tensor value"):  # the ordinary path does read some
        m32(tok, m32.new_cache(2))
    got = m32.decode_step(tok, cache)
    monkeypatch.undo()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert int(cache.col) == 8 and cache.next_pos.tolist() == [8, 8]


def test_cuda_graph_refuses_clearly_without_a_gpu(m32, tiny_dir):
    assert "CUDA GPU" in graph_unavailable(m32)
    with pytest.raises(RuntimeError, match="cannot capture a CUDA graph: CUDA graphs need the model on a CUDA GPU"):
        StaticDecoder(m32, 1, 64, graph=True)
    with pytest.raises(ValueError, match="cuda_graph=True: CUDA graphs need"):
        list(generate(m32, [1, 2, 3], max_new_tokens=2, cuda_graph=True))
    with pytest.raises(ValueError, match="attn.probs.*slower path"):
        StaticDecoder(m32, 1, 64, trace_names=["blocks.0.attn.probs"], graph=False)
    # on a CPU the default decodes eagerly, and the result is the same either way
    eager = [t.token for t in generate(m32, [1, 2, 3], max_new_tokens=4, temperature=0)]
    assert eager == [t.token for t in generate(m32, [1, 2, 3], max_new_tokens=4, temperature=0, cuda_graph=False)]


def test_graph_path_of_generate_equals_eager_generate(m32, monkeypatch):
    """generate's graph branch (decoders reused per batch size; finished sequences decode on unseen),
    run with the static step uncaptured on the CPU, gives the eager generate's tokens and traces."""
    monkeypatch.setattr(decode, "graph_unavailable", lambda model: None)  # pretend: a GPU is here
    monkeypatch.setattr(decode, "StaticDecoder", _uncaptured)
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9] * 9]
    names = ["blocks.*.moe.expert_idx", "blocks.*.attn.sink_prob"]
    greedy = [t.token for t in generate(m32, prompts, max_new_tokens=6, temperature=0, cuda_graph=False)]
    stop = greedy[4]  # sequence 1's second token: it finishes early
    kw = dict(max_new_tokens=6, temperature=0.8, seed=3, stop_tokens=[stop], trace_names=names)
    a = list(generate(m32, prompts, cuda_graph=False, **kw))
    b = list(generate(m32, prompts, cuda_graph=True, **kw))
    assert [(t.sequence, t.token, t.position) for t in a] == [(t.sequence, t.token, t.position) for t in b]
    for x, y in zip(a, b):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
        for n in x.trace:
            torch.testing.assert_close(x.trace[n].float(), y.trace[n].float(), rtol=1e-5, atol=1e-5)
    assert len(m32._static_decoders) == 1  # (3 sequences, max_len rounded to 256, names)
    # eager-only trace points: the default takes the eager path, an explicit cuda_graph=True says why not
    slow = dict(kw, trace_names=["blocks.0.attn.probs"], stop_tokens=())
    tokens = lambda **k: [t.token for t in generate(m32, prompts, **slow, **k)]
    assert tokens() == tokens(cuda_graph=False)
    with pytest.raises(ValueError, match="cuda_graph=True: tracing 'blocks.0.attn.probs' needs the eager path"):
        list(generate(m32, prompts, cuda_graph=True, **slow))
    again = list(generate(m32, prompts, cuda_graph=True, **kw))
    assert len(m32._static_decoders) == 1  # reused, not captured again, and emptied first:
    assert [(t.sequence, t.token) for t in again] == [(t.sequence, t.token) for t in a]
    m32.__dict__.pop("_static_decoders")


def _uncaptured(model, batch, max_len, *, trace_names=None, graph=None):
    return StaticDecoder(model, batch, max_len, trace_names=trace_names, graph=False)


def test_decoder_registry_keeps_a_few(m32, monkeypatch):
    monkeypatch.setattr(decode, "_KEEP_DECODERS", 2)
    a = decoder_for(m32, 1, 10, graph=False)
    assert a.max_len == 256 and decoder_for(m32, 1, 200, graph=False) is a
    decoder_for(m32, 2, 10, graph=False)
    decoder_for(m32, 3, 10, graph=False)
    assert len(m32._static_decoders) == 2 and decoder_for(m32, 1, 10, graph=False) is not a
    m32.__dict__.pop("_static_decoders")


def test_static_step_on_the_triton_kernels(tiny_dir, monkeypatch):
    """The Triton backend's static step (attention by position over the whole ring and cache, empty slots
    skipped) under the interpreter equals the torch backend's ordinary cached decode."""
    pytest.importorskip("triton")
    from _kernels_interp import load_interpreted

    load_interpreted()
    import workbench.kernels.backend as kb

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    ref = load_model(tiny_dir, dtype=torch.float32)
    tri = load_model(tiny_dir, dtype=torch.float32, backend=kb.TritonBackend(fallback=TorchBackend()))
    prompts = torch.randint(0, 1000, (2, 14), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 14, dtype=torch.bool)
    mask[1, :6] = False
    steps = torch.randint(0, 1000, (2, 5), generator=torch.Generator().manual_seed(1))
    want, _ = eager_decode(ref, prompts, mask, steps)
    dec = StaticDecoder(tri, 2, max_len=40, graph=False)
    got = [dec.prefill(prompts, mask)] + [dec.step(t).clone() for t in steps.T]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-3)
