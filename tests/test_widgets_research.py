"""AttentionGridView and LogitLensView without a browser: what they send, checked against the trace and
the lens table; errors for missing data; static HTML keeps hostile text inert."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench import lens
from workbench.harmony import encoding
from workbench.widgets import AttentionGridView, LogitLensView, export_html

pytestmark = pytest.mark.usefixtures("one_thread")


def arr(buf: bytes, dtype: str, shape) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


@pytest.fixture(scope="module")
def tokens():
    return torch.tensor(encoding().encode("The sink takes what no key wants, twice: the sink."))


def test_attention_grid_sends_the_layer(m32, tokens):
    _, tr = m32.run_with_trace(tokens, names=["blocks.*.attn.probs", "blocks.*.attn.sink_prob"])
    T, H = len(tokens), m32.config.num_attention_heads
    v = AttentionGridView(tr, 2, selected=3)
    assert (v.layer, v.num_heads, v.num_tokens, v.num_keys, v.selected) == (2, H, T, T, 3)
    assert np.allclose(arr(v.probs, "f4", (H, T, T)), tr["blocks.2.attn.probs"].numpy())
    assert np.allclose(arr(v.sink_prob, "f4", (H, T)), tr["blocks.2.attn.sink_prob"].numpy())
    assert v.labels == [encoding().decode([int(t)]) for t in tokens]
    # without sink_prob the sink column is what the keys leave over; batched traces pick a row
    _, btr = m32.run_with_trace(torch.stack([tokens, tokens.flip(0)]), names=["blocks.1.attn.probs"])
    w = AttentionGridView(btr, batch=1)
    assert w.layer == 1 and np.allclose(arr(w.sink_prob, "f4", (H, T)),
                                        1 - btr["blocks.1.attn.probs"][1].sum(-1).numpy(), atol=1e-6)
    with pytest.raises(KeyError, match="has layers"):
        AttentionGridView(tr, 9)
    with pytest.raises(ValueError, match="max_bytes"):
        AttentionGridView(tr, 0, max_bytes=100)
    with pytest.raises(KeyError, match="attn.probs"):
        AttentionGridView({"blocks.0.attn.sink_prob": torch.zeros(2, 3)})


def test_logit_lens_view_sends_the_table(m32, tokens):
    target = int(tokens[3])
    table = lens.logit_lens(m32, tokens, top=3, target=target)
    v = LogitLensView(table, tokens)
    S, P = 9, len(tokens)
    assert v.stages == ["embed"] + [f"{i}.{s}" for i in range(4) for s in ("mid", "post")]
    assert v.positions == list(range(P)) and v.k == 3 and v.value == "target"
    ids = arr(v.top_ids, "i4", (S, P, 3))
    row = table[(table.stage == "2.post") & (table.position == 5)].iloc[0]
    assert tuple(ids[v.stages.index("2.post"), 5]) == row.top_tokens
    assert np.allclose(arr(v.top_probs, "f4", (S, P, 3))[v.stages.index("2.post"), 5], row.top_probs)
    assert np.isclose(arr(v.target_prob, "f4", (S, P))[v.stages.index("2.post"), 5], row.target_prob)
    text = dict(map(tuple, v.id_text))
    assert set(text) == set(ids.ravel().tolist()) and text[int(ids[0, 0, 0])] == encoding().decode([int(ids[0, 0, 0])])
    assert LogitLensView(table, value="top").value == "top" and LogitLensView(table).labels == []
    sub = lens.logit_lens(m32, tokens, positions=[2, 7], mid=False)
    w = LogitLensView(sub, tokens)
    assert w.positions == [2, 7] and w.labels == [encoding().decode([int(tokens[p])]) for p in (2, 7)]
    assert w.target_prob == b"" and w.value == "top"
    with pytest.raises(ValueError, match="'target'"):
        LogitLensView(sub, value="target")
    with pytest.raises(ValueError, match="logit_lens returns"):
        LogitLensView(sub.drop(columns="top_tokens"))


def test_static_export_keeps_hostile_text_inert(m32, tmp_path):
    hostile = "<script>window.__wbPwned = 1</script>"
    ids = torch.tensor(encoding().encode(hostile + " and <img src=x onerror=alert(1)>"))
    _, tr = m32.run_with_trace(ids, names=["blocks.0.attn.probs"])
    page = export_html(tmp_path / "w.html", [AttentionGridView(tr, 0, ids),
                                            LogitLensView(lens.logit_lens(m32, ids), ids)]).read_text()
    assert "<script>window" not in page and "<img src=x" not in page
    assert page.count('<script type="module">') == 2
