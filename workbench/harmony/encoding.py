"""``encoding()``: openai-harmony's HarmonyEncoding for gpt-oss, loaded with no network."""

from __future__ import annotations

import functools
import os

from .vocab import ensure_vocab


@functools.lru_cache(maxsize=1)
def encoding():
    """The openai_harmony ``HarmonyEncoding`` for gpt-oss (``HARMONY_GPT_OSS``), offline.

    >>> enc = encoding()
    >>> enc.encode("<|start|>", allowed_special="all")
    [200006]
    """
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    folder = ensure_vocab()
    previous = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(folder)
    try:
        return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_ENCODINGS_BASE"]
        else:
            os.environ["TIKTOKEN_ENCODINGS_BASE"] = previous
