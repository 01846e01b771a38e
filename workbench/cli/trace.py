"""``workbench trace [PATH] "prompt"``: per layer, the experts each token picked and the sink mass per head."""

from __future__ import annotations

from ._text import terminal_text

NAME = "trace"
HELP = "run one forward pass and print, per layer, the experts each token picked and each head's sink mass"
ORDER = 30


def register(p) -> None:
    p.add_argument("args", nargs="+", metavar="[PATH] PROMPT",
                   help="checkpoint folder (default: the built-in nano model) and the prompt text "
                        "(Harmony special tokens such as <|start|> are allowed)")
    p.add_argument("--weights", action="store_true", help="show routing weights next to the expert ids")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="compute dtype (default bf16)")
    p.add_argument("--max-tokens", type=int, default=64, help="trace at most this many prompt tokens (default 64)")
    p.set_defaults(func=run)


def _piece(enc, token: int, width: int = 14) -> str:
    """A token's text on one line: spaces shown as '·', control characters escaped, cut to ``width``."""
    try:
        text = enc.decode([token])
    except Exception:  # e.g. a token that is not valid UTF-8 on its own
        text = f"<{token}>"
    text = terminal_text(text.replace(" ", "·"), keep="") or "''"
    return text if len(text) <= width else text[: width - 1] + "~"


def format_trace(trace, pieces: list[str], *, weights: bool = False) -> str:
    """Two plain-text tables: expert picks (token x layer) and mean sink mass (layer x head)."""
    cfg = trace.config
    picks = trace.pick_table(with_weights=weights)
    width = max(len("token"), *(len(p) for p in pieces))
    cols = list(picks.columns)
    cellw = {c: max(len(c), *(len(str(v)) for v in picks[c])) for c in cols}
    lines = [f"Expert picks (top-{cfg.experts_per_token} of {cfg.num_experts}; "
             f"{'expert:weight' if weights else 'expert ids, best first'}), token x layer:"]
    lines.append(f"{'pos':>4}  {'token':<{width}}  " + "  ".join(f"{c:<{cellw[c]}}" for c in cols))
    for pos, row in enumerate(picks.itertuples(index=False)):
        lines.append(f"{pos:>4}  {pieces[pos]:<{width}}  " + "  ".join(f"{v:<{cellw[c]}}" for c, v in zip(cols, row)))
    sink = trace.sink_mass()
    lines.append("")
    lines.append("Sink mass per head (mean over tokens; sliding-window layers marked *), layer x head:")
    lines.append("       " + " ".join(f"{'h' + str(h):>5}" for h in sink.columns))
    for layer, row in sink.iterrows():
        mark = "*" if cfg.is_sliding(layer) else " "
        lines.append(f"{'L' + str(layer) + mark:>6} " + " ".join(f"{v:5.2f}" for v in row))
    return "\n".join(line.rstrip() for line in lines)


def run(args) -> int:
    import torch

    from ..harmony import encoding
    from ..model import load_model
    from ..tiny import default_checkpoint

    if len(args.args) > 2:
        raise ValueError(f"expected [PATH] PROMPT, got {len(args.args)} arguments (quote the prompt)")
    path, prompt = (args.args if len(args.args) == 2 else (None, args.args[0]))
    path = path or default_checkpoint()
    enc = encoding()
    tokens = enc.encode(prompt, allowed_special="all")
    if not tokens:
        raise ValueError("the prompt is empty")
    if len(tokens) > args.max_tokens:
        print(f"(prompt has {len(tokens)} tokens; tracing the first {args.max_tokens}, see --max-tokens)")
        tokens = tokens[: args.max_tokens]
    model = load_model(path, dtype=args.dtype)
    with torch.no_grad():
        _, trace = model.run_with_trace(torch.tensor(tokens), names=["blocks.*.moe.expert_idx",
                                                                      "blocks.*.moe.expert_weights",
                                                                      "blocks.*.attn.sink_prob"])
    cfg = model.config
    print(f"{path}: {cfg.num_hidden_layers} layers, {cfg.num_attention_heads} heads, {cfg.num_experts} experts, "
          f"{len(tokens)} tokens, {args.dtype}")
    print()
    print(format_trace(trace, [_piece(enc, t) for t in tokens], weights=args.weights))
    return 0
