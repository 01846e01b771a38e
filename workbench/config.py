"""``ModelConfig``: the gpt-oss hyper-parameters, read from either checkpoint layout.

Field names are the reference implementation's (gpt_oss/torch/model.py ``ModelConfig``), which is also
what ``original/config.json`` holds. The Hugging Face ``config.json`` (model_type "gpt_oss") is mapped
onto the same fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config.json that is missing fields, has wrong types, or contradicts itself."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """gpt-oss hyper-parameters (the reference's names); validated on creation. See ``PRESETS``."""

    num_hidden_layers: int = 24
    num_experts: int = 32
    experts_per_token: int = 4
    vocab_size: int = 201088
    hidden_size: int = 2880
    intermediate_size: int = 2880
    swiglu_limit: float = 7.0
    head_dim: int = 64
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    sliding_window: int = 128
    initial_context_length: int = 4096
    rope_theta: float = 150000.0
    rope_scaling_factor: float = 32.0
    rope_ntk_alpha: float = 1.0
    rope_ntk_beta: float = 32.0

    def __post_init__(self) -> None:
        problems = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                problems.append(f"{f.name}={v!r:.40} is not a number")
            elif f.type == "int" and int(v) != v:
                problems.append(f"{f.name}={v!r} is not a whole number")
        if problems:
            raise ConfigError("; ".join(problems))
        for name in ("num_hidden_layers", "num_experts", "vocab_size", "head_dim", "num_attention_heads",
                     "num_key_value_heads", "sliding_window", "initial_context_length", "hidden_size",
                     "intermediate_size", "experts_per_token"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be positive")
        if problems:  # before any division by these
            raise ConfigError("; ".join(problems))
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if not 1 <= self.experts_per_token <= self.num_experts:
            problems.append(f"experts_per_token={self.experts_per_token} not in 1..num_experts={self.num_experts}")
        if self.hidden_size % 32 or self.intermediate_size % 32:
            problems.append("hidden_size and intermediate_size must be multiples of 32 (the MXFP4 block size)")
        if self.head_dim % 2:
            problems.append(f"head_dim={self.head_dim} must be even (RoPE rotates halves)")
        if problems:
            raise ConfigError("; ".join(problems))

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def is_sliding(self, layer: int) -> bool:
        """Even layers use the sliding window, odd layers full causal attention."""
        return layer % 2 == 0

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_original_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_hf_json(self) -> dict[str, Any]:
        """A config.json that transformers' GptOssConfig reads (rope settings under both spellings)."""
        rope = {
            "rope_type": "yarn",
            "factor": float(self.rope_scaling_factor),
            "beta_fast": float(self.rope_ntk_beta),
            "beta_slow": float(self.rope_ntk_alpha),
            "truncate": False,
            "original_max_position_embeddings": self.initial_context_length,
        }
        return {
            "architectures": ["GptOssForCausalLM"],
            "model_type": "gpt_oss",
            "num_hidden_layers": self.num_hidden_layers,
            "num_local_experts": self.num_experts,
            "num_experts_per_tok": self.experts_per_token,
            "experts_per_token": self.experts_per_token,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "swiglu_limit": self.swiglu_limit,
            "head_dim": self.head_dim,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "sliding_window": self.sliding_window,
            "initial_context_length": self.initial_context_length,
            "max_position_embeddings": int(self.initial_context_length * self.rope_scaling_factor),
            "rope_theta": float(self.rope_theta),
            "rope_scaling": dict(rope, rope_theta=float(self.rope_theta)),
            "rope_parameters": dict(rope, rope_theta=float(self.rope_theta)),
            "layer_types": [
                "sliding_attention" if self.is_sliding(i) else "full_attention" for i in range(self.num_hidden_layers)
            ],
            "rms_norm_eps": 1e-5,
            "attention_bias": True,
            "attention_dropout": 0.0,
            "tie_word_embeddings": False,
            "hidden_act": "silu",
            "router_aux_loss_coef": 0.9,
            "output_router_logits": False,
            "use_cache": True,
            "torch_dtype": "bfloat16",
            # Harmony's <|return|> and <|endoftext|>, where the vocabulary holds them.
            **({"eos_token_id": 200002, "pad_token_id": 199999} if self.vocab_size > 200002 else {}),
        }

    @classmethod
    def from_original_json(cls, data: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names if n not in data)
        if missing:
            raise ConfigError(f"{source}: missing fields {', '.join(missing)}")
        try:
            return cls(**{n: data[n] for n in names})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_hf_json(cls, data: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        try:
            return cls._from_hf_json(data, source)
        except (TypeError, ValueError, AttributeError, ZeroDivisionError, OverflowError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{source}: malformed field values ({type(e).__name__}); every size must be a "
                              "positive integer") from None

    @classmethod
    def _from_hf_json(cls, data: dict[str, Any], source: str) -> "ModelConfig":
        if data.get("model_type") != "gpt_oss":
            raise ConfigError(f"{source}: model_type is {data.get('model_type')!r}, expected 'gpt_oss'")
        rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
        if not isinstance(rope, dict):
            raise ConfigError(f"{source}: rope_parameters/rope_scaling must be an object")
        required = ["num_hidden_layers", "num_local_experts", "vocab_size", "hidden_size",
                    "intermediate_size", "num_attention_heads", "num_key_value_heads"]
        missing = [k for k in required if k not in data]
        if missing:
            raise ConfigError(f"{source}: missing fields {', '.join(missing)}")
        hidden, heads = data["hidden_size"], data["num_attention_heads"]
        layer_types = data.get("layer_types")
        if layer_types is not None:  # checked without building a list as long as the claimed layer count
            if not isinstance(layer_types, list) or len(layer_types) != data["num_hidden_layers"] or any(
                    t != ("sliding_attention" if i % 2 == 0 else "full_attention") for i, t in enumerate(layer_types)):
                raise ConfigError(f"{source}: layer_types must alternate sliding/full starting with sliding "
                                  f"(gpt-oss), one per layer")
        if rope and rope.get("rope_type", rope.get("type", "yarn")) != "yarn":
            raise ConfigError(f"{source}: rope type {rope.get('rope_type')!r} is not 'yarn'")
        try:
            return cls(
                num_hidden_layers=data["num_hidden_layers"],
                num_experts=data["num_local_experts"],
                experts_per_token=data.get("num_experts_per_tok", data.get("experts_per_token", 4)),
                vocab_size=data["vocab_size"],
                hidden_size=hidden,
                intermediate_size=data["intermediate_size"],
                swiglu_limit=data.get("swiglu_limit", 7.0),
                head_dim=data.get("head_dim") or hidden // heads,
                num_attention_heads=heads,
                num_key_value_heads=data["num_key_value_heads"],
                sliding_window=data.get("sliding_window") or 128,
                initial_context_length=rope.get("original_max_position_embeddings",
                                                data.get("initial_context_length", 4096)),
                rope_theta=rope.get("rope_theta", data.get("rope_theta", 150000.0)),
                rope_scaling_factor=rope.get("factor", 32.0),
                rope_ntk_alpha=rope.get("beta_slow", 1.0),
                rope_ntk_beta=rope.get("beta_fast", 32.0),
            )
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        """Read a config.json in either layout."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        if "model_type" in data:
            return cls.from_hf_json(data, str(path))
        return cls.from_original_json(data, str(path))


PRESETS: dict[str, ModelConfig] = {
    # Tests: seconds to write and run, the real vocabulary so Harmony tokens are valid, two sliding and
    # two full layers, a window shorter than typical test prompts, top-2 of 8 experts.
    "tiny": ModelConfig(num_hidden_layers=4, num_experts=8, experts_per_token=2, hidden_size=64,
                        intermediate_size=64, head_dim=16, num_attention_heads=4, num_key_value_heads=2,
                        sliding_window=16),
    # Benchmarks on a CPU: big enough that matmuls dominate.
    "small": ModelConfig(num_hidden_layers=4, num_experts=16, experts_per_token=4, hidden_size=512,
                         intermediate_size=512, head_dim=64, num_attention_heads=8, num_key_value_heads=2,
                         sliding_window=128),
    "20b": ModelConfig(num_hidden_layers=24, num_experts=32),
    "120b": ModelConfig(num_hidden_layers=36, num_experts=128),
}
