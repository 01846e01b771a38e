"""Token facts for Harmony: special ids, the vocabulary size, and the bytes of each token.

The gpt-oss vocabulary has ``VOCAB_SIZE`` = 201088 ids. Ids from 199998 up are special tokens; the
nine below have a meaning in Harmony and the rest are ``<|reserved_N|>``. Any id outside
``[0, VOCAB_SIZE)`` is out of range.

>>> SPECIAL["<|start|>"], name_of(200006), is_special(200006), is_special(17)
(200006, '<|start|>', True, False)
"""

from __future__ import annotations

import functools

VOCAB_SIZE = 201088
FIRST_SPECIAL = 199998

STARTOFTEXT = 199998
ENDOFTEXT = 199999
RETURN = 200002
CONSTRAIN = 200003
CHANNEL = 200005
START = 200006
END = 200007
MESSAGE = 200008
CALL = 200012

SPECIAL = {
    "<|startoftext|>": STARTOFTEXT,
    "<|endoftext|>": ENDOFTEXT,
    "<|return|>": RETURN,
    "<|constrain|>": CONSTRAIN,
    "<|channel|>": CHANNEL,
    "<|start|>": START,
    "<|end|>": END,
    "<|message|>": MESSAGE,
    "<|call|>": CALL,
}
NAMES = {v: k for k, v in SPECIAL.items()}

#: Tokens that end a message: ``<|end|>`` (more follows), ``<|call|>`` (a tool call), ``<|return|>`` (done).
MESSAGE_END = frozenset({END, CALL, RETURN})
#: What generation should stop on for an assistant turn (openai-harmony's stop tokens for actions).
STOP_FOR_ACTIONS = (RETURN, CALL)


def in_range(token) -> bool:
    return isinstance(token, int) and not isinstance(token, bool) and 0 <= token < VOCAB_SIZE


def is_special(token: int) -> bool:
    return in_range(token) and token >= FIRST_SPECIAL


def is_reserved(token: int) -> bool:
    """A special id with no Harmony meaning (``<|reserved_N|>``)."""
    return is_special(token) and token not in NAMES


def name_of(token: int) -> str:
    """The printable name of a special token (``<|start|>``, ``<|reserved_200000|>``)."""
    return NAMES.get(token) or f"<|reserved_{token}|>"


@functools.lru_cache(maxsize=1)
def token_bytes_table() -> tuple[bytes, ...]:
    """``table[id]`` = the bytes of a token (special tokens give their name), for all VOCAB_SIZE ids."""
    from .encoding import encoding

    inner = encoding()._inner
    return tuple(bytes(inner.decode_bytes([i])) for i in range(VOCAB_SIZE))


def token_bytes(token: int) -> bytes:
    return token_bytes_table()[token]
