"""Channel, Group and Message on the real in-memory layer, and consumer atomicity."""

from __future__ import annotations

import gevent
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from gevent.event import Event

from geventchannels import Channel, Group, channel_layers, get_channel_layer
from geventchannels.asgi import ChannelLayerManager, ChannelLayerWrapper
from geventchannels.channel import discard_buffered, flush_buffered, start_buffering
from geventchannels.exceptions import InvalidChannelName, MessageTooLarge
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.message import Message
from geventchannels.routing import route
from geventchannels.worker import Worker


@pytest.fixture
def layer():
    """A fresh in-memory layer installed as the "default" alias for the test."""
    layer = InMemoryChannelLayer()
    old = channel_layers.set("default", ChannelLayerWrapper(layer, "default", []))
    yield layer
    channel_layers.set("default", old)


def receive_now(layer, name):
    return layer.receive([name], block=False)


# -- Channel and Group ---------------------------------------------------------


def test_channel_send_reaches_layer(layer):
    Channel("test.a").send({"text": "hi"})
    assert receive_now(layer, "test.a") == ("test.a", {"text": "hi"})


def test_channel_send_requires_dict(layer):
    with pytest.raises(TypeError, match="dict"):
        Channel("test.a").send("text")
    with pytest.raises(TypeError):
        Channel("test.a").send([("a", 1)])


def test_channel_uses_given_layer_and_alias():
    other = InMemoryChannelLayer()
    channel = Channel("test.b", channel_layer=other)
    assert channel.channel_layer is other
    channel.send({"n": 1})
    assert other.receive(["test.b"]) == ("test.b", {"n": 1})


def test_channel_equality_hash_str(layer):
    assert Channel("a.b") == Channel("a.b")
    assert Channel("a.b") != Channel("a.c")
    assert len({Channel("a.b"), Channel("a.b"), Channel("a.c")}) == 2
    assert str(Channel("a.b")) == "a.b"
    assert Channel(b"a.b").name == "a.b"


def test_channel_invalid_name_raises(layer):
    with pytest.raises(InvalidChannelName):
        Channel("not a name").send({})


def test_group_add_send_discard(layer):
    group = Group("room-1")
    group.add(Channel("client.1"))
    group.add("client.2")
    group.send({"text": "all"})
    assert receive_now(layer, "client.1") == ("client.1", {"text": "all"})
    assert receive_now(layer, "client.2") == ("client.2", {"text": "all"})
    group.discard("client.1")
    group.discard(Channel("client.9"))
    group.send({"text": "two"})
    assert receive_now(layer, "client.1") == (None, None)
    assert receive_now(layer, "client.2") == ("client.2", {"text": "two"})
    assert Group("room-1") == Group("room-1") and str(Group("room-1")) == "room-1"
    assert hash(Group("room-1")) == hash(Group("room-1"))


def test_group_send_requires_dict(layer):
    with pytest.raises(ValueError, match="dict"):
        Group("room-1").send("text")


# -- the layer manager ----------------------------------------------------------


def test_get_channel_layer_from_settings():
    manager = ChannelLayerManager()
    wrapper = manager["default"]
    assert isinstance(wrapper.channel_layer, InMemoryChannelLayer)
    assert wrapper.alias == "default"
    assert wrapper.routing == "tests.project.routing.channel_routing"
    assert manager["default"] is wrapper
    assert "websocket.connect" in wrapper.router.channels
    assert isinstance(get_channel_layer(), InMemoryChannelLayer)


def test_manager_set_returns_old():
    manager = ChannelLayerManager()
    first = manager["default"]
    replacement = ChannelLayerWrapper(InMemoryChannelLayer(), "default", [])
    assert manager.set("default", replacement) is first
    assert manager["default"] is replacement


@override_settings(CHANNEL_LAYERS={"default": {"ROUTING": []}})
def test_missing_backend_names_alias_and_fix():
    with pytest.raises(ImproperlyConfigured, match=r"CHANNEL_LAYERS\['default'\] has no BACKEND"):
        ChannelLayerManager()["default"]


@override_settings(
    CHANNEL_LAYERS={"fast": {"BACKEND": "geventchannels.layers.InMemoryChannelLayer"}}
)
def test_missing_routing_names_alias_and_fix():
    with pytest.raises(ImproperlyConfigured, match=r"'fast'.*ROUTING"):
        ChannelLayerManager()["fast"]
    with pytest.raises(ImproperlyConfigured, match="no channel layer named 'default'"):
        ChannelLayerManager()["default"]


@override_settings(CHANNEL_LAYERS=None)
def test_no_channel_layers_setting_gives_in_memory_default():
    wrapper = ChannelLayerManager()["default"]
    assert isinstance(wrapper.channel_layer, InMemoryChannelLayer)
    assert wrapper.routing == []


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "asgiref.inmemory.ChannelLayer",
            "ROUTING": [],
            "CONFIG": {"capacity": 7},
            "TEST_CONFIG": {"capacity": 3},
        }
    }
)
def test_channels1_backend_name_and_config():
    manager = ChannelLayerManager()
    layer = manager["default"].channel_layer
    assert isinstance(layer, InMemoryChannelLayer) and layer.capacity == 7
    assert manager.make_test_backend("default").channel_layer.capacity == 3


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "geventchannels.layers.InMemoryChannelLayer",
            "ROUTING": [],
            "CONFIG": {"no_such_option": 1},
        }
    }
)
def test_bad_config_key_is_explained():
    with pytest.raises(ImproperlyConfigured, match="no_such_option"):
        ChannelLayerManager()["default"]


# -- Message ------------------------------------------------------------------------


def test_message_api(layer):
    content = {"reply_channel": "reply.1", "text": "hi", "order": 1}
    message = Message(content, "websocket.receive", layer)
    assert message.content is content
    assert message.channel == Channel("websocket.receive")
    assert message.channel.channel_layer is layer
    assert message.reply_channel.name == "reply.1"
    assert message.channel_layer is layer
    assert message["text"] == "hi"
    assert "text" in message and "bytes" not in message
    assert message.get("bytes") is None and message.get("bytes", b"") == b""
    assert set(message.keys()) == {"reply_channel", "text", "order"}
    assert dict(message.items()) == content
    assert sorted(map(str, message.values())) == ["1", "hi", "reply.1"]
    with pytest.raises(KeyError):
        message["missing"]
    message.channel_session = "set by a decorator"


def test_message_without_reply_channel_and_copy(layer):
    message = Message({"data": {"a": [1]}}, "test.x", layer)
    assert message.reply_channel is None
    duplicate = message.copy()
    duplicate.content["data"]["a"].append(2)
    assert message["data"] == {"a": [1]}
    assert duplicate.channel == message.channel


# -- atomicity ---------------------------------------------------------------------


def test_buffered_sends_wait_for_flush(layer):
    def consumer():
        start_buffering()
        content = {"n": 1}
        Channel("test.out").send(content)
        content["n"] = 2  # altered after send: the buffered message keeps n=1
        Group("g").send({"n": 3})
        assert receive_now(layer, "test.out") == (None, None)
        flush_buffered()

    layer.group_add("g", "test.member")
    gevent.spawn(consumer).get(timeout=5)
    assert receive_now(layer, "test.out") == ("test.out", {"n": 1})
    assert receive_now(layer, "test.member") == ("test.member", {"n": 3})


def test_a_buffered_reply_to_a_local_socket_is_its_send_time_copy(layer):
    delivered = []
    layer.attach_local("test.sockets!", lambda channel, message: delivered.append(message))

    def consumer():
        start_buffering()
        content = {"text": "hi", "nested": {"n": 1}}
        Channel("test.sockets!one").send(content)
        content["nested"]["n"] = 2
        flush_buffered()
        return content

    sent = gevent.spawn(consumer).get(timeout=5)
    assert delivered == [{"text": "hi", "nested": {"n": 1}}]
    assert delivered[0] is not sent and delivered[0]["nested"] is not sent["nested"]


def test_discarded_sends_are_dropped_and_immediately_bypasses(layer):
    def consumer():
        start_buffering()
        Channel("test.out").send({"n": 1})
        Channel("test.now").send({"n": 2}, immediately=True)
        Group("g").send({"n": 3}, immediately=True)
        assert receive_now(layer, "test.now") == ("test.now", {"n": 2})
        discard_buffered()

    layer.group_add("g", "test.member")
    gevent.spawn(consumer).get(timeout=5)
    assert receive_now(layer, "test.out") == (None, None)
    assert receive_now(layer, "test.member") == ("test.member", {"n": 3})


def test_buffered_send_checks_size_at_once(layer):
    def consumer():
        start_buffering()
        try:
            Channel("test.out").send({"blob": b"x" * (layer.max_message_size + 1)})
        except MessageTooLarge as error:
            return error
        finally:
            discard_buffered()

    assert isinstance(gevent.spawn(consumer).get(timeout=5), MessageTooLarge)


def test_outside_a_consumer_send_goes_out_at_once(layer):
    Channel("test.out").send({"n": 1})
    assert receive_now(layer, "test.out") == ("test.out", {"n": 1})


@pytest.mark.timeout(20)
def test_atomicity_in_worker_is_per_greenlet(layer):
    """Two consumers run at once: the one that returns sends, the one still running has
    sent nothing yet, and a consumer that raises sends nothing (except immediately)."""
    release = Event()
    slow_sent = Event()

    def slow(message):
        Channel("out.slow").send({"from": "slow"})
        slow_sent.set()
        release.wait(10)
        if message["fail"]:
            Channel("out.now").send({"from": "failing"}, immediately=True)
            raise RuntimeError("expected by the test")

    def fast(message):
        Channel("out.fast").send({"from": "fast"})

    routes = [route("in.slow", slow), route("in.fast", fast)]
    wrapper = ChannelLayerWrapper(layer, "default", routes)
    worker = Worker(wrapper, concurrency=2, ordered=False)
    worker.start()
    try:
        layer.send("in.slow", {"fail": False})
        assert slow_sent.wait(5)
        layer.send("in.fast", {})
        assert layer.receive(["out.fast"], block=True, timeout=5) == ("out.fast", {"from": "fast"})
        assert receive_now(layer, "out.slow") == (None, None)
        release.set()
        assert layer.receive(["out.slow"], block=True, timeout=5) == ("out.slow", {"from": "slow"})

        release.clear()
        slow_sent.clear()
        layer.send("in.slow", {"fail": True})
        assert slow_sent.wait(5)
        release.set()
        assert layer.receive(["out.now"], block=True, timeout=5)[0] == "out.now"
        layer.send("in.fast", {})
        assert layer.receive(["out.fast"], block=True, timeout=5)[0] == "out.fast"
        assert receive_now(layer, "out.slow") == (None, None)
    finally:
        worker.stop(timeout=5)
