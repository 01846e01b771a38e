"""Checkpoint reading in both layouts, the built-in model, and errors that name the file and tensor."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from workbench import MXFP4Tensor, make_tiny_checkpoint, open_checkpoint
from workbench.checkpoint import CheckpointError, expected_shapes, save_checkpoint
from workbench.config import PRESETS, ModelConfig
from workbench.safetensors_io import Entry, write_safetensors


def _equal(a, b) -> bool:
    if isinstance(a, MXFP4Tensor):
        return isinstance(b, MXFP4Tensor) and torch.equal(a.blocks, b.blocks) and torch.equal(a.scales, b.scales)
    return torch.equal(a, b)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_both_layouts_give_identical_canonical_tensors(tiny_dir, tiny_hf_dir):
    a, b = open_checkpoint(tiny_dir), open_checkpoint(tiny_hf_dir)
    assert (a.layout, b.layout) == ("original", "hf")
    assert a.config == b.config == PRESETS["tiny"]
    assert list(a) == list(b) == list(expected_shapes(a.config))
    for name in a:
        assert _equal(a[name], b[name]), name


def test_tiny_has_the_real_structure(tiny_dir):
    ck = open_checkpoint(tiny_dir)
    c = ck.config
    assert c.vocab_size == 201088 and c.experts_per_token > 1 and c.num_hidden_layers >= 2
    assert {c.is_sliding(i) for i in range(c.num_hidden_layers)} == {True, False}
    w = ck["block.0.mlp.mlp1_weight"]
    assert isinstance(w, MXFP4Tensor) and w.shape == (c.num_experts, 2 * c.intermediate_size, c.hidden_size)
    assert ck["embedding.weight"].dtype == torch.bfloat16
    for name in ("block.0.attn.qkv.bias", "block.1.mlp.mlp1_bias", "block.0.mlp.gate.bias"):
        assert ck[name].abs().min() > 0 or ck[name].abs().mean() > 0.01, name  # non-zero biases
    sinks = ck["block.0.attn.sinks"].float()
    assert sinks.max() - sinks.min() > 1.0  # spread sink logits


def test_tiny_swiglu_inputs_pass_the_clamp(tiny_dir):
    """With unit-RMS inputs, a fair share of expert pre-activations exceed +-7 (the clamp is exercised)."""
    ck = open_checkpoint(tiny_dir)
    x = torch.randn(256, ck.config.hidden_size, generator=torch.Generator().manual_seed(0))
    h = x @ ck["block.0.mlp.mlp1_weight"].dequantize(torch.float32)[0].T
    frac = (h.abs() > ck.config.swiglu_limit).float().mean().item()
    assert 0.05 < frac < 0.6


def test_byte_for_byte_deterministic(tmp_path, tiny_dir):
    for layout in ("original", "hf"):
        a = make_tiny_checkpoint(tmp_path / f"a-{layout}", layout=layout, seed=0)
        b = make_tiny_checkpoint(tmp_path / f"b-{layout}", layout=layout, seed=0)
        assert _digest(a) == _digest(b)
    assert _digest(tmp_path / "a-original") == _digest(tiny_dir)
    c = make_tiny_checkpoint(tmp_path / "c", seed=1)
    assert _digest(c)["model.safetensors"] != _digest(tiny_dir)["model.safetensors"]


def test_transformers_reads_our_hf_layout(tiny_hf_dir):
    """transformers (an independent reader) sees the same config and, after dequantising, the same weights."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        tiny_hf_dir, dtype=torch.float32, quantization_config=transformers.Mxfp4Config(dequantize=True))
    ck = open_checkpoint(tiny_hf_dir)
    layer = model.model.layers[1]
    assert torch.equal(layer.mlp.experts.gate_up_proj.data.transpose(1, 2),
                       ck["block.1.mlp.mlp1_weight"].dequantize(torch.float32))
    assert torch.equal(layer.mlp.experts.down_proj.data.transpose(1, 2),
                       ck["block.1.mlp.mlp2_weight"].dequantize(torch.float32))
    qkv = torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight])
    assert torch.equal(qkv, ck["block.1.attn.qkv.weight"].float())
    assert torch.equal(layer.self_attn.sinks.data, ck["block.1.attn.sinks"].float())
    assert model.config.layer_types[0] == "sliding_attention" and model.config.sliding_window == ck.config.sliding_window


def test_dense_hf_experts_from_save_pretrained(tmp_path):
    """A dense transformers checkpoint (experts stored [E, in, out]) comes back as [E, out, in]."""
    import transformers

    cfg = transformers.GptOssConfig(num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=96,
                                    hidden_size=64, intermediate_size=32, head_dim=16, num_attention_heads=4,
                                    num_key_value_heads=2, sliding_window=8)
    torch.manual_seed(0)
    model = transformers.GptOssForCausalLM(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p)
    model.save_pretrained(tmp_path)
    ck = open_checkpoint(tmp_path)
    assert ck.layout == "hf" and ck.config.num_experts == 4 and ck.config.intermediate_size == 32
    w = ck["block.1.mlp.mlp2_weight"]
    assert isinstance(w, torch.Tensor) and w.shape == (4, 64, 32)
    assert torch.equal(w, model.model.layers[1].mlp.experts.down_proj.data.transpose(1, 2))


def test_checkpoint_root_with_original_subfolder(tmp_path, tiny_dir):
    shutil.copytree(tiny_dir, tmp_path / "original")
    ck = open_checkpoint(tmp_path)
    assert ck.layout == "original" and ck.path == tmp_path / "original"


def test_save_checkpoint_roundtrip_with_dense_and_packed(tmp_path, tiny_dir):
    src = open_checkpoint(tiny_dir)
    tensors = {n: src[n] for n in src}
    tensors["block.0.mlp.mlp1_weight"] = tensors["block.0.mlp.mlp1_weight"].dequantize()  # one dense
    for layout in ("original", "hf"):
        out = open_checkpoint(save_checkpoint(tmp_path / layout, src.config, tensors, layout=layout))
        for n in src:
            assert _equal(out[n], tensors[n]), (layout, n)


def test_reading_is_lazy(tiny_dir, monkeypatch):
    import safetensors

    calls = []
    real = safetensors.safe_open
    monkeypatch.setattr("workbench.checkpoint.safe_open", lambda *a, **k: calls.append(a) or real(*a, **k))
    ck = open_checkpoint(tiny_dir)
    assert calls == []  # headers are parsed, no data is read
    ck["norm.scale"]
    assert len(calls) == 1


# ---- broken checkpoints ----------------------------------------------------------------------
@pytest.fixture
def broken(tmp_path, tiny_dir):
    dst = tmp_path / "ck"
    shutil.copytree(tiny_dir, dst)
    return dst


def _rewrite(folder: Path, drop=(), replace=None):
    """Rewrite model.safetensors without some tensors or with some replaced."""
    from safetensors.torch import load_file

    tensors = load_file(folder / "model.safetensors")
    for n in drop:
        del tensors[n]
    tensors |= replace or {}
    write_safetensors(folder / "model.safetensors",
                      [Entry(n, t.dtype, tuple(t.shape), lambda t=t: t) for n, t in tensors.items()])


def test_missing_tensor(broken):
    _rewrite(broken, drop=["block.1.attn.sinks"])
    with pytest.raises(CheckpointError, match=r"block\.1\.attn\.sinks.*missing"):
        open_checkpoint(broken)


def test_wrong_shape_names_file_and_tensor(broken):
    _rewrite(broken, replace={"block.0.attn.out.bias": torch.zeros(63, dtype=torch.bfloat16)})
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'block\.0\.attn\.out\.bias' has shape \[63\]"):
        open_checkpoint(broken)


def test_wrong_dtype(broken):
    _rewrite(broken, replace={"block.0.mlp.mlp1_weight.scales": torch.zeros(8, 128, 2, dtype=torch.int16)})
    with pytest.raises(CheckpointError, match=r"mlp1_weight\.scales.*dtype torch\.int16, expected uint8"):
        open_checkpoint(broken)
    _rewrite(broken, replace={"block.0.mlp.mlp1_weight.scales": torch.zeros(8, 128, 2, dtype=torch.uint8),
                              "norm.scale": torch.zeros(64, dtype=torch.int32)})
    with pytest.raises(CheckpointError, match=r"'norm\.scale' has dtype torch\.int32"):
        open_checkpoint(broken)


def test_truncated_file(broken):
    f = broken / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size - 1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor '.*' ends at byte \d+.*truncated"):
        open_checkpoint(broken)


def test_corrupt_header(broken):
    f = broken / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:20] = b"\xff" * 12
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt header"):
        open_checkpoint(broken)
    f.write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match="too short"):
        open_checkpoint(broken)


def test_unknown_layout(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        open_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_checkpoint(tmp_path / "nope")


def test_config_missing_fields(broken):
    cfg = json.loads((broken / "config.json").read_text())
    del cfg["head_dim"], cfg["sliding_window"]
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json: missing fields head_dim, sliding_window"):
        open_checkpoint(broken)


def test_config_inconsistent_with_tensors(broken):
    cfg = json.loads((broken / "config.json").read_text())
    cfg["num_experts"] = 16
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"'block\.0\.mlp\.gate\.weight' has shape \[8, 64\], expected \[16, 64\]"):
        open_checkpoint(broken)


def test_config_inconsistent_in_itself(broken):
    cfg = json.loads((broken / "config.json").read_text())
    cfg["num_key_value_heads"] = 3
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a multiple of num_key_value_heads=3"):
        open_checkpoint(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        open_checkpoint(broken)


def test_hf_index_naming_a_missing_shard(tmp_path, tiny_hf_dir):
    dst = tmp_path / "hf"
    shutil.copytree(tiny_hf_dir, dst)
    shard = sorted(dst.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"shard '{shard.name}'.*does not exist"):
        open_checkpoint(dst)


def test_hf_config_missing_fields(tmp_path, tiny_hf_dir):
    dst = tmp_path / "hf"
    shutil.copytree(tiny_hf_dir, dst)
    cfg = json.loads((dst / "config.json").read_text())
    del cfg["num_local_experts"]
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing fields num_local_experts"):
        open_checkpoint(dst)


def test_config_roundtrips_through_both_json_forms():
    for cfg in PRESETS.values():
        assert ModelConfig.from_original_json(cfg.to_original_json()) == cfg
        assert ModelConfig.from_hf_json(cfg.to_hf_json()) == cfg


def test_transformers_reads_our_hf_config():
    import transformers

    hf = transformers.GptOssConfig(**PRESETS["20b"].to_hf_json())
    assert (hf.num_local_experts, hf.num_experts_per_tok, hf.num_hidden_layers) == (32, 4, 24)
    assert hf.rope_parameters["factor"] == 32.0 and hf.rope_parameters["beta_fast"] == 32.0
