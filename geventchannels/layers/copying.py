"""Message size and copying, the same for every layer.

A message's size is what its compact JSON encoding takes at the least: a str or bytes
its length + 2 (str counted in characters), a number, bool or None 1, a key its length
+ 3, a container 1 plus one comma per item. So every message of up to max_message_size
bytes of JSON is accepted (ASGI 1.0 asks for 1 MB), and both layers accept the same
messages whatever their own encoding.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import MessageTooLarge

#: The largest WebSocket message payload the server takes by default (1 MiB).
MAX_PAYLOAD_SIZE = 1024 * 1024
#: What the server's messages put around a payload: ``reply_channel`` (at most 100
#: characters), ``path`` (at most one 64 KiB request line) and ``order``, with their keys.
ENVELOPE_ALLOWANCE = 65 * 1024
#: The default ``max_message_size``: a 1 MiB payload and its envelope fit, so that the
#: layer, not the user, pays for the envelope.
MAX_MESSAGE_SIZE = MAX_PAYLOAD_SIZE + ENVELOPE_ALLOWANCE

#: Integers a message may hold (ASGI 1.0: the signed 64-bit range): -INT_LIMIT <= n < INT_LIMIT.
INT_LIMIT = 1 << 63


def copy_message(message: dict, limit: int = MAX_MESSAGE_SIZE) -> dict:
    """Copy a message so later changes by the sender cannot reach the receiver, and
    check its size on the way (the same walk does both).

    Containers are copied; str, bytes, numbers, bool and None are immutable and
    shared.
    """
    try:
        return _copy_value(message, [limit])
    except _OverBudget:
        raise _too_large(limit) from None


def check_message(message: dict, limit: int = MAX_MESSAGE_SIZE) -> None:
    """Check a message's types and size as copy_message does, without copying it: for
    messages whose sender hands them over and never touches them again."""
    if not isinstance(message, dict):
        raise TypeError("message must be a dict, got %s" % type(message).__name__)
    if _measure(message) > limit:
        raise _too_large(limit)


def _too_large(limit: int) -> MessageTooLarge:
    return MessageTooLarge(
        "message is larger than the layer's limit of %d bytes; send large data "
        "out of band or raise max_message_size" % limit
    )


def _int_out_of_range(value: int) -> TypeError:
    return TypeError(
        "channel message integers must fit in 64 bits (signed); got a %d-bit integer"
        % value.bit_length()
    )


# Sizing (_measure) and copying (_copy_dict, _copy_list) are twin walkers on purpose. The
# server hands every websocket.* message over with check_message, which must not pay for
# a copy it does not make: with one walker for both (an "if copy" per item), send_owned of
# a typical websocket.receive (4 keys) plus its receive took 1.44-1.59 us instead of
# 1.26-1.43 us (+7 to +15 %), while a copied send of a reply cost the same either way
# (640-730 ns). Measured on the in-memory layer, CPU time, best of 3 x 3 runs of 200,000,
# on the 2-core development VM. Plain str/bytes/number values are sized inline; only
# others pay for a call. The sizes in the four functions below must stay the same
# (tests/layers/test_message_size.py checks them against each other).


def _measure(value: Any) -> int:
    """The size copy_message would count for ``value``; raises TypeError for values a
    message may not hold, or that a copy would convert (tuple, bytearray, subclasses of
    dict and list), so that receivers see the same types either way."""
    kind = type(value)
    if kind is dict:
        size = 1
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"channel message keys must be str, got {type(key).__name__}")
            kind = type(item)
            if kind is str or kind is bytes:
                size += len(key) + len(item) + 6
            elif kind is int:
                if not -INT_LIMIT <= item < INT_LIMIT:
                    raise _int_out_of_range(item)
                size += len(key) + 5
            elif kind is bool or kind is float or item is None:
                size += len(key) + 5
            else:
                size += len(key) + 4 + _measure(item)
        return size
    if kind is list:
        size = 1
        for item in value:
            kind = type(item)
            if kind is str or kind is bytes:
                size += len(item) + 3
            elif kind is int:
                if not -INT_LIMIT <= item < INT_LIMIT:
                    raise _int_out_of_range(item)
                size += 2
            elif kind is bool or kind is float or item is None:
                size += 2
            else:
                size += _measure(item) + 1
        return size
    if isinstance(value, str | bytes):
        return len(value) + 2
    if isinstance(value, int):
        if not -INT_LIMIT <= value < INT_LIMIT:
            raise _int_out_of_range(value)
        return 1
    if isinstance(value, float) or value is None:
        return 1
    raise TypeError(
        "messages handed over without a copy may only contain dict, list, str, bytes, "
        "int, float, bool and None; got %s (send it with send() instead)" % kind.__name__
    )


class _OverBudget(Exception):
    pass


def _copy_value(value: Any, budget: list[int]) -> Any:
    kind = type(value)
    if kind is dict:
        value = _copy_dict(value, budget)
    elif kind is list or kind is tuple:
        value = _copy_list(value, budget)
    elif isinstance(value, str | bytes):
        budget[0] -= len(value) + 2
    elif isinstance(value, int):
        if not -INT_LIMIT <= value < INT_LIMIT:
            raise _int_out_of_range(value)
        budget[0] -= 1
    elif isinstance(value, float) or value is None:
        budget[0] -= 1
    elif isinstance(value, bytearray | memoryview):
        value = bytes(value)
        budget[0] -= len(value) + 2
    elif isinstance(value, dict):
        return _copy_value(dict(value), budget)
    elif isinstance(value, list | tuple):
        return _copy_value(list(value), budget)
    else:
        raise TypeError(
            "channel messages may only contain dict, list, str, bytes, int, float, bool "
            "and None; got %s" % kind.__name__
        )
    if budget[0] < 0:
        raise _OverBudget
    return value


def _copy_dict(value: dict, budget: list[int]) -> dict:
    copied = {}
    size = 1
    for key, item in value.items():
        if type(key) is not str:
            raise TypeError(f"channel message keys must be str, got {type(key).__name__}")
        kind = type(item)
        if kind is str or kind is bytes:
            size += len(key) + len(item) + 6
        elif kind is int:
            if not -INT_LIMIT <= item < INT_LIMIT:
                raise _int_out_of_range(item)
            size += len(key) + 5
        elif kind is bool or kind is float or item is None:
            size += len(key) + 5
        else:
            budget[0] -= size + len(key) + 4
            size = 0
            item = _copy_value(item, budget)
        copied[key] = item
    budget[0] -= size
    return copied


def _copy_list(value: list | tuple, budget: list[int]) -> list:
    copied: list[Any] = []
    append = copied.append
    size = 1
    for item in value:
        kind = type(item)
        if kind is str or kind is bytes:
            size += len(item) + 3
        elif kind is int:
            if not -INT_LIMIT <= item < INT_LIMIT:
                raise _int_out_of_range(item)
            size += 2
        elif kind is bool or kind is float or item is None:
            size += 2
        else:
            budget[0] -= size + 1
            size = 0
            item = _copy_value(item, budget)
        append(item)
    budget[0] -= size
    return copied
