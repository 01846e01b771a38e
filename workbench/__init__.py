"""gpt-oss workbench: a Harmony-first research workbench for OpenAI's gpt-oss models."""

from .checkpoint import Checkpoint, CheckpointError, MXFP4Tensor, open_checkpoint
from .config import PRESETS, ConfigError, ModelConfig
from .tiny import default_checkpoint, make_tiny_checkpoint

__version__ = "0.1.0"

__all__ = [
    "Checkpoint", "CheckpointError", "ConfigError", "MXFP4Tensor", "ModelConfig", "PRESETS",
    "default_checkpoint", "make_tiny_checkpoint", "open_checkpoint",
]


def __getattr__(name):
    # Heavier parts are imported on first use so `import workbench` stays quick.
    if name == "load_model":
        from .model import load_model

        return load_model
    if name == "chat":
        from .chat import chat

        return chat
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
