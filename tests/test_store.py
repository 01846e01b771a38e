"""Activation stores: what is stored is what a direct run traces, labels included; reads are memory-mapped;
a writer killed with SIGKILL resumes without losing or repeating a sequence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from workbench.harmony import Conversation, encoding
from workbench.harmony_stats import token_labels
from workbench.store import ActivationStore, StoreError, StoreWriter, record_activations

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["blocks.1.attn.sink_prob", "blocks.*.resid_post", "blocks.2.moe.expert_idx", "blocks.0.attn.z"]


def items(n: int, seed: int = 0, system: bool = True):
    """n conversations (alternating efforts; ``system=False``: a user message alone, ~4x shorter) with
    short analysis + final completions."""
    enc = encoding()
    out = []
    for i in range(n):
        effort = ("low", "high")[i % 2]
        conv = Conversation.new("Be brief.", reasoning_effort=effort, date="2025-08-05") if system else Conversation()
        conv = conv.user(f"What is {i} + {seed}?")
        completion = enc.encode(f"<|channel|>analysis<|message|>Add {i} and {seed}.<|end|><|start|>assistant"
                                f"<|channel|>final<|message|>{i + seed}<|return|>", allowed_special="all")
        out.append((conv, completion, {"sample": i}))
    return out


def test_stored_rows_are_the_traced_activations_with_labels(m32, tmp_path):
    data = items(5)
    store = record_activations(m32, data, tmp_path / "s", NAMES, shard_bytes=20_000, progress=False)
    assert store.names == ["blocks.0.attn.z", "blocks.0.resid_post", "blocks.1.attn.sink_prob",
                           "blocks.1.resid_post", "blocks.2.moe.expert_idx", "blocks.2.resid_post",
                           "blocks.3.resid_post"]  # resolved, forward order
    assert store.keys == ["0", "1", "2", "3", "4"] and len(store._markers) > 1
    labels = store.labels
    for key, (conv, completion, extra) in zip(store.keys, data):
        tokens = conv.render() + completion
        _, tr = m32.run_with_trace(torch.tensor(tokens), names=NAMES)
        rows = labels[labels.key == key]
        want = token_labels(tokens, prompt_length=len(conv.render()), effort=conv.reasoning_effort)
        assert rows.id.tolist() == tokens and rows.channel.tolist() == want.channel.tolist()
        assert (rows["sample"] == extra["sample"]).all() and rows.effort.iloc[0] == conv.reasoning_effort
        r = torch.tensor(rows.row.to_numpy())
        torch.testing.assert_close(store["blocks.1.attn.sink_prob"][r], tr["blocks.1.attn.sink_prob"].T)
        torch.testing.assert_close(store["blocks.0.attn.z"][r], tr["blocks.0.attn.z"])
        assert torch.equal(store["blocks.2.moe.expert_idx"][r], tr["blocks.2.moe.expert_idx"])
    x = store["blocks.3.resid_post"]
    assert x.shape == (len(labels), 64) and len(x) == len(store)
    final = x[labels.channel == "final"]
    assert final.shape[0] == int((labels.channel == "final").sum())
    torch.testing.assert_close(x[-1], x.load()[-1])
    torch.testing.assert_close(x[3:9], x.load()[3:9])
    frame = store.frame("blocks.1.attn.sink_prob", labels.part == "completion")
    assert list(frame.columns[-4:]) == [f"blocks.1.attn.sink_prob[{i}]" for i in range(4)]
    first = frame.iloc[0]
    assert first["blocks.1.attn.sink_prob[2]"] == pytest.approx(float(store["blocks.1.attn.sink_prob"][int(first.row)][2]))
    assert "5 sequences" in repr(store) and "memory-mapped" in repr(x)


def mapped_files() -> list[tuple[int, int, str]]:
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6:
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            out.append((lo, hi, parts[5]))
    return out


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_reading_a_point_is_memory_mapped(m32, tmp_path):
    store = record_activations(m32, items(6), tmp_path / "s", ["logits"], shard_bytes=1 << 20, progress=False)
    x = store["logits"]
    maps = mapped_files()
    parts = list(x.shards())
    assert len(parts) == len(store._markers) >= 3
    for part, marker in zip(parts, store._markers):
        ptr = part.data_ptr()
        files = [f for lo, hi, f in maps if lo <= ptr < hi]
        assert files == [str(marker.with_suffix(".safetensors"))], "shard data is not a file mapping"


def test_refusals_and_mismatches(m32, tmp_path):
    with pytest.raises(StoreError, match="key axis"):
        record_activations(m32, items(1), tmp_path / "a", ["blocks.0.attn.probs"], progress=False)
    record_activations(m32, items(2), tmp_path / "b", ["blocks.0.resid_post"], progress=False)
    with pytest.raises(StoreError, match="names="):
        record_activations(m32, items(3), tmp_path / "b", ["blocks.1.resid_post"], progress=False)
    with StoreWriter(tmp_path / "c", ["embed"], config=m32.config):
        with pytest.raises(RuntimeError, match="another writer"):
            StoreWriter(tmp_path / "c", ["embed"], config=m32.config)
    with pytest.raises(ValueError, match="unique"):
        record_activations(m32, items(2), tmp_path / "d", ["embed"], keys=["x", "x"], progress=False)
    with pytest.raises(StoreError, match="not an activation store"):
        ActivationStore(tmp_path / "nothing")
    # resuming with the same settings adds only the new keys
    store = record_activations(m32, items(4), tmp_path / "b", ["blocks.0.resid_post"], progress=False)
    assert store.keys == ["0", "1", "2", "3"]


CHILD = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_store import items, NAMES
from workbench import load_model
from workbench.store import record_activations
model = load_model({ckpt!r}, dtype=torch.float32)
record_activations(model, items(200, system=False), {folder!r}, NAMES, shard_bytes=150_000, progress=False)
"""


def test_sigkill_then_resume_loses_and_repeats_nothing(m32, tiny_dir, tmp_path):
    folder = tmp_path / "store"
    script = textwrap.dedent(CHILD.format(tests=str(Path(__file__).parent), ckpt=str(tiny_dir), folder=str(folder)))
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(folder.glob("shard-*.json"))) < 4:
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the writer made no shards in time"
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = ActivationStore(folder)
    assert 0 < len(killed.keys) < 200  # killed mid-run, with whole shards on disk
    data = items(200, system=False)
    store = record_activations(m32, data, folder, NAMES, shard_bytes=150_000, progress=False)
    keys = store.keys
    assert sorted(keys, key=int) == [str(i) for i in range(200)] and len(keys) == len(set(keys))
    labels = store.labels
    lengths = labels.groupby("key").size()
    for key in ("0", killed.keys[-1], "199"):
        conv, completion, _ = data[int(key)]
        tokens = conv.render() + completion
        assert lengths[key] == len(tokens)
        rows = torch.tensor(labels[labels.key == key].row.to_numpy())
        _, tr = m32.run_with_trace(torch.tensor(tokens), names=NAMES)
        for name in store.names:
            want = tr[name].T if name.endswith("sink_prob") else tr[name]
            torch.testing.assert_close(store[name][rows], want, rtol=1e-5, atol=1e-5)
    assert len(store) == len(labels) == int(lengths.sum())
    assert not list(folder.glob(".*.tmp"))  # a killed writer's temporary files are cleared by the next one
