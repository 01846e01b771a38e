"""Gradients in traces against finite differences; backward hooks; attribution patching against real
patching; integrated gradients' completeness."""

from __future__ import annotations

import pytest
import torch

from workbench import hooks
from workbench.attribution import attribution_patching, compare_with_patching, integrated_gradients
from workbench.interventions import patch

from test_hooks import random_model

pytestmark = pytest.mark.usefixtures("one_thread")

POINTS = ["embed", "blocks.0.attn.q", "blocks.0.attn.scores", "blocks.1.attn.probs", "blocks.0.attn.z",
          "blocks.1.resid_mid", "blocks.0.moe.router_logits", "blocks.1.moe.expert_weights", "blocks.0.moe.act",
          "blocks.1.moe.expert_out", "blocks.1.resid_post", "final_norm"]


def metric_of(T: int, a: int = 3, b: int = 7):
    """A logit difference at the last position plus a smooth read-out of every position."""
    def metric(logits):
        logits = logits.reshape(-1, T, logits.shape[-1])[0]
        return (logits[-1, a] - logits[-1, b]) + 0.1 * torch.tanh(logits[:, :5]).sum()
    return metric


@pytest.mark.parametrize("batched", [False, True], ids=["unbatched", "batched"])
@pytest.mark.parametrize("overrides", [dict(), dict(experts_per_token=3, num_attention_heads=6, num_key_value_heads=3)],
                         ids=["k2-gqa2", "k3-gqa2-6heads"])
def test_trace_gradients_match_finite_differences(batched, overrides):
    model = random_model(seed=4, smooth=True, **overrides)
    T = 8
    tokens = torch.randint(0, model.config.vocab_size, (T,), generator=torch.Generator().manual_seed(9))
    inp = torch.stack([tokens, tokens.flip(0)]) if batched else tokens
    metric = metric_of(T)
    logits, tr = model.run_with_trace(inp, names=POINTS + ["blocks.*.moe.expert_idx"], grad_of=metric)
    assert not logits.requires_grad and tr.metric == pytest.approx(float(metric(model(inp))), rel=1e-5, abs=1e-5)
    assert set(tr.grads) == set(POINTS) and "gradients of" in repr(tr)
    gen = torch.Generator().manual_seed(1)
    for name in POINTS:
        a, g = tr[name], tr.grads[name]
        assert g.shape == a.shape, name
        # along the claimed gradient plus noise: large enough above fp32 noise, and a wrong gradient still shows
        gf = torch.where(torch.isfinite(g), g, torch.zeros_like(g)).float()
        d = gf / gf.abs().mean().clamp_min(1e-12) + torch.randn(a.shape, generator=gen)
        if name.endswith("scores"):
            d = torch.where(torch.isfinite(a), d, torch.zeros_like(d))  # masked entries stay masked
        eps = 1e-2 * float(a[torch.isfinite(a)].abs().mean()) / float(d.abs().mean())

        def run(sign):
            _, t = model.run_with_trace(inp, names=["blocks.*.moe.expert_idx"],
                                        hooks={name: lambda x, n: x + sign * eps * d.to(x.dtype)})
            with torch.no_grad():
                out = model.run_with_hooks(inp, {name: lambda x, n: x + sign * eps * d.to(x.dtype)})
            return float(metric(out)), [t[k] for k in sorted(t)]

        (up, picks_up), (down, picks_down) = run(1), run(-1)
        if any(not torch.equal(p, q) for p, q in zip(picks_up, picks_down)):
            continue  # a routing flip inside the step: the difference quotient means nothing there
        fd = (up - down) / (2 * eps)
        ad = float((gf * d).sum())
        assert ad == pytest.approx(fd, rel=2e-2, abs=2e-3 * max(1.0, abs(fd))), name


def test_backward_hook_equals_a_detached_path(m32):
    """Zeroing the gradient through the last attention output = cutting that path in the forward."""
    tokens = torch.randint(0, m32.config.vocab_size, (10,), generator=torch.Generator().manual_seed(2))
    metric = metric_of(10)
    names = ["embed", "blocks.1.resid_post"]
    _, hooked = m32.run_with_trace(tokens, names=names, grad_of=metric,
                                   backward_hooks={"blocks.3.attn.out": lambda g, n: torch.zeros_like(g)})
    _, cut = m32.run_with_trace(tokens, names=names, grad_of=metric,
                                hooks={"blocks.3.attn.out": lambda t, n: t.detach()})
    _, plain = m32.run_with_trace(tokens, names=names, grad_of=metric)
    for n in names:
        torch.testing.assert_close(hooked.grads[n], cut.grads[n])
        assert not torch.allclose(hooked.grads[n], plain.grads[n])
    # the gradient a backward hook sees is the trace's gradient at that point
    seen = {}
    _, tr = m32.run_with_trace(tokens, names=["blocks.2.attn.z"], grad_of=metric,
                               backward_hooks={"blocks.2.attn.z": lambda g, n: seen.update({n: g.clone()})})
    torch.testing.assert_close(seen["blocks.2.attn.z"], tr.grads["blocks.2.attn.z"])
    # run_with_hooks records the graph for backward hooks: logits.backward() runs them
    calls = []
    logits = m32.run_with_hooks(tokens, {}, backward_hooks={"blocks.0.resid_post": lambda g, n: calls.append(n)})
    metric(logits).backward()
    assert calls == ["blocks.0.resid_post"]


def test_attribution_patching_is_the_first_order_term(m32):
    """Patching a source that is the corrupt run plus eps * delta changes the metric by eps * (delta . grad)
    + O(eps^2): the estimate's exact meaning, checked at small eps on several points."""
    T = 9
    tokens = torch.randint(0, m32.config.vocab_size, (T,), generator=torch.Generator().manual_seed(3))
    metric = metric_of(T)
    names = ["blocks.0.attn.z", "blocks.1.resid_mid", "blocks.2.moe.out", "blocks.2.moe.router_logits"]
    with torch.no_grad():
        base = float(metric(m32(tokens)))
    _, tr = m32.run_with_trace(tokens, names=names, grad_of=metric)
    gen = torch.Generator().manual_seed(0)
    for name in names:
        delta = torch.randn(tr[name].shape, generator=gen) * tr[name].abs().mean()
        eps = 1e-2
        source = {name: tr[name] + eps * delta}
        with torch.no_grad():
            real = float(metric(m32.run_with_hooks(tokens, patch(source, name, positions=[4])))) - base
        at4 = lambda t: t.narrow(hooks.token_axis(name), 4, 1)  # noqa: E731
        est = float((eps * at4(delta) * at4(tr.grads[name])).sum())
        assert est == pytest.approx(real, rel=5e-2, abs=1e-4), name


def test_attribution_patching_table_and_real_patching(m32):
    clean = torch.randint(0, m32.config.vocab_size, (8,), generator=torch.Generator().manual_seed(5))
    corrupt = clean.clone()
    corrupt[2] = (corrupt[2] + 1000) % m32.config.vocab_size
    metric = metric_of(8)
    est = attribution_patching(m32, clean, corrupt, metric)
    assert set(est.point) == {"embed", "attn.z", "attn.out", "resid_mid", "moe.router_logits", "moe.out", "resid_post"}
    z = est[est.point == "attn.z"]
    assert len(z) == 4 * 8 * m32.config.num_attention_heads and set(z.unit) == set(range(4))
    assert len(est[est.point == "moe.router_logits"]) == 4 * 8 * m32.config.num_experts
    # the per-head estimates of attn.z sum to attn.out's (z -> out is linear, so the first-order terms agree)
    by_head = z.groupby(["layer", "position"]).estimate.sum()
    out = est[est.point == "attn.out"].set_index(["layer", "position"]).estimate
    torch.testing.assert_close(torch.tensor(by_head.to_numpy()), torch.tensor(out.loc[by_head.index].to_numpy()),
                               rtol=1e-3, atol=1e-5)
    # positions before the corrupted token are identical in both runs: zero estimate there
    assert (est[(est.position < 2)].estimate.abs() < 1e-6).all()
    # against real patching: the resid_post estimate at the corrupted position of layer 0 is exact in
    # direction and the table lines up with patching_sweep's
    check = compare_with_patching(m32, clean, corrupt, metric, point="resid_post")
    assert len(check) == 4 * 8 and -1 <= check.attrs["pearson"] <= 1
    assert (check[check.position < 2].actual.abs() < 1e-5).all()
    assert check.attrs["corrupt"] == pytest.approx(float(metric(m32(corrupt))), rel=1e-5)
    with pytest.raises(ValueError, match="different experts"):
        attribution_patching(m32, clean, corrupt, metric, points=["moe.expert_out"])
    with pytest.raises(ValueError, match="one length"):
        attribution_patching(m32, clean, corrupt[:5], metric)


def test_integrated_gradients_complete_on_a_smooth_path():
    """Every expert picked (k = E: no routing flips) and a token baseline (no zero-norm jump): the
    attributions add up to the metric difference."""
    model = random_model(seed=5, smooth=True, num_experts=3, experts_per_token=3)
    tokens = torch.randint(0, model.config.vocab_size, (7,), generator=torch.Generator().manual_seed(6))
    metric = metric_of(7)
    ig = integrated_gradients(model, tokens, metric, baseline=tokens.roll(1), steps=64, batch_size=16)
    assert list(ig.columns) == ["position", "token", "attribution"] and ig.token.tolist() == tokens.tolist()
    span = abs(ig.attrs["metric"] - ig.attrs["baseline_metric"])
    assert span > 0.1 and abs(ig.attrs["completeness_gap"]) <= 0.01 * span
    assert ig.attrs["metric"] == pytest.approx(float(metric(model(tokens))), rel=1e-5)
    assert ig.attrs["baseline_metric"] == pytest.approx(float(metric(model(tokens.roll(1)))), rel=1e-5)
    same = integrated_gradients(model, tokens, metric, baseline=tokens, steps=4)
    assert (same.attribution == 0).all()


def test_integrated_gradients_one_step_is_the_midpoint_gradient(m32):
    tokens = torch.randint(0, m32.config.vocab_size, (7,), generator=torch.Generator().manual_seed(6))
    metric = metric_of(7)
    one = integrated_gradients(m32, tokens, metric, baseline="zeros", steps=1)
    half = {"embed": lambda e, n: (0.5 * m32.embedding[tokens]).to(e.dtype)}
    _, tr = m32.run_with_trace(tokens, names=["embed"], hooks=half, grad_of=metric)
    want = (m32.embedding[tokens] * tr.grads["embed"]).sum(-1)
    torch.testing.assert_close(torch.tensor(one.attribution.to_numpy()), want, rtol=1e-4, atol=1e-5)
    filler = integrated_gradients(m32, tokens, metric, baseline=17, steps=2)
    assert filler.attrs["baseline_metric"] == pytest.approx(float(metric(m32(torch.full((7,), 17)))), rel=1e-4)
    with pytest.raises(ValueError, match="baseline has 3 tokens"):
        integrated_gradients(m32, tokens, metric, baseline=tokens[:3])


def test_last_only_gives_the_same_tables_for_a_last_position_metric(m32):
    clean = torch.randint(0, m32.config.vocab_size, (7,), generator=torch.Generator().manual_seed(8))
    corrupt = clean.clone()
    corrupt[3] = (corrupt[3] + 17) % m32.config.vocab_size
    metric = lambda logits: logits[-1, 5] - logits[-1, 9]  # noqa: E731
    full = compare_with_patching(m32, clean, corrupt, metric, layers=[1, 3])
    last = compare_with_patching(m32, clean, corrupt, metric, layers=[1, 3], last_only=True)
    torch.testing.assert_close(torch.tensor(last[["estimate", "actual"]].to_numpy()),
                               torch.tensor(full[["estimate", "actual"]].to_numpy()), rtol=1e-4, atol=1e-5)
    assert last.attrs["pearson"] == pytest.approx(full.attrs["pearson"], abs=1e-4)
