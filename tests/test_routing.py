"""Routing: route, route_class, include, Router and its defaults."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ImproperlyConfigured

from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.message import Message
from geventchannels.routing import (
    Router,
    connect_consumer,
    include,
    null_consumer,
    route,
    route_class,
)

LAYER = InMemoryChannelLayer()


def consumer_a(message, **kwargs):
    pass


def consumer_b(message, **kwargs):
    pass


def consumer_c(message, **kwargs):
    pass


class ChatConsumer:
    """Stands in for a generic consumer class: a class called like a consumer."""

    def __init__(self, message, **kwargs):
        self.kwargs = kwargs

    @classmethod
    def channel_names(cls):
        return {"websocket.connect", "websocket.receive"}


inner_routes = [
    route("websocket.connect", consumer_b, path=r"^/(?P<room>[a-z]+)/$"),
    route("websocket.receive", consumer_c, path=r"^/(?P<room>[a-z]+)/$", order=r"^(?P<n>\d+)$"),
]

dict_routing = {"test.one": consumer_a, "test.two": "tests.test_routing.consumer_b"}

list_routing = [route("test.one", consumer_a)]


def msg(channel, **content):
    return Message(content, channel, LAYER)


def test_plain_route_and_dotted_consumer():
    router = Router(
        [
            route("test.one", "tests.test_routing.consumer_a"),
            route(["test.two", "test.three"], consumer_b),
        ]
    )
    assert router.match(msg("test.one")) == (consumer_a, {})
    assert router.match(msg("test.two")) == (consumer_b, {})
    assert router.match(msg("test.three")) == (consumer_b, {})
    assert router.match(msg("test.four")) is None
    assert {"test.one", "test.two", "test.three"} <= router.channels


def test_filters_named_groups_become_kwargs():
    router = Router(
        [
            route("websocket.receive", consumer_a, path=r"^/chat/(?P<room>[^/]+)/$"),
            route("websocket.receive", consumer_b, path=r"^/news/$"),
        ]
    )
    assert router.match(msg("websocket.receive", path="/chat/lobby/")) == (
        consumer_a,
        {"room": "lobby"},
    )
    assert router.match(msg("websocket.receive", path="/news/")) == (consumer_b, {})
    # No user route matches: the default no-op consumer takes it.
    assert router.match(msg("websocket.receive", path="/other/")) == (null_consumer, {})


def test_filter_on_missing_key_does_not_match():
    router = Router([route("test.one", consumer_a, path=r"^/x/$"), route("test.one", consumer_b)])
    assert router.match(msg("test.one")) == (consumer_b, {})
    assert router.match(msg("test.one", path="/x/")) == (consumer_a, {})


def test_all_filters_must_match():
    router = Router([route("test.one", consumer_a, path=r"^/x/$", method=r"^GET$")])
    assert router.match(msg("test.one", path="/x/", method="GET")) == (consumer_a, {})
    assert router.match(msg("test.one", path="/x/", method="POST")) is None


def test_positional_groups_are_refused():
    with pytest.raises(ValueError, match="named groups"):
        route("test.one", consumer_a, path=r"^/chat/([^/]+)/$")
    with pytest.raises(ValueError, match="named groups"):
        include(inner_routes, path=r"^/(x)")
    route("test.one", consumer_a, path=r"^/(?:chat|talk)/(?P<room>\w+)/$")


def test_bad_consumer_and_filter_values():
    with pytest.raises(ValueError, match="not callable"):
        route("test.one", 42)
    with pytest.raises(ValueError, match="regex"):
        route("test.one", consumer_a, path=42)
    with pytest.raises(ImproperlyConfigured, match="cannot import"):
        route("test.one", "tests.test_routing.no_such_consumer")


def test_bytes_values_and_patterns():
    router = Router(
        [
            route("http.request", consumer_a, query_string=r"^room=(?P<room>\w+)"),
            route("http.request", consumer_b, query_string=rb"^id=(?P<id>\d+)"),
            route("http.request", consumer_c, path=re.compile(rb"^/bin/$")),
        ]
    )
    assert router.match(msg("http.request", query_string=b"room=lobby&x=1")) == (
        consumer_a,
        {"room": "lobby"},
    )
    assert router.match(msg("http.request", query_string=b"id=42")) == (consumer_b, {"id": b"42"})
    assert router.match(msg("http.request", path="/bin/")) == (consumer_c, {})
    assert router.match(msg("http.request", query_string=b"\xff\xfe")) is None


def test_non_string_values():
    router = Router([route("websocket.receive", consumer_a, order=r"^0$")])
    assert router.match(msg("websocket.receive", order=0)) == (consumer_a, {})
    assert router.match(msg("websocket.receive", order=1)) == (null_consumer, {})
    assert router.match(msg("websocket.receive", order=None)) == (null_consumer, {})


def test_include_strips_matched_prefix():
    router = Router([include(inner_routes, path=r"^/chat")])
    assert router.match(msg("websocket.connect", path="/chat/lobby/")) == (
        consumer_b,
        {"room": "lobby"},
    )
    # Without the prefix the inner route does not match: the default accept does.
    assert router.match(msg("websocket.connect", path="/lobby/")) == (connect_consumer, {})
    assert router.match(msg("websocket.receive", path="/chat/lobby/", order="7")) == (
        consumer_c,
        {"room": "lobby", "n": "7"},
    )


def test_include_dotted_path_kwargs_merge_inner_wins():
    router = Router(
        [
            include("tests.test_routing.inner_routes", path=r"^/(?P<room>[a-z]+)/(?P<site>[a-z]+)"),
        ]
    )
    assert router.match(msg("websocket.connect", path="/outer/main/inner/")) == (
        consumer_b,
        {"room": "inner", "site": "main"},
    )


def test_include_strips_bytes_values():
    inner = [route("http.request", consumer_a, query_string=r"^&rest=(?P<rest>\w+)$")]
    router = Router([include(inner, query_string=rb"^a=1")])
    assert router.match(msg("http.request", query_string=b"a=1&rest=yes")) == (
        consumer_a,
        {"rest": "yes"},
    )


def test_nested_includes():
    innermost = [route("test.one", consumer_a, path=r"^/leaf/$")]
    middle = [include(innermost, path=r"^/mid")]
    router = Router([include(middle, path=r"^/top")])
    assert router.match(msg("test.one", path="/top/mid/leaf/")) == (consumer_a, {})
    assert router.match(msg("test.one", path="/top/leaf/")) is None


def test_route_order_is_kept():
    router = Router(
        [
            route("test.one", consumer_a, path=r"^/a"),
            route("test.one", consumer_b),
            route("test.one", consumer_c),
        ]
    )
    assert router.match(msg("test.one", path="/b")) == (consumer_b, {})
    assert router.match(msg("test.one", path="/abc")) == (consumer_a, {})


def test_route_class_uses_channel_names():
    router = Router([route_class(ChatConsumer, path=r"^/live/(?P<id>\d+)/$")])
    assert router.match(msg("websocket.receive", path="/live/5/")) == (ChatConsumer, {"id": "5"})
    assert router.match(msg("websocket.connect", path="/live/5/")) == (ChatConsumer, {"id": "5"})
    assert router.match(msg("websocket.connect", path="/dead/")) == (connect_consumer, {})
    with pytest.raises(ValueError, match="channel_names"):
        route_class(consumer_a)


def test_dict_list_and_dotted_routing():
    for routing in (dict_routing, "tests.test_routing.dict_routing"):
        router = Router(routing)
        assert router.match(msg("test.one")) == (consumer_a, {})
        assert router.match(msg("test.two")) == (consumer_b, {})
    router = Router("tests.test_routing.list_routing")
    assert router.match(msg("test.one")) == (consumer_a, {})
    with pytest.raises(ImproperlyConfigured):
        Router(42)
    with pytest.raises(ValueError, match="routing entries"):
        Router([consumer_a])


def test_defaults_and_channels():
    router = Router([])
    assert router.channels == {"websocket.connect", "websocket.receive", "websocket.disconnect"}
    assert "http.request" not in router.channels
    assert router.match(msg("websocket.connect", reply_channel="r!1")) == (connect_consumer, {})
    assert router.match(msg("websocket.disconnect")) == (null_consumer, {})
    assert router.match(msg("http.request")) is None


def test_default_connect_consumer_accepts():
    layer = InMemoryChannelLayer()
    connect_consumer(Message({"reply_channel": "reply.1"}, "websocket.connect", layer))
    assert layer.receive(["reply.1"]) == ("reply.1", {"accept": True})


def test_user_routes_come_before_defaults():
    router = Router([route("websocket.connect", consumer_a)])
    assert router.match(msg("websocket.connect")) == (consumer_a, {})


def test_route_and_include_match_directly():
    assert route("test.one", consumer_a, path=r"^/(?P<x>\w)").match(msg("test.one", path="/q")) == (
        consumer_a,
        {"x": "q"},
    )
    assert route("test.one", consumer_a).match(msg("test.two")) is None
    assert include(inner_routes, path=r"^/c").match(msg("websocket.connect", path="/c/ab/")) == (
        consumer_b,
        {"room": "ab"},
    )


def test_filter_keys_names_what_the_routes_of_a_channel_filter_on():
    router = Router(
        [
            route("http.request", lambda message: None, path=r"^/poll/"),
            route("http.request", lambda message: None, method=r"^POST$"),
            route("websocket.receive", lambda message: None, text=r"^x"),
        ]
    )
    assert router.filter_keys("http.request") == {"path", "method"}
    assert router.filter_keys("websocket.connect") == set()
