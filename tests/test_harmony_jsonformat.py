"""JSON formats under the Harmony constraint: whatever the logits, a final message that ends is valid JSON
(checked by ``json.loads``) and valid for its schema (checked by the ``jsonschema`` package)."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from workbench.harmony import parse_tokens
from workbench.harmony import tokens as T
from workbench.harmony.constrain import HarmonyConstraint
from workbench.harmony.jsonformat import json_format, valid

pytestmark = pytest.mark.usefixtures("one_thread")

FLAT = {"type": "object", "properties": {"n": {"type": "integer"}, "x": {"type": "number"}, "ok": {"type": "boolean"},
                                         "c": {"enum": ["red", "blue", 3]}, "none": {"type": "null"}},
        "required": ["n"]}


def walk(constraint, seed, steps=160):
    """Greedy decoding of random logits through the constraint (specials boosted so messages end)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        logits = torch.randn(T.VOCAB_SIZE, generator=g) * 3
        logits[T.FIRST_SPECIAL:] += 4
        out.append(int(torch.argmax(constraint(out, logits))))
        if out[-1] in T.STOP_FOR_ACTIONS:
            break
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("schema", [None, FLAT])
def test_finished_final_messages_are_valid_json(schema, seed):
    fmt = json_format(schema)
    t = parse_tokens(walk(HarmonyConstraint(channels=("final",), final_format=fmt), seed))
    if t.stop_reason != "return":  # the walk ran out of steps inside a long string: nothing to check
        assert t.stop_reason == "length" and not t.errors[:-1]
        return
    value = json.loads(t.final)
    assert isinstance(value, dict) and t.final.lstrip()[0] == "{"
    jsonschema.validate(value, schema or {"type": "object"})


@pytest.mark.parametrize("text, ok", [
    ('{"n": 1, "x": 2.5, "ok": true, "c": "red", "none": null}', True),
    ('{"n": 1, "x": 2, "ok": false, "c": 3, "none": null}', True),
    ('{"n": 1.5, "x": 2, "ok": false, "c": 3, "none": null}', False),
    ('{"n": 01, "x": 2, "ok": false, "c": 3, "none": null}', False),
    ('{"n": 1, "x": 2, "ok": false, "c": "green", "none": null}', False),
    ('{"n": 1, "x": 2, "ok": false, "c": 3}', False),
    ('{"x": 2, "n": 1, "ok": false, "c": 3, "none": null}', False),
])
def test_flat_schema_accepts_exactly_its_instances(text, ok):
    assert valid(json_format(FLAT), text) == ok
    if ok:
        jsonschema.validate(json.loads(text), FLAT)


@pytest.mark.parametrize("text", ['{"a": [1, 2.5e3, -0, {"b": null}], "c": "\\u00e9\\n", "d": true}', "{}", '{"a":{}}'])
def test_any_object_accepts_json_objects(text):
    assert valid(json_format(None), text) and isinstance(json.loads(text), dict)


@pytest.mark.parametrize("text", ["[1]", '"s"', "{", '{"a" 1}', '{"a": 1,}', '{"a": tru}', " {}", '{"a": 1}x'])
def test_any_object_refuses_the_rest(text):
    assert not valid(json_format(None), text)


@pytest.mark.parametrize("schema, needle", [
    ({"type": "array"}, "top level"),
    ({"type": "object", "properties": {"a": {"type": "object"}}}, "'a': type 'object'"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}, "pattern"),
    ({"type": "object", "properties": {}, "required": ["z"]}, "'required'"),
])
def test_schemas_it_cannot_enforce_are_refused(schema, needle):
    with pytest.raises(ValueError, match=needle):
        json_format(schema)
