"""@consumer / @Channel.consumer and include() of a module of decorated consumers."""

from __future__ import annotations

import importlib
import sys
import types

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from geventchannels import Channel
from geventchannels.checks import check_channel_layers
from geventchannels.message import Message
from geventchannels.routing import Router, consumer, include, route
from geventchannels.test import WSClient, apply_routes
from geventchannels.test.base import TestLayers

THIS = __name__


@Channel.consumer("websocket.receive", path=r"^/rooms/(?P<room>\w+)/$")
def room_message(message, room):
    message.reply_channel.send({"text": f"{room}: {message['text']}"})


@consumer(["thumbnails", "resize"])
def thumbnail(message):
    return "thumbnail"


@consumer("websocket.receive")
def fallback(message):
    message.reply_channel.send({"text": "fallback"})


def match(routing, channel, **content):
    return Router(routing).match(Message(content, channel, None))


def test_include_a_module_routes_its_decorated_consumers_in_order():
    assert match([include(THIS)], "websocket.receive", path="/rooms/lobby/") == (
        room_message,
        {"room": "lobby"},
    )
    assert match([include(THIS)], "websocket.receive", path="/other/") == (fallback, {})
    assert match([include(THIS)], "resize") == (thumbnail, {})
    assert match([include(sys.modules[THIS])], "thumbnails") == (thumbnail, {})


def test_decorator_returns_the_function_unchanged():
    assert thumbnail(None) == "thumbnail"
    assert room_message.__name__ == "room_message"


def test_include_with_filters_strips_the_prefix():
    routing = [include(THIS, path=r"^/chat")]
    assert match(routing, "websocket.receive", path="/chat/rooms/a/") == (
        room_message,
        {"room": "a"},
    )


def test_plain_routes_keep_working_alongside():
    def first(message):
        pass

    routing = [route("websocket.receive", first, path=r"^/first/$"), include(THIS)]
    assert match(routing, "websocket.receive", path="/first/") == (first, {})
    assert match(routing, "websocket.receive", path="/rooms/b/")[0] is room_message


def test_a_module_path_as_the_whole_routing():
    assert match(THIS, "resize") == (thumbnail, {})


def test_through_the_test_client():
    with TestLayers(), apply_routes([include(THIS)]):
        client = WSClient()
        client.send_and_consume("websocket.receive", text="hi", path="/rooms/lobby/")
        assert client.receive(json=False) == "lobby: hi"


def test_a_module_without_decorated_consumers_is_refused_clearly():
    with pytest.raises(ImproperlyConfigured, match="no consumers decorated with @consumer"):
        include("tests.project.urls")
    with pytest.raises(ImproperlyConfigured, match="cannot import routing 'tests.nowhere'"):
        include("tests.nowhere")


def test_system_check_reports_a_module_without_consumers():
    layers = {
        "default": {
            "BACKEND": "geventchannels.layers.InMemoryChannelLayer",
            "ROUTING": "tests.project.urls",
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        errors = [m for m in check_channel_layers() if m.id == "geventchannels.E006"]
    assert errors and "no consumers decorated" in errors[0].msg


def test_reloading_a_module_does_not_double_its_routes(tmp_path, monkeypatch):
    (tmp_path / "reloaded_consumers.py").write_text(
        "from geventchannels.routing import consumer\n"
        "@consumer('work')\n"
        "def work(message):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("reloaded_consumers")
    try:
        importlib.reload(module)
        assert len(list(include("reloaded_consumers").leaves())) == 1
    finally:
        sys.modules.pop("reloaded_consumers", None)


def test_bad_channel_names_are_refused_at_decoration():
    with pytest.raises(ValueError):
        consumer([])
    with pytest.raises(ValueError, match="unnamed groups"):
        consumer("x", path=r"^/(\d+)/$")(lambda message: None)


def test_multiple_channel_arguments():
    module = types.ModuleType("several_channels")

    def handler(message):
        pass

    handler.__module__ = module.__name__
    consumer("a", "b", ["c"])(handler)
    assert sorted(channel for channel, _, _ in include(module).leaves()) == ["a", "b", "c"]
