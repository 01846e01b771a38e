"""The shipped nano weights: only trained rows in the package, the full checkpoint (both layouts) on first use,
an ordinary gpt-oss checkpoint to every loader (transformers too), the default of the workbench."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import workbench
from workbench.harmony import Conversation
from workbench.nano import ship

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nano_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nano")
    return {layout: ship.write_checkpoint(root / layout, layout=layout) for layout in ("original", "hf")}


def test_package_holds_only_trained_rows():
    from safetensors import safe_open

    with safe_open(str(ship.WEIGHTS), framework="pt") as f:
        vocab = f.get_tensor("vocab")
        rows = f.get_tensor("embedding.rows")
        keys = set(f.keys())
    cfg, tensors, meta = ship.read_weights()
    assert ship.WEIGHTS.stat().st_size < 8 << 20  # a few MB
    assert cfg.vocab_size == 201088 and rows.shape == (len(vocab), cfg.hidden_size) and len(vocab) < 5000
    assert "embedding.weight" not in keys and "block.0.mlp.mlp1_weight.blocks" in keys
    untrained = torch.ones(cfg.vocab_size, dtype=torch.bool)
    untrained[vocab.long()] = False
    for name in ship.ROWS:
        assert tensors[name].shape == (cfg.vocab_size, cfg.hidden_size)
        assert tensors[name][~untrained].abs().amax(-1).min() > 0
    assert tensors["embedding.weight"][untrained].abs().max() == 0  # never an input
    with safe_open(str(ship.WEIGHTS), framework="pt") as f:
        shared = f.get_tensor(ship.UNTRAINED)
    assert shared.shape == (cfg.hidden_size,) and shared.abs().max() > 0
    assert torch.equal(tensors["unembedding.weight"][untrained], shared.expand(int(untrained.sum()), -1))
    assert meta["train"]["config"]["seed"] == 0 and "commit" in meta["train"]


def test_both_layouts_load_and_agree(nano_dirs):
    tokens = Conversation.new(reasoning_effort="high").user("What is 48,213 + 9,771?").render()
    a = workbench.load_model(nano_dirs["original"], dtype=torch.float32)
    b = workbench.load_model(nano_dirs["hf"], dtype=torch.float32)
    assert a.block[0].mlp.experts.is_mxfp4 and b.block[0].mlp.experts.is_mxfp4
    la, lb = a(tokens), b(tokens)
    assert torch.equal(la, lb)
    trained = ship.read_weights()[1]["embedding.weight"].abs().sum(-1) > 0
    other = la[:, ~trained]  # untrained ids share one unembedding row: one logit per position, below the best
    assert (other == other[:, :1]).all() and (other[:, 0] < la[:, trained].amax(-1)).all()


def test_transformers_reads_the_hf_layout(nano_dirs):
    transformers = pytest.importorskip("transformers")
    tokens = torch.tensor(Conversation.new().user("Hi").render())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.GptOssForCausalLM.from_pretrained(
            nano_dirs["hf"], quantization_config=transformers.Mxfp4Config(dequantize=True), dtype=torch.float32,
            attn_implementation="eager").eval()
    with torch.no_grad():
        want = hf(tokens[None]).logits[0]
    got = workbench.load_model(nano_dirs["hf"], dtype=torch.float32)(tokens)
    assert (got - want).abs().max() < 1e-4 * want.abs().max()


def test_default_checkpoint_is_nano_written_once(cache_root):
    path = workbench.default_checkpoint()
    assert path.parent == cache_root / "models" and path.name.startswith("nano-original-")
    assert json.loads((path / "config.json").read_text())["vocab_size"] == 201088
    stamp = (path / "config.json").stat().st_mtime_ns
    assert workbench.default_checkpoint() == path and (path / "config.json").stat().st_mtime_ns == stamp
    assert workbench.default_checkpoint(layout="hf").name.startswith("nano-hf-")
    tiny = workbench.default_checkpoint("tiny")  # the random presets stay for shapes, tests and benchmarks
    assert tiny.name == "tiny-original-seed0" and workbench.load_model(tiny).config.hidden_size == 64
