"""The ASGI 1.0 channel layer contract, checked against every backend.

Written from the contract in docs/channel-layers.md (and the checklist it follows), not
from any one implementation: each test states a promise a consumer may rely on.
"""

from __future__ import annotations

import json
import re
import time

import gevent
import pytest

from geventchannels.exceptions import ChannelFull, InvalidChannelName, MessageTooLarge
from tests.layers.conftest import wait_until

pytestmark = pytest.mark.timeout(30)


def drain(layer, channels: list[str]) -> list[tuple[str, dict]]:
    """Everything receivable right now from ``channels``."""
    received = []
    while True:
        channel, message = layer.receive(channels)
        if channel is None:
            return received
        received.append((channel, message))


# -- sending and receiving -----------------------------------------------------


def test_a_sent_message_is_received_on_its_channel(layer):
    layer.send("test.basic", {"value": 42})
    assert layer.receive(["test.basic"]) == ("test.basic", {"value": 42})


def test_receive_on_an_empty_channel_returns_a_pair_of_none(layer):
    assert layer.receive(["test.empty"]) == (None, None)


def test_a_message_is_received_once(layer):
    layer.send("test.once", {"n": 1})
    assert layer.receive(["test.once"])[1] == {"n": 1}
    assert layer.receive(["test.once"]) == (None, None)


def test_messages_of_one_channel_come_out_in_the_order_they_went_in(layer):
    for n in range(30):
        layer.send("test.fifo", {"n": n})
    assert [m["n"] for _c, m in drain(layer, ["test.fifo"])] == list(range(30))


def test_receive_from_several_channels_names_the_channel_of_each_message(layer):
    layer.send("test.one", {"from": "one"})
    layer.send("test.two", {"from": "two"})
    received = drain(layer, ["test.one", "test.two", "test.three"])
    assert sorted(received, key=lambda pair: pair[0]) == [
        ("test.one", {"from": "one"}),
        ("test.two", {"from": "two"}),
    ]


def test_channels_do_not_see_each_others_messages(layer):
    layer.send("test.mine", {"x": 1})
    assert layer.receive(["test.theirs"]) == (None, None)
    assert layer.receive(["test.mine"]) == ("test.mine", {"x": 1})


def test_receive_takes_a_list_not_a_single_name(layer):
    with pytest.raises(TypeError):
        layer.receive("test.basic")


def test_receive_needs_at_least_one_channel(layer):
    with pytest.raises(ValueError):
        layer.receive([])


def test_a_busy_channel_does_not_starve_the_others(layer):
    channels = ["test.busy", "test.quiet1", "test.quiet2"]
    for n in range(60):
        layer.send("test.busy", {"n": n})
    layer.send("test.quiet1", {"n": "q1"})
    layer.send("test.quiet2", {"n": "q2"})
    seen = [layer.receive(channels)[0] for _ in range(2 * len(channels))]
    assert {"test.quiet1", "test.quiet2"} <= set(seen), seen


def test_a_message_must_be_a_dict(layer):
    for not_a_dict in ([1, 2], "text", b"bytes", None, 3):
        with pytest.raises(TypeError):
            layer.send("test.types", not_a_dict)
    assert layer.receive(["test.types"]) == (None, None)


def test_message_keys_must_be_text(layer):
    with pytest.raises(TypeError):
        layer.send("test.types", {1: "one"})


def test_integers_must_fit_in_64_signed_bits(layer):
    extremes = {"low": -(2**63), "high": 2**63 - 1, "list": [-(2**63), 2**63 - 1]}
    layer.send("test.ints", extremes)
    assert layer.receive(["test.ints"]) == ("test.ints", extremes)
    for too_big in ({"n": 2**63}, {"n": -(2**63) - 1}, {"list": [2**64]}, {"d": {"n": 2**70}}):
        with pytest.raises(TypeError):
            layer.send("test.ints", too_big)
        with pytest.raises(TypeError):
            layer.send_owned("test.ints", too_big)
    assert layer.receive(["test.ints"]) == (None, None)


# -- names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "has space",
        "caf\u00e9!",
        "slash/no",
        "star*",
        "a?b?c",
        "a!b!c",
        "?leading",
        "!x",
        "x" * 101,
        "reply?",
        "local!caf\u00e9",
        "digits\u0663",
        "reply?\u0663",
        "newline\n",
        "local!x\n",
        5,
        None,
        b"bytes.name",
    ],
)
def test_invalid_channel_names_are_refused(layer, name):
    with pytest.raises(InvalidChannelName):
        layer.send(name, {"x": 1})
    with pytest.raises(InvalidChannelName):
        layer.receive([name])


def test_invalid_channel_name_is_a_type_error(layer):
    with pytest.raises(TypeError):
        layer.send("bad name", {})


@pytest.mark.parametrize(
    "name",
    [
        "x" * 100,
        "a-b_c.d",
        "Upper.Case9",
        "reply?abc_DEF-1.2",
        "local!abc",
        "local!",
    ],
)
def test_valid_channel_names_are_accepted(layer, name):
    layer.send(name, {"ok": True})


def test_receiving_on_a_full_process_local_name_is_refused(layer):
    with pytest.raises(InvalidChannelName):
        layer.receive(["test.local!abc"])


@pytest.mark.parametrize(
    "group", ["", "a b", "a!b", "a?b", "g" * 101, "caf\u00e9", "room\n", 7, None]
)
def test_invalid_group_names_are_refused(layer, group):
    with pytest.raises(InvalidChannelName):
        layer.group_add(group, "test.member")
    with pytest.raises(InvalidChannelName):
        layer.send_group(group, {"x": 1})


def test_group_names_of_100_characters_are_accepted(layer):
    layer.group_add("g" * 100, "test.member")
    assert layer.group_channels("g" * 100) == ["test.member"]


def test_a_single_reader_pattern_is_not_a_channel(layer):
    with pytest.raises(InvalidChannelName, match="new_channel"):
        layer.send("test.reply?", {"x": 1})


def test_group_members_must_be_valid_channel_names(layer):
    with pytest.raises(InvalidChannelName):
        layer.group_add("test.group", "not valid")


# -- ? and ! channels ----------------------------------------------------------


def test_new_channel_gives_unique_single_reader_names(layer):
    names = {layer.new_channel("test.reply?") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert type(name) is str and name.startswith("test.reply?")
        assert name.count("?") == 1 and not name.endswith("?")
        assert len(name) >= len("test.reply?") + 22  # 128 random bits, base64url


def test_a_single_reader_channel_carries_messages(layer):
    name = layer.new_channel("test.reply?")
    layer.send(name, {"answer": 1})
    assert layer.receive([name]) == (name, {"answer": 1})
    assert layer.receive([name]) == (None, None)


@pytest.mark.parametrize(
    "pattern", ["test.reply", "test!", "test.foo", "test!?", "a?b?", "bad name?", "", 5, None]
)
def test_new_channel_takes_only_a_single_reader_pattern(layer, pattern):
    with pytest.raises(InvalidChannelName):
        layer.new_channel(pattern)


def test_new_channel_points_a_process_local_pattern_to_new_local_prefix(layer):
    with pytest.raises(InvalidChannelName, match="new_local_prefix"):
        layer.new_channel("websocket.send!")


def test_new_channel_refuses_a_pattern_too_long_for_a_name(layer):
    with pytest.raises(InvalidChannelName):
        layer.new_channel("x" * 90 + "?")


def test_process_local_messages_are_received_on_the_prefix_with_their_full_name(layer):
    layer.send("test.local!first", {"n": 1})
    layer.send("test.local!second", {"n": 2})
    assert layer.receive(["test.local!"]) == ("test.local!first", {"n": 1})
    assert layer.receive(["test.local!"]) == ("test.local!second", {"n": 2})
    assert layer.receive(["test.local!"]) == (None, None)


def test_a_new_local_prefix_is_unique_and_received_on(layer):
    prefixes = {layer.new_local_prefix("test.proc") for _ in range(50)}
    assert len(prefixes) == 50
    prefix = prefixes.pop()
    assert prefix.startswith("test.proc.") and prefix.endswith("!") and prefix.count("!") == 1
    assert len(prefix) >= len("test.proc.!") + 22  # 128 random bits
    layer.send(prefix + "sock1", {"hello": "socket"})
    assert layer.receive([prefix]) == (prefix + "sock1", {"hello": "socket"})


@pytest.mark.parametrize("name", ["", "bad name", "a!b", "a?b", 5])
def test_new_local_prefix_needs_a_plain_name(layer, name):
    with pytest.raises(InvalidChannelName):
        layer.new_local_prefix(name)


# -- message contents ----------------------------------------------------------


def test_changing_a_message_after_sending_does_not_change_what_is_received(layer):
    message = {"text": "original", "list": [1, {"deep": "original"}], "dict": {"k": [1]}}
    layer.send("test.copy", message)
    message["text"] = "changed"
    message["list"][1]["deep"] = "changed"
    message["list"].append(2)
    message["dict"]["k"].append(2)
    message["new"] = True
    _channel, received = layer.receive(["test.copy"])
    assert received == {"text": "original", "list": [1, {"deep": "original"}], "dict": {"k": [1]}}


def test_group_sends_are_copies_too(layer):
    layer.group_add("test.copies", "test.copy.a")
    layer.group_add("test.copies", "test.copy.b")
    message = {"nested": {"value": "original"}}
    layer.send_group("test.copies", message)
    message["nested"]["value"] = "changed"
    _c, first = layer.receive(["test.copy.a"])
    first["nested"]["value"] = "changed by the first receiver"
    _c, second = layer.receive(["test.copy.b"])
    assert second == {"nested": {"value": "original"}}


def test_every_allowed_value_type_survives_the_trip(layer):
    message = {
        "bytes": b"\x00\xffbinary",
        "text": "caf\u00e9 \u2603",
        "empty_bytes": b"",
        "empty_text": "",
        "int": 2**40,
        "negative": -7,
        "zero": 0,
        "float": 1.5,
        "true": True,
        "false": False,
        "none": None,
        "list": [1, "a", b"b", None, [2.5, []], {"in": "list"}],
        "dict": {"a": {"b": {"c": [b"deep"]}}},
    }
    layer.send("test.values", message)
    _channel, received = layer.receive(["test.values"])
    assert received == message
    assert {k: type(v) for k, v in received.items()} == {k: type(v) for k, v in message.items()}
    assert type(received["list"][2]) is bytes and type(received["list"][1]) is str


def test_tuples_come_back_as_lists(layer):
    layer.send("test.tuples", {"pair": (1, "a"), "nested": [(b"x",)]})
    assert layer.receive(["test.tuples"]) == ("test.tuples", {"pair": [1, "a"], "nested": [[b"x"]]})


def test_bytes_and_text_stay_distinct(layer):
    layer.send("test.distinct", {"a": b"same", "b": "same"})
    _channel, received = layer.receive(["test.distinct"])
    assert received["a"] == b"same" and type(received["a"]) is bytes
    assert received["b"] == "same" and type(received["b"]) is str
    assert received["a"] != received["b"]


def test_a_one_megabyte_payload_is_accepted(layer):
    payload = b"x" * 1_000_000
    layer.send("test.big", {"bytes": payload})
    _channel, received = layer.receive(["test.big"])
    assert received["bytes"] == payload


MIB = 1024 * 1024


def _websocket_receive(key: str, payload: str | bytes) -> dict:
    """A websocket.receive as the server builds it, with the largest envelope it makes: a
    100-character reply channel and a path as long as a 64 KiB request line allows."""
    return {
        "reply_channel": "gc." + "r" * 70 + "!" + "w" * 26,
        "path": "/" + "p" * (65536 - len("GET / HTTP/1.1\r\n")),
        "order": 2**31,
        key: payload,
    }


@pytest.mark.parametrize("key, payload", [("text", "t" * MIB), ("bytes", b"b" * MIB)])
def test_a_websocket_message_of_1_mib_and_its_envelope_fit_the_default_limit(layer, key, payload):
    message = _websocket_receive(key, payload)
    assert len(message["reply_channel"]) == 100
    layer.send("websocket.receive", message)
    layer.send_owned("websocket.receive", dict(message))
    assert layer.receive(["websocket.receive"]) == ("websocket.receive", message)
    assert layer.receive(["websocket.receive"]) == ("websocket.receive", message)


def test_a_1_mib_reply_fits_the_default_limit(layer):
    layer.send("test.reply!sock", {"text": "\u2603" * MIB})
    layer.group_add("test.replies", "test.reply!other")
    layer.send_group("test.replies", {"bytes": b"x" * MIB})
    assert layer.receive(["test.reply!"]) == ("test.reply!sock", {"text": "\u2603" * MIB})
    assert layer.receive(["test.reply!"]) == ("test.reply!other", {"bytes": b"x" * MIB})


def test_any_message_of_1_mb_of_json_is_accepted(layer):
    """ASGI 1.0: a layer takes messages of at least 1 MB "when encoded as JSON", whatever
    they hold; many small values are the shape a size estimate gets wrong."""
    messages = [
        {"ints": [0] * 490_000},
        {"mixed": [None, True, 1.5, "", {}, []] * 40_000},
        {f"k{n}": n for n in range(60_000)},
    ]
    for message in messages:
        assert len(json.dumps(message, separators=(",", ":"))) < 1_000_000
        layer.send("test.json", message)
        assert layer.receive(["test.json"]) == ("test.json", message)


def test_a_two_mebibyte_payload_is_too_large_and_leaves_nothing_behind(layer):
    with pytest.raises(MessageTooLarge):
        layer.send("test.big", {"bytes": b"x" * (2 * 1024 * 1024)})
    with pytest.raises(MessageTooLarge):
        layer.send("test.big", {"text": "x" * (2 * 1024 * 1024)})
    with pytest.raises(MessageTooLarge):
        layer.send("test.big", {"parts": ["x" * 100_000] * 21})
    assert layer.receive(["test.big"]) == (None, None)


def test_a_too_large_group_message_is_refused(layer):
    layer.group_add("test.bigroup", "test.big.member")
    with pytest.raises(MessageTooLarge):
        layer.send_group("test.bigroup", {"bytes": b"x" * (2 * 1024 * 1024)})
    assert layer.receive(["test.big.member"]) == (None, None)


# -- expiry --------------------------------------------------------------------


def test_a_message_not_received_within_expiry_is_dropped(make_layer):
    layer = make_layer(expiry=1)
    layer.send("test.expiry", {"n": "old"})
    gevent.sleep(1.3)
    layer.send("test.expiry", {"n": "new"})
    assert layer.receive(["test.expiry"]) == ("test.expiry", {"n": "new"})
    assert layer.receive(["test.expiry"]) == (None, None)


def test_a_message_received_within_expiry_is_kept(make_layer):
    layer = make_layer(expiry=2)
    layer.send("test.expiry", {"n": 1})
    gevent.sleep(0.5)
    assert layer.receive(["test.expiry"]) == ("test.expiry", {"n": 1})


def test_expired_messages_do_not_count_against_capacity(make_layer):
    layer = make_layer(expiry=1, capacity=2)
    layer.send("test.expcap", {"n": 1})
    layer.send("test.expcap", {"n": 2})
    with pytest.raises(ChannelFull):
        layer.send("test.expcap", {"n": 3})
    gevent.sleep(1.3)
    layer.send("test.expcap", {"n": 4})
    assert drain(layer, ["test.expcap"]) == [("test.expcap", {"n": 4})]


# -- capacity ------------------------------------------------------------------


def test_a_full_channel_raises_channel_full_until_a_message_is_received(make_layer):
    layer = make_layer(capacity=3)
    for n in range(3):
        layer.send("test.cap", {"n": n})
    with pytest.raises(ChannelFull):
        layer.send("test.cap", {"n": 3})
    assert layer.receive(["test.cap"])[1] == {"n": 0}
    layer.send("test.cap", {"n": 4})
    assert [m["n"] for _c, m in drain(layer, ["test.cap"])] == [1, 2, 4]


def test_capacity_is_per_channel(make_layer):
    layer = make_layer(capacity=1)
    layer.send("test.cap.a", {})
    layer.send("test.cap.b", {})
    with pytest.raises(ChannelFull):
        layer.send("test.cap.a", {})


def test_the_default_capacity_is_100(layer):
    for n in range(100):
        layer.send("test.default.cap", {"n": n})
    with pytest.raises(ChannelFull):
        layer.send("test.default.cap", {"n": 100})


def test_channel_capacity_overrides_by_glob(make_layer):
    layer = make_layer(capacity=3, channel_capacity={"big.*": 10})
    for n in range(10):
        layer.send("big.one", {"n": n})
    with pytest.raises(ChannelFull):
        layer.send("big.one", {"n": 10})
    for n in range(3):
        layer.send("small.one", {"n": n})
    with pytest.raises(ChannelFull):
        layer.send("small.one", {"n": 3})


def test_channel_capacity_overrides_by_regex(make_layer):
    layer = make_layer(capacity=2, channel_capacity={re.compile(r"^huge\.\d+$"): 5})
    for n in range(5):
        layer.send("huge.7", {"n": n})
    with pytest.raises(ChannelFull):
        layer.send("huge.7", {})
    layer.send("huge.x", {})
    layer.send("huge.x", {})
    with pytest.raises(ChannelFull):
        layer.send("huge.x", {})


def test_process_local_channels_share_the_capacity_of_their_queue(make_layer):
    layer = make_layer(channel_capacity={"test.local!*": 2})
    layer.send("test.local!a", {})
    layer.send("test.local!b", {})
    with pytest.raises(ChannelFull):
        layer.send("test.local!c", {})


# -- groups --------------------------------------------------------------------


def test_group_send_reaches_every_member(layer):
    layer.group_add("test.room", "test.member.a")
    layer.group_add("test.room", "test.member.b")
    assert sorted(layer.group_channels("test.room")) == ["test.member.a", "test.member.b"]
    layer.send_group("test.room", {"text": "hi"})
    assert layer.receive(["test.member.a"]) == ("test.member.a", {"text": "hi"})
    assert layer.receive(["test.member.b"]) == ("test.member.b", {"text": "hi"})


def test_adding_a_member_twice_delivers_once(layer):
    layer.group_add("test.room", "test.member.a")
    layer.group_add("test.room", "test.member.a")
    assert layer.group_channels("test.room") == ["test.member.a"]
    layer.send_group("test.room", {"text": "hi"})
    assert len(drain(layer, ["test.member.a"])) == 1


def test_a_discarded_member_gets_nothing(layer):
    layer.group_add("test.room", "test.member.a")
    layer.group_add("test.room", "test.member.b")
    layer.group_discard("test.room", "test.member.a")
    layer.group_discard("test.room", "test.never.added")
    layer.group_discard("test.no.such.group", "test.member.a")
    assert layer.group_channels("test.room") == ["test.member.b"]
    layer.send_group("test.room", {"text": "hi"})
    assert layer.receive(["test.member.a"]) == (None, None)
    assert layer.receive(["test.member.b"]) == ("test.member.b", {"text": "hi"})


def test_an_unknown_group_is_empty_and_sending_to_it_is_harmless(layer):
    assert layer.group_channels("test.nobody") == []
    layer.send_group("test.nobody", {"text": "hi"})


def test_groups_are_independent(layer):
    layer.group_add("test.room.one", "test.member.a")
    layer.group_add("test.room.two", "test.member.b")
    layer.send_group("test.room.one", {"room": 1})
    assert layer.receive(["test.member.b"]) == (None, None)
    assert layer.receive(["test.member.a"]) == ("test.member.a", {"room": 1})


def test_group_members_may_be_process_local_channels(layer):
    layer.group_add("test.room", "test.local!sock1")
    layer.group_add("test.room", "test.local!sock2")
    layer.send_group("test.room", {"text": "hi"})
    received = drain(layer, ["test.local!"])
    assert sorted(received, key=lambda pair: pair[0]) == [
        ("test.local!sock1", {"text": "hi"}),
        ("test.local!sock2", {"text": "hi"}),
    ]


def test_group_send_skips_full_members_without_raising(make_layer):
    layer = make_layer(capacity=1)
    layer.group_add("test.room", "test.full")
    layer.group_add("test.room", "test.free")
    layer.send("test.full", {"n": "before"})
    layer.send_group("test.room", {"n": "group"})
    assert drain(layer, ["test.full"]) == [("test.full", {"n": "before"})]
    assert drain(layer, ["test.free"]) == [("test.free", {"n": "group"})]


def test_group_send_rejects_a_non_dict(layer):
    layer.group_add("test.room", "test.member.a")
    with pytest.raises(TypeError):
        layer.send_group("test.room", ["not", "a", "dict"])


def test_group_membership_expires_after_group_expiry(make_layer):
    layer = make_layer(group_expiry=1)
    layer.group_add("test.room", "test.member.a")
    gevent.sleep(1.5)
    assert layer.group_channels("test.room") == []
    layer.send_group("test.room", {"text": "late"})
    assert layer.receive(["test.member.a"]) == (None, None)


def test_adding_again_renews_membership(make_layer):
    layer = make_layer(group_expiry=2)
    layer.group_add("test.room", "test.stays")
    layer.group_add("test.room", "test.goes")
    gevent.sleep(1.2)
    layer.group_add("test.room", "test.stays")
    gevent.sleep(1.2)
    assert layer.group_channels("test.room") == ["test.stays"]


# -- flush ---------------------------------------------------------------------


def test_flush_drops_messages_and_groups(layer):
    assert "flush" in layer.extensions
    layer.send("test.flush", {"n": 1})
    layer.send("test.local!x", {"n": 2})
    layer.group_add("test.room", "test.member.a")
    layer.flush()
    assert layer.receive(["test.flush", "test.local!"]) == (None, None)
    assert layer.group_channels("test.room") == []
    layer.send("test.flush", {"n": 3})
    assert layer.receive(["test.flush"]) == ("test.flush", {"n": 3})


# -- statistics ----------------------------------------------------------------

STATISTICS_KEYS = {
    "messages_count",
    "messages_count_per_second",
    "messages_pending",
    "messages_max_age",
    "channel_full_count",
    "channel_full_count_per_second",
}


def test_extensions_are_advertised(layer):
    assert {"groups", "flush", "statistics"} <= set(layer.extensions)


def test_the_layer_carries_the_asgi_exception_classes(make_layer):
    layer = make_layer(capacity=1)
    assert layer.ChannelFull is ChannelFull and layer.MessageTooLarge is MessageTooLarge
    layer.send("test.asgi.full", {})
    with pytest.raises(layer.ChannelFull):
        layer.send("test.asgi.full", {})
    with pytest.raises(layer.MessageTooLarge):
        layer.send("test.asgi.big", {"bytes": b"x" * (2 * 1024 * 1024)})


def test_group_expiry_is_exposed(make_layer):
    assert make_layer().group_expiry == 86400
    assert make_layer(group_expiry=30).group_expiry == 30


def test_receive_many_is_the_deprecated_name_of_receive(layer):
    layer.send("test.many", {"n": 1})
    with pytest.warns(DeprecationWarning):
        assert layer.receive_many(["test.many"]) == ("test.many", {"n": 1})


def test_channel_statistics_count_sent_pending_and_full(make_layer):
    layer = make_layer(capacity=3)
    for n in range(3):
        layer.send("test.stats", {"n": n})
    with pytest.raises(ChannelFull):
        layer.send("test.stats", {})
    with pytest.raises(ChannelFull):
        layer.send("test.stats", {})
    layer.receive(["test.stats"])
    stats = layer.channel_statistics("test.stats")
    assert STATISTICS_KEYS <= set(stats)
    assert stats["messages_count"] == 3
    assert stats["messages_pending"] == 2
    assert stats["channel_full_count"] == 2
    assert stats["messages_count_per_second"] >= 0
    assert stats["channel_full_count_per_second"] >= 0


def test_messages_max_age_is_the_age_of_the_oldest_pending_message(layer):
    layer.send("test.age", {"n": 1})
    gevent.sleep(0.3)
    layer.send("test.age", {"n": 2})
    age = layer.channel_statistics("test.age")["messages_max_age"]
    assert 0.25 <= age < 5
    drain(layer, ["test.age"])
    assert layer.channel_statistics("test.age")["messages_max_age"] == 0


def test_statistics_of_an_unused_channel_are_zero(layer):
    stats = layer.channel_statistics("test.unused")
    assert stats["messages_count"] == 0
    assert stats["messages_pending"] == 0
    assert stats["channel_full_count"] == 0


def test_global_statistics_cover_all_channels(make_layer):
    layer = make_layer(capacity=1)
    layer.send("test.g.a", {})
    layer.send("test.g.b", {})
    with pytest.raises(ChannelFull):
        layer.send("test.g.b", {})
    stats = layer.global_statistics()
    assert STATISTICS_KEYS <= set(stats)
    assert stats["messages_count"] == 2
    assert stats["messages_pending"] == 2
    assert stats["channel_full_count"] == 1
    assert stats["messages_max_age"] >= 0


# -- blocking receive ----------------------------------------------------------


def test_blocking_receive_with_a_timeout_returns_none_when_nothing_comes(layer):
    started = time.monotonic()
    assert layer.receive(["test.quiet"], block=True, timeout=0.3) == (None, None)
    assert 0.25 <= time.monotonic() - started < 3


def test_blocking_receive_with_zero_timeout_does_not_wait(layer):
    started = time.monotonic()
    assert layer.receive(["test.quiet"], block=True, timeout=0) == (None, None)
    assert time.monotonic() - started < 1


def test_blocking_receive_returns_at_once_when_a_message_is_waiting(layer):
    layer.send("test.ready", {"n": 1})
    started = time.monotonic()
    assert layer.receive(["test.ready"], block=True, timeout=5) == ("test.ready", {"n": 1})
    assert time.monotonic() - started < 1


def test_blocking_receive_wakes_on_a_send_from_another_greenlet(layer):
    receiver = gevent.spawn(layer.receive, ["test.other", "test.wake"], block=True, timeout=10)
    gevent.sleep(0.2)
    assert not receiver.ready(), "receive(block=True) returned before anything was sent"
    started = time.monotonic()
    layer.send("test.wake", {"woken": True})
    assert receiver.get(timeout=5) == ("test.wake", {"woken": True})
    assert time.monotonic() - started < 2


def test_one_send_wakes_one_of_several_blocked_receivers(layer):
    receivers = [
        gevent.spawn(layer.receive, ["test.shared"], block=True, timeout=0.8) for _ in range(5)
    ]
    gevent.sleep(0.2)
    layer.send("test.shared", {"n": 1})
    layer.send("test.shared", {"n": 2})
    results = [g.get(timeout=10) for g in receivers]
    got = sorted(m["n"] for _c, m in results if m is not None)
    assert got == [1, 2]
    assert results.count((None, None)) == 3


def test_blocking_receive_on_a_process_local_prefix(layer):
    receiver = gevent.spawn(layer.receive, ["test.local!"], block=True, timeout=10)
    gevent.sleep(0.2)
    layer.send("test.local!sock", {"text": "hi"})
    assert receiver.get(timeout=5) == ("test.local!sock", {"text": "hi"})


# -- local delivery ------------------------------------------------------------


def test_attached_local_handler_gets_process_local_messages_directly(layer):
    delivered = []
    layer.attach_local(
        "test.sockets!", lambda channel, message: delivered.append((channel, message))
    )
    message = {"text": "hi", "nested": {"n": 1}}
    layer.send("test.sockets!abc", message)
    message["nested"]["n"] = 2
    wait_until(lambda: delivered)
    assert delivered == [("test.sockets!abc", {"text": "hi", "nested": {"n": 1}})]


def test_group_send_uses_the_local_handler_of_a_member(layer):
    delivered = []
    layer.attach_local(
        "test.sockets!", lambda channel, message: delivered.append((channel, message))
    )
    layer.group_add("test.room", "test.sockets!one")
    layer.group_add("test.room", "test.plain")
    layer.send_group("test.room", {"text": "hi"})
    wait_until(lambda: delivered)
    assert delivered == [("test.sockets!one", {"text": "hi"})]
    assert layer.receive(["test.plain"]) == ("test.plain", {"text": "hi"})


def test_after_detach_local_messages_are_queued_again(layer):
    delivered = []
    layer.attach_local("test.sockets!", lambda channel, message: delivered.append(channel))
    layer.detach_local("test.sockets!")
    layer.send("test.sockets!abc", {"text": "queued"})
    assert layer.receive(["test.sockets!"]) == ("test.sockets!abc", {"text": "queued"})
    assert delivered == []


def test_attach_local_needs_a_process_local_prefix(layer):
    with pytest.raises(InvalidChannelName):
        layer.attach_local("test.sockets", lambda channel, message: None)


def test_a_local_handler_attached_after_group_add_gets_the_group_sends(layer):
    layer.group_add("test.late", "test.later!one")
    delivered = []
    layer.attach_local("test.later!", lambda channel, message: delivered.append(channel))
    layer.send_group("test.late", {"text": "hi"})
    wait_until(lambda: delivered)
    assert delivered == ["test.later!one"]
    layer.detach_local("test.later!")
    layer.send_group("test.late", {"text": "queued"})
    assert layer.receive(["test.later!"], block=True, timeout=5) == (
        "test.later!one",
        {"text": "queued"},
    )


# -- messages handed over (send_owned) ---------------------------------------------


def test_a_handed_over_message_is_received(layer):
    layer.send_owned("test.owned", {"text": "mine", "list": [1, [2, b"3"]], "n": None})
    assert layer.receive(["test.owned"], block=True, timeout=5) == (
        "test.owned",
        {"text": "mine", "list": [1, [2, b"3"]], "n": None},
    )


def test_a_handed_over_message_reaches_the_local_handler(layer):
    delivered = []
    layer.attach_local("test.owned!", lambda channel, message: delivered.append((channel, message)))
    layer.send_owned("test.owned!x", {"text": "direct"})
    wait_until(lambda: delivered)
    assert delivered == [("test.owned!x", {"text": "direct"})]


def test_a_handed_over_message_is_checked_like_a_sent_one(layer):
    with pytest.raises(InvalidChannelName):
        layer.send_owned("bad name", {"text": "x"})
    with pytest.raises(MessageTooLarge):
        layer.send_owned("test.owned.big", {"bytes": b"x" * (2 * 1024 * 1024)})
    with pytest.raises(MessageTooLarge):
        layer.send_owned("test.owned.big", {"parts": [{"t": "x" * 100_000}] * 21})
    with pytest.raises(TypeError):
        layer.send_owned("test.owned.big", {1: "int key"})
    with pytest.raises(TypeError):
        layer.send_owned("test.owned.big", {"set": {1, 2}})
    with pytest.raises(TypeError):
        layer.send_owned("test.owned.big", {"tuple": (1, 2)})
    layer.attach_local("test.owned!", lambda channel, message: None)
    with pytest.raises(MessageTooLarge):
        layer.send_owned("test.owned!y", {"bytes": b"x" * (2 * 1024 * 1024)})
    assert layer.receive(["test.owned.big"]) == (None, None)


# -- receiving a batch (receive_batch, the consumer pool's receive) -------------------


def test_a_batch_holds_up_to_count_messages_in_their_order(layer):
    for n in range(5):
        layer.send("test.batch", {"n": n})
    first = layer.receive_batch(["test.batch"], 3)
    assert first == [("test.batch", {"n": n}) for n in range(3)]
    assert layer.receive_batch(["test.batch"], 10, block=True, timeout=5) == [
        ("test.batch", {"n": n}) for n in (3, 4)
    ]
    assert layer.receive_batch(["test.batch"], 10) == []


def test_a_batch_may_come_from_several_channels(layer):
    layer.send("test.batch.a", {"n": 1})
    layer.send("test.batch.b", {"n": 2})
    got = []
    while len(got) < 2:
        batch = layer.receive_batch(["test.batch.a", "test.batch.b"], 5, block=True, timeout=5)
        assert batch, "a waiting message was not received"
        got += batch
    assert sorted(got) == [("test.batch.a", {"n": 1}), ("test.batch.b", {"n": 2})]


def test_a_blocking_batch_waits_for_the_first_message_only(layer):
    receiver = gevent.spawn(layer.receive_batch, ["test.batch.wait"], 10, True, 10)
    gevent.sleep(0.2)
    assert not receiver.ready()
    layer.send("test.batch.wait", {"n": 1})
    assert receiver.get(timeout=5) == [("test.batch.wait", {"n": 1})]
    started = time.monotonic()
    assert layer.receive_batch(["test.batch.wait"], 10, block=True, timeout=0.3) == []
    assert 0.25 <= time.monotonic() - started < 3


def test_a_receiver_killed_while_waiting_for_a_batch_loses_nothing(layer):
    receiver = gevent.spawn(layer.receive_batch, ["test.batch.kill"], 10, True, 10)
    gevent.sleep(0.2)
    receiver.kill()
    for n in range(3):
        layer.send("test.batch.kill", {"n": n})
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        got += layer.receive_batch(["test.batch.kill"], 10, block=True, timeout=1)
    assert got == [("test.batch.kill", {"n": n}) for n in range(3)]
