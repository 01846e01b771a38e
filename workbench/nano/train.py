"""Train the nano model on CPU: ``train(out, TrainConfig())`` or ``workbench train-nano OUT``.

The model is ``workbench.model.Model`` itself (sinks, alternating sliding/full attention, GQA, top-k MoE with
clamped SwiGLU), in fp32 with dense trainable experts, over a reduced vocabulary: the U token ids the data
can contain (``vocabulary``) are renumbered 0..U-1, so the embedding and unembedding have U rows. The
shipped checkpoint has all V = 201088 rows: the V - U others are zero in the embedding (never read) and in
the unembedding all equal one trained vector ``untrained`` [H] (the row every unseen id shares). Each of
them gets the logit l_o = h . untrained, so the full softmax's normaliser is

    Z = sum_{u in U} exp(l_u) + (V - U) * exp(l_o),   log Z = logaddexp(logsumexp_u l_u, log(V - U) + l_o),

and the loss -l_target + log Z is exactly the full-vocabulary cross-entropy of the shipped model: what
training optimises is the distribution it ships, and the shared row learns to keep l_o low (with zero rows,
l_o = 0, the mass on unseen ids stays large wherever the model is unsure). ``untrained_mass`` = (V - U)
exp(l_o) / Z, the probability the model puts on ids it never saw, is logged at every step. Logits are computed only where the loss needs them (the
tokens the assistant generates, ``data.tokens_and_mask``).

Data streams in chunks of fresh examples (``chunk_examples`` each, from seed (seed, chunk)), sorted by length
into padded batches of at most ``tokens_per_step`` tokens, batch order shuffled per chunk. Each chunk's tool
calls run in one sandboxed python process (``data.prefetch_python``). Loss: next-token cross-entropy on the
generated tokens, plus ``aux_coef`` x the switch-transformer load-balancing loss (E * sum_e f_e P_e per
layer, f = share of top-k picks, P = mean router probability; 1 when uniform). AdamW, linear warm-up then
cosine decay, gradient clipping. For the last ``1 - qat_from`` of the steps the expert matrices are
fake-quantized to MXFP4 in the forward pass (straight-through gradients to the fp32 master weights), the
other weights rounded to bf16 and the matmuls run in bf16 (autocast), so the shipped MXFP4/bf16 checkpoint is
what the last steps trained.

Deterministic for a seed and thread count: resuming from ``state.pt`` (written atomically every
``save_every`` steps) continues bit for bit. The log (``train.csv``), the curves (``loss.png``) and the final
weights (``nano.safetensors``, see ``ship``) land in ``out``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from .. import mxfp4
from ..cache import atomic_path
from ..checkpoint import expected_shapes, is_expert_weight
from ..config import ModelConfig
from ..model import Model
from . import data
from .ship import UNTRAINED

V_FULL = 201088
NANO_CONFIG = ModelConfig(
    num_hidden_layers=4, num_experts=8, experts_per_token=2, vocab_size=V_FULL, hidden_size=128,
    intermediate_size=128, head_dim=32, num_attention_heads=4, num_key_value_heads=2, sliding_window=128,
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run (with the code's commit and the thread count)."""

    seed: int = 0
    steps: int = 2000
    tokens_per_step: int = 8192  # padded batch size B * T
    chunk_examples: int = 384  # examples generated together, sorted by length into batches
    lr: float = 3e-3
    min_lr: float = 2e-4
    warmup: int = 60
    weight_decay: float = 0.05
    aux_coef: float = 0.01
    grad_clip: float = 1.0
    qat_from: float = 0.85
    save_every: int = 50
    model: dict = dataclasses.field(default_factory=lambda: dataclasses.asdict(NANO_CONFIG))

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.model)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# ================================================================================================
# vocabulary and data stream
# ================================================================================================

def vocabulary(seed: int = 0, probe: int = 3000) -> list[int]:
    """The ids training updates: every id in ``probe`` examples from their own seed space, every number chunk
    o200k can make (0-9, 00-99, 000-999) and every word the families draw from. A later example holding an
    id outside this set is skipped (and counted in the log)."""
    from ..harmony import encoding
    from .functions import CITIES, CONDITIONS, RATES

    enc = encoding()
    ids: set[int] = set()
    words = [*CITIES, *CONDITIONS, *RATES, *data.DAYS, *data.PLACES]
    for text in [f"{i}" for i in range(10)] + [f"{i:02d}" for i in range(100)] + [f"{i:03d}" for i in range(1000)]:
        ids.update(enc.encode(text))
    for w in words:
        ids.update(enc.encode(w) + enc.encode(" " + w) + enc.encode(f"'{w}'") + enc.encode(f'"{w}"'))
    for ex in data.training_examples(probe, seed=10_000 + seed):
        ids.update(ex.tokens)
    return sorted(ids)


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, T] local ids (padding 0)
    mask: torch.Tensor  # [B, T] bool: position t predicts tokens[t + 1] and counts in the loss
    valid: torch.Tensor  # [B, T] bool: real tokens (not padding)
    chunk: int
    index: int  # batch index within its chunk


def chunk_batches(cfg: TrainConfig, chunk: int, local: torch.Tensor) -> tuple[list[Batch], int]:
    """The batches of one chunk (deterministic for (seed, chunk)) and how many examples were skipped for ids
    outside the vocabulary."""
    examples = data.training_examples(cfg.chunk_examples, seed=cfg.seed * 1_000_003 + chunk)
    kept, skipped = [], 0
    for ex in examples:
        ids = torch.tensor(ex.tokens)
        if (local[ids] < 0).any():
            skipped += 1
            continue
        kept.append((local[ids], torch.tensor(ex.mask)))
    kept.sort(key=lambda x: len(x[0]))
    batches, group = [], []
    for item in kept:
        if group and (len(group) + 1) * len(item[0]) > cfg.tokens_per_step:
            batches.append(group)
            group = []
        group.append(item)
    if group:
        batches.append(group)
    random.Random(f"nano/batches/{cfg.seed}/{chunk}").shuffle(batches)
    out = []
    for i, group in enumerate(batches):
        T = max(len(t) for t, _ in group)
        tokens = torch.zeros((len(group), T), dtype=torch.long)
        gen = torch.zeros((len(group), T), dtype=torch.bool)
        valid = torch.zeros((len(group), T), dtype=torch.bool)
        for b, (t, m) in enumerate(group):
            tokens[b, :len(t)], gen[b, :len(t)], valid[b, :len(t)] = t, m, True
        mask = torch.zeros_like(gen)
        mask[:, :-1] = gen[:, 1:]  # position t is scored on predicting token t + 1
        out.append(Batch(tokens, mask, valid, chunk, i))
    return out, skipped


# ================================================================================================
# model, loss, schedule
# ================================================================================================

def number_digits(vocab: list[int]) -> dict[int, str]:
    """Local id -> digit string for the vocabulary's number tokens (o200k's chunks "0".."999", "00", "084"...)."""
    from ..harmony import encoding

    enc = encoding()
    out = {}
    for u, tok in enumerate(vocab):
        text = enc.decode([tok]) if tok < 199998 else ""
        if re.fullmatch(r"\d{1,3}", text):
            out[u] = text
    return out


def init_weights(cfg: ModelConfig, vocab: list[int], seed: int) -> dict[str, torch.Tensor]:
    """Fresh fp32 weights for a model over the ``vocab`` ids: scaled normal matrices, zero biases and sinks, unit
    norms. Two choices make copying and digit work learnable in a CPU budget (the architecture is unchanged):

    - the unembedding starts as the embedding (scaled by 1/sqrt(H)); they train separately afterwards;
    - a number token's embedding starts from its digits: sum_j R^j D[d_j] + len_L (d_j the digit j places from
      the right, D a random vector per digit, R a random rotation, len_L a vector per length), so "471" starts
      near R^2 D[4] + R D[7] + D[1] and the single digit "7" at D[7]: one linear map moves a digit between places.
    """
    g = torch.Generator().manual_seed(seed)
    H, L, U = cfg.hidden_size, cfg.num_hidden_layers, len(vocab)
    out = {}
    for name, shape in expected_shapes(dataclasses.replace(cfg, vocab_size=U)).items():
        kind = name.split(".", 2)[-1] if name.startswith("block.") else name
        fan_in = shape[-1]
        std = {"embedding.weight": 1.0, "attn.out.weight": 1 / math.sqrt(fan_in * 2 * L),
               "mlp.mlp2_weight": 1 / math.sqrt(fan_in * 2 * L), "mlp.gate.weight": 0.1 / math.sqrt(H)}.get(
            kind, 1 / math.sqrt(fan_in))
        if kind.endswith("scale"):
            out[name] = torch.ones(shape)
        elif kind.endswith(("bias", "sinks")):
            out[name] = torch.zeros(shape)
        elif kind != "unembedding.weight":
            out[name] = torch.randn(shape, generator=g) * std
    emb = out["embedding.weight"]
    digit = torch.randn((10, H), generator=g)
    rot, _ = torch.linalg.qr(torch.randn((H, H), generator=g))
    length = torch.randn((3, H), generator=g) * 0.5
    for u, text in number_digits(vocab).items():
        v = length[len(text) - 1].clone()
        for j, d in enumerate(reversed(text)):
            v += digit[int(d)] @ torch.linalg.matrix_power(rot, j).T
        emb[u] = v * (math.sqrt(H) / v.norm())
    out["unembedding.weight"] = emb.clone() / math.sqrt(H)
    return out


def build_model(cfg: TrainConfig, vocab: list[int], weights: dict[str, torch.Tensor] | None = None) -> Model:
    mcfg = dataclasses.replace(cfg.model_config, vocab_size=len(vocab))
    model = Model(mcfg, weights or init_weights(mcfg, vocab, cfg.seed), dtype=torch.float32)
    return model.requires_grad_(True).train()


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(cfg: TrainConfig, params: dict[str, torch.Tensor]) -> torch.optim.Optimizer:
    decay = [p for n, p in params.items() if p.dim() >= 2 and "embedding" not in n]
    rest = [p for n, p in params.items() if not (p.dim() >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def fake_quantize(w: torch.Tensor) -> torch.Tensor:
    """MXFP4-round an expert tensor [E, out, in] (fp32 in, fp32 out): what the shipped checkpoint stores."""
    return mxfp4.dequantize(*mxfp4.quantize(w), dtype=torch.float32)


def loss_fn(model: Model, batch: Batch, V: int, aux_coef: float,
            untrained: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(total loss, stats): full-vocabulary cross-entropy on the generated tokens + load balancing. The V - U
    ids outside the model's U rows share the unembedding row ``untrained`` [H] (zeros when None)."""
    router = []
    hidden = model.final_hidden(batch.tokens, hooks={"blocks.*.moe.router_logits": lambda x, name: router.append(x)})
    U = model.config.vocab_size
    h = hidden[batch.mask]  # [N, H]: positions scored
    targets = batch.tokens[:, 1:][batch.mask[:, :-1]]
    with torch.autocast("cpu", enabled=False):  # the loss head in fp32 (bf16 logits would blur the loss)
        logits = h.float() @ model.unembedding.float().T  # [N, U]
        other = math.log(V - U) + (h.float() @ untrained.float() if untrained is not None else 0.0)  # [N]
    log_z = torch.logaddexp(torch.logsumexp(logits, dim=-1), torch.as_tensor(other))
    nll = log_z - logits.gather(-1, targets[:, None])[:, 0]
    ce = nll.mean()
    aux = torch.stack([_balance(r[batch.valid], model.config.experts_per_token) for r in router]).mean()
    stats = {"loss": float(ce.detach()), "aux": float(aux.detach()), "scored": int(h.shape[0]),
             "untrained_mass": float(torch.exp(torch.as_tensor(other).detach() - log_z.detach()).mean())}
    return ce + aux_coef * aux, stats


def _balance(logits: torch.Tensor, k: int) -> torch.Tensor:
    """E * sum_e f_e P_e for router logits [N, E]: f = share of top-k picks, P = mean softmax probability."""
    E = logits.shape[-1]
    probs = torch.softmax(logits.float(), dim=-1)
    picks = torch.topk(logits, k, dim=-1).indices
    f = torch.zeros(E).index_add_(0, picks.reshape(-1), torch.ones(picks.numel())) / picks.numel()
    return E * (f * probs.mean(0)).sum()


# ================================================================================================
# the loop
# ================================================================================================

LOG_FIELDS = ("step", "chunk", "batch", "lr", "loss", "aux", "untrained_mass", "scored", "tokens", "seconds",
              "cpu_seconds", "skipped", "qat")


def _commit() -> str:
    import subprocess

    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _stream(cfg: TrainConfig, local: torch.Tensor, chunk: int, index: int) -> Iterator[tuple[Batch, int]]:
    """Batches from (chunk, index) on, with each chunk's skipped-example count."""
    while True:
        batches, skipped = chunk_batches(cfg, chunk, local)
        for b in batches[index:]:
            yield b, skipped
        chunk, index = chunk + 1, 0


def train(out: str | Path, cfg: TrainConfig = TrainConfig(), *, steps: int | None = None, threads: int | None = None,
          progress: bool = True, resume: bool = True) -> Path:
    """Train (or resume) into ``out``; stop after ``steps`` (default ``cfg.steps``; a smaller number trains a
    slice of the same run). Returns ``out``. ``threads`` (default: torch's) fixes torch's intra-op threads:
    results are bit-identical for the same seed and thread count."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    stop = cfg.steps if steps is None else min(steps, cfg.steps)
    state_path = out / "state.pt"
    state = torch.load(state_path, weights_only=False) if resume and state_path.exists() else None
    if state is not None and state["config"] != cfg.to_json():
        raise ValueError(f"{state_path} was written by a different configuration; use another folder or "
                         f"resume=False (--restart) to start over")
    vocab = state["vocab"] if state else vocabulary(cfg.seed)
    U = len(vocab)
    local = torch.full((V_FULL,), -1, dtype=torch.long)
    local[torch.tensor(vocab)] = torch.arange(U)
    weights = dict(state["weights"]) if state else None
    untrained = torch.nn.Parameter(weights.pop(UNTRAINED) if state else torch.zeros(cfg.model_config.hidden_size))
    model = build_model(cfg, vocab, weights)
    params = {**model.canonical_parameters(), UNTRAINED: untrained}
    opt = make_optimizer(cfg, params)
    if state:
        opt.load_state_dict(state["optimizer"])
    step, chunk, index = (state["step"], state["chunk"], state["index"]) if state else (0, 0, 0)
    rows = list(state["log"]) if state else []
    meta = {"config": cfg.to_json(), "threads": torch.get_num_threads(), "commit": _commit(),
            "torch": torch.__version__}
    (out / "run.json").write_text(json.dumps(meta, indent=1))
    experts = [p for n, p in params.items() if is_expert_weight(n)]
    others = [p for n, p in params.items() if not is_expert_weight(n)]
    bar = tqdm(total=stop, initial=step, desc="train-nano", unit="step", disable=not progress)
    stream = _stream(cfg, local, chunk, index)
    started = time.perf_counter()
    while step < stop:
        batch, skipped = next(stream)
        qat = step >= int(cfg.qat_from * cfg.steps)
        lr = lr_at(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        t0, c0 = time.perf_counter(), time.process_time()
        masters = [p.detach().clone() for p in experts + others] if qat else None
        if qat:  # forward with what ships: MXFP4 experts, bf16 elsewhere; gradients straight through
            with torch.no_grad():
                for p in experts:
                    p.copy_(fake_quantize(p))
                for p in others:
                    p.copy_(p.bfloat16().float())
        # in the fake-quant phase matmuls also run in bf16 (autocast), as the shipped bf16 model computes
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=qat):
            loss, stats = loss_fn(model, batch, V_FULL, cfg.aux_coef, untrained)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if qat:
            with torch.no_grad():
                for p, m in zip(experts + others, masters):
                    p.copy_(m)
        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
        opt.step()
        step += 1
        chunk, index = batch.chunk, batch.index + 1
        rows.append({"step": step, "chunk": batch.chunk, "batch": batch.index, "lr": lr, **stats,
                     "tokens": int(batch.valid.sum()), "seconds": time.perf_counter() - t0,
                     "cpu_seconds": time.process_time() - c0, "skipped": skipped,
                     "qat": int(qat)})
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", mass=f"{stats['untrained_mass']:.1e}")
        if step % cfg.save_every == 0 or step == stop:
            _save_state(state_path, {"config": cfg.to_json(), "vocab": vocab, "step": step, "chunk": chunk,
                                     "index": index, "weights": {n: p.detach().clone() for n, p in params.items()},
                                     "optimizer": opt.state_dict(), "log": rows})
            write_log(out, rows)
    bar.close()
    write_log(out, rows)
    if step >= cfg.steps:
        from .ship import save_weights

        save_weights(out / "nano.safetensors", cfg, vocab, {n: p.detach() for n, p in params.items()}, meta)
    meta["wall_seconds"] = time.perf_counter() - started
    return out


def write_log(out: Path, rows: list[dict]) -> None:
    """``train.csv`` (every step) and ``loss.png`` (loss, untrained mass, learning rate), both atomically."""
    with atomic_path(out / "train.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    if rows:
        plot_log(rows, out / "loss.png")


def plot_log(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    loss = [r["loss"] for r in rows]
    k = max(1, len(loss) // 50)
    smooth = [sum(loss[max(0, i - k):i + 1]) / len(loss[max(0, i - k):i + 1]) for i in range(len(loss))]
    axes[0].plot(steps, loss, lw=0.6, alpha=0.4, label="per step")
    axes[0].plot(steps, smooth, lw=1.5, label=f"mean of {k + 1}")
    axes[0].set(yscale="log", xlabel="step", ylabel="loss (nats / generated token)", title="training loss")
    axes[0].legend()
    axes[1].plot(steps, [r["untrained_mass"] for r in rows], lw=0.8)
    axes[1].set(yscale="log", xlabel="step", title="probability on untrained ids")
    axes[2].plot(steps, [r["aux"] for r in rows], lw=0.8, color="C2")
    axes[2].set(xlabel="step", ylabel="load balance (1 = even)", title="routing balance and learning rate")
    lr_ax = axes[2].twinx()
    lr_ax.plot(steps, [r["lr"] for r in rows], lw=1.0, color="C3")
    lr_ax.set_ylabel("learning rate", color="C3")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
