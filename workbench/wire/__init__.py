"""The OpenAI wire formats and their Harmony meaning, in one place, with no I/O.

- ``common``: errors in OpenAI's shape, request checks, ``History`` (wire messages -> Harmony),
  ``Segmenter`` (generated ``TokenEvent``s -> reasoning / content / call segments), stop strings.
- ``chat``: chat completions, server side (request -> conversation, events -> message and deltas) and
  client side (conversation -> request, answer -> Harmony tokens).
- ``responses``: the Responses API, both sides (output items, the streamed event sequence).
- ``completions``: raw-prompt completions for Harmony-native clients.

Used by the server (``workbench.serve``), the client (``workbench.backends.OpenAIBackend``) and the
eval test server (``workbench.evals.fake``).
"""

from .common import APIError, History, Segment, Segmenter, StopStrings

__all__ = ["APIError", "History", "Segment", "Segmenter", "StopStrings"]
