"""The Hugging Face tokenizer files made from the Harmony vocabulary, against openai-harmony itself."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from workbench.harmony import encoding
from workbench.harmony.hf_tokenizer import byte_to_unicode, write_hf_tokenizer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    written = write_hf_tokenizer(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in written)  # no temp files left
    return AutoTokenizer.from_pretrained(folder), folder


def real_texts() -> list[str]:
    texts = [(ROOT / "README.md").read_text(), (ROOT / "workbench" / "model.py").read_text()[:20000],
             "Ünïcödé — “quotes” 你好世界 🚀🦙 ½ ﬁ \u200d\r\n\r\n  x", "I'VE 'll 'S We'Re 1234567 3.14 ---=== \t\t\n"]
    nb = json.loads((ROOT / "notebooks" / "01_harmony.ipynb").read_text()) if (
        ROOT / "notebooks" / "01_harmony.ipynb").exists() else {"cells": []}
    texts += ["".join(c["source"]) for c in nb["cells"]][:10]
    return texts


def test_same_ids_as_harmony_on_real_text(hf_tok):
    tok, _ = hf_tok
    enc = encoding()
    for text in real_texts():
        ids = enc.encode(text, allowed_special="all")  # the README shows Harmony special tokens
        assert tok.encode(text, add_special_tokens=False) == ids
        assert tok.decode(ids) == enc.decode_utf8(ids) == text


def test_special_tokens(hf_tok):
    tok, folder = hf_tok
    enc = encoding()
    rendered = "<|start|>assistant<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant<|channel|>" \
               "commentary to=functions.f <|constrain|>json<|message|>{}<|call|><|return|>"
    assert tok.encode(rendered, add_special_tokens=False) == enc.encode(rendered, allowed_special="all")
    for name, i in {"<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002, "<|constrain|>": 200003,
                    "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008,
                    "<|call|>": 200012, "<|reserved_201087|>": 201087}.items():
        assert tok.convert_tokens_to_ids(name) == i
    assert tok.bos_token == "<|startoftext|>" and tok.eos_token == "<|return|>" and tok.pad_token == "<|endoftext|>"
    assert max(tok.get_vocab().values()) == 201087  # below the model's vocab_size
    assert tok.encode("hi") == enc.encode("hi")  # no BOS added, as gpt-oss


def test_llama_cpp_recognises_the_pre_tokenizer(hf_tok):
    """convert_hf_to_gguf.py names the pre-tokenizer by hashing the ids of this string; o200k's ("gpt-4o") is
    ccc2ef01..., the hash in its source for Xenova/gpt-4o."""
    tok, _ = hf_tok
    chktxt = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) '
              '✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
              '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
              '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')
    digest = hashlib.sha256(str(tok.encode(chktxt)).encode()).hexdigest()
    assert digest == "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e"


def test_byte_map_is_gpt2s():
    table = byte_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā"
