"""Gradients through ``workbench.Model``: autograd against central finite differences, on random dense configs
(odd head counts, GQA, top-k 1..4, windows shorter than the sequence), through both attention paths (fused
SDPA and the eager path a trace forces), batched and unbatched; MXFP4 experts pass gradients to activations.

fp32 with care: each check is a directional derivative <grad L, d> along a random direction d of one
tensor, against (L(w + eps d) - L(w - eps d)) / (2 eps); the expert picks are checked to be the same at
both ends (top-k is piecewise constant: a flipped pick would make the difference quotient meaningless).
The transformers gradient parity lives in test_parity_hf.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench import cpu_kernels
from workbench.checkpoint import MXFP4Tensor, expected_shapes
from workbench.config import ModelConfig
from workbench.model import Model
from workbench.tiny import random_tensor

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = [  # (config kwargs, T, batch)
    (dict(num_hidden_layers=2, num_experts=4, experts_per_token=1, hidden_size=32, intermediate_size=32,
          head_dim=8, num_attention_heads=3, num_key_value_heads=1, sliding_window=5, vocab_size=53), 20, 1),
    (dict(num_hidden_layers=3, num_experts=5, experts_per_token=2, hidden_size=64, intermediate_size=32,
          head_dim=16, num_attention_heads=4, num_key_value_heads=2, sliding_window=4, vocab_size=71), 11, 2),
    (dict(num_hidden_layers=2, num_experts=6, experts_per_token=3, hidden_size=32, intermediate_size=64,
          head_dim=6, num_attention_heads=5, num_key_value_heads=5, sliding_window=7, vocab_size=40,
          rope_scaling_factor=4.0, initial_context_length=128, rope_theta=500.0, rope_ntk_beta=16.0), 17, 1),
    (dict(num_hidden_layers=2, num_experts=4, experts_per_token=4, hidden_size=32, intermediate_size=32,
          head_dim=8, num_attention_heads=6, num_key_value_heads=2, sliding_window=6, vocab_size=64), 9, 2),
]


def _dense_model(cfg: ModelConfig, seed: int) -> Model:
    weights = {}
    for name in expected_shapes(cfg):
        w = random_tensor(cfg, name, seed)
        weights[name] = w.dequantize(torch.float32) if isinstance(w, MXFP4Tensor) else w.float()
        if name.endswith("mlp1_weight"):  # the built-in scale drives many SwiGLU inputs past the +-7 clamp on
            weights[name] *= 0.3          # purpose; its kinks would spoil difference quotients (HF parity covers it)
    model = Model(cfg, weights, dtype=torch.float32)
    return model.requires_grad_(True)


def _loss(model: Model, tokens, targets, readout, eager: bool) -> tuple[torch.Tensor, list]:
    """Cross-entropy on targets plus a random linear read-out of every logit; also the expert picks."""
    names = ["blocks.*.moe.expert_idx"] + (["blocks.*.attn.probs"] if eager else [])
    logits, trace = model.run_with_trace(tokens, names=names)
    V, logits = logits.shape[-1], logits.double()  # fp64 from here: the difference quotient needs the digits
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)) + (logits * readout).sum()
    return loss, [trace[n] for n in trace if n.endswith("expert_idx")]


@pytest.mark.parametrize("eager", [False, True], ids=["sdpa", "eager"])
@pytest.mark.parametrize("case", range(len(CONFIGS)))
def test_parameter_gradients_match_finite_differences(case, eager):
    kw, T, B = CONFIGS[case]
    cfg = ModelConfig(**kw)
    model = _dense_model(cfg, seed=case)
    g = torch.Generator().manual_seed(100 + case)
    shape = (B, T) if B > 1 else (T,)
    tokens = torch.randint(0, cfg.vocab_size, shape, generator=g)
    targets = torch.randint(0, cfg.vocab_size, shape, generator=g)
    readout = torch.randn((*shape, cfg.vocab_size), generator=g) * 0.01
    assert cfg.sliding_window < T  # the window cuts in
    loss, picks = _loss(model, tokens, targets, readout, eager)
    loss.backward()
    params = model.canonical_parameters()
    assert all(p.grad is not None for p in params.values()), [n for n, p in params.items() if p.grad is None]
    checked = 0
    for name, p in params.items():
        d = torch.randn(p.shape, generator=g)
        scale = float(p.detach().abs().mean().clamp_min(1.0)) / float(d.abs().mean())
        analytic = float((p.grad * d).sum())
        errors = []
        for eps in (1e-3 * scale, 3e-4 * scale, 1e-4 * scale):  # a kink or flip inside one rarely hits all
            with torch.no_grad():
                ends = []
                for sign in (1, -1):
                    p.add_(sign * eps * d)
                    ends.append(_loss(model, tokens, targets, readout, eager))
                    p.sub_(sign * eps * d)
            (plus, picks_plus), (minus, picks_minus) = ends
            if all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(picks, picks_plus, picks_minus)):
                errors.append(abs(float(plus - minus) / (2 * eps) - analytic))  # else a pick flipped inside +-eps
        if errors:
            assert min(errors) <= 1e-2 * abs(analytic) + 1e-3, (name, analytic, errors)
            checked += 1
    assert checked >= 0.9 * len(params)  # flips are rare; nearly every tensor was checked


def test_activation_gradients_through_mxfp4_experts(tiny_dir, m32):
    """d(logit)/d(embedding) on the shipped (packed MXFP4) model equals the same model with its experts
    dequantized to dense tensors; the packed weights get no gradient, the activations do."""
    from workbench import open_checkpoint

    ckpt = open_checkpoint(tiny_dir)
    weights = {n: (ckpt[n].dequantize(torch.float32) if isinstance(ckpt[n], MXFP4Tensor) else ckpt[n].float())
               for n in ckpt}
    dense = Model(ckpt.config, weights, dtype=torch.float32)
    tokens = torch.randint(0, ckpt.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    grads = []
    for model in (m32, dense):
        embed = model.embedding.detach()[tokens].clone().requires_grad_(True)
        logits = model.run_with_hooks(tokens, {"embed": lambda x, name: embed})
        logits[:, -1, 1234].sum().backward()
        assert embed.grad is not None and embed.grad.abs().sum() > 0
        grads.append(embed.grad)
    assert not any(p.requires_grad for p in m32.parameters())  # frozen weights: gradients reach activations only
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    # causality: the last position's logit depends on every earlier token, a middle logit on none after it
    embed = m32.embedding.detach()[tokens].clone().requires_grad_(True)
    m32.run_with_hooks(tokens, {"embed": lambda x, name: embed})[0, 10, 7].backward()
    assert embed.grad[0, 11:].abs().max() == 0 and embed.grad[0, :11].abs().sum() > 0 and embed.grad[1].abs().max() == 0


def test_no_grad_inference_unchanged(m32):
    """Gradients enabled or not, the forward values are identical (the no-grad path keeps its in-place ops).
    The fused CPU kernels (inference only) sum in another order: bitwise equality holds for the torch path."""
    tokens = torch.randint(0, m32.config.vocab_size, (30,), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), cpu_kernels.disabled():
        a = m32(tokens)
    embed = m32.embedding.detach()[tokens].clone().requires_grad_(True)
    b = m32.run_with_hooks(tokens, {"embed": lambda x, name: embed})
    assert b.requires_grad and torch.equal(a, b.detach())


def test_gradients_equal_with_per_pick_and_attention_internals_hooked(m32):
    """Hooking the per-pick expert points (moe.act, moe.expert_out) and the attention internals switches to
    the reference paths; the gradient with respect to the input activations stays the same."""
    tokens = torch.randint(0, m32.config.vocab_size, (20,), generator=torch.Generator().manual_seed(9))
    grads = []
    for keep in ([], ["blocks.*.moe.act", "blocks.*.moe.expert_out", "blocks.*.attn.probs"]):
        embed = m32.embedding.detach()[tokens].clone().requires_grad_(True)
        logits, trace = m32.run_with_trace(tokens, names=keep, hooks={"embed": lambda x, name: embed})
        assert len(trace) == (0 if not keep else 3 * m32.config.num_hidden_layers)
        logits[-1].logsumexp(-1).backward()
        grads.append(embed.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_final_hidden_is_the_forward_pass_before_the_unembedding(m32):
    tokens = torch.randint(0, m32.config.vocab_size, (2, 18), generator=torch.Generator().manual_seed(4))
    h = m32.final_hidden(tokens)
    assert h.shape == (2, 18, m32.config.hidden_size)
    torch.testing.assert_close(h @ m32.unembedding.T, m32(tokens), rtol=1e-5, atol=1e-5)
    _, trace = m32.run_with_trace(tokens[0], names="final_norm")
    torch.testing.assert_close(m32.final_hidden(tokens[0]), trace["final_norm"])
    seen = []
    m32.final_hidden(tokens, hooks={"blocks.*.moe.router_logits": lambda x, name: seen.append(name)})
    assert seen == [f"blocks.{i}.moe.router_logits" for i in range(m32.config.num_hidden_layers)]
