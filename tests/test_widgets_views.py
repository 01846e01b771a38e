"""RouterView, SinkView, MXFP4View and ToolTraceView without a browser: what they send (binary
arrays, checked against numpy computations of our own), how they read traces (dicts and the tiny
model's Trace), checkpoints and models, and the errors they give for missing data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.harmony import encoding, parse_tokens
from workbench.tools import ToolStep, ToolTrace
from workbench.widgets import MXFP4View, RouterView, SinkView, TokenStreamView, ToolTraceView, export_html


def dict_trace(T=6, L=3, E=5, k=2, H=2, batch=False):
    g = torch.Generator().manual_seed(0)
    trace = {}
    for i in range(L):
        logits = torch.randn(T, E, generator=g)
        top = logits.topk(k)
        probs = torch.rand(H, T, T, generator=g).tril()
        sink = torch.rand(H, T, generator=g)
        probs = probs / probs.sum(-1, keepdim=True) * (1 - sink[..., None])
        items = {"moe.router_logits": logits, "moe.expert_idx": top.indices, "moe.expert_weights": top.values.softmax(-1),
                 "attn.probs": probs, "attn.sink_prob": sink}
        for name, t in items.items():
            trace[f"blocks.{i}.{name}"] = t[None] if batch else t
    return trace


def arr(buf: bytes, dtype: str, shape) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def test_router_view_sends_binary_arrays_of_the_trace():
    tr = dict_trace()
    v = RouterView(tr, ["a", "<b>", "c", "d", "e", "f"])
    assert (v.layer_ids, v.num_tokens, v.top_k, v.num_experts) == ([0, 1, 2], 6, 2, 5)
    idx = np.stack([tr[f"blocks.{i}.moe.expert_idx"].numpy() for i in range(3)])
    assert (arr(v.expert_idx, "i2", (3, 6, 2)) == idx).all()
    assert np.allclose(arr(v.expert_weights, "f4", (3, 6, 2)),
                       np.stack([tr[f"blocks.{i}.moe.expert_weights"].numpy() for i in range(3)]))
    assert np.allclose(arr(v.router_logits, "f4", (3, 6, 5)),
                       np.stack([tr[f"blocks.{i}.moe.router_logits"].numpy() for i in range(3)]))
    load = np.stack([np.bincount(idx[l].ravel(), minlength=5) for l in range(3)])
    assert (v.expert_load().numpy() == load).all()
    assert v.labels[1] == "<b>" and v.selected == [0, 5]
    for name in ("expert_idx", "expert_weights", "router_logits"):
        assert isinstance(getattr(v, name), bytes)


def test_router_view_without_logits_with_batch_dim_and_errors():
    tr = {k: v for k, v in dict_trace(batch=True).items() if "router_logits" not in k}
    v = RouterView(tr, num_experts=7)
    assert v.router_logits == b"" and v.num_experts == 7 and v.num_tokens == 6
    assert RouterView(tr).num_experts == int(max(tr[f"blocks.{i}.moe.expert_idx"].max() for i in range(3))) + 1
    with pytest.raises(KeyError, match=r"moe.expert_idx"):
        RouterView({"blocks.0.attn.sink_prob": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="outside"):
        RouterView(tr, num_experts=1)
    with pytest.raises(ValueError, match="3 token labels for 6"):
        RouterView(tr, ["a", "b", "c"])


def test_sink_view_all_patterns_or_one_head_on_demand():
    tr = dict_trace()
    v = SinkView(tr)
    sink = np.stack([tr[f"blocks.{i}.attn.sink_prob"].numpy() for i in range(3)])
    assert np.allclose(arr(v.sink_prob, "f4", (3, 2, 6)), sink)
    probs = np.stack([tr[f"blocks.{i}.attn.probs"].numpy() for i in range(3)])
    assert np.allclose(arr(v.patterns, "f4", (3, 2, 6, 6)), probs) and v.pattern == b""
    assert np.allclose(v.mean_sink().numpy(), sink.mean(-1))

    lazy = SinkView(tr, max_pattern_bytes=0, selected=(1, 1))
    assert lazy.patterns == b"" and lazy.pattern_of == [1, 1]
    assert np.allclose(arr(lazy.pattern, "f4", (6, 6)), probs[1, 1])
    lazy.selected = [2, 0]  # what a click in the browser does
    assert lazy.pattern_of == [2, 0] and np.allclose(arr(lazy.pattern, "f4", (6, 6)), probs[2, 0])

    only_sinks = SinkView({k: t for k, t in tr.items() if k.endswith("sink_prob")})
    assert only_sinks.num_keys == 0 and only_sinks.patterns == b""


def test_router_and_sink_views_read_the_tiny_models_trace(tiny_dir):
    import workbench

    model = workbench.load_model(tiny_dir)
    tokens = encoding().encode("<|start|>user<|message|>Hello there<|end|>", allowed_special="all")
    _, trace = model.run_with_trace(torch.tensor(tokens), names=["*.moe.*", "*.attn.sink_prob", "*.attn.probs"])
    cfg = model.config
    r = RouterView(trace, tokens)
    assert (len(r.layer_ids), r.num_tokens, r.top_k, r.num_experts) == (
        cfg.num_hidden_layers, len(tokens), cfg.experts_per_token, cfg.num_experts)
    w = arr(r.expert_weights, "f4", (cfg.num_hidden_layers, len(tokens), cfg.experts_per_token))
    assert np.allclose(w.sum(-1), 1, atol=1e-3)
    assert r.labels[0] == "<|start|>" and "".join(r.labels[2:4]) == "<|message|>Hello"
    assert RouterView(trace).labels == r.labels  # the trace's own tokens label the positions
    s = SinkView(trace)
    assert s.labels == r.labels
    assert s.num_heads == cfg.num_attention_heads and s.num_keys == len(tokens)
    p = arr(s.patterns, "f4", (cfg.num_hidden_layers, s.num_heads, len(tokens), len(tokens)))
    sink = arr(s.sink_prob, "f4", (cfg.num_hidden_layers, s.num_heads, len(tokens)))
    assert np.allclose(p.sum(-1) + sink, 1, atol=2e-2)  # a row sums to 1 - sink_prob (bf16 model)


def nibble_counts(blocks: torch.Tensor) -> np.ndarray:
    b = blocks.numpy().ravel()
    return np.bincount(np.concatenate([b & 15, b >> 4]), minlength=16)


def test_mxfp4_view_from_checkpoint_model_and_tensor(tiny_dir):
    import workbench

    ckpt = workbench.open_checkpoint(tiny_dir)
    w = ckpt["block.1.mlp.mlp2_weight"][3]
    v = MXFP4View(ckpt, 1, 3, weight="mlp2_weight")
    assert (arr(v.scale_counts, "i4", 256) == np.bincount(w.scales.numpy().ravel(), minlength=256)).all()
    assert (arr(v.code_counts, "i4", 16) == nibble_counts(w.blocks)).all()
    assert v.error_counts == b"" and v.summary["blocks"] == w.scales.numel()
    assert "layer 1 · expert 3 · mlp2_weight" == v.title

    model = workbench.load_model(tiny_dir)
    assert MXFP4View(model, 1, 3, weight="mlp2_weight").code_counts == v.code_counts
    assert MXFP4View(str(tiny_dir), 1, 3, weight="mlp2_weight").scale_counts == v.scale_counts
    assert MXFP4View(ckpt["block.1.mlp.mlp2_weight"], expert=3).code_counts == v.code_counts

    for bad, match in (((ckpt, 99, 0), "block.99"), ((ckpt, 0, 99), "expert 99"), ((model, 99, 0), "layer 99")):
        with pytest.raises((KeyError, IndexError), match=match):
            MXFP4View(*bad)


def test_mxfp4_view_quantisation_error_against_a_reference(tiny_dir):
    import workbench

    ckpt = workbench.open_checkpoint(tiny_dir)
    deq = ckpt["block.0.mlp.mlp1_weight"][1].dequantize(torch.float32)
    ref = deq + 0.01 * torch.randn(deq.shape, generator=torch.Generator().manual_seed(0))
    v = MXFP4View(ckpt, 0, 1, reference=ref)
    diff = (deq - ref).numpy()
    assert v.summary["max_abs_error"] == pytest.approx(np.abs(diff).max(), rel=1e-5)
    assert v.summary["relative_error"] == pytest.approx(np.linalg.norm(diff) / np.linalg.norm(ref.numpy()), rel=1e-4)
    counts = arr(v.error_counts, "i4", -1)
    assert counts.sum() == v.summary["blocks"] and len(arr(v.error_edges, "f4", -1)) == len(counts) + 1

    dense = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    d = MXFP4View(dense)  # dense weights are quantised here and compared with themselves
    assert d.summary["shape"] == [16, 64] and d.summary["relative_error"] < 0.2


def test_tool_trace_view_rows_span_text_and_link_to_a_stream():
    tokens = encoding().encode("<|channel|>commentary to=python<|message|>print(1)<|call|>", allowed_special="all")
    t = parse_tokens(tokens)
    stream = TokenStreamView(t)
    steps = ToolTrace([ToolStep(index=0, generation=0, recipient="python", arguments="print(1)", result="1\n",
                                duration=0.25, token_span=(0, len(tokens) - 1)),
                       ToolStep(index=1, generation=1, recipient="browser.open", arguments="{}", result="",
                                duration=0.5, error="no page <b>")])
    v = ToolTraceView(steps, transcripts=[t], streams=[stream])
    assert [s["recipient"] for s in v.steps] == ["python", "browser.open"]
    assert v.steps[0]["span_text"] == encoding().decode(tokens) and v.steps[0]["linked"]
    assert v.steps[1]["span_text"] is None and not v.steps[1]["linked"] and v.steps[1]["error"] == "no page <b>"
    v.selected = 0  # clicking "show in token stream"
    assert stream.highlight == [0, len(tokens) - 1]
    v.append(ToolStep(index=2, generation=0, recipient="python", arguments="", result="", duration=0.1))
    assert len(v.steps) == 3 and "3 steps" in v.fallback_text()


def test_every_widget_exports_standalone_html(tmp_path, tiny_dir):
    import workbench

    tr = dict_trace()
    widgets = [TokenStreamView([1, 2, 3]), ToolTraceView([]), RouterView(tr), SinkView(tr),
               MXFP4View(workbench.open_checkpoint(tiny_dir), 0, 0)]
    for w in widgets:
        page = w.export_html(tmp_path / f"{type(w).__name__}.html").read_text()
        assert page.count('<script type="module">') == 1 and page.count('class="wb-spec"') == 1
        assert "http://" not in page and "https://" not in page  # nothing fetched from anywhere
        assert w._repr_html_().startswith('<div class="wb-static"')
    page = export_html(tmp_path / "all.html", widgets).read_text()
    assert page.count('<script type="module">') == 5
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_nbconvert_uses_the_static_html_once_widget_state_is_dropped():
    import nbformat
    from IPython.core.interactiveshell import InteractiveShell
    from nbconvert import HTMLExporter

    from workbench.widgets import without_widget_state

    view = TokenStreamView([200005, 17196, 200008, 12194, 200007])
    data, _ = InteractiveShell.instance().display_formatter.format(view)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("view")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    nb.cells = [cell]
    model_id = data["application/vnd.jupyter.widget-view+json"]["model_id"]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "version_major": 2, "version_minor": 0, "state": {model_id: {"model_name": "AnyModel", "model_module": "anywidget",
                                                                      "model_module_version": "*", "state": {}}}}}
    with_state, _ = HTMLExporter().from_notebook_node(nb)
    assert 'class="wb-static"' not in with_state  # nbconvert prefers the widget view (needs a CDN)
    stripped = without_widget_state(nb)
    assert "widgets" in nb.metadata and "widgets" not in stripped.metadata
    html, _ = HTMLExporter().from_notebook_node(stripped)
    assert html.count('class="wb-static"') == 1 and 'class="wb-spec"' in html


def test_nbconvert_execute_without_stored_widget_state_shows_the_static_widgets(tmp_path):
    """The README's one step for an offline HTML copy of a notebook: ``jupyter nbconvert --execute --to html
    --ExecutePreprocessor.store_widget_state=False``, here through the same classes the command uses."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from workbench.widgets import TokenStreamView\nTokenStreamView([200005, 17196, 200008, 12194, 200007])")]
    for store, static in ((True, 0), (False, 1)):
        done = ExecutePreprocessor(timeout=120, store_widget_state=store).preprocess(
            nbformat.from_dict(nb), {"metadata": {"path": str(tmp_path)}})[0]
        html, _ = HTMLExporter().from_notebook_node(done)
        assert html.count('class="wb-static"') == static, store
