"""How a message is sized (geventchannels/layers/base.py): never more than its compact JSON
encoding, and the same whether the message is copied (send) or only checked (send_owned).

The two walkers that size messages are written twice on purpose (see the note in
base.py); these tests hold them to the same numbers.
"""

from __future__ import annotations

import json
import random

import pytest

from geventchannels.exceptions import MessageTooLarge
from geventchannels.layers.copying import _measure, check_message, copy_message


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["str", "bytes", "int", "float", "bool", "none"]
    if depth < 3:
        kinds += ["list", "dict", "tuple"]
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice("ab\u00e9\u2603 ") for _ in range(rng.randint(0, 12)))
    if kind == "bytes":
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 12)))
    if kind == "int":
        return rng.choice([0, 7, -3, 2**40, -(2**63), 2**63 - 1])
    if kind == "float":
        return rng.choice([0.0, 1.5, -2.25e300])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    items = [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if kind == "list":
        return items
    if kind == "tuple":
        return tuple(items)
    return {"k%d%s" % (n, "\u00e9" * n): item for n, item in enumerate(items)}


def random_message(rng: random.Random) -> dict:
    return {f"key{n}": random_value(rng) for n in range(rng.randint(0, 6))}


def as_json(value):
    """The message as JSON can hold it: bytes become a str as long (JSON has no bytes)."""
    if isinstance(value, bytes):
        return "x" * len(value)
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(item) for item in value]
    return value


MESSAGES = [random_message(random.Random(seed)) for seed in range(300)]


@pytest.mark.parametrize("message", MESSAGES[:100], ids=lambda m: str(len(m)))
def test_a_message_is_sized_at_most_as_its_compact_json(message):
    encoded = json.dumps(as_json(message), separators=(",", ":"), ensure_ascii=False)
    assert _measure(copy_message(message, 10**9)) <= len(encoded.encode("utf-8"))


def test_copying_and_checking_agree_on_every_size():
    for message in MESSAGES:
        copy = copy_message(message, 10**9)
        size = _measure(copy)
        assert copy_message(message, size) == copy
        check_message(copy, size)
        with pytest.raises(MessageTooLarge):
            copy_message(message, size - 1)
        with pytest.raises(MessageTooLarge):
            check_message(copy, size - 1)


def test_sizes_of_plain_values():
    assert _measure({}) == 1  # as "{}" minus the comma the last item does not have
    assert _measure({"a": 1}) == len('{"a":1}')
    assert _measure({"a": "xy", "b": [None, b"z"]}) == len('{"a":"xy","b":[null,"z"]}') - 3
