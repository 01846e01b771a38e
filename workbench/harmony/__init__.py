"""Harmony: the gpt-oss conversation format (rendering, parsing, tools).

- ``encoding()``: openai-harmony's HarmonyEncoding, offline.
- ``Conversation``: build and render conversations (system, developer, function tools, messages).
- ``parse_tokens`` / ``StreamDecoder``: token ids -> ``TokenEvent``s, messages and errors, never raising.
- ``HarmonyConstraint``: a logits processor that keeps generation inside the Harmony grammar.
"""

from .encoding import encoding
from .constrain import HarmonyConstraint
from .conversation import Conversation, builtin_config, reasoning_effort, text_of
from .functions import describe_function
from .header import Header, HeaderError, parse_header
from .stream import MessageSpan, ParseError, StreamDecoder, TokenEvent
from .transcript import Transcript, parse_tokens

__all__ = [
    "encoding",
    "HarmonyConstraint",
    "Conversation",
    "builtin_config",
    "reasoning_effort",
    "text_of",
    "describe_function",
    "Header",
    "HeaderError",
    "parse_header",
    "MessageSpan",
    "ParseError",
    "StreamDecoder",
    "TokenEvent",
    "Transcript",
    "parse_tokens",
]
