"""Hugging Face tokenizer files for a gpt-oss checkpoint, made offline from the Harmony vocabulary.

A real gpt-oss checkpoint carries ``tokenizer.json`` (a byte-level BPE over o200k_base plus Harmony's special
tokens), ``tokenizer_config.json`` and ``special_tokens_map.json``; converters such as llama.cpp's
``convert_hf_to_gguf.py`` and transformers' ``AutoTokenizer`` read them. ``write_hf_tokenizer(folder)`` writes
the same three files from the vocabulary this package already has (``vocab.ensure_vocab``), without network:

- model: BPE with the o200k ranks as ids and ``ignore_merges`` (a pre-token that is itself a token maps to
  it directly, as in tiktoken); the merges are, for each token, every split into two tokens, ordered by the
  rank of the merged token and then of its halves (how tiktoken's ranks become HF merge priorities);
- pre-tokenizer: o200k_base's split pattern, then GPT-2's byte-to-unicode mapping (``ByteLevel``);
- added tokens: Harmony's special tokens (``<|start|>`` 200006, ``<|channel|>`` 200005, ..., the reserved ones)
  with ids below the model's vocabulary size.

No chat template is written: the workbench renders conversations with openai-harmony (llama.cpp's converter
does not need one). Tests check the result against openai-harmony's own encoding on real text.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from ..cache import atomic_path

__all__ = ["write_hf_tokenizer", "tokenizer_json", "byte_to_unicode", "O200K_PATTERN"]

# o200k_base's pre-tokenizer pattern (tiktoken's o200k_base; the same string real gpt-oss tokenizer.json has)
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])
BOS, EOS, PAD = "<|startoftext|>", "<|return|>", "<|endoftext|>"  # as gpt-oss's tokenizer_config.json
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable characters (printable Latin-1 bytes map to
    themselves, the rest to U+0100 onwards in byte order)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _ranks() -> dict[bytes, int]:
    from .vocab import VOCAB_FILE, ensure_vocab

    ranks = {}
    for line in (ensure_vocab() / VOCAB_FILE).read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _special_tokens(vocab_size: int) -> list[tuple[int, str]]:
    from .encoding import encoding

    enc = encoding()
    found = sorted((enc.encode(t, allowed_special="all")[0], t) for t in enc.special_tokens_set)
    return [(i, t) for i, t in found if i < vocab_size]


def tokenizer_json(vocab_size: int = 201088) -> dict:
    """The ``tokenizer.json`` document (a dict) for the o200k vocabulary with Harmony's special tokens."""
    ranks = _ranks()
    to_str = byte_to_unicode()

    def text(b: bytes) -> str:
        return "".join(to_str[c] for c in b)

    merges = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, t in _special_tokens(vocab_size)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": O200K_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
            "vocab": {text(tok): rank for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])},
            "merges": [[text(a), text(b)] for *_, a, b in merges],
        },
    }


def write_hf_tokenizer(folder: str | Path, vocab_size: int = 201088) -> list[Path]:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into ``folder`` (atomically each)."""
    folder = Path(folder)
    doc = tokenizer_json(vocab_size)
    config = {
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in doc["added_tokens"]},
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    written = []
    for name, data in zip(FILES, (doc, config, special)):
        with atomic_path(folder / name) as tmp:
            tmp.write_text(json.dumps(data, ensure_ascii=False, indent=None if name == "tokenizer.json" else 2))
        written.append(folder / name)
    return written
