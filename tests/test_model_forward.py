"""The workbench model on the built-in tiny checkpoint: loading, shapes, errors, and pieces of the math
checked against independent computations written here from DESIGN.md's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from workbench import cpu_kernels, load_model, open_checkpoint
from workbench.model import Experts, Model, hook_names

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def spec_dequant(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """MXFP4 -> fp32 straight from the spec, element by element in vectorised form (independent of mxfp4.py)."""
    lut = torch.tensor(E2M1, dtype=torch.float64)
    lo, hi = lut[(blocks & 0xF).long()], lut[(blocks >> 4).long()]
    vals = torch.stack([lo, hi], dim=-1).flatten(-2)  # [..., G, 32]: low nibble = even element
    vals = vals * torch.pow(2.0, scales.double() - 127).unsqueeze(-1)
    return vals.flatten(-2).float()



pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 201088, (40,), generator=torch.Generator().manual_seed(0))


def test_load_both_layouts_identical(tiny_dir, tiny_hf_dir, tokens):
    for dtype in (torch.float32, torch.bfloat16):
        a = load_model(tiny_dir, dtype=dtype)(tokens)
        b = load_model(tiny_hf_dir, dtype=dtype)(tokens)
        assert a.dtype == dtype and torch.equal(a, b)


def test_defaults_and_shapes(tiny_dir, tokens, m32):
    m = load_model(tiny_dir)
    assert m.dtype == torch.bfloat16 and m.config.num_hidden_layers == 4
    V = m.config.vocab_size
    assert m(tokens).shape == (40, V)
    batch = torch.stack([tokens, tokens.roll(3)])
    out = m32(batch)
    assert out.shape == (2, 40, V)
    torch.testing.assert_close(out[0], m32(tokens), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], m32(tokens.roll(3)), rtol=1e-5, atol=1e-5)
    assert m32(tokens.tolist()).shape == (40, V)  # lists are accepted too
    assert "MXFP4" in repr(m32) and "top-2" in repr(m32)


def test_experts_stay_packed(m32, tiny_dir):
    ex = m32.block[0].mlp.experts
    assert ex.is_mxfp4
    assert ex.mlp1_weight_blocks.dtype == torch.uint8 and ex.mlp1_weight_scales.dtype == torch.uint8
    ckpt = open_checkpoint(tiny_dir)
    assert torch.equal(ex.mlp1_weight_blocks, ckpt["block.0.mlp.mlp1_weight"].blocks)
    # no dense copy of any expert matrix is held anywhere in the model: every float tensor of an
    # Experts module is a bias [E, out]
    for block in m32.block:
        for name, t in list(block.mlp.experts.named_parameters()) + list(block.mlp.experts.named_buffers()):
            assert t.dtype == torch.uint8 or (t.dim() == 2 and name.endswith("bias")), name


def test_only_picked_experts_are_dequantized(m32, tokens, monkeypatch):
    calls = []
    original = Experts.weights

    def spy(self, name, ids, dtype):
        calls.extend((id(self), name, e) for e in ids)
        return original(self, name, ids, dtype)

    monkeypatch.setattr(Experts, "weights", spy)
    with cpu_kernels.disabled():  # the pure-torch path (the fused CPU kernels never dequantize)
        _, trace = m32.run_with_trace(tokens[:3], names="blocks.*.moe.expert_idx")
    for i, block in enumerate(m32.block):
        picked = set(trace[f"blocks.{i}.moe.expert_idx"].flatten().tolist())
        for name in ("mlp1_weight", "mlp2_weight"):
            seen = [e for (obj, n, e) in calls if obj == id(block.mlp.experts) and n == name]
            assert sorted(seen) == sorted(picked)  # each picked expert once, nothing else
        assert len(picked) < m32.config.num_experts  # 3 tokens x top-2 cannot touch all 8


def test_bad_input_errors(m32):
    with pytest.raises(ValueError, match=r"token id 201088 at position \[2\]"):
        m32(torch.tensor([1, 2, 201088]))
    with pytest.raises(ValueError, match="token id -1"):
        m32(torch.tensor([[1, -1]]))
    with pytest.raises(TypeError, match="integer ids"):
        m32(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="non-empty"):
        m32(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        m32(torch.zeros(1, 2, 3, dtype=torch.long))


def test_backend_and_dtype_errors(tiny_dir, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="triton"):  # no GPU, no interpreter: a clear error, not a crash
        load_model(tiny_dir, backend="triton")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        load_model(tiny_dir, backend="cuda")
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(tiny_dir, dtype="int8")
    with pytest.raises(ValueError, match="floating-point"):
        load_model(tiny_dir, dtype=torch.int32)
    assert load_model(tiny_dir, dtype="fp32").dtype == torch.float32
    with pytest.raises(FileNotFoundError):
        load_model(tiny_dir / "nope")


def test_custom_backend_object_is_used(tiny_dir, tokens):
    """A backend object supplies the three swappable pieces; the model calls them."""
    from workbench.model import TorchBackend

    used = set()

    class Spy(TorchBackend):
        name = "spy"

        @staticmethod
        def attention(*a):
            used.add("attention")
            return TorchBackend.attention(*a)

        @staticmethod
        def router(*a):
            used.add("router")
            return TorchBackend.router(*a)

        @staticmethod
        def experts(*a):
            used.add("experts")
            return TorchBackend.experts(*a)

    m = load_model(tiny_dir, dtype=torch.float32, backend=Spy())
    ref = load_model(tiny_dir, dtype=torch.float32)
    assert torch.equal(m(tokens), ref(tokens))
    assert used == {"attention", "router", "experts"}


def test_moe_out_matches_spec_computation(m32, tiny_dir, tokens):
    """moe.out = sum_k w_k (swiglu(t W1^T + b1) W2^T + b2), from the checkpoint's raw MXFP4 bytes."""
    ckpt = open_checkpoint(tiny_dir)
    layer = 1
    _, tr = m32.run_with_trace(tokens, names=f"blocks.{layer}.moe.*")
    t, idx, w = tr[f"blocks.{layer}.moe.in"], tr[f"blocks.{layer}.moe.expert_idx"], tr[f"blocks.{layer}.moe.expert_weights"]
    p = f"block.{layer}.mlp."
    W1 = spec_dequant(ckpt[p + "mlp1_weight"].blocks, ckpt[p + "mlp1_weight"].scales).double()
    W2 = spec_dequant(ckpt[p + "mlp2_weight"].blocks, ckpt[p + "mlp2_weight"].scales).double()
    b1, b2 = ckpt[p + "mlp1_bias"].double(), ckpt[p + "mlp2_bias"].double()
    # router: logits, top-k sorted, softmax over the k
    logits = t.double() @ ckpt[p + "gate.weight"].double().T + ckpt[p + "gate.bias"].double()
    torch.testing.assert_close(tr[f"blocks.{layer}.moe.router_logits"].double(), logits, rtol=1e-5, atol=1e-5)
    top = logits.topk(m32.config.experts_per_token, dim=-1)
    assert torch.equal(idx, top.indices)
    torch.testing.assert_close(w.double(), torch.softmax(top.values, -1), rtol=1e-5, atol=1e-6)
    want = torch.zeros(t.shape, dtype=torch.float64)
    for n in range(t.shape[0]):
        for slot in range(idx.shape[1]):
            e = int(idx[n, slot])
            h = W1[e] @ t[n].double() + b1[e]
            gate, up = h[0::2].clamp(max=7.0), h[1::2].clamp(-7.0, 7.0)
            act = gate * torch.sigmoid(1.702 * gate) * (up + 1)
            want[n] += w[n, slot].double() * (W2[e] @ act + b2[e])
    torch.testing.assert_close(tr[f"blocks.{layer}.moe.out"].double(), want, rtol=1e-4, atol=1e-4)
    # the clamp is exercised by the built-in weights
    h_all = t.double() @ W1.transpose(1, 2) + b1[:, None, :]
    assert (h_all[..., 0::2] > 7).any() and (h_all[..., 1::2].abs() > 7).any()


def test_attention_matches_spec_computation(m32, tiny_dir, tokens):
    """Sinks, sliding window (even layers), GQA and YaRN RoPE recomputed naively from the checkpoint."""
    cfg = m32.config
    ckpt = open_checkpoint(tiny_dir)
    T = tokens.shape[0]
    assert T > cfg.sliding_window
    _, tr = m32.run_with_trace(tokens, names=["blocks.*.attn.*"])
    Hq, Hkv, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    # YaRN from DESIGN.md, in float64
    i = torch.arange(D // 2, dtype=torch.float64)
    freq = cfg.rope_theta ** (2 * i / D)
    L0, beta, alpha, f = cfg.initial_context_length, cfg.rope_ntk_beta, cfg.rope_ntk_alpha, cfg.rope_scaling_factor
    low = D / 2 * math.log(L0 / (beta * 2 * math.pi)) / math.log(cfg.rope_theta)
    high = D / 2 * math.log(L0 / (alpha * 2 * math.pi)) / math.log(cfg.rope_theta)
    ramp = ((i - low) / (high - low)).clamp(0, 1)
    inv_freq = (1 / (f * freq)) * ramp + (1 / freq) * (1 - ramp)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq
    conc = 0.1 * math.log(f) + 1
    cos, sin = ang.cos() * conc, ang.sin() * conc

    def rope(x):  # [T, heads, D], contiguous halves
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * cos[:, None] - x2 * sin[:, None], x2 * cos[:, None] + x1 * sin[:, None]], -1)

    for layer in (0, 1):
        p = f"block.{layer}.attn."
        t = tr[f"blocks.{layer}.attn.in"].double()
        qkv = t @ ckpt[p + "qkv.weight"].double().T + ckpt[p + "qkv.bias"].double()
        q = rope(qkv[:, : Hq * D].view(T, Hq, D))
        k = rope(qkv[:, Hq * D: (Hq + Hkv) * D].view(T, Hkv, D))
        v = qkv[:, (Hq + Hkv) * D:].view(T, Hkv, D)
        torch.testing.assert_close(tr[f"blocks.{layer}.attn.q"].double(), q, rtol=1e-4, atol=1e-4)
        sinks = ckpt[p + "sinks"].double()
        out = torch.zeros(T, Hq, D, dtype=torch.float64)
        probs = torch.zeros(Hq, T, T, dtype=torch.float64)
        sink_p = torch.zeros(Hq, T, dtype=torch.float64)
        for h in range(Hq):
            g = h // (Hq // Hkv)
            for qi in range(T):
                keys = [j for j in range(T) if j <= qi and (layer % 2 or qi - cfg.sliding_window < j)]
                s = torch.stack([q[qi, h] @ k[j, g] for j in keys]) / math.sqrt(D)
                denom = s.exp().sum() + sinks[h].exp()
                probs[h, qi, keys] = s.exp() / denom
                sink_p[h, qi] = sinks[h].exp() / denom
                out[qi, h] = (probs[h, qi, keys, None] * v[keys, g]).sum(0)
        torch.testing.assert_close(tr[f"blocks.{layer}.attn.probs"].double(), probs, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(tr[f"blocks.{layer}.attn.sink_prob"].double(), sink_p, rtol=1e-4, atol=1e-5)
        a = out.reshape(T, Hq * D) @ ckpt[p + "out.weight"].double().T + ckpt[p + "out.bias"].double()
        torch.testing.assert_close(tr[f"blocks.{layer}.attn.out"].double(), a, rtol=1e-4, atol=1e-4)
    # the sliding layer really drops keys beyond the window, the full layer does not
    assert (tr["blocks.0.attn.probs"][:, -1, : T - cfg.sliding_window] == 0).all()
    assert (tr["blocks.1.attn.probs"][:, -1, : T - cfg.sliding_window] > 0).all()


def test_norms_and_residuals(m32, tiny_dir, tokens):
    ckpt = open_checkpoint(tiny_dir)
    _, tr = m32.run_with_trace(tokens)
    x = ckpt["embedding.weight"][tokens].float()
    torch.testing.assert_close(tr["embed"], x)

    def rms(x, scale):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * scale.float()

    torch.testing.assert_close(tr["blocks.0.attn.in"], rms(x, ckpt["block.0.attn.norm.scale"]))
    for i in range(4):
        prev = tr["embed"] if i == 0 else tr[f"blocks.{i - 1}.resid_post"]
        torch.testing.assert_close(tr[f"blocks.{i}.resid_mid"], prev + tr[f"blocks.{i}.attn.out"])
        torch.testing.assert_close(tr[f"blocks.{i}.resid_post"], tr[f"blocks.{i}.resid_mid"] + tr[f"blocks.{i}.moe.out"])
        torch.testing.assert_close(tr[f"blocks.{i}.moe.in"], rms(tr[f"blocks.{i}.resid_mid"], ckpt[f"block.{i}.mlp.norm.scale"]))
    fn = rms(tr["blocks.3.resid_post"], ckpt["norm.scale"])
    torch.testing.assert_close(tr["final_norm"], fn)
    torch.testing.assert_close(tr["logits"], fn @ ckpt["unembedding.weight"].float().T, rtol=1e-4, atol=1e-4)


def test_model_is_an_nn_module_with_canonical_names(m32, tiny_dir):
    names = dict(m32.named_parameters())
    assert "block.0.attn.qkv.weight" in names and "block.3.mlp.gate.bias" in names
    assert "block.0.mlp.experts.mlp1_weight_blocks" in dict(m32.named_buffers())
    assert not any(p.requires_grad for p in m32.parameters())
    assert isinstance(m32, Model) and m32.hook_names() == hook_names(4)


@pytest.mark.parametrize("T,S,window,offset,Hq,Hkv", [(20, 20, 6, 0, 4, 2), (7, 30, None, 23, 6, 3),
                                                      (16, 40, 9, 24, 5, 5), (33, 33, None, 0, 8, 1)])
def test_fused_attention_path_equals_eager(T, S, window, offset, Hq, Hkv, monkeypatch):
    """The SDPA path (the sink as an extra key and head dimension; query chunks) equals the eager softmax with a
    sink column, and so does the sink mass it returns."""
    from workbench.model import attention_with_sinks, sdpa_with_sinks

    g = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, n, h, 16, generator=g) for n, h in ((T, Hq), (S, Hkv), (S, Hkv)))
    sinks = torch.randn(Hq, generator=g) * 2
    a = attention_with_sinks(q, k, v, sinks, 0.25, window, offset)
    b = sdpa_with_sinks(q, k, v, sinks, 0.25, window, offset)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    import workbench.model as wm  # the GPU layout: the sink dimension padded to a multiple of 8 with zeros

    monkeypatch.setattr(wm, "_sink_width", lambda D, device: -(-(D + 1) // 8) * 8)
    c, sp = sdpa_with_sinks(q, k, v, sinks, 0.25, window, offset, return_sink_prob=True, chunk=5)
    _, want_sp = attention_with_sinks(q, k, v, sinks, 0.25, window, offset, return_sink_prob=True)
    torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sp, want_sp, rtol=1e-5, atol=1e-6)


def test_expert_chunking_does_not_change_results(m32, tokens, monkeypatch):
    """Dequantizing one expert at a time (as a huge model must) gives the same logits as all at once."""
    import workbench.model as wm

    want = m32(tokens)
    monkeypatch.setattr(wm, "_EXPERT_CHUNK_BYTES", 1)
    torch.testing.assert_close(m32(tokens), want, rtol=0, atol=0)
