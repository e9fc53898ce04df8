"""The bytes the Redis layer stores (geventchannels/layers/redis/stored.py), on their own:
entry layouts, fan-out entries, payload encoding and encryption, statistics hashes. The
last test checks that redis_layer.lua builds the very bytes the Python side reads."""

from __future__ import annotations

import logging
import struct
import time

import pytest
import redis

from geventchannels.layers.redis import stored
from geventchannels.layers.redis.shards import SCRIPT


def test_an_entry_is_expiry_name_length_name_and_payload():
    assert stored.entry(b"PAY", 12.5) == struct.pack(">dH", 12.5, 0) + b"PAY"
    assert stored.entry(b"PAY", 12.5, "plain.channel") == struct.pack(">dH", 12.5, 0) + b"PAY"
    assert stored.entry(b"PAY", 12.5, "a!x") == struct.pack(">dH", 12.5, 3) + b"a!xPAY"


def test_entries_open_to_their_channels_and_payload():
    assert stored.open_entry("plain", stored.entry(b"P", 3.0)) == (3.0, ["plain"], b"P")
    assert stored.open_entry("a!", stored.entry(b"P", 3.0, "a!x")) == (3.0, ["a!x"], b"P")
    fanout = stored.fanout_entry("a!", ["a!x", "a!yy"], b"P", 4.0)
    assert fanout == struct.pack(">dHI", 4.0, 0xFFFF, 4) + b"x,yy" + b"P"
    assert stored.open_entry("a!", fanout) == (4.0, ["a!x", "a!yy"], b"P")
    assert stored.expires_at(fanout) == 4.0


def test_fan_out_entries_split_into_one_entry_per_member():
    plain = stored.entry(b"Q", 5.0, "a!z")
    fanout = stored.fanout_entry("a!", ["a!x", "a!y"], b"P", 4.0)
    assert stored.split_fanout_entries("a!", [plain]) == [plain]
    assert stored.split_fanout_entries("a!", [fanout, plain]) == [
        stored.entry(b"P", 4.0, "a!x"),
        stored.entry(b"P", 4.0, "a!y"),
        plain,
    ]
    broken = struct.pack(">dH", 4.0, 0xFFFF)  # cut before its names
    assert stored.split_fanout_entries("a!", [broken]) == [broken]


def test_counters_report_the_last_whole_second():
    now = 1000.3
    raw = {b"count": b"7", b"count:sec": b"1000", b"count:this": b"2", b"count:last": b"5"}
    stats = stored.counters(raw, now)
    assert stats["messages_count"] == 7 and stats["messages_count_per_second"] == 5
    raw[b"count:sec"] = b"999"
    assert stored.counters(raw, now)["messages_count_per_second"] == 2
    raw[b"count:sec"] = b"990"
    assert stored.counters(raw, now)["messages_count_per_second"] == 0
    assert stored.counters({}, now) == {
        "messages_count": 0,
        "messages_count_per_second": 0,
        "channel_full_count": 0,
        "channel_full_count_per_second": 0,
    }


def test_a_codec_round_trips_messages_and_keeps_bytes_and_str_apart():
    codec = stored.Codec()
    message = {"b": b"\x00\xff", "s": "caf\u00e9", "n": [1, 2.5, None, True]}
    item = stored.entry(codec.encode(message), time.time() + 60, "a!x")
    assert codec.read("a!", item) == (["a!x"], message)
    assert codec.read_one("a!", item) == ("a!x", message)


def test_an_expired_entry_reads_as_nothing():
    codec = stored.Codec()
    assert codec.read("c", stored.entry(codec.encode({"n": 1}), time.time() - 1)) is None


def test_encrypted_payloads_are_not_plaintext_and_keys_rotate():
    old = stored.Codec(["old secret"])
    rotated = stored.Codec(["new secret", "old secret"])
    payload = old.encode({"text": "secret words"})
    assert b"secret words" not in payload
    item = stored.entry(payload, time.time() + 60)
    assert rotated.read_one("c", item) == ("c", {"text": "secret words"})
    assert stored.fernet_key("k") == stored.fernet_key(b"k")


def test_an_unreadable_entry_is_logged_and_dropped(caplog):
    caplog.set_level(logging.ERROR, logger="geventchannels.layers.redis")
    item = stored.entry(stored.Codec(["a key"]).encode({"n": 1}), time.time() + 60)
    assert stored.Codec(["another key"]).read("c", item) is None
    assert "unreadable message on c" in caplog.text


def test_encryption_keys_must_be_a_list():
    with pytest.raises(TypeError):
        stored.Codec("one string")
    with pytest.raises(ValueError):
        stored.make_crypter([])


@pytest.mark.redis
def test_the_script_builds_the_entries_the_python_side_reads(redis_url):
    client = redis.Redis.from_url(redis_url)
    try:
        script = client.register_script(SCRIPT)
        client.zadd("t:group:g", {"a!x": 1, "a!yy": 1, "plain": 1})
        payload, expires_at, now = b"PAYLOAD", 2_000_000_000.5, time.time()
        skipped = script(
            keys=["t:group:g", "t:groupcap:g", "t:stats:"],
            args=["group", stored.entry(payload, expires_at), payload, expires_at, 60, now]
            + [int(now), 0, "t:"],
        )
        assert skipped == []
        assert client.lrange("t:a!", 0, -1) == [
            stored.fanout_entry("a!", ["a!x", "a!yy"], payload, expires_at)
        ]
        assert client.lrange("t:plain", 0, -1) == [stored.entry(payload, expires_at)]
    finally:
        client.close()
