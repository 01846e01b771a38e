"""workbench.hooks is the one home of hook point facts: the model's real tensors agree with it, DESIGN.md's
original list is a subset of it, and the per-head / per-pick points carry what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from workbench import hooks
from workbench.checkpoint import MXFP4Tensor, expected_shapes
from workbench.config import ModelConfig
from workbench.interventions import ablate_heads
from workbench.model import Model, swiglu
from workbench.tiny import random_tensor


pytestmark = pytest.mark.usefixtures("one_thread")

DTYPES = {"float32": torch.float32, "int64": torch.long}


def random_model(seed=0, smooth: bool = False, **overrides) -> Model:
    """A random fp32 model of any shape (weights drawn like the built-in ones), held in memory.

    ``smooth``: expert input weights / 4 (MXFP4 scale exponents - 2), so few SwiGLU inputs reach the +-7
    clamp, whose kinks would spoil finite differences (the built-in scale hits it on purpose)."""
    base = dict(num_hidden_layers=2, num_experts=6, experts_per_token=2, hidden_size=32, intermediate_size=64,
                head_dim=8, num_attention_heads=4, num_key_value_heads=2, sliding_window=5, vocab_size=97)
    cfg = ModelConfig(**(base | overrides))
    weights = {name: random_tensor(cfg, name, seed) for name in expected_shapes(cfg)}
    if smooth:
        for name, w in weights.items():
            if name.endswith("mlp1_weight"):
                weights[name] = MXFP4Tensor(w.blocks, w.scales - 2)
    return Model(cfg, weights, dtype=torch.float32).eval()


def design_hook_names(num_layers: int) -> list[str]:
    """The hook list as DESIGN.md writes it (parsed from the doc when it is there)."""
    design = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"
    if design.is_file():
        text = design.read_text()
        section = text[text.index("- Hook names"): text.index("- `workbench.make_tiny_checkpoint")]
        raw = re.findall(r"`([a-z_{}.0-9]+)`", section)
        names = []
        for r in raw:
            if r.startswith(".") and names:  # "`.v`" continues the previous name
                names.append(names[-1].rsplit(".", 1)[0] + r)
            else:
                names.append(r)
    else:  # the same list, written out
        names = ["embed", "blocks.{i}.attn.in", "blocks.{i}.attn.q", "blocks.{i}.attn.k", "blocks.{i}.attn.v",
                 "blocks.{i}.attn.scores", "blocks.{i}.attn.probs", "blocks.{i}.attn.sink_prob",
                 "blocks.{i}.attn.out", "blocks.{i}.resid_mid", "blocks.{i}.moe.in", "blocks.{i}.moe.router_logits",
                 "blocks.{i}.moe.expert_idx", "blocks.{i}.moe.expert_weights", "blocks.{i}.moe.out",
                 "blocks.{i}.resid_post", "final_norm", "logits"]
    out = []
    for n in names:
        out += [n.replace("{i}", str(i)) for i in range(num_layers)] if "{i}" in n else [n]
    return out


CONFIGS = [dict(), dict(experts_per_token=1), dict(experts_per_token=3, num_attention_heads=6, num_key_value_heads=3),
           dict(experts_per_token=4, num_experts=5, num_attention_heads=4, num_key_value_heads=1, intermediate_size=32)]


def test_design_list_is_a_subset_and_names_are_unique():
    names = hooks.hook_names(4)
    assert set(design_hook_names(4)) <= set(names)
    assert len(set(names)) == len(names)
    new = {"blocks.0.attn.z", "blocks.3.moe.expert_out", "blocks.2.moe.act"}
    assert new <= set(names)


def test_point_lookup_and_errors():
    assert hooks.point("blocks.12.moe.act") is hooks.point("blocks.{i}.moe.act")
    assert hooks.point("embed").token_axis == -2 and not hooks.point("embed").per_layer
    assert hooks.token_axis("blocks.0.attn.q") == -3 and hooks.token_axis("blocks.0.attn.scores") == -2
    assert hooks.token_axis("blocks.0.moe.expert_out") == -3
    for bad in ("blocks.0.embed", "blocks.x.attn.q", "attn.q", "blocks.0.attn.zz"):
        with pytest.raises(KeyError, match="no hook point named"):
            hooks.point(bad)
    df = hooks.table()
    assert list(df.index) == [p.pattern for p in hooks.POINTS] and df.loc["blocks.{i}.attn.z", "shape"] == ["T", "Hq", "D"]


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "base")
def test_every_point_has_the_shape_dtype_and_token_axis_hooks_says(overrides):
    model = random_model(**overrides)
    cfg, T = model.config, 7
    tokens = torch.randint(0, cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(3))
    _, tr = model.run_with_trace(tokens)
    assert list(tr) == model.hook_names() == hooks.hook_names(cfg.num_hidden_layers)
    for name, t in tr.items():
        p = hooks.point(name)
        assert tuple(t.shape) == p.shape(cfg, T), name
        assert t.dtype == DTYPES.get(p.dtype, model.dtype), name
    # batched: one more leading dim; the first sequence's values are the unbatched run's
    batch = torch.stack([tokens, tokens.flip(0)])
    _, btr = model.run_with_trace(batch)
    for name, t in btr.items():
        assert tuple(t.shape) == (2, *hooks.shape(name, cfg, T)), name
        torch.testing.assert_close(t[0], tr[name], rtol=1e-4, atol=1e-4)
    # the token axis indexes positions: a causal prefix run equals the full run narrowed along it
    _, pre = model.run_with_trace(tokens[:4])
    for name, t in tr.items():
        p = hooks.point(name)
        cut = t.narrow(p.token_axis, 0, 4)
        if "S" in p.dims:
            cut = cut.narrow(p.dims.index("S") - len(p.dims), 0, 4)
        torch.testing.assert_close(cut, pre[name], rtol=1e-4, atol=1e-4, msg=name)  # other row counts: other GEMM rounding


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "base")
def test_attn_z_is_probs_times_values_and_projects_to_attn_out(overrides):
    model = random_model(seed=1, **overrides)
    cfg, T = model.config, 9  # longer than the sliding window
    tokens = torch.randint(0, cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(4))
    _, tr = model.run_with_trace(tokens, names=["blocks.*.attn.z", "blocks.*.attn.probs", "blocks.*.attn.v",
                                                "blocks.*.attn.out"])
    G = cfg.num_attention_heads // cfg.num_key_value_heads
    for i in range(cfg.num_hidden_layers):
        probs, v = tr[f"blocks.{i}.attn.probs"], tr[f"blocks.{i}.attn.v"]  # [Hq, T, S], [S, Hkv, D]
        z = torch.einsum("hts,shd->thd", probs, v.repeat_interleave(G, dim=1))
        torch.testing.assert_close(tr[f"blocks.{i}.attn.z"], z, rtol=1e-5, atol=1e-5)
        out = model.block[i].attn.out
        torch.testing.assert_close(tr[f"blocks.{i}.attn.out"],
                                   z.reshape(T, -1) @ out.weight.T + out.bias, rtol=1e-5, atol=1e-5)


def spec_expert(model, layer, e, t):
    """expert_e(t) = swiglu(t W1_e^T + b1_e) W2_e^T + b2_e, from DESIGN.md; returns (act, out)."""
    ex = model.block[layer].mlp.experts
    w1, w2 = ex.weight("mlp1_weight", e, torch.float32), ex.weight("mlp2_weight", e, torch.float32)
    h = t @ w1.T + ex.mlp1_bias[e]
    act = swiglu(h, model.config.swiglu_limit)
    return act, act @ w2.T + ex.mlp2_bias[e]


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "base")
def test_per_pick_points_are_each_experts_act_and_output(overrides):
    model = random_model(seed=2, **overrides)
    cfg, T = model.config, 6
    tokens = torch.randint(0, cfg.vocab_size, (2, T), generator=torch.Generator().manual_seed(5))
    logits, tr = model.run_with_trace(tokens, names="blocks.*.moe.*")
    torch.testing.assert_close(logits, model(tokens), rtol=1e-5, atol=1e-5)  # the per-pick path computes the same
    for i in range(cfg.num_hidden_layers):
        idx, w = tr[f"blocks.{i}.moe.expert_idx"], tr[f"blocks.{i}.moe.expert_weights"]
        act, out, x = tr[f"blocks.{i}.moe.act"], tr[f"blocks.{i}.moe.expert_out"], tr[f"blocks.{i}.moe.in"]
        for b in range(2):
            for t in range(T):
                for j in range(cfg.experts_per_token):
                    a, y = spec_expert(model, i, int(idx[b, t, j]), x[b, t])
                    torch.testing.assert_close(act[b, t, j], a, rtol=1e-5, atol=1e-5)
                    torch.testing.assert_close(out[b, t, j], y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close((w[..., None] * out).sum(-2), tr[f"blocks.{i}.moe.out"], rtol=1e-5, atol=1e-5)


def test_per_pick_replacements_feed_forward(m32):
    tokens = torch.randint(0, m32.config.vocab_size, (8,), generator=torch.Generator().manual_seed(6))
    _, tr = m32.run_with_trace(tokens, names=["blocks.1.moe.*"])

    def zero_pick(t, name):  # the second pick of token 3
        t = t.clone()
        t[3, 1] = 0
        return t

    # zeroing a pick's output == giving it zero routing weight
    by_out = m32.run_with_hooks(tokens, {"blocks.1.moe.expert_out": zero_pick})
    by_weight = m32.run_with_hooks(tokens, {"blocks.1.moe.expert_weights": zero_pick})
    torch.testing.assert_close(by_out, by_weight, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(by_out, m32(tokens), atol=1e-4)
    # zeroing a pick's activations leaves only its expert's output bias: replace the output by b2 instead
    e = int(tr["blocks.1.moe.expert_idx"][3, 1])
    b2 = m32.block[1].mlp.experts.mlp2_bias[e]

    def bias_only(t, name):
        t = t.clone()
        t[3, 1] = b2
        return t

    by_act = m32.run_with_hooks(tokens, {"blocks.1.moe.act": zero_pick})
    torch.testing.assert_close(by_act, m32.run_with_hooks(tokens, {"blocks.1.moe.expert_out": bias_only}),
                               rtol=1e-5, atol=1e-5)
    # a replacement of act is seen by expert_out in the same run
    _, tr2 = m32.run_with_trace(tokens, names=["blocks.1.moe.expert_out"], hooks={"blocks.1.moe.act": zero_pick})
    torch.testing.assert_close(tr2["blocks.1.moe.expert_out"][3, 1], b2)


def test_attn_z_replacement_equals_head_ablation(m32):
    tokens = torch.randint(0, m32.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(7))

    def zero_head(t, name):
        t = t.clone()
        t[..., 2, :] = 0  # [B, T, Hq, D]
        return t

    torch.testing.assert_close(m32.run_with_hooks(tokens, {"blocks.2.attn.z": zero_head}),
                               m32.run_with_hooks(tokens, ablate_heads(2, layers=[2])), rtol=1e-5, atol=1e-5)


def test_unused_points_take_the_plain_paths(m32, monkeypatch):
    """Registered but unused, the new points run nothing extra: the backend's experts and attention run."""
    calls = []
    backend = m32.backend
    for piece in ("attention", "experts"):
        original = getattr(type(backend), piece)
        monkeypatch.setattr(type(backend), piece, staticmethod(lambda *a, _o=original, _p=piece, **k:
                                                                 (calls.append(_p), _o(*a, **k))[1]))
    tokens = torch.randint(0, m32.config.vocab_size, (20,), generator=torch.Generator().manual_seed(8))
    m32.run_with_trace(tokens, names=["blocks.*.attn.z", "blocks.*.moe.out"])
    assert calls.count("attention") == 4 and calls.count("experts") == 4
    calls.clear()
    m32.run_with_trace(tokens, names=["blocks.0.moe.act"])
    assert calls.count("experts") == 3  # layer 0 took the per-pick reference path


def test_docs_name_every_point():
    """The README's hook list and the model docstring's walk-through name every point hooks.py holds."""
    import doctest

    import workbench.model

    root = Path(__file__).resolve().parents[1]
    readme = root.joinpath("README.md").read_text()
    listed = set()
    for group in re.findall(r"`([a-z_{}.]+)\{([a-z_,]+)\}`", readme):  # `blocks.{i}.attn.{in,q,...}`
        listed |= {group[0] + s for s in group[1].split(",")}
    listed |= set(re.findall(r"`([a-z_{}.]+)`", readme))
    doc = workbench.model.__doc__
    for p in hooks.POINTS:
        assert p.pattern in listed, f"README does not list {p.pattern}"
        assert f'"{p.suffix}"' in doc, f"the model docstring does not show {p.suffix}"
    assert doctest.testmod(hooks).failed == 0
