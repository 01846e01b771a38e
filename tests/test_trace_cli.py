"""``workbench trace [PATH] "prompt"``: the table it prints agrees with run_with_trace."""

from __future__ import annotations

import re

import torch

from workbench.cli import main


def test_trace_cli_table(tiny_dir, capsys):
    prompt = "<|start|>user<|message|>Hello, world!<|end|>"
    assert main(["trace", str(tiny_dir), prompt, "--dtype", "fp32"]) == 0
    out = capsys.readouterr().out
    from workbench import load_model
    from workbench.harmony import encoding

    tokens = encoding().encode(prompt, allowed_special="all")
    model = load_model(tiny_dir, dtype=torch.float32)
    _, tr = model.run_with_trace(torch.tensor(tokens), names=["blocks.*.moe.expert_idx", "blocks.*.attn.sink_prob"])
    assert f"{len(tokens)} tokens" in out
    rows = [line for line in out.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert len(rows) == len(tokens)
    assert "<|start|>" in rows[0] and "·world" in out  # special tokens shown by name, spaces as ·
    for pos, line in enumerate(rows):
        cells = line.split()[-4:]
        for layer, cell in enumerate(cells):
            assert cell == ",".join(map(str, tr[f"blocks.{layer}.moe.expert_idx"][pos].tolist()))
    sink = {m.group(1): [float(x) for x in m.group(2).split()]
            for m in re.finditer(r"^\s+L(\d)\*?\s+([\d. ]+)$", out, flags=re.M)}
    assert set(sink) == {"0", "1", "2", "3"}
    for layer, values in sink.items():
        want = tr[f"blocks.{layer}.attn.sink_prob"].mean(-1).tolist()
        assert values == [round(w, 2) for w in want] or max(abs(a - b) for a, b in zip(values, want)) <= 0.005
    assert "L0*" in out and "L1*" not in out  # sliding layers marked


def test_trace_cli_weights_and_default_checkpoint(capsys):
    assert main(["trace", "hi there", "--weights"]) == 0  # no PATH: the built-in nano model
    out = capsys.readouterr().out
    assert "nano-original-" in out and re.search(r"\d:\.\d\d|\d:1\.00", out)


def test_trace_cli_errors(tiny_dir, capsys):
    assert main(["trace", str(tiny_dir), "a", "b"]) == 1
    assert "expected [PATH] PROMPT" in capsys.readouterr().err
    assert main(["trace", str(tiny_dir / "missing"), "hello"]) == 1
    assert "does not exist" in capsys.readouterr().err
