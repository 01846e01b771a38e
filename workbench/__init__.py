"""gpt-oss workbench: a Harmony-first research workbench for OpenAI's gpt-oss models.

The formats (config, checkpoint, MXFP4, built-in model) are imported eagerly; the model, Harmony,
tools and backends on first use, so ``import workbench`` stays quick.
"""

from importlib import import_module

from .checkpoint import Checkpoint, CheckpointError, MXFP4Tensor, open_checkpoint
from .config import PRESETS, ConfigError, ModelConfig
from .tiny import default_checkpoint, make_tiny_checkpoint

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load_model": ".model", "Model": ".model", "Trace": ".trace",  # (generate: workbench.generate.generate)
    "chat": ".toolloop", "ChatResult": ".toolloop",
    "Conversation": ".harmony", "parse_tokens": ".harmony", "StreamDecoder": ".harmony",
    "Transcript": ".harmony", "TokenEvent": ".harmony", "ParseError": ".harmony", "HarmonyConstraint": ".harmony",
    "ScriptedBackend": ".backends", "LocalBackend": ".backends", "OpenAIBackend": ".backends",
    "PythonTool": ".tools", "BrowserTool": ".tools", "LocalSearch": ".tools", "FunctionTools": ".tools",
    "ToolStep": ".tools", "ToolTrace": ".tools",
}

__all__ = [
    "Checkpoint", "CheckpointError", "ConfigError", "MXFP4Tensor", "ModelConfig", "PRESETS",
    "default_checkpoint", "make_tiny_checkpoint", "open_checkpoint", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
