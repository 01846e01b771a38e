"""Batched generate (left padding, per-sequence seeds, stops and processors), interventions at every step,
steering vectors. Oracles: each prompt generated alone, full forwards over the generated sequences."""

from __future__ import annotations

import pytest
import torch

from workbench.generate import generate
from workbench.interventions import ban_experts, combine, steer, steering_vector

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(21)
    return [torch.randint(0, 201088, (n,), generator=g).tolist() for n in (3, 11, 7, 20)]


def by_sequence(steps, B):
    out = [[] for _ in range(B)]
    for s in steps:
        out[s.sequence].append(s)
    return out


@pytest.mark.parametrize("temperature,seed", [(0, None), (1.0, 5), (0.7, [3, 1, 4, 1])])
def test_batch_equals_each_prompt_alone(m32, prompts, temperature, seed):
    """Greedy, and seeded sampling (an int seed gives sequence i seed + i; or one seed each): every sequence
    of the batch gets the tokens, logprobs and positions it gets alone."""
    steps = list(generate(m32, prompts, max_new_tokens=6, temperature=temperature, seed=seed, top_p=0.9))
    assert [s.sequence for s in steps[:4]] == [0, 1, 2, 3]  # one token per sequence per step, in order
    for i, (p, got) in enumerate(zip(prompts, by_sequence(steps, 4))):
        s = None if seed is None else seed[i] if isinstance(seed, list) else seed + i
        alone = list(generate(m32, p, max_new_tokens=6, temperature=temperature, seed=s, top_p=0.9))
        assert [t.token for t in got] == [t.token for t in alone]
        assert [t.position for t in got] == [len(p) + j for j in range(6)]
        for a, b in zip(got, alone):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_per_sequence_stops_and_processors(m32, prompts):
    greedy = by_sequence(list(generate(m32, prompts, max_new_tokens=5, temperature=0)), 4)
    stop_at = [greedy[0][1].token, greedy[1][0].token, 10**9, greedy[3][3].token]
    steps = list(generate(m32, prompts, max_new_tokens=5, temperature=0, stop_tokens=[[t] for t in stop_at]))
    seqs = by_sequence(steps, 4)
    for got, full, stop in zip(seqs, greedy, stop_at):
        n = next((j + 1 for j, t in enumerate(full) if t.token == stop), len(full))
        assert [t.token for t in got] == [t.token for t in full[:n]]  # yielded through its stop, then no more
    assert [len(s) for s in seqs] == [2, 1, 5, 4]
    # a shared stop list applies to every sequence
    shared = by_sequence(list(generate(m32, prompts, max_new_tokens=5, temperature=0, stop_tokens=[stop_at[1]])), 4)
    assert len(shared[1]) == 1
    # one processor per sequence, each seeing its own history
    seen = {0: [], 1: []}

    def only(allowed, key):
        def proc(generated, logits):
            seen[key].append(list(generated))
            out = torch.full_like(logits, float("-inf"))
            out[allowed] = logits[allowed]
            return out
        return proc

    steps = list(generate(m32, prompts[:2], max_new_tokens=4, seed=0,
                          logits_processor=[only([1, 2, 3], 0), only([7, 8], 1)]))
    a, b = by_sequence(steps, 2)
    assert {t.token for t in a} <= {1, 2, 3} and {t.token for t in b} <= {7, 8}
    assert seen[0] == [[t.token for t in a[:j]] for j in range(4)]


def test_batched_traces_equal_traces_alone(m32, prompts):
    names = ["blocks.*.moe.expert_idx", "blocks.*.attn.sink_prob"]
    steps = by_sequence(list(generate(m32, prompts, max_new_tokens=3, temperature=0, trace_names=names)), 4)
    for p, got in zip(prompts, steps):
        alone = list(generate(m32, p, max_new_tokens=3, temperature=0, trace_names=names))
        for a, b in zip(got, alone):
            assert set(a.trace) == set(b.trace)
            for n in a.trace:
                assert a.trace[n].shape == b.trace[n].shape
                torch.testing.assert_close(a.trace[n].float(), b.trace[n].float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [False, True])
def test_banned_expert_is_never_picked_at_any_step(m32, prompts, batch):
    """generate(hooks=ban_experts(e)) applies the ban at the prefill and at every decode step: a spy hook
    behind it sees every pick of every forward call, and e is never among them."""
    e, calls = 3, []

    def spy(idx, name):
        calls.append((name, idx.clone()))

    _, tr = m32.run_with_trace(torch.tensor(prompts[1]), names="blocks.*.moe.expert_idx")
    assert any(e in tr[f"blocks.{i}.moe.expert_idx"].flatten().tolist() for i in range(4))  # e is a usual pick
    hooks = combine(ban_experts([e]), {"blocks.*.moe.expert_idx": spy})
    ps = prompts if batch else prompts[1]
    steps = list(generate(m32, ps, max_new_tokens=8, temperature=1.0, seed=2, hooks=hooks))
    assert len(calls) == 4 * (1 + 7)  # 4 layers x (prefill + 7 decode steps; the 8th token needs no forward)
    assert all(e not in idx.flatten().tolist() for _, idx in calls)
    # the banned run is the model with that expert's router logit at -inf: a full forward agrees
    seq = (prompts[1] + [t.token for t in steps if t.sequence == (1 if batch else 0)])
    logits = m32.run_with_hooks(torch.tensor(seq), ban_experts([e]))
    first = [t for t in steps if t.sequence == (1 if batch else 0)]
    for j, t in enumerate(first):
        lp = logits[len(prompts[1]) - 1 + j].float().log_softmax(-1)[t.token]
        assert t.logprob == pytest.approx(float(lp), abs=1e-4)


def test_steering_during_generation_equals_steering_the_whole_sequence(m32, prompts):
    """steer adds scale * v at every forward step; the greedy tokens it yields are exactly the argmaxes of a
    single steered forward over prompt + generated tokens (which adds v at every position at once)."""
    H = m32.config.hidden_size
    v = torch.randn(H, generator=torch.Generator().manual_seed(0))
    v = v / v.norm()
    hooks = steer(v, scale=8.0, layers=[1, 2])
    out = list(generate(m32, prompts[2], max_new_tokens=8, temperature=0, hooks=hooks))
    plain = [t.token for t in generate(m32, prompts[2], max_new_tokens=8, temperature=0)]
    assert [t.token for t in out] != plain  # it steers
    seq = prompts[2] + [t.token for t in out]
    logits = m32.run_with_hooks(torch.tensor(seq), hooks)
    n = len(prompts[2])
    assert [int(logits[n - 1 + j].argmax()) for j in range(8)] == [t.token for t in out]
    # steering by hand at one layer and position = the helper
    hand = {"blocks.1.resid_post": lambda t, name: t + 8.0 * v * (torch.arange(t.shape[0]) == 2)[:, None]}
    torch.testing.assert_close(m32.run_with_hooks(torch.tensor(seq), steer(v, scale=8.0, layers=1, positions=[2])),
                               m32.run_with_hooks(torch.tensor(seq), hand))


def test_steering_vector_is_the_difference_of_mean_activations(m32, prompts):
    pos, neg = prompts[:2], prompts[2:]
    v = steering_vector(m32, pos, neg, layer=2)
    means = []
    for group in (pos, neg):
        acts = [m32.run_with_trace(torch.tensor(p), names="blocks.2.resid_post")[1]["blocks.2.resid_post"].mean(0)
                for p in group]
        means.append(torch.stack(acts).mean(0))
    torch.testing.assert_close(v, means[0] - means[1])
    with pytest.raises(ValueError, match="does not fit"):
        m32.run_with_hooks(torch.tensor(prompts[0]), steer(torch.ones(3), layers=0))
    with pytest.raises(ValueError, match="not a per-layer point"):
        steer(v, point="embed", layers=[0])
    torch.testing.assert_close(m32.run_with_hooks(torch.tensor(prompts[0]), steer(v, point="embed", scale=0.0)),
                               m32(torch.tensor(prompts[0])))


def test_batch_argument_errors(m32, prompts):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(m32, [[1, 2], []])
    with pytest.raises(ValueError, match="seed: got 2 values for 4"):
        generate(m32, prompts, seed=[1, 2])
    with pytest.raises(ValueError, match="stop_tokens: got 3 values for 4"):
        generate(m32, prompts, stop_tokens=[[1], [2], [3]])
    same = torch.tensor([prompts[3][:5], prompts[3][5:10]])  # a [B, T] tensor is a batch
    assert {s.sequence for s in generate(m32, same, max_new_tokens=2, temperature=0)} == {0, 1}
