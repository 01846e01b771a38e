"""Which experts each Harmony channel uses: expert load per layer by channel, and its entropy.

``load_by_channel(model, conversations)`` runs each rendered conversation once with the router picks traced,
labels every token with the channel of the assistant message it belongs to (``parse_tokens``: header,
content and end token of a message all carry its channel; prompt, user and tool tokens are left out), and
counts the top-k picks per (layer, channel, expert). ``entropy`` is the load's entropy in bits (log2 E when
every expert gets the same share, 0 when one expert takes everything); ``plot_load_by_channel`` draws one
panel per layer.

>>> df = load_by_channel(model, [tokens_a, tokens_b])          # doctest: +SKIP
>>> entropy(df)                                                # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import torch

CHANNELS = ("analysis", "commentary", "final")


def load_by_channel(model, conversations: Iterable[Sequence[int]]):
    """DataFrame with columns layer, channel, expert, picks, share (share of that layer and channel's picks)."""
    import pandas as pd

    from ..harmony import parse_tokens

    L, E = model.config.num_hidden_layers, model.config.num_experts
    counts = torch.zeros((L, len(CHANNELS), E), dtype=torch.long)
    for tokens in conversations:
        tokens = list(tokens)
        events = parse_tokens(tokens, role=None).events
        channel = torch.tensor([CHANNELS.index(e.channel) if e.role == "assistant" and e.channel in CHANNELS else -1
                                for e in events])
        keep = channel >= 0
        if not keep.any():
            continue
        with torch.no_grad():
            _, trace = model.run_with_trace(torch.tensor(tokens), names="blocks.*.moe.expert_idx")
        for layer in range(L):
            picks = trace[f"blocks.{layer}.moe.expert_idx"][keep]  # [n, k]
            ch = channel[keep][:, None].expand_as(picks)
            counts[layer].index_put_((ch.reshape(-1), picks.reshape(-1)), torch.ones(picks.numel(), dtype=torch.long),
                                     accumulate=True)
    rows = []
    for layer in range(L):
        for c, name in enumerate(CHANNELS):
            total = int(counts[layer, c].sum())
            for e in range(E):
                n = int(counts[layer, c, e])
                rows.append({"layer": layer, "channel": name, "expert": e, "picks": n,
                             "share": n / total if total else float("nan")})
    return pd.DataFrame(rows)


def entropy(df):
    """DataFrame layer x channel: entropy (bits) of the expert load; NaN where a channel had no tokens."""
    def bits(shares) -> float:
        p = [s for s in shares if s > 0]
        return -sum(s * math.log2(s) for s in p) if p else float("nan")

    return df.groupby(["layer", "channel"])["share"].apply(bits).unstack("channel").reindex(
        columns=[c for c in CHANNELS if c in set(df.channel)])


def plot_load_by_channel(df, path: str | Path | None = None, *, title: str = "Expert load by Harmony channel"):
    """One panel per layer: each expert's share of the channel's picks, a bar per channel (entropy in the
    legend). Returns the figure; writes a PNG when ``path`` is given."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(df.layer.unique())
    E = int(df.expert.max()) + 1
    ent = entropy(df)
    fig, axes = plt.subplots(1, len(layers), figsize=(3.4 * len(layers), 3.2), sharey=True, squeeze=False)
    width = 0.8 / len(CHANNELS)
    for ax, layer in zip(axes[0], layers):
        for c, name in enumerate(CHANNELS):
            part = df[(df.layer == layer) & (df.channel == name)].sort_values("expert")
            if part.picks.sum() == 0:
                continue
            ax.bar([e + (c - 1) * width for e in range(E)], part.share, width,
                   label=f"{name} ({ent.loc[layer, name]:.2f} bits)")
        ax.axhline(1 / E, color="gray", lw=0.6, ls=":")
        ax.set(title=f"layer {layer}" + (" (sliding)" if layer % 2 == 0 else " (full)"), xlabel="expert",
               xticks=range(E))
        ax.legend(fontsize=7, loc="upper right")
    axes[0][0].set_ylabel("share of the channel's picks")
    fig.suptitle(f"{title} (dotted: uniform; entropy max {math.log2(E):.0f} bits)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        from ..cache import atomic_path

        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
    return fig
