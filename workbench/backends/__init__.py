"""Generation backends, one interface (``Backend.generate`` streams token ids).

- ``ScriptedBackend``: replays prepared completions (tests, demos).
- ``OpenAIBackend``: any OpenAI-compatible server (vLLM, Ollama...) via the ``openai`` client.
- ``LocalBackend``: the workbench's own model, token by token.

Backends join the model and Harmony: the model knows nothing of Harmony, Harmony nothing of the model.
"""

from .base import Backend, TokenLogprob, Turn, prompt_tokens
from .local import LocalBackend
from .openai_compat import OpenAIBackend
from .scripted import ScriptedBackend, ScriptExhausted

__all__ = ["Backend", "TokenLogprob", "Turn", "prompt_tokens", "LocalBackend", "OpenAIBackend", "ScriptedBackend", "ScriptExhausted"]
