"""Open gpt-oss checkpoints in either layout under one canonical naming, lazily, MXFP4 kept packed.

Canonical names are the original layout's (``embedding.weight``, ``block.{n}.attn.qkv.weight``, ...,
``block.{n}.mlp.mlp1_weight``), whatever is on disk. Expert weights come back as ``MXFP4Tensor``
(packed blocks + scales) when stored as MXFP4, or as dense tensors [E, out, in] when a Hugging Face
checkpoint stores them dense (transposed on disk as [E, in, out]).

Layouts:
- original: a folder with config.json (reference ModelConfig fields) and *.safetensors holding
  ``block.N...`` names; a checkpoint root with an ``original/`` subfolder also counts.
- hf: config.json with model_type "gpt_oss" and model.safetensors, or shards plus
  model.safetensors.index.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, Iterator, Mapping, Union

import torch
from safetensors import safe_open

from . import mxfp4
from .config import ConfigError, ModelConfig
from .progress import progress
from .safetensors_io import DTYPES, Entry, SafetensorsError, read_header, write_safetensors


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and tensor at fault."""


MAX_CONFIG_BYTES = 1 << 20  # a real config.json is a few KB


@dataclasses.dataclass
class MXFP4Tensor:
    """A packed MXFP4 tensor: ``blocks`` uint8 [..., G, 16], ``scales`` uint8 [..., G] for logical [..., G*32]."""

    blocks: torch.Tensor
    scales: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.scales.shape[:-1], self.scales.shape[-1] * mxfp4.BLOCK)

    @property
    def nbytes(self) -> int:
        return self.blocks.nbytes + self.scales.nbytes

    def dequantize(self, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        return mxfp4.dequantize(self.blocks, self.scales, dtype)

    def __getitem__(self, index) -> "MXFP4Tensor":
        """Index leading dims (e.g. one expert: ``w[e]``) without unpacking."""
        return MXFP4Tensor(self.blocks[index], self.scales[index])

    def to(self, device) -> "MXFP4Tensor":
        return MXFP4Tensor(self.blocks.to(device), self.scales.to(device))

    @classmethod
    def quantize(cls, w: torch.Tensor) -> "MXFP4Tensor":
        return cls(*mxfp4.quantize(w))

    def __repr__(self) -> str:
        size = f"{self.nbytes / 2**20:.1f} MiB" if self.nbytes >= 2**20 else f"{self.nbytes / 2**10:.1f} KiB"
        return f"MXFP4Tensor(shape={list(self.shape)}, {size} packed)"


Weight = Union[torch.Tensor, MXFP4Tensor]
EXPERT_WEIGHTS = ("mlp1_weight", "mlp2_weight")


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name -> logical shape for a config (experts as [E, out, in])."""
    H, E, I, V = cfg.hidden_size, cfg.num_experts, cfg.intermediate_size, cfg.vocab_size
    qkv = cfg.q_dim + 2 * cfg.kv_dim
    shapes = {"embedding.weight": (V, H), "norm.scale": (H,), "unembedding.weight": (V, H)}
    for n in range(cfg.num_hidden_layers):
        b = f"block.{n}"
        shapes |= {
            f"{b}.attn.norm.scale": (H,), f"{b}.attn.qkv.weight": (qkv, H), f"{b}.attn.qkv.bias": (qkv,),
            f"{b}.attn.sinks": (cfg.num_attention_heads,), f"{b}.attn.out.weight": (H, cfg.q_dim),
            f"{b}.attn.out.bias": (H,), f"{b}.mlp.norm.scale": (H,), f"{b}.mlp.gate.weight": (E, H),
            f"{b}.mlp.gate.bias": (E,), f"{b}.mlp.mlp1_weight": (E, 2 * I, H), f"{b}.mlp.mlp1_bias": (E, 2 * I),
            f"{b}.mlp.mlp2_weight": (E, H, I), f"{b}.mlp.mlp2_bias": (E, H),
        }
    return shapes


def is_expert_weight(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in EXPERT_WEIGHTS


# --- the Hugging Face names of each canonical tensor --------------------------------------------
_HF_TOP = {"embedding.weight": "model.embed_tokens.weight", "norm.scale": "model.norm.weight",
           "unembedding.weight": "lm_head.weight"}
_HF_BLOCK = {
    "attn.norm.scale": "input_layernorm.weight", "attn.sinks": "self_attn.sinks",
    "attn.out.weight": "self_attn.o_proj.weight", "attn.out.bias": "self_attn.o_proj.bias",
    "mlp.norm.scale": "post_attention_layernorm.weight", "mlp.gate.weight": "mlp.router.weight",
    "mlp.gate.bias": "mlp.router.bias", "mlp.mlp1_bias": "mlp.experts.gate_up_proj_bias",
    "mlp.mlp2_bias": "mlp.experts.down_proj_bias",
}
_HF_EXPERT = {"mlp1_weight": "mlp.experts.gate_up_proj", "mlp2_weight": "mlp.experts.down_proj"}


def _split_block_name(name: str) -> tuple[int, str]:
    _, n, rest = name.split(".", 2)
    return int(n), rest


class Checkpoint(Mapping[str, Weight]):
    """A lazily read checkpoint: ``ckpt[name]`` loads one canonical tensor; nothing is read before.

    >>> ckpt = open_checkpoint(path)            # doctest: +SKIP
    >>> ckpt.config.num_experts, ckpt.layout    # doctest: +SKIP
    (8, 'hf')
    >>> ckpt["block.0.mlp.mlp1_weight"]         # doctest: +SKIP
    MXFP4Tensor(shape=[8, 128, 64], 0.0 MiB packed)
    """

    def __init__(self, root: Path, config: ModelConfig, layout: str, files: dict[str, Path]):
        self.path, self.config, self.layout = root, config, layout
        self._file_of = files  # stored tensor name -> file
        self._headers = {f: read_header(f) for f in set(files.values())}
        self._handles: dict[Path, object] = {}
        _check_layer_count(root, config, files)  # before expected_shapes allocates per layer
        self._shapes = expected_shapes(config)
        self.validate()

    # -- raw access to stored tensors --
    def _stored(self, name: str) -> torch.Tensor:
        file = self._file_of.get(name)
        if file is None:
            raise CheckpointError(f"{self.path}: tensor {name!r} is missing")
        if file not in self._handles:
            self._handles[file] = safe_open(str(file), framework="pt")
        try:
            return self._handles[file].get_tensor(name)
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{file}: cannot read tensor {name!r}: {e}") from None

    def _stored_info(self, name: str) -> tuple[Path, torch.dtype, tuple[int, ...]]:
        file = self._file_of.get(name)
        if file is None:
            raise CheckpointError(f"{self.path}: tensor {name!r} is missing (layout {self.layout})")
        info = self._headers[file][name]
        return file, DTYPES[info["dtype"]], tuple(info["shape"])

    # -- canonical view --
    def _sources(self, name: str) -> list[str]:
        """The stored names one canonical tensor is made of."""
        if self.layout == "original":
            return [f"{name}.blocks", f"{name}.scales"] if self._is_packed(name) else [name]
        if name in _HF_TOP:
            return [_HF_TOP[name]]
        n, rest = _split_block_name(name)
        p = f"model.layers.{n}."
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = rest.rsplit(".", 1)[-1]
            return [f"{p}self_attn.{x}_proj.{kind}" for x in "qkv"]
        if rest.startswith("mlp.mlp") and rest.endswith("_weight"):
            base = p + _HF_EXPERT[rest[4:]]
            return [f"{base}_blocks", f"{base}_scales"] if self._is_packed(name) else [base]
        if rest in _HF_BLOCK:
            return [p + _HF_BLOCK[rest]]
        raise KeyError(name)

    def _is_packed(self, name: str) -> bool:
        if not is_expert_weight(name):
            return False
        if self.layout == "original":
            return f"{name}.blocks" in self._file_of
        n, rest = _split_block_name(name)
        return f"model.layers.{n}.{_HF_EXPERT[rest[4:]]}_blocks" in self._file_of

    def __getitem__(self, name: str) -> Weight:
        if name not in self._shapes:
            raise KeyError(f"{name!r} is not a canonical gpt-oss tensor name")
        parts = [self._stored(s) for s in self._sources(name)]
        if self._is_packed(name):
            return MXFP4Tensor(*parts)
        if len(parts) == 3:  # q, k, v -> qkv
            return torch.cat(parts, dim=0)
        t = parts[0]
        if self.layout == "hf" and is_expert_weight(name):
            t = t.transpose(1, 2).contiguous()  # HF stores dense experts as [E, in, out]
        return t

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def stored_tensors(self) -> list[tuple[str, str, torch.dtype, tuple[int, ...]]]:
        """(stored name, file name, dtype, shape) for every tensor on disk, without reading data."""
        rows = []
        for name, file in sorted(self._file_of.items()):
            _, dtype, shape = self._stored_info(name)
            rows.append((name, file.name, dtype, shape))
        return rows

    def validate(self) -> None:
        """Check every canonical tensor is present with the right shape and dtype (headers only)."""
        for name, shape in self._shapes.items():
            sources = self._sources(name)
            infos = [self._stored_info(s) for s in sources]
            if self._is_packed(name):
                (bfile, bdt, bshape), (sfile, sdt, sshape) = infos
                want_b = (*shape[:-1], shape[-1] // mxfp4.BLOCK, mxfp4.BYTES_PER_BLOCK)
                for file, src, dt, got, want in ((bfile, sources[0], bdt, bshape, want_b),
                                                 (sfile, sources[1], sdt, sshape, want_b[:-1])):
                    if dt != torch.uint8:
                        raise CheckpointError(f"{file}: tensor {src!r} has dtype {dt}, expected uint8 (MXFP4)")
                    if got != want:
                        raise CheckpointError(f"{file}: tensor {src!r} has shape {list(got)}, expected {list(want)}")
                continue
            want_shapes = [shape]
            if len(sources) == 3:
                c = self.config
                want_shapes = [(c.q_dim, *shape[1:]), (c.kv_dim, *shape[1:]), (c.kv_dim, *shape[1:])]
            elif self.layout == "hf" and is_expert_weight(name):
                want_shapes = [(shape[0], shape[2], shape[1])]
            for (file, dt, got), src, want in zip(infos, sources, want_shapes):
                if not dt.is_floating_point:
                    raise CheckpointError(f"{file}: tensor {src!r} has dtype {dt}, expected a float type (bf16)")
                if got != want:
                    raise CheckpointError(f"{file}: tensor {src!r} has shape {list(got)}, expected {list(want)} "
                                          f"for config {self.path}")

    def __repr__(self) -> str:
        c = self.config
        return (f"Checkpoint({str(self.path)!r}, layout={self.layout!r}, layers={c.num_hidden_layers}, "
                f"experts={c.num_experts} top-{c.experts_per_token}, hidden={c.hidden_size})")


def _check_layer_count(root: Path, config: ModelConfig, files: Mapping[str, Path]) -> None:
    """A config may not claim more layers than the files hold (a crafted config.json with millions
    of layers must fail here, not after allocating a shape table per layer)."""
    stored = set()
    for name in files:
        parts = name.split(".")
        if len(parts) > 2 and parts[0] == "block" and parts[1].isdigit():
            stored.add(parts[1])
        elif len(parts) > 3 and parts[:2] == ["model", "layers"] and parts[2].isdigit():
            stored.add(parts[2])
    if config.num_hidden_layers > len(stored):
        raise CheckpointError(f"{root}: config.json claims {config.num_hidden_layers} layers but the safetensors "
                              f"files hold tensors for {len(stored)}")


def _files_from_index(folder: Path, index_file: Path) -> dict[str, Path]:
    """Stored name -> shard file, from the index; every shard must be a regular file inside ``folder``."""
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError):
        raise CheckpointError(f"{index_file}: not a valid safetensors index (needs a weight_map of "
                              "tensor name -> shard file name)") from None
    inside = folder.resolve()
    files = {}
    for name, fname in weight_map.items():
        f = (folder / fname).resolve()
        if f.parent != inside:
            raise CheckpointError(f"{index_file}: shard {fname!r:.200} (holding {name!r:.200}) is not a file in "
                                  f"{folder}; shards must sit next to the index")
        if not f.is_file():
            raise CheckpointError(f"{index_file}: shard {fname!r:.200} (holding {name!r:.200}) does not exist "
                                  "or is not a regular file")
        files[name] = f
    return files


def _files_from_headers(paths: list[Path]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for f in paths:
        for name in read_header(f):
            if name in files:
                raise CheckpointError(f"{f}: tensor {name!r} also appears in {files[name]}")
            files[name] = f
    return files


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint folder in the original or Hugging Face layout (detected), reading nothing yet."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"checkpoint {root} does not exist")
    folder = root if root.is_dir() else root.parent
    cfg_file = folder / "config.json"
    try:
        if cfg_file.is_file():
            if cfg_file.stat().st_size > MAX_CONFIG_BYTES:
                raise CheckpointError(f"{cfg_file}: {cfg_file.stat().st_size} bytes; a config.json is at most "
                                      f"{MAX_CONFIG_BYTES}")
            data = json.loads(cfg_file.read_text())
            if isinstance(data, dict) and data.get("model_type") == "gpt_oss":
                config = ModelConfig.from_hf_json(data, str(cfg_file))
                index = folder / "model.safetensors.index.json"
                if index.is_file():
                    files = _files_from_index(folder, index)
                else:
                    files = _files_from_headers(sorted(folder.glob("*.safetensors")))
                if files:
                    return Checkpoint(folder, config, "hf", files)
            elif isinstance(data, dict) and "model_type" not in data:
                config = ModelConfig.from_original_json(data, str(cfg_file))
                files = _files_from_headers(sorted(folder.glob("*.safetensors")))
                if any(n.startswith("block.") for n in files):
                    return Checkpoint(folder, config, "original", files)
        if (folder / "original").is_dir():
            return open_checkpoint(folder / "original")
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON (at line {e.lineno}, column {e.colno})") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({type(e).__name__})") from None
    except (ConfigError, SafetensorsError) as e:
        raise CheckpointError(str(e)) from None
    raise CheckpointError(
        f"{root}: unknown checkpoint layout (expected config.json with *.safetensors holding 'block.N...' "
        "names, a Hugging Face folder with model_type 'gpt_oss', or an 'original/' subfolder)"
    )


# --- writing -----------------------------------------------------------------------------------
Producer = Callable[[], Weight]


def _hf_entries(cfg: ModelConfig, name: str, make: Producer, packed: bool) -> list[Entry]:
    """The HF stored entries for one canonical tensor."""
    shape = expected_shapes(cfg)[name]
    if name in _HF_TOP:
        return [Entry(_HF_TOP[name], torch.bfloat16, shape, make)]
    n, rest = _split_block_name(name)
    p = f"model.layers.{n}."
    if rest in ("attn.qkv.weight", "attn.qkv.bias"):
        kind = rest.rsplit(".", 1)[-1]
        cut = [0, cfg.q_dim, cfg.q_dim + cfg.kv_dim, cfg.q_dim + 2 * cfg.kv_dim]
        return [Entry(f"{p}self_attn.{x}_proj.{kind}", torch.bfloat16, (cut[i + 1] - cut[i], *shape[1:]),
                      lambda i=i: make()[cut[i]:cut[i + 1]].contiguous()) for i, x in enumerate("qkv")]
    if is_expert_weight(name):
        base = p + _HF_EXPERT[rest[4:]]
        if packed:
            return _packed_entries(base + "_blocks", base + "_scales", shape, make)
        return [Entry(base, torch.bfloat16, (shape[0], shape[2], shape[1]),
                      lambda: make().transpose(1, 2).contiguous())]
    return [Entry(p + _HF_BLOCK[rest], torch.bfloat16, shape, make)]


def _packed_entries(bname: str, sname: str, shape, make: Producer) -> list[Entry]:
    groups = shape[-1] // mxfp4.BLOCK
    memo: dict[str, MXFP4Tensor] = {}

    def get() -> MXFP4Tensor:  # blocks and scales are consecutive: make the pair once
        if "w" not in memo:
            memo["w"] = make()
        return memo["w"]

    def scales() -> torch.Tensor:
        return memo.pop("w").scales if "w" in memo else make().scales

    return [Entry(bname, torch.uint8, (*shape[:-1], groups, mxfp4.BYTES_PER_BLOCK), lambda: get().blocks),
            Entry(sname, torch.uint8, (*shape[:-1], groups), scales)]


def save_checkpoint(path: str | Path, config: ModelConfig, tensors: Mapping[str, Producer | Weight], *,
                    layout: str = "original", max_shard_bytes: int | None = None) -> Path:
    """Write canonical tensors as a checkpoint folder in ``layout`` ("original" or "hf").

    ``tensors`` maps every canonical name to a tensor, an ``MXFP4Tensor``, or a zero-argument callable
    returning one (called once, so a huge checkpoint is streamed with bounded memory). Expert weights
    given as ``MXFP4Tensor`` are stored packed; dense ones stay dense. Files are written atomically.
    """
    if layout not in ("original", "hf"):
        raise ValueError(f"layout must be 'original' or 'hf', got {layout!r}")
    shapes = expected_shapes(config)
    missing = [n for n in shapes if n not in tensors]
    if missing:
        raise ValueError(f"save_checkpoint: missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    any_packed = False
    for name in shapes:
        value = tensors[name]
        make: Producer = value if callable(value) else (lambda v=value: v)
        # Expert weights are stored packed unless given as a dense tensor; producers must return MXFP4Tensor.
        packed = is_expert_weight(name) and not isinstance(value, torch.Tensor)
        any_packed |= packed
        if layout == "hf":
            entries += _hf_entries(config, name, make, packed)
        elif packed:
            entries += _packed_entries(f"{name}.blocks", f"{name}.scales", shapes[name], make)
        else:
            entries.append(Entry(name, torch.bfloat16, shapes[name], make))
    total = sum(math.prod(e.shape) * e.dtype.itemsize for e in entries)
    with progress(desc=f"writing {folder.name}", total=total, unit="B", unit_scale=True) as bar:
        entries = [e._replace(make=_as_dtype(e, bar)) for e in entries]
        if layout == "original":
            write_safetensors(folder / "model.safetensors", entries)
            _write_json(folder / "config.json", config.to_original_json())
            return folder
        _write_hf_shards(folder, entries, max_shard_bytes)
    cfg = config.to_hf_json()
    if any_packed:
        cfg["quantization_config"] = {
            "quant_method": "mxfp4",
            "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                       "model.embed_tokens", "lm_head"],
        }
    _write_json(folder / "config.json", cfg)
    return folder


def _as_dtype(e: Entry, bar) -> Callable[[], torch.Tensor]:
    def make():
        t = e.make()
        if isinstance(t, MXFP4Tensor):
            raise TypeError(f"{e.name}: an MXFP4Tensor where a plain tensor was expected")
        bar.update(math.prod(e.shape) * e.dtype.itemsize)
        return t.to(e.dtype) if e.dtype.is_floating_point else t
    return make


def _write_hf_shards(folder: Path, entries: list[Entry], max_shard_bytes: int | None) -> None:
    sizes = [math.prod(e.shape) * e.dtype.itemsize for e in entries]
    total = sum(sizes)
    limit = max_shard_bytes or min(5 << 30, total // 2 + 1)  # at least two shards: the index is exercised
    shards: list[list[Entry]] = [[]]
    used = 0
    for e, size in zip(entries, sizes):
        if shards[-1] and used + size > limit:
            shards.append([])
            used = 0
        shards[-1].append(e)
        used += size
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(folder / fname, shard)
        weight_map |= {e.name: fname for e in shard}
    _write_json(folder / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def _write_json(path: Path, data) -> None:
    from .cache import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
