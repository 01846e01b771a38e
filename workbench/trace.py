"""``Trace``: the activations one forward pass kept, by hook name, with the tables a researcher asks for.

>>> logits, trace = model.run_with_trace(tokens, names=["blocks.*.moe.*", "blocks.*.attn.sink_prob"])  # doctest: +SKIP
>>> trace["blocks.0.moe.expert_idx"].shape     # [T, k] (or [B, T, k] for batched tokens)  # doctest: +SKIP
>>> trace.expert_picks()                       # token x layer -> experts, weights          # doctest: +SKIP
>>> trace.expert_load(); trace.sink_mass(); trace.residual_norms()                           # doctest: +SKIP

Names, shapes, token axes and meaning are listed in ``workbench.hooks``. Tables are pandas
DataFrames; a helper that needs an activation the trace lacks says which ``names`` to ask for.
"""

from __future__ import annotations

import re
from typing import Iterator, Mapping

import torch

from .config import ModelConfig
from .hooks import point, token_axis  # noqa: F401  (token_axis: re-exported for older imports)

Tensor = torch.Tensor
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


class Trace(Mapping[str, Tensor]):
    """Activations by hook name (``trace[name]`` is a tensor), plus ``tokens`` and ``config``; after
    ``run_with_trace(..., grad_of=)`` also ``grads[name]`` (d metric / d activation) and ``metric``.

    Tensors have the hook point's shape, with a leading batch dim when the input was [B, T].
    """

    def __init__(self, activations: Mapping[str, Tensor], *, config: ModelConfig | None = None,
                 tokens: Tensor | None = None, grads: Mapping[str, Tensor] | None = None,
                 metric: float | None = None):
        self._acts = dict(activations)
        self.config = config
        self.tokens = tokens
        self.grads: dict[str, Tensor] = dict(grads or {})  # run_with_trace(..., grad_of=): d metric / d activation
        self.metric = metric

    # ---- Mapping -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._acts[name]
        except KeyError:
            raise KeyError(f"{name!r} was not traced; traced: {_summarise_names(list(self._acts))}. "
                           f"Pass it (or a glob) in run_with_trace(..., names=...)") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    @property
    def batched(self) -> bool:
        return self.tokens is not None and self.tokens.dim() == 2

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self._acts.values())

    def layers(self, point: str) -> list[int]:
        """Layer indices for which ``blocks.{i}.{point}`` was traced, ascending."""
        out = []
        for name in self._acts:
            m = _BLOCK.match(name)
            if m and m.group(2) == point:
                out.append(int(m.group(1)))
        return sorted(out)

    def _need(self, point: str) -> list[int]:
        layers = self.layers(point)
        if not layers:
            raise KeyError(f"this trace has no 'blocks.*.{point}'; run_with_trace(..., names=['blocks.*.{point}', ...])")
        return layers

    def with_batch(self, name: str) -> Tensor:
        """``trace[name]`` with a leading batch dim (added, size 1, when the run was unbatched)."""
        t = self[name]
        return t if t.dim() > len(point(name).dims) else t.unsqueeze(0)

    # ---- tables --------------------------------------------------------------------------------
    def expert_picks(self, layers: list[int] | None = None):
        """DataFrame, one row per (token position, layer): columns ``position``, ``layer``, ``token`` (id,
        when known), ``experts`` (tuple, best first) and ``weights`` (tuple of floats); ``batch`` first
        when batched. Needs ``blocks.*.moe.expert_idx``; weights need ``blocks.*.moe.expert_weights``."""
        import pandas as pd

        layers = layers if layers is not None else self._need("moe.expert_idx")
        rows = []
        tokens = None if self.tokens is None else self.tokens.reshape(-1, self.tokens.shape[-1])
        for layer in layers:
            idx = self.with_batch(f"blocks.{layer}.moe.expert_idx")
            wname = f"blocks.{layer}.moe.expert_weights"
            w = self.with_batch(wname).float() if wname in self._acts else None
            for b in range(idx.shape[0]):
                for t in range(idx.shape[1]):
                    row = {"batch": b, "position": t, "layer": layer}
                    if tokens is not None and tokens.shape[-1] == idx.shape[1]:
                        row["token"] = int(tokens[b, t])
                    row["experts"] = tuple(idx[b, t].tolist())
                    row["weights"] = tuple(round(x, 6) for x in w[b, t].tolist()) if w is not None else None
                    rows.append(row)
        df = pd.DataFrame(rows).sort_values(["batch", "position", "layer"], kind="stable").reset_index(drop=True)
        return df if self.batched else df.drop(columns="batch")

    def pick_table(self, with_weights: bool = False):
        """DataFrame position x layer; each cell the picked experts as text ("3,5" or "3:.62 5:.38")."""
        df = self.expert_picks()
        if with_weights and df["weights"].notna().all():
            cell = [" ".join(f"{e}:{_short(w)}" for e, w in zip(es, ws))
                    for es, ws in zip(df["experts"], df["weights"])]
        else:
            cell = [",".join(map(str, es)) for es in df["experts"]]
        df = df.assign(cell=cell)
        index = ["batch", "position"] if self.batched else ["position"]
        table = df.pivot(index=index, columns="layer", values="cell")
        table.columns = [f"L{c}" for c in table.columns]
        return table

    def expert_load(self, weighted: bool = False):
        """DataFrame layer x expert: how many (token, pick) slots chose each expert (``weighted``: the sum
        of their routing weights instead). Needs ``blocks.*.moe.expert_idx`` (and ``expert_weights``)."""
        import pandas as pd

        layers = self._need("moe.expert_idx")
        E = self.config.num_experts if self.config is not None else None
        data = {}
        for layer in layers:
            idx = self[f"blocks.{layer}.moe.expert_idx"].reshape(-1).long()
            n = E if E is not None else int(idx.max()) + 1
            if weighted:
                w = self[f"blocks.{layer}.moe.expert_weights"].reshape(-1).float()
                data[layer] = torch.zeros(n).index_add_(0, idx, w).tolist()
            else:
                data[layer] = torch.bincount(idx, minlength=n).tolist()
        df = pd.DataFrame.from_dict(data, orient="index")
        df.index.name, df.columns.name = "layer", "expert"
        return df

    def sink_mass(self, per_position: bool = False):
        """DataFrame layer x head: mean probability the sink took (over positions and batch). With
        ``per_position``: rows (layer, position). Needs ``blocks.*.attn.sink_prob``."""
        import pandas as pd

        layers = self._need("attn.sink_prob")
        if per_position:
            frames = []
            for layer in layers:
                p = self.with_batch(f"blocks.{layer}.attn.sink_prob").float().mean(0)  # [Hq, T]
                f = pd.DataFrame(p.T.numpy())
                f.insert(0, "position", range(p.shape[1]))
                f.insert(0, "layer", layer)
                frames.append(f)
            df = pd.concat(frames).set_index(["layer", "position"])
        else:
            data = {layer: self.with_batch(f"blocks.{layer}.attn.sink_prob").float().mean(dim=(0, 2)).tolist()
                    for layer in layers}
            df = pd.DataFrame.from_dict(data, orient="index")
            df.index.name = "layer"
        df.columns.name = "head"
        return df

    def residual_stack(self, mid: bool = True) -> tuple[list[str], Tensor]:
        """The accumulated residual stream: (labels, tensor [stages, (B,) T, H]) with one stage per traced
        ``embed``, ``blocks.i.resid_mid`` (when ``mid``) and ``blocks.i.resid_post``, in forward order;
        labels "embed", "0.mid", "0.post", ... Needs those points traced (``blocks.*.resid_*``)."""
        names = {"embed": "embed"} if "embed" in self._acts else {}
        stages = (("resid_mid", "mid"), ("resid_post", "post")) if mid else (("resid_post", "post"),)
        for layer in sorted(set(self.layers("resid_mid")) | set(self.layers("resid_post"))):
            for stage, short in stages:
                if f"blocks.{layer}.{stage}" in self._acts:
                    names[f"{layer}.{short}"] = f"blocks.{layer}.{stage}"
        if not names:
            raise KeyError("this trace has no residual stream; run_with_trace(..., names=['embed', 'blocks.*.resid_*'])")
        return list(names), torch.stack([self[n] for n in names.values()])

    def residual_norms(self):
        """DataFrame position x stage: the L2 norm of the residual stream at ``embed``, each traced
        ``blocks.i.resid_mid`` / ``resid_post`` (columns "embed", "0.mid", "0.post", ...), averaged over
        the batch when batched."""
        import pandas as pd

        labels, stack = self.residual_stack()
        norms = stack.float().norm(dim=-1)  # [stages, (B,) T]
        if self.batched:
            norms = norms.mean(1)
        df = pd.DataFrame(dict(zip(labels, norms.tolist())))
        df.index.name = "position"
        return df

    # ---- display -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        head = "Trace("
        if self.config is not None:
            head += f"{self.config.num_hidden_layers} layers, "
        if self.tokens is not None:
            shape = list(self.tokens.shape)
            head += f"{shape[-1]} tokens{f' x batch {shape[0]}' if len(shape) == 2 else ''}, "
        head += f"{len(self._acts)} activations, {self.nbytes / 2**20:.2f} MiB"
        head += f", gradients of {self.metric:.6g} for {len(self.grads)})" if self.grads else ")"
        lines = [head]
        names = list(self._acts)
        show = names if len(names) <= 24 else names[:16] + ["..."] + names[-6:]
        width = max((len(n) for n in show), default=0)
        for n in show:
            if n == "...":
                lines.append(f"  ... {len(names) - 22} more")
                continue
            t = self._acts[n]
            lines.append(f"  {n:<{width}}  {list(t.shape)} {str(t.dtype).replace('torch.', '')}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        return "<pre>" + html.escape(repr(self)) + "</pre>"


def _short(w: float) -> str:
    s = f"{w:.2f}"
    return s[1:] if s.startswith("0.") else s


def _summarise_names(names: list[str]) -> str:
    if not names:
        return "nothing"
    if len(names) <= 6:
        return ", ".join(names)
    return ", ".join(names[:5]) + f", ... ({len(names)} in all)"
