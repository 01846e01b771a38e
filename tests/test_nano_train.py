"""nano training: the reduced-vocabulary loss is exactly the full-vocabulary loss of the shipped model, the
shipped weights expand into an ordinary checkpoint (both layouts, transformers reads it), and a slice of
``workbench train-nano`` reproduces the shipped log bit for bit, also when resumed."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import pytest
import torch

from workbench.nano import train as tr

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_is_the_full_vocabulary_cross_entropy():
    """Loss over U trained rows + the analytic term for the V - U rows sharing one vector == cross-entropy of the
    model whose unembedding has all V rows (that vector, or zeros, elsewhere), computed directly over V."""
    vocab = sorted(torch.randperm(tr.V_FULL, generator=torch.Generator().manual_seed(0))[:300].tolist())
    cfg = dataclasses.replace(tr.TrainConfig(), model=dict(tr.TrainConfig().model, hidden_size=64,
                                                           intermediate_size=64, num_hidden_layers=2))
    model = tr.build_model(cfg, vocab)
    with torch.no_grad():
        model.unembedding.normal_(0, 0.8, generator=torch.Generator().manual_seed(2))  # mass small, not negligible
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, len(vocab), (3, 20), generator=g)
    mask = torch.rand((3, 20), generator=g) < 0.5
    mask[:, -1] = False
    batch = tr.Batch(tokens, mask, torch.ones_like(mask), 0, 0)
    shared = torch.randn(model.config.hidden_size, generator=g) * 0.3
    for untrained in (None, shared):
        _check_full_vocabulary_loss(model, vocab, batch, untrained)


def _check_full_vocabulary_loss(model, vocab, batch, shared):
    tokens, mask = batch.tokens, batch.mask
    u = None if shared is None else shared.clone().requires_grad_(True)
    loss, stats = tr.loss_fn(model, batch, tr.V_FULL, aux_coef=0.0, untrained=u)
    unseen = torch.ones(tr.V_FULL, dtype=torch.bool)
    unseen[torch.tensor(vocab)] = False
    full = torch.zeros((tr.V_FULL, model.config.hidden_size), dtype=torch.double)
    if shared is not None:
        full[:] = shared
    full[torch.tensor(vocab)] = model.unembedding.detach().double()
    full.requires_grad_(True)
    with torch.no_grad():
        h = model.final_hidden(tokens)[mask].double()
    logits = h @ full.T
    ids = torch.tensor(vocab)[tokens[:, 1:][mask[:, :-1]]]
    want = torch.nn.functional.cross_entropy(logits, ids)
    mass = torch.softmax(logits.detach(), -1)[:, unseen].sum(-1).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    assert stats["untrained_mass"] == pytest.approx(float(mass), rel=1e-4)
    assert 1e-6 < stats["untrained_mass"] < 1
    if u is not None:  # the shared row's gradient: the sum of the full model's gradients on the rows it stands for
        loss.backward()
        want.backward()
        assert torch.allclose(u.grad.double(), full.grad[unseen].sum(0), rtol=1e-4, atol=1e-7)


def test_schedule_and_fake_quantization():
    cfg = tr.TrainConfig(steps=100, warmup=10, lr=1e-3, min_lr=1e-4)
    assert tr.lr_at(cfg, 0) == pytest.approx(1e-4) and tr.lr_at(cfg, 9) == pytest.approx(1e-3)
    assert tr.lr_at(cfg, 100) == pytest.approx(1e-4) and 1e-4 < tr.lr_at(cfg, 55) < 1e-3
    w = torch.randn(2, 64, 32)
    q = tr.fake_quantize(w)
    from workbench import mxfp4

    assert torch.equal(q, mxfp4.dequantize(*mxfp4.quantize(w), dtype=torch.float32))
    assert torch.equal(tr.fake_quantize(q), q)  # MXFP4 values are fixed points
    assert (q - w).abs().max() < 0.5 * w.abs().max()


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_slice_of_the_command_reproduces_the_shipped_log(tmp_path):
    """`workbench train-nano OUT --steps 2`, then the same command resumed for a third step, give the shipped
    run's first three losses bit for bit (same seed and thread count as recorded with the weights)."""
    from workbench.cli import main
    from workbench.nano.ship import WEIGHTS, read_weights

    shipped = _rows(WEIGHTS.parent / "train.csv")
    meta = read_weights()[2]["train"]
    threads = meta["threads"]
    assert main(["train-nano", str(tmp_path), "--steps", "2", "--threads", str(threads), "--no-progress"]) == 0
    first = _rows(tmp_path / "train.csv")
    assert len(first) == 2
    assert main(["train-nano", str(tmp_path), "--steps", "3", "--threads", str(threads), "--no-progress"]) == 0
    resumed = _rows(tmp_path / "train.csv")
    assert resumed[:2] == first and len(resumed) == 3
    for ours, theirs in zip(resumed, shipped[:3]):
        for key in ("step", "chunk", "batch", "lr", "loss", "aux", "untrained_mass", "scored", "tokens"):
            assert ours[key] == theirs[key], (key, ours[key], theirs[key])
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["config"] == meta["config"] and run["threads"] == threads
