"""Interventions as hook dicts for ``model.run_with_hooks`` (and ``run_with_trace(..., hooks=)``).

Each function returns ``{hook name or glob: fn}``; ``combine`` merges several (hooks on the same point
run in order). ``layers=None`` means every layer; ``positions`` (an int, a list, a slice or None for
all) index the token positions of the forward call the hooks run in.

>>> hooks = combine(ban_experts([3], layers=[1]), remove_sink(layers=[0], heads=[2]))   # doctest: +SKIP
>>> logits = model.run_with_hooks(tokens, hooks)                                       # doctest: +SKIP

Semantics (each is tested against an independent way to get the same result):
- ``force_experts`` / ``ban_experts`` replace ``moe.expert_idx``; the model then re-derives the routing
  weights as the softmax of the router logits at the new picks (as if the router had chosen them).
- ``scale_sink(f)`` multiplies head h's sink weight exp(sink_h) by f (adds ln f to its sink logit);
  ``remove_sink`` is f = 0: a plain softmax over the real keys. Done on ``attn.probs``:
  probs' = probs / (r + f (1 - r)) with r = sum_j probs (= 1 - sink_prob).
- ``ablate_heads`` zeroes a head's attention weights, so its output vector (before the out projection)
  is zero.
- ``patch`` replaces activations with those of another run (a ``Trace``): activation patching;
  ``patching_sweep`` runs it for every (layer, position) and tabulates a metric.
- ``steer`` adds ``scale * direction`` at a hook point (a steering vector); ``steering_vector`` makes a
  direction from contrasting prompts (difference of mean activations).

During generation: ``generate(model, prompt, hooks=...)`` applies any of these at every forward step
(the prefill and each one-token decode step), e.g. ``ban_experts`` keeps an expert unpicked throughout.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence, Union

import torch

from .hooks import hook_names, token_axis

Tensor = torch.Tensor
HookFn = Callable[[Tensor, str], Union[Tensor, None]]
Hooks = dict[str, list[HookFn]]
Positions = Union[None, int, slice, Sequence[int]]
Layers = Union[None, int, Iterable[int]]


def combine(*hook_dicts: Mapping[str, HookFn | Sequence[HookFn]]) -> Hooks:
    """Merge hook dicts; hooks on the same name run in the order given."""
    out: Hooks = {}
    for d in hook_dicts:
        for name, fns in d.items():
            out.setdefault(name, []).extend([fns] if callable(fns) else list(fns))
    return out


def _names(point: str, layers: Layers) -> list[str]:
    if layers is None:
        return [f"blocks.*.{point}"]
    if isinstance(layers, int):
        layers = [layers]
    return [f"blocks.{int(i)}.{point}" for i in layers]


def _layer_key(name: str) -> str:
    """"blocks.3.moe.expert_idx" -> "blocks.3"."""
    return ".".join(name.split(".")[:2])


def _index(positions: Positions, length: int, what: str = "position"):
    """An index along one axis of size ``length`` (validated)."""
    if positions is None:
        return slice(None)
    if isinstance(positions, slice):
        return positions
    idx = [positions] if isinstance(positions, int) else [int(p) for p in positions]
    bad = [p for p in idx if not -length <= p < length]
    if bad:
        raise IndexError(f"{what} {bad[0]} is out of range for {length} {what}s in this forward call")
    return torch.tensor(idx, dtype=torch.long)


def _at(t: Tensor, axis: int, index) -> tuple:
    """A tuple index selecting ``index`` along ``axis`` (negative, from the end) of ``t``."""
    full = [slice(None)] * t.dim()
    full[t.dim() + axis] = index
    return tuple(full)


# ---- routing ------------------------------------------------------------------------------------

def _reroute(rule: Callable[[Tensor, Tensor, int], None], layers: Layers, positions: Positions) -> Hooks:
    """Observe each layer's router logits, then replace its expert_idx at ``positions``.

    ``rule(scores [..., n, E], logits, k)`` edits scores in place (+inf = must pick, -inf = must not);
    the new picks are the top-k of the scores. Routing interventions on the same layer compose: each
    one's rule is recorded on that forward's router-logits tensor, and every later one re-applies all
    rules so far, so ``combine(ban_experts(0), ban_experts(1))`` bans both.
    """
    seen: dict[str, Tensor] = {}

    def observe(logits: Tensor, name: str):
        seen[_layer_key(name)] = logits
        return None

    def replace(idx: Tensor, name: str) -> Tensor:
        logits = seen[_layer_key(name)]
        rules = getattr(logits, "_workbench_routing_rules", None)
        if rules is None:
            rules = []
            logits._workbench_routing_rules = rules  # lives exactly as long as this forward's logits
        rules.append((rule, positions))
        lg = logits.float()
        k = idx.shape[-1]
        scores = lg.clone()
        touched = torch.zeros(idx.shape[:-1], dtype=torch.bool, device=idx.device)
        for r, pos in rules:
            sel = _at(idx, -2, _index(pos, idx.shape[-2]))[:-1]
            sub = scores[sel]
            r(sub, lg[sel], k)
            scores[sel] = sub
            touched[sel] = True
        if torch.isneginf(scores[touched]).sum(-1).max() > lg.shape[-1] - k:
            raise ValueError(f"{name}: the routing interventions leave fewer than k={k} experts allowed")
        if torch.isposinf(scores[touched]).sum(-1).max() > k:
            raise ValueError(f"{name}: the routing interventions force more than k={k} experts")
        new = idx.clone()
        new[touched] = _top_k_by_logit(scores[touched], lg[touched], k)
        return new

    return combine({n: observe for n in _names("moe.router_logits", layers)},
                   {n: replace for n in _names("moe.expert_idx", layers)})


def _top_k_by_logit(scores: Tensor, logits: Tensor, k: int) -> Tensor:
    picks = torch.topk(scores, k, dim=-1).indices
    order = torch.argsort(logits.gather(-1, picks), dim=-1, descending=True, stable=True)
    return picks.gather(-1, order)  # sorted by router logit, best first, like the router's own picks


def force_experts(experts: int | Sequence[int], *, layers: Layers = None, positions: Positions = None) -> Hooks:
    """Make every selected token pick ``experts`` (at most k of them); the remaining slots go to the
    highest router logits among the others. Picks are ordered by router logit; weights re-derived."""
    forced = [experts] if isinstance(experts, int) else [int(e) for e in experts]

    def rule(scores: Tensor, logits: Tensor, k: int) -> None:
        if len(set(forced)) > k:
            raise ValueError(f"cannot force {len(set(forced))} experts into top-{k} routing")
        _check_ids(forced, logits.shape[-1])
        scores[..., forced] = float("inf")

    return _reroute(rule, layers, positions)


def ban_experts(experts: int | Sequence[int], *, layers: Layers = None, positions: Positions = None) -> Hooks:
    """Forbid ``experts`` for the selected tokens: picks become the top-k of the other router logits."""
    banned = [experts] if isinstance(experts, int) else [int(e) for e in experts]

    def rule(scores: Tensor, logits: Tensor, k: int) -> None:
        _check_ids(banned, logits.shape[-1])
        if logits.shape[-1] - len(set(banned)) < k:
            raise ValueError(f"banning {len(set(banned))} of {logits.shape[-1]} experts leaves fewer than k={k}")
        scores[..., banned] = float("-inf")

    return _reroute(rule, layers, positions)


def _check_ids(ids: list[int], n: int) -> None:
    bad = [e for e in ids if not 0 <= e < n]
    if bad:
        raise ValueError(f"expert {bad[0]} does not exist (experts are 0..{n - 1})")


# ---- attention ----------------------------------------------------------------------------------

def _edit_probs(probs: Tensor, heads, positions, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """A copy of probs [..., Hq, T, S] with rows (heads x positions) replaced by fn(rows [..., h, t, S])."""
    out = probs.clone()
    h = _index(heads, probs.shape[-3], "head")
    t = _index(positions, probs.shape[-2])
    block = out[..., h, :, :]  # [..., h, T, S] (a copy when h is a list)
    block[..., t, :] = fn(block[..., t, :])
    out[..., h, :, :] = block
    return out


def scale_sink(factor: float, *, layers: Layers = None, heads: int | Sequence[int] | None = None,
               positions: Positions = None) -> Hooks:
    """Multiply the sink's unnormalised weight exp(sink_h) by ``factor`` (>= 0) for ``heads`` (None: all)."""
    if factor < 0:
        raise ValueError(f"sink scale factor must be >= 0, got {factor}")

    def rescale(rows: Tensor) -> Tensor:
        r = rows.sum(-1, keepdim=True)  # = 1 - sink_prob
        return rows / (r + factor * (1 - r)).clamp_min(torch.finfo(rows.dtype).tiny)

    return {n: (lambda probs, name: _edit_probs(probs, heads, positions, rescale))
            for n in _names("attn.probs", layers)}


def remove_sink(*, layers: Layers = None, heads: int | Sequence[int] | None = None,
                positions: Positions = None) -> Hooks:
    """No sink for ``heads``: attention weights renormalised over the real keys (``scale_sink(0)``)."""
    return scale_sink(0.0, layers=layers, heads=heads, positions=positions)


def ablate_heads(heads: int | Sequence[int], *, layers: Layers = None, positions: Positions = None) -> Hooks:
    """Zero-ablate query heads: their attention weights become 0, so their output vectors are 0."""
    return {n: (lambda probs, name: _edit_probs(probs, heads, positions, torch.zeros_like))
            for n in _names("attn.probs", layers)}


# ---- steering -----------------------------------------------------------------------------------

def steer(direction: Tensor, *, scale: float = 1.0, layers: Layers = None, point: str = "resid_post",
          positions: Positions = None) -> Hooks:
    """Add ``scale * direction`` to the activation at ``blocks.{i}.{point}`` (or a top-level point such as
    "embed") for ``layers`` and ``positions`` (None: every position of every forward call).

    ``direction`` broadcasts over the point's per-token slice: [H] for the residual points, [Hq, D] (or
    [D]) for ``attn.z``. It is used as given (no normalisation): pass a unit vector and choose ``scale``
    in units of the residual's norm. Works in ``run_with_hooks`` and during generation
    (``generate(model, prompt, hooks=steer(v, scale=4.0, layers=[2]))``): each step adds it again, to
    the prompt at the prefill and to every new token.
    """
    if not isinstance(direction, Tensor) or not direction.is_floating_point():
        raise TypeError("steer: direction must be a floating-point tensor (e.g. [H] for resid_post)")
    top_level = point in hook_names(0)  # "embed", "final_norm", "logits"
    if top_level and layers is not None:
        raise ValueError(f"steer: {point!r} is not a per-layer point; drop layers=")
    names = [point] if top_level else _names(point, layers)

    def add(t: Tensor, name: str) -> Tensor:
        axis = token_axis(name)
        sel = _at(t, axis, _index(positions, t.shape[axis]))
        out = t.clone()
        try:
            out[sel] = out[sel] + scale * direction.to(device=t.device, dtype=t.dtype)
        except RuntimeError as e:
            raise ValueError(f"steer: direction of shape {list(direction.shape)} does not fit {name!r} "
                             f"{list(t.shape)}: {e}") from None
        return out

    return {n: add for n in names}


def steering_vector(model, positive: Sequence, negative: Sequence, *, layer: int, point: str = "resid_post") -> Tensor:
    """A direction from contrasting prompts: mean activation at ``blocks.{layer}.{point}`` over the tokens
    of the ``positive`` prompts minus the same over the ``negative`` ones (each prompt a list of ids;
    every token of a prompt weighs the same, every prompt too). Returns [H] (the point's per-token shape)
    in fp32; ``steer(v / v.norm(), scale=...)`` then adds it."""
    name = f"blocks.{layer}.{point}"
    axis = token_axis(name)

    def mean(prompts) -> Tensor:
        if not prompts:
            raise ValueError("steering_vector needs at least one positive and one negative prompt")
        acts = []
        with torch.no_grad():
            for p in prompts:
                _, tr = model.run_with_trace(torch.as_tensor(p, dtype=torch.long), names=name)
                acts.append(tr[name].float().mean(dim=axis))
        return torch.stack(acts).mean(0)

    return mean(positive) - mean(negative)


# ---- activation patching ------------------------------------------------------------------------

def patch(source: Mapping[str, Tensor], names: str | Sequence[str] | None = None, *,
          positions: Positions = None) -> Hooks:
    """Replace activations with ``source[name]`` (a ``Trace`` of another run, or a dict), at ``positions``.

    ``names``: exact hook names present in ``source`` (None: all of them). Shapes must match the target
    run's at the patched positions (same length prompts, or positions both runs have).
    """
    if names is None:
        names = list(source)
    elif isinstance(names, str):
        names = [names]
    missing = [n for n in names if n not in source]
    if missing:
        raise KeyError(f"source has no {missing[0]!r}; trace it in the source run (names=...)")

    def hook(t: Tensor, name: str) -> Tensor:
        src = source[name].to(device=t.device, dtype=t.dtype)
        axis = token_axis(name)
        if positions is None:
            if src.shape != t.shape:
                raise ValueError(f"cannot patch {name!r}: source shape {list(src.shape)} != target {list(t.shape)}")
            return src.clone()
        idx = _index(positions, min(t.shape[axis], src.shape[axis]))
        out = t.clone()
        try:
            out[_at(out, axis, idx)] = src[_at(src, axis, idx)]
        except RuntimeError as e:
            raise ValueError(f"cannot patch {name!r} at {positions}: {e}") from None
        return out

    return {n: hook for n in names}


def patching_sweep(model, clean_tokens, corrupt_tokens, metric: Callable[[Tensor], float], *,
                   layers: Layers = None, positions: Positions = None, point: str = "resid_post",
                   last_only: bool = False):
    """Activation patching: for each layer and position, run ``corrupt_tokens`` with ``blocks.{l}.{point}``
    at that position taken from the clean run, and record ``metric(logits)``.

    Returns a DataFrame (layer x position); ``.attrs["clean"]`` and ``.attrs["corrupt"]`` hold the metric
    without patching. Prompts must have the same length. ``last_only``: the metric reads the last
    position only, so only its logits are computed (``logits`` is then [1, V]; much faster for a large
    vocabulary).
    """
    import pandas as pd

    clean_tokens, corrupt_tokens = torch.as_tensor(clean_tokens), torch.as_tensor(corrupt_tokens)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError(f"clean and corrupt prompts must have the same shape, got {list(clean_tokens.shape)} "
                         f"and {list(corrupt_tokens.shape)}")
    L, T = model.config.num_hidden_layers, clean_tokens.shape[-1]
    layer_list = list(range(L)) if layers is None else ([layers] if isinstance(layers, int) else list(layers))
    pos_list = list(range(T)) if positions is None else (
        [positions] if isinstance(positions, int) else list(range(T))[positions] if isinstance(positions, slice)
        else list(positions))
    with torch.no_grad():
        clean_logits, clean = model.run_with_trace(clean_tokens, names=[f"blocks.{l}.{point}" for l in layer_list],
                                                   last_only=last_only)
        data = {}
        for layer in layer_list:
            name = f"blocks.{layer}.{point}"
            data[layer] = [float(metric(model.run_with_hooks(corrupt_tokens, patch(clean, name, positions=[p]),
                                                             last_only=last_only))) for p in pos_list]
        corrupt_logits = model(corrupt_tokens, last_only=last_only)
    df = pd.DataFrame.from_dict(data, orient="index", columns=pos_list)
    df.index.name, df.columns.name = "layer", "position"
    df.attrs["clean"] = float(metric(clean_logits))
    df.attrs["corrupt"] = float(metric(corrupt_logits))
    return df
