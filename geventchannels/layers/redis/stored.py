"""What the layer stores in Redis: list entries, their payloads, and statistics hashes.

These functions and redis_layer.lua write and read the same bytes, so a change here is
a change there (and to every process sharing the Redis):

- an entry is ``struct.pack('>dH', expires_at, len(name)) + name + payload``, where name is
  the full channel name of a process-local channel ("a!x" stored in the list "a!") and
  empty otherwise;
- a fan-out entry (one group message for several members of one "a!" list) is
  ``struct.pack('>dHI', expires_at, 0xFFFF, len(names)) + names + payload``, names being the
  members' parts after "!" joined by "," (no name holds 65535 characters, nor a ",");
- a payload is the message in msgpack (bytes and str stay distinct), encrypted with
  Fernet when the layer has ``symmetric_encryption_keys``;
- a statistics hash holds ``count`` and ``full`` totals, plus ``<what>:sec``,
  ``<what>:this`` and ``<what>:last``: the second last counted, its count, and the count of
  the second before it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import struct
import time
from collections.abc import Sequence
from typing import Any

import msgpack

log = logging.getLogger("geventchannels.layers.redis")

HEADER = struct.Struct(">dH")
#: A name length no channel name has: marks a fan-out entry, whose names follow with their
#: total length.
FANOUT = 0xFFFF
FANOUT_MARK = struct.pack(">H", FANOUT)
NAMES_LENGTH = struct.Struct(">I")


def entry(payload: bytes, expires_at: float, channel: str = "") -> bytes:
    """The stored entry of a message to ``channel`` (its name is kept only when it is
    process-local: other channels are their list)."""
    name = channel.encode() if "!" in channel else b""
    return HEADER.pack(expires_at, len(name)) + name + payload


def fanout_entry(list_name: str, channels: list[str], payload: bytes, expires_at: float) -> bytes:
    """One stored entry for several members of the list ``list_name`` (as the group
    operation of redis_layer.lua builds it)."""
    names = ",".join(channel[len(list_name) :] for channel in channels).encode()
    return HEADER.pack(expires_at, FANOUT) + NAMES_LENGTH.pack(len(names)) + names + payload


def open_entry(list_name: str, item: bytes) -> tuple[float, list[str], bytes]:
    """(expires_at, channels, sealed payload) of a stored entry: one channel for a
    message, several for a fan-out entry."""
    expires_at, name_length = HEADER.unpack_from(item)
    start = HEADER.size
    if name_length == FANOUT:
        (names_length,) = NAMES_LENGTH.unpack_from(item, start)
        start += NAMES_LENGTH.size
        names = item[start : start + names_length].decode().split(",")
        return expires_at, [list_name + name for name in names], item[start + names_length :]
    if name_length:
        channel = item[start : start + name_length].decode()
        return expires_at, [channel], item[start + name_length :]
    return expires_at, [list_name], item[start:]


def expires_at(item: bytes) -> float:
    return HEADER.unpack_from(item)[0]


def split_fanout_entries(list_name: str, items: list[bytes]) -> list[bytes]:
    """``items`` with each fan-out entry replaced by one entry per member, for receivers
    that take one message each (receive() rather than a local handler)."""
    if not any(item[8:10] == FANOUT_MARK for item in items):
        return items
    split = []
    for item in items:
        if item[8:10] != FANOUT_MARK:
            split.append(item)
            continue
        try:
            expiry, channels, payload = open_entry(list_name, item)
        except Exception:
            split.append(item)  # Codec.read logs it
            continue
        split.extend(entry(payload, expiry, channel) for channel in channels)
    return split


def counters(raw: dict[bytes, bytes], now: float) -> dict[str, float]:
    """The contract's counters from a statistics hash."""
    now_sec = int(now)
    fields = {k.decode(): int(v) for k, v in raw.items()}
    stats: dict[str, float] = {}
    for what, name in (("count", "messages_count"), ("full", "channel_full_count")):
        stats[name] = fields.get(what, 0)
        seen = fields.get(what + ":sec", 0)
        if seen == now_sec:
            stats[name + "_per_second"] = fields.get(what + ":last", 0)
        elif seen == now_sec - 1:
            stats[name + "_per_second"] = fields.get(what + ":this", 0)
        else:
            stats[name + "_per_second"] = 0
    return stats


def fernet_key(key: str | bytes) -> bytes:
    """Any string becomes a valid Fernet key: SHA-256, then URL-safe base64."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    return base64.urlsafe_b64encode(hashlib.sha256(key).digest())


def make_crypter(keys: Sequence[str | bytes]) -> Any:
    """A MultiFernet that encrypts with the first key and decrypts with any."""
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError:
        raise ImportError(
            "symmetric_encryption_keys needs the cryptography package: "
            "pip install 'geventchannels[crypto]'"
        ) from None
    if isinstance(keys, str | bytes):
        raise TypeError("symmetric_encryption_keys must be a list of keys, not one string")
    if not keys:
        raise ValueError("symmetric_encryption_keys is empty: give at least one key")
    return MultiFernet([Fernet(fernet_key(key)) for key in keys])


class Codec:
    """Messages to payloads and stored entries back to messages, with the layer's keys."""

    def __init__(self, symmetric_encryption_keys: Sequence[str | bytes] | None = None):
        self._crypter = (
            make_crypter(symmetric_encryption_keys) if symmetric_encryption_keys else None
        )
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, message: dict) -> bytes:
        """The payload of a message whose types and size were checked already."""
        packed = self._packer.pack(message)
        return self._crypter.encrypt(packed) if self._crypter else packed

    def decode(self, payload: bytes) -> dict:
        """The message in a payload; raises when it cannot be decrypted or read."""
        if self._crypter:
            payload = self._crypter.decrypt(payload)
        return msgpack.unpackb(payload, raw=False)

    def read(self, list_name: str, item: bytes) -> tuple[list[str], dict] | None:
        """(channels, message) of a stored entry, or None when it expired or is unreadable."""
        try:
            expiry, channels, payload = open_entry(list_name, item)
            if expiry < time.time():
                return None
            return channels, self.decode(payload)
        except Exception as error:  # one bad message must not stop receiving
            log.error(
                "dropped an unreadable message on %s: %r (do all processes share the "
                "same symmetric_encryption_keys and geventchannels version?)",
                list_name,
                error,
            )
            return None

    def read_one(self, list_name: str, item: bytes) -> tuple[str, dict] | None:
        """(channel, message) of a one-channel entry (see split_fanout_entries)."""
        decoded = self.read(list_name, item)
        return None if decoded is None else (decoded[0][0], decoded[1])
