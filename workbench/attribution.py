"""Gradient attribution: attribution patching and integrated gradients, as pandas DataFrames.

>>> metric = lambda logits: logits[-1, good] - logits[-1, bad]                       # doctest: +SKIP
>>> est = attribution_patching(model, clean, corrupt, metric)                        # every point, one backward  # doctest: +SKIP
>>> est.pivot_table(index="layer", columns="position", values="estimate").loc[...]   # doctest: +SKIP
>>> check = compare_with_patching(model, clean, corrupt, metric, point="resid_post") # estimate vs real patching   # doctest: +SKIP
>>> integrated_gradients(model, tokens, metric, steps=32)                             # per-token attribution      # doctest: +SKIP

Attribution patching (Nanda, "Attribution patching", 2023) estimates what activation patching measures,
metric(corrupt run with a clean activation) - metric(corrupt run), to first order:

    estimate = (a_clean - a_corrupt) . d metric / d a   (the gradient taken in the corrupt run)

for every activation a at once: one forward pass on the clean prompt, one forward and one backward pass
on the corrupt prompt. The dot product runs over an activation's feature dims and is reported per token
position and, for per-head or per-expert points, per head / expert ("unit"). Points whose value depends
on which experts a token picked (``moe.act``, ``moe.expert_out``, ``moe.expert_weights``: the k slots
hold different experts in the two runs) are refused; ``moe.out`` and ``moe.router_logits`` cover them.

Integrated gradients (Sundararajan et al., 2017) over the embedding: with x the input embeddings and x0 a
baseline's, attribution_t = sum_h (x - x0)_th * mean over alpha of d metric / d x at x0 + alpha (x - x0)
(midpoint rule, ``steps`` points). On a smooth path the attributions sum to metric(x) - metric(x0) up to
the quadrature error; ``.attrs["completeness_gap"]`` reports how far they are. Two things in gpt-oss make
the path less than smooth, and the gap shows them: top-k routing is piecewise constant (where a pick
flips, the metric jumps and no gradient sees it), and the first RMSNorm is scale invariant, so on the
straight path from a zero baseline the output barely moves until alpha ~ sqrt(eps) / rms(x) and then
jumps: a zero baseline is degenerate here. Use a baseline prompt (a corrupted copy, or one filler token
repeated); ``baseline="zeros"`` is there for comparison.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from . import hooks

Tensor = torch.Tensor
Metric = Callable[[Tensor], Tensor]

DEFAULT_POINTS = ("embed", "attn.z", "attn.out", "resid_mid", "moe.router_logits", "moe.out", "resid_post")
UNIT_DIMS = ("Hq", "Hkv", "E")
"""Dims kept in an estimate as its "unit" (a head, a KV head, an expert); every other feature dim is summed."""


def _names(model, points: Sequence[str]) -> list[str]:
    out = []
    for p in points:
        spec = hooks.point(p if p in ("embed", "final_norm", "logits") else f"blocks.{{i}}.{p}")
        if "k" in spec.dims:
            raise ValueError(f"{p} holds one slot per picked expert, and the two runs may pick different experts; "
                             f"use moe.out or moe.router_logits")
        if spec.dtype == "int64":
            raise ValueError(f"{p} is an integer point: it has no gradient")
        out.append(spec.pattern if not spec.per_layer else f"blocks.*.{spec.suffix}")
    return out


def _per_unit(x: Tensor, name: str) -> tuple[Tensor, str | None]:
    """Sum an (unbatched) product over every dim but the token axis and a unit dim: [T] or [T, units]."""
    spec = hooks.point(name)
    dims = list(spec.dims)
    keep = ["T"] + [d for d in dims if d in UNIT_DIMS][:1]
    x = x.sum(dim=[i for i, d in enumerate(dims) if d not in keep]) if len(keep) < len(dims) else x
    kept = [d for d in dims if d in keep]
    if kept != keep:  # unit before T (e.g. scores [Hq, T, S] -> [Hq, T]): put T first
        x = x.transpose(0, 1)
    return x, (keep[1] if len(keep) > 1 else None)


def _layer(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blocks.") else -1


def _point(name: str) -> str:
    return hooks.point(name).suffix


def attribution_patching(model, clean, corrupt, metric: Metric, *, points: Sequence[str] = DEFAULT_POINTS,
                         last_only: bool = False):
    """First-order estimates of patching each activation from ``clean`` into ``corrupt`` (same length).

    ``metric(logits [T, V]) -> scalar`` (``last_only``: it reads the last position only, and gets [1, V]).
    Returns a long DataFrame: ``point`` ("resid_post", "attn.z", ...), ``layer`` (-1 for embed),
    ``position``, ``unit`` (head or expert for such points, else -1), ``estimate``. ``.attrs``: ``clean``
    and ``corrupt`` (the metric on each run).
    """
    import pandas as pd

    clean, corrupt = torch.as_tensor(clean), torch.as_tensor(corrupt)
    if clean.shape != corrupt.shape or clean.dim() != 1:
        raise ValueError(f"clean and corrupt must be token ids [T] of one length, got {list(clean.shape)} and "
                         f"{list(corrupt.shape)}")
    names = _names(model, points)
    with torch.no_grad():
        clean_logits, clean_tr = model.run_with_trace(clean, names=names, last_only=last_only)
    _, tr = model.run_with_trace(corrupt, names=names, grad_of=metric, last_only=last_only)
    frames = []
    for name, grad in tr.grads.items():
        est, unit = _per_unit(((clean_tr[name].float() - tr[name].float()) * grad.float()).cpu(), name)
        T = est.shape[0]
        est = est.reshape(T, -1)
        f = pd.DataFrame({"point": _point(name), "layer": _layer(name),
                          "position": torch.arange(T).repeat_interleave(est.shape[1]).numpy(),
                          "unit": torch.arange(est.shape[1]).repeat(T).numpy() if unit else -1,
                          "estimate": est.reshape(-1).numpy()})
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    df.attrs["clean"] = float(metric(clean_logits))
    df.attrs["corrupt"] = tr.metric
    return df


def compare_with_patching(model, clean, corrupt, metric: Metric, *, point: str = "resid_post",
                          layers=None, positions=None, last_only: bool = False):
    """Attribution patching against real activation patching (``interventions.patching_sweep``) at one
    residual-shaped point, per (layer, position): a DataFrame with ``estimate`` and ``actual`` (the
    metric change each patch really makes) and ``.attrs["pearson"]`` (their correlation)."""
    from .interventions import patching_sweep

    est = attribution_patching(model, clean, corrupt, metric, points=[point], last_only=last_only)
    real = patching_sweep(model, clean, corrupt, lambda logits: float(metric(logits)), layers=layers,
                          positions=positions, point=point, last_only=last_only)
    actual = (real - real.attrs["corrupt"]).stack().rename("actual").reset_index()
    df = est.merge(actual, on=["layer", "position"])[["layer", "position", "estimate", "actual"]]
    df.attrs.update(clean=est.attrs["clean"], corrupt=est.attrs["corrupt"],
                    pearson=float(torch.corrcoef(torch.tensor(df[["estimate", "actual"]].to_numpy().T))[0, 1]))
    return df


def integrated_gradients(model, tokens, metric: Metric, *, baseline, steps: int = 32, batch_size: int = 8):
    """Integrated gradients of ``metric(logits [T, V])`` over the input embeddings, per token position.

    ``baseline``: token ids of the same length (e.g. a corrupted prompt), one token id (repeated), or
    "zeros" (degenerate under RMSNorm: see the module docstring). Returns a DataFrame (``position``,
    ``token``, ``attribution``) with ``.attrs``: ``metric`` (at the input), ``baseline_metric``,
    ``completeness_gap`` (sum of attributions - (metric - baseline_metric)). The path is walked
    ``batch_size`` points per forward pass (a batch).
    """
    import pandas as pd

    tokens = torch.as_tensor(tokens).reshape(-1)
    x = model.embedding[tokens.to(model.device)].detach().float()
    if isinstance(baseline, str):
        if baseline != "zeros":
            raise ValueError(f"baseline is token ids, one token id or 'zeros', not {baseline!r}")
        x0 = torch.zeros_like(x)
    else:
        b = torch.as_tensor(baseline).reshape(-1)
        b = b.expand(tokens.shape) if b.numel() == 1 else b
        if b.shape != tokens.shape:
            raise ValueError(f"baseline has {b.numel()} tokens, the input {tokens.numel()}")
        x0 = model.embedding[b.to(model.device)].detach().float()
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    total = torch.zeros_like(x)
    for chunk in alphas.split(batch_size):
        path = (x0 + chunk.to(x.device)[:, None, None] * (x - x0)).to(model.dtype)  # [c, T, H]
        batch = tokens.expand(len(chunk), -1)
        _, tr = model.run_with_trace(batch, names=["embed"], hooks={"embed": lambda e, name, p=path: p},
                                     grad_of=lambda logits: sum(metric(row) for row in logits))
        total += tr.grads["embed"].float().sum(0)
    attribution = ((x - x0) * total / steps).sum(-1).cpu()
    with torch.no_grad():
        at = float(metric(model(tokens)))
        at0 = float(metric(model.run_with_hooks(tokens, {"embed": lambda e, name: x0.to(e.dtype)})))
    df = pd.DataFrame({"position": range(len(tokens)), "token": tokens.tolist(), "attribution": attribution.numpy()})
    df.attrs.update(metric=at, baseline_metric=at0, completeness_gap=float(attribution.sum()) - (at - at0))
    return df
