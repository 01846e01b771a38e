"""`workbench eval --trace NAMES`: a sweep's samples stored per token with their labels, equal to direct runs."""

from __future__ import annotations

import subprocess

import torch

from workbench.evals import conversation_for_record, get_task, record_sweep
from workbench.evals.logs import latest_records
from workbench.store import ActivationStore


def test_eval_trace_stores_every_sample_once(tiny_dir, m32, tmp_path):
    out = tmp_path / "run"
    args = ["workbench", "eval", "--model", tiny_dir, "--constrained", "--tasks", "arithmetic", "--limit", "2",
            "--efforts", "low,high", "--max-tokens", "12", "--out", out, "--no-plots", "--no-progress",
            "--trace", "blocks.*.moe.expert_idx,blocks.1.resid_post"]
    r = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "ActivationStore(" in r.stdout and "4 sequences" in r.stdout
    store = ActivationStore(out / "activations")
    records = latest_records(out)
    assert sorted(store.keys) == sorted("/".join(map(str, key)) for key in records)
    labels = store.labels
    assert set(labels.effort) == {"low", "high"} and set(labels.task) == {"arithmetic"}
    assert set(labels.channel) >= {"-"} and labels.part.eq("completion").any()
    # one record, by hand: its conversation + completion through the same (bf16) model
    from workbench import load_model

    model = load_model(tiny_dir)
    record = next(iter(records.values()))
    task = get_task("arithmetic")
    conv = conversation_for_record(task, record)
    tokens = conv.render() + record["tokens"]
    key = "/".join(str(record[k]) for k in ("task", "sample", "model", "effort", "repeat"))
    rows = labels[labels.key == key]
    assert rows.id.tolist() == tokens and (rows.correct == record["correct"]).all()
    _, tr = model.run_with_trace(torch.tensor(tokens), names=store.names)
    sel = torch.tensor(rows.row.to_numpy())
    assert torch.equal(store["blocks.2.moe.expert_idx"][sel], tr["blocks.2.moe.expert_idx"])
    torch.testing.assert_close(store["blocks.1.resid_post"][sel], tr["blocks.1.resid_post"])
    # running again stores nothing twice; a text-only server refuses --trace
    again = record_sweep(out, model, store.names, tasks=["arithmetic"], folder=out / "activations", progress=False)
    assert sorted(again.keys) == sorted(store.keys)
    r = subprocess.run(["workbench", "eval", "--base-url", "http://127.0.0.1:9/v1", "--model", "x", "--out",
                        str(tmp_path / "x"), "--trace", "embed"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--trace needs the model in this process" in r.stderr
