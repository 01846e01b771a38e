"""Activations by Harmony channel, role, message and reasoning effort: a ``Trace`` joined with a ``Transcript``.

>>> run = LabelledTrace.run(model, conversation, completion_tokens)       # doctest: +SKIP
>>> run.labels                      # one row per token: position, id, text, role, channel, message, part, effort  # doctest: +SKIP
>>> run.router_entropy(by="channel")         # channel x layer                                    # doctest: +SKIP
>>> summarise([low, high], "expert_load", by=["effort", "channel"])                          # doctest: +SKIP
>>> compare(low, high, "sink_mass", by="channel")                                           # doctest: +SKIP

Every token of ``prompt + completion`` gets its Harmony labels from ``parse_tokens`` (the whole sequence
parsed as a transcript, so header and special tokens carry their message's role and channel, and text
outside any message has none) plus ``part`` ("prompt" / "completion") and the run's ``effort``. The
statistics, per (token, layer), then averaged over the tokens of each group:

- ``router_entropy``: entropy (nats) of the router's softmax over all E experts;
- ``expert_load``: the share of each group's (token, pick) slots that went to each expert (rows sum to 1);
- ``sink_mass``: the probability the sinks took, averaged over heads;
- ``residual_norm``: the L2 norm of ``resid_post``.

Tokens with no channel (the system/user prompt, stray text) are grouped under "-" rather than dropped.
This module joins the model's data and Harmony's, as backends do; neither side knows of it.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from .hooks import name_filter
from .trace import Trace

NAMES = ["blocks.*.moe.router_logits", "blocks.*.moe.expert_idx", "blocks.*.moe.expert_weights",
         "blocks.*.attn.sink_prob", "blocks.*.resid_post"]
"""The hook points ``LabelledTrace.run`` traces (enough for every statistic here)."""

STATS = ("router_entropy", "sink_mass", "residual_norm", "expert_load")
NONE = "-"  # the group of tokens without a role/channel/message


def token_labels(tokens: Sequence[int], *, prompt_length: int = 0, effort: str | None = None):
    """One row per token: ``position``, ``id``, ``text``, ``kind``, ``role``, ``channel``, ``recipient``,
    ``message`` (labels from ``parse_tokens`` of the whole sequence), ``part`` ("prompt" before
    ``prompt_length``, else "completion") and ``effort``. Missing labels are "-" (message -1)."""
    from .harmony import parse_tokens
    from .harmony.tokens import START

    import pandas as pd

    tokens = [int(t) for t in tokens]
    full = bool(tokens) and tokens[0] == START
    events = parse_tokens(tokens, role=None if full else "assistant").events
    return pd.DataFrame({
        "position": [e.position for e in events], "id": [e.id for e in events], "text": [e.text for e in events],
        "kind": [e.kind for e in events], "role": [e.role or NONE for e in events],
        "channel": [e.channel or NONE for e in events], "recipient": [e.recipient or NONE for e in events],
        "message": [-1 if e.message is None else e.message for e in events],
        "part": ["prompt" if e.position < prompt_length else "completion" for e in events],
        "effort": effort or NONE})


class LabelledTrace:
    """A ``Trace`` of one sequence (unbatched) with Harmony labels per token (``labels``, a DataFrame)."""

    def __init__(self, trace: Trace, labels, *, name: str | None = None):
        T = _length(trace)
        if len(labels) != T:
            raise ValueError(f"labels have {len(labels)} rows but the trace covers {T} tokens")
        if trace.batched:
            raise ValueError("LabelledTrace takes an unbatched trace (one sequence)")
        self.trace, self.labels = trace, labels.reset_index(drop=True)
        self.name = name or (labels["effort"].iloc[0] if "effort" in labels and len(labels) else "run")

    @classmethod
    def run(cls, model, conversation, completion: Sequence[int] = (), *, names=NAMES, effort: str | None = None,
            name: str | None = None) -> "LabelledTrace":
        """Render ``conversation`` (a ``Conversation``, or prompt token ids), append ``completion`` token ids,
        trace ``names`` over the whole sequence in one forward pass and label every token. ``effort``
        defaults to the conversation's reasoning effort."""
        if hasattr(conversation, "render"):
            prompt = conversation.render()
            effort = effort or conversation.reasoning_effort
        else:
            prompt = [int(t) for t in conversation]
        tokens = prompt + [int(t) for t in completion]
        with torch.no_grad():
            logits = name_filter(names, model.hook_names())("logits")  # without them, skip the unembedding
            _, trace = model.run_with_trace(torch.tensor(tokens), names=names, last_only=not logits)
        return cls(trace, token_labels(tokens, prompt_length=len(prompt), effort=effort), name=name)

    def __repr__(self) -> str:
        counts = self.labels["channel"].value_counts().to_dict()
        return f"LabelledTrace({self.name!r}, {len(self.labels)} tokens, channels {counts}, {len(self.trace)} activations)"

    # ---- per (token, layer) ----------------------------------------------------------------------
    def per_layer(self):
        """Long DataFrame, one row per (token, layer): the labels, ``layer``, and each statistic the trace
        allows (``router_entropy``, ``sink_mass``, ``residual_norm``, ``experts``, ``weights``)."""
        import pandas as pd

        layers = sorted(set().union(*(self.trace.layers(p) for p in
                                      ("moe.router_logits", "moe.expert_idx", "attn.sink_prob", "resid_post"))))
        if not layers:
            raise KeyError(f"the trace holds none of {NAMES}; trace them (LabelledTrace.run does)")
        frames = []
        for layer in layers:
            f = self.labels.copy()
            f.insert(0, "layer", layer)
            for col, values in _per_token_stats(self.trace, layer).items():
                f[col] = values
            frames.append(f)
        return pd.concat(frames, ignore_index=True)

    # ---- grouped -------------------------------------------------------------------------------
    def router_entropy(self, by="channel"):
        return summarise([self], "router_entropy", by=by)

    def sink_mass(self, by="channel"):
        return summarise([self], "sink_mass", by=by)

    def residual_norm(self, by="channel"):
        return summarise([self], "residual_norm", by=by)

    def expert_load(self, by="channel", *, weighted: bool = False):
        return summarise([self], "expert_load", by=by, weighted=weighted)


def _length(trace: Trace) -> int:
    if trace.tokens is not None:
        return trace.tokens.shape[-1]
    from .hooks import point

    name = next(iter(trace))
    return trace[name].shape[point(name).token_axis]


def _per_token_stats(trace: Trace, layer: int) -> dict:
    """Per token of one layer: whichever statistics the traced points allow."""
    out = {}
    name = f"blocks.{layer}.moe.router_logits"
    if name in trace:
        logp = torch.log_softmax(trace[name].float(), dim=-1)
        out["router_entropy"] = (-(logp.exp() * logp).sum(-1)).tolist()
    name = f"blocks.{layer}.attn.sink_prob"
    if name in trace:
        out["sink_mass"] = trace[name].float().mean(0).tolist()  # [Hq, T] -> [T]
    name = f"blocks.{layer}.resid_post"
    if name in trace:
        out["residual_norm"] = trace[name].float().norm(dim=-1).tolist()
    name = f"blocks.{layer}.moe.expert_idx"
    if name in trace:
        out["experts"] = [tuple(r) for r in trace[name].tolist()]
        wname = f"blocks.{layer}.moe.expert_weights"
        if wname in trace:
            out["weights"] = [tuple(r) for r in trace[wname].float().tolist()]
    return out


def _by(by) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def summarise(runs: Iterable[LabelledTrace], stat: str, *, by="channel", weighted: bool = False):
    """One statistic over one or more runs, grouped by label columns ``by`` (e.g. "channel", "role",
    "message", ["effort", "channel"]; "run" is each run's name).

    ``router_entropy`` / ``sink_mass`` / ``residual_norm``: DataFrame (groups) x layer, the mean over the
    group's tokens, with ``.attrs["tokens"]`` the token count per group. ``expert_load``: DataFrame
    (groups, layer) x expert, each row the share of the group's (token, pick) slots per expert (sums to
    1; ``weighted``: shares of routing weight instead).
    """
    import pandas as pd

    if stat not in STATS:
        raise ValueError(f"unknown statistic {stat!r}; choose one of {', '.join(STATS)}")
    by = _by(by)
    frames = []
    for run in runs:
        f = run.per_layer()
        f["run"] = run.name
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    missing = [c for c in by if c not in df]
    if missing:
        raise KeyError(f"no label column {missing[0]!r}; labels are {', '.join(df.columns)}")
    if stat == "expert_load":
        if "experts" not in df:
            raise KeyError("expert_load needs blocks.*.moe.expert_idx in the trace")
        if weighted and "weights" not in df:
            raise KeyError("weighted expert_load needs blocks.*.moe.expert_weights in the trace")
        cols = ["experts", "weights"] if weighted else ["experts"]
        slots = df[by + ["layer"] + cols].explode(cols)
        slots["share"] = slots["weights"].astype(float) if weighted else 1.0
        table = slots.groupby(by + ["layer", "experts"])["share"].sum().unstack("experts", fill_value=0.0)
        table = table.div(table.sum(axis=1), axis=0)
        table.columns = table.columns.astype(int)
        table.columns.name = "expert"
        return table.sort_index(axis=1)
    if stat not in df:
        raise KeyError(f"{stat} needs {_NEEDS[stat]} in the trace")
    table = df.groupby(by + ["layer"])[stat].mean().unstack("layer")
    first_layer = df["layer"].min()
    table.attrs["tokens"] = df[df["layer"] == first_layer].groupby(by).size().to_dict()
    return table


_NEEDS = {"router_entropy": "blocks.*.moe.router_logits", "sink_mass": "blocks.*.attn.sink_prob",
          "residual_norm": "blocks.*.resid_post"}


def compare(a: LabelledTrace, b: LabelledTrace, stat: str, *, by="channel", weighted: bool = False):
    """Two runs side by side (e.g. low vs high effort on one question): a DataFrame with column level 0
    ``a.name``, ``b.name`` and "difference" (b - a), over the groups both runs have."""
    import pandas as pd

    if a.name == b.name:
        raise ValueError(f"both runs are named {a.name!r}; give them names (LabelledTrace(..., name=))")
    ta = summarise([a], stat, by=by, weighted=weighted)
    tb = summarise([b], stat, by=by, weighted=weighted)
    ta, tb = ta.align(tb, join="inner", axis=0)  # groups both runs have
    ta, tb = ta.align(tb, join="outer", axis=1, fill_value=0.0)  # layers / experts either has
    return pd.concat({a.name: ta, b.name: tb, "difference": tb - ta}, axis=1)
