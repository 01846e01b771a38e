"""Lenses and decompositions of the residual stream, as pandas DataFrames.

>>> lens.logit_lens(model, trace, target=token_id)               # stage x position: top token, target prob  # doctest: +SKIP
>>> dla = lens.direct_logit_attribution(model, trace, target=(a, b))   # component x position             # doctest: +SKIP
>>> dla.groupby(level="layer").sum()                              # per layer; dla.sum() = logit a - logit b  # doctest: +SKIP

The last residual is a sum of parts, each written by one head or one expert (``trace`` must hold
``lens.NAMES``; pass tokens instead of a trace and the functions run the model with them):

    resid_post[L-1] = embed + sum_i (attn.out_i + moe.out_i)
    attn.out_i = sum_h z_ih Wo_i[:, hD:(h+1)D]^T  +  bo_i             (one part per head, plus the bias)
    moe.out_i  = sum_e sum_{k: picks_ik = e} g_ik expert_out_ik          (one part per expert, b2 included)

Direct logit attribution linearises the final RMSNorm the usual way (TransformerLens's cached scale):
logits = (x / r) * scale Wu^T with r = sqrt(mean(x^2) + eps) *frozen* at its value for the full residual
x at that position. With r fixed the logits are linear in x, so part c contributes (c / r) * scale Wu_v^T
to the logit of token v, and the parts sum exactly to the logit (in fp32, to rounding). What this does
not show is how removing a part would change r (that is what activation patching measures).

The logit lens instead applies the real final RMSNorm (its own r) and the unembedding to the residual
after each stage ("embed", "0.mid", "0.post", ...).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from .model import linear
from .trace import Trace

Tensor = torch.Tensor
Target = Union[int, tuple[int, int], Sequence[int], Tensor]

NAMES = ["embed", "blocks.*.attn.z", "blocks.*.moe.expert_idx", "blocks.*.moe.expert_weights",
         "blocks.*.moe.expert_out", "blocks.*.resid_mid", "blocks.*.resid_post", "logits"]
"""What ``decompose_residual``, ``direct_logit_attribution`` and ``logit_lens`` read from a trace."""

KINDS = ("embed", "head", "attn_bias", "expert")


def _trace(model, trace_or_tokens, batch: int | None) -> tuple[Trace, int | None]:
    if isinstance(trace_or_tokens, Trace):
        tr = trace_or_tokens
    else:
        _, tr = model.run_with_trace(trace_or_tokens, names=NAMES)
    if tr.batched and batch is None:
        raise ValueError("the trace is batched: pass batch=i to pick one sequence")
    return tr, (batch if tr.batched else None)


def _get(tr: Trace, name: str, batch: int | None) -> Tensor:
    t = tr[name]
    return (t if batch is None else t[batch]).float()


def _positions(positions, T: int) -> list[int]:
    if positions is None:
        return list(range(T))
    if isinstance(positions, int):
        positions = [positions]
    out = list(range(T))[positions] if isinstance(positions, slice) else [int(p) for p in positions]
    bad = [p for p in out if not -T <= p < T]
    if bad:
        raise IndexError(f"position {bad[0]} is out of range for {T} tokens")
    return [p % T for p in out]


def component_index(config):
    """The rows of a decomposition: a MultiIndex (kind, layer, unit) in forward order — ("embed", -1, -1),
    then per layer ("head", i, h) for each query head, ("attn_bias", i, -1), ("expert", i, e) per expert."""
    import pandas as pd

    rows = [("embed", -1, -1)]
    for i in range(config.num_hidden_layers):
        rows += [("head", i, h) for h in range(config.num_attention_heads)] + [("attn_bias", i, -1)]
        rows += [("expert", i, e) for e in range(config.num_experts)]
    return pd.MultiIndex.from_tuples(rows, names=["kind", "layer", "unit"])


def _per_layer_parts(model, tr: Trace, layer: int, batch: int | None, pos: list[int]):
    """For one layer at positions ``pos``: head outputs [P, Hq, H], attention bias [H], expert parts [P, E, H]."""
    cfg = model.config
    out = model.block[layer].attn.out
    Hq, D = cfg.num_attention_heads, cfg.head_dim
    z = _get(tr, f"blocks.{layer}.attn.z", batch)[pos]  # [P, Hq, D]
    Wo = out.weight.float().view(-1, Hq, D)  # [H, Hq, D]
    heads = torch.einsum("phd,Hhd->phH", z, Wo)
    y = _get(tr, f"blocks.{layer}.moe.expert_out", batch)[pos]  # [P, k, H]
    g = _get(tr, f"blocks.{layer}.moe.expert_weights", batch)[pos]  # [P, k]
    idx = tr[f"blocks.{layer}.moe.expert_idx"]
    idx = (idx if batch is None else idx[batch])[pos]  # [P, k]
    experts = torch.zeros((len(pos), cfg.num_experts, y.shape[-1]), dtype=torch.float32)
    experts.scatter_add_(1, idx[..., None].expand_as(y).cpu(), (g[..., None] * y).cpu())
    return heads.cpu(), out.bias.float().cpu(), experts


def decompose_residual(model, trace: Trace | Tensor, *, positions=None, batch: int | None = None):
    """The last residual split into parts: (vectors [C, P, H] fp32, ``component_index``) for the
    ``positions`` asked (default all). ``vectors.sum(0)`` equals ``blocks.{L-1}.resid_post`` at those
    positions (to rounding; exactly in exact arithmetic). Experts a position did not pick contribute 0."""
    tr, batch = _trace(model, trace, batch)
    embed = _get(tr, "embed", batch)
    pos = _positions(positions, embed.shape[0])
    parts = [embed[pos].cpu()[None]]
    for i in range(model.config.num_hidden_layers):
        heads, bias, experts = _per_layer_parts(model, tr, i, batch, pos)
        parts += [heads.transpose(0, 1), bias.expand(1, len(pos), -1), experts.transpose(0, 1)]
    return torch.cat(parts), component_index(model.config)


def _target_ids(target: Target, T: int, pos: list[int]) -> tuple[Tensor, Tensor | None, str]:
    """(plus ids [P], minus ids [P] or None, description): the target is logit[plus] - logit[minus]."""
    if isinstance(target, tuple) and len(target) == 2:
        a, b = int(target[0]), int(target[1])
        return torch.full((len(pos),), a), torch.full((len(pos),), b), f"logit[{a}] - logit[{b}]"
    if isinstance(target, int) or (isinstance(target, Tensor) and target.dim() == 0):
        return torch.full((len(pos),), int(target)), None, f"logit[{int(target)}]"
    ids = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if ids.numel() != T:
        raise ValueError(f"a per-position target needs {T} token ids (one per position), got {ids.numel()}")
    return ids[pos], None, "logit[target[position]]"


def _unembed_direction(model, target: Target, T: int, pos: list[int]) -> tuple[Tensor, str]:
    """scale * (Wu_plus - Wu_minus) per asked position: [P, H] fp32, and a description of the target."""
    plus, minus, what = _target_ids(target, T, pos)
    Wu = model.unembedding
    d = Wu[plus.to(Wu.device)].float()
    if minus is not None:
        d = d - Wu[minus.to(Wu.device)].float()
    return (d * model.norm.scale.float()).cpu(), what


def _final_rms(model, x: Tensor) -> Tensor:
    """r = sqrt(mean(x^2) + eps) per row of x [..., H] (fp32): the final RMSNorm's divisor."""
    return torch.sqrt(x.float().pow(2).mean(-1, keepdim=True) + model.norm.eps)


def direct_logit_attribution(model, trace: Trace | Tensor, target: Target, *, positions=None,
                             batch: int | None = None):
    """Each part's direct contribution to a logit (or logit difference), per position.

    ``target``: a token id (its logit), a pair (a, b) (logit a - logit b), or one token id per position
    (e.g. the next tokens). Returns a DataFrame indexed by ``component_index`` (kind, layer, unit) with one
    column per position; column sums equal the target logits (``.attrs["logit"]``, from the traced logits)
    exactly up to rounding, with the final RMSNorm's r frozen (see the module docstring).
    ``dla.groupby(level="layer").sum()`` gives layers, ``dla.loc["head"]`` the heads.
    """
    import pandas as pd

    tr, batch = _trace(model, trace, batch)
    T = tr["embed"].shape[-2]
    pos = _positions(positions, T)
    d, what = _unembed_direction(model, target, T, pos)  # [P, H]
    last = _get(tr, f"blocks.{model.config.num_hidden_layers - 1}.resid_post", batch)[pos].cpu()
    w = d / _final_rms(model, last)  # [P, H]: the logit is x . w with r frozen
    rows = [(_get(tr, "embed", batch)[pos].cpu() * w).sum(-1)[None]]
    for i in range(model.config.num_hidden_layers):
        heads, bias, experts = _per_layer_parts(model, tr, i, batch, pos)
        rows += [torch.einsum("phH,pH->hp", heads, w), (bias * w).sum(-1)[None], torch.einsum("peH,pH->ep", experts, w)]
    df = pd.DataFrame(torch.cat(rows).numpy(), index=component_index(model.config), columns=pos)
    df.columns.name = "position"
    df.attrs["target"] = what
    if "logits" in tr:
        logits = _get(tr, "logits", batch)[pos].cpu()
        df.attrs["logit"] = _target_logit(logits, target, T, pos).tolist()
    return df


def _target_logit(logits: Tensor, target: Target, T: int, pos: list[int]) -> Tensor:
    """The target's value from real logits [P, V] at positions ``pos`` (of ``T``)."""
    plus, minus, _ = _target_ids(target, T, pos)
    value = logits.gather(1, plus[:, None])[:, 0]
    return value if minus is None else value - logits.gather(1, minus[:, None])[:, 0]


def logit_lens(model, trace: Trace | Tensor, *, positions=None, top: int = 1, target: Target | None = None,
               mid: bool = True, batch: int | None = None):
    """The logit lens: the real final RMSNorm and unembedding applied to the residual after every stage.

    Returns a long DataFrame, one row per (stage, position): ``stage`` ("embed", "0.mid", "0.post", ...),
    ``layer`` (-1 for embed), ``position``, ``top_tokens`` / ``top_probs`` (tuples of the ``top`` most
    likely ids and their probabilities), and with ``target`` (as in ``direct_logit_attribution``; a pair
    gives the logit difference, without probability or rank) ``target_logit``, ``target_prob``,
    ``target_rank`` (0 = the top token). ``table.pivot(index="stage", columns="position", values=...)``
    gives stage x position grids; the last stage equals the model's own output.
    """
    import pandas as pd

    tr, batch = _trace(model, trace, batch)
    labels, stack = tr.residual_stack(mid=mid)
    if batch is not None:
        stack = stack[:, batch]
    pos = _positions(positions, stack.shape[1])
    rows = []
    for label, x in zip(labels, stack):
        x = x[pos]
        logits = linear(model.norm(x), model.unembedding).float().cpu()  # as the model's own last step
        probs = torch.softmax(logits, dim=-1)
        p_top, i_top = probs.topk(top, dim=-1)
        tgt = None if target is None else _target_logit(logits, target, stack.shape[1], pos)
        for j, p in enumerate(pos):
            row = {"stage": label, "layer": -1 if label == "embed" else int(label.split(".")[0]), "position": p,
                   "top_tokens": tuple(i_top[j].tolist()), "top_probs": tuple(round(v, 6) for v in p_top[j].tolist())}
            if tgt is not None:
                row["target_logit"] = float(tgt[j])
                if not (isinstance(target, tuple) and len(target) == 2):
                    row["target_prob"] = float(torch.exp(tgt[j] - torch.logsumexp(logits[j], 0)))
                    row["target_rank"] = int((logits[j] > tgt[j]).sum())
            rows.append(row)
    return pd.DataFrame(rows)
