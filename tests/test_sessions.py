"""Channel sessions and HTTP sessions: the decorators on real messages of a real layer,
with Django's database session store on a SQLite file, and through the running server."""

from __future__ import annotations

import json
import secrets
import time

import gevent
import pytest
import websocket
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from geventchannels.channel import discard_buffered, start_buffering
from geventchannels.exceptions import DenyConnection
from geventchannels.layers import RedisChannelLayer
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.message import Message
from geventchannels.routing import route
from geventchannels.sessions import (
    ChannelSessionCache,
    cache,
    cache_for,
    channel_and_http_session,
    channel_session,
    http_session,
    session_for_reply_channel,
    session_key_for,
)

from .dbfile import file_database
from .livesrv import live_server


@pytest.fixture(autouse=True)
def database():
    file_database()


@pytest.fixture
def layer():
    layer = InMemoryChannelLayer()
    yield layer
    layer.close()


def new_reply() -> str:
    return "websocket.send!" + secrets.token_urlsafe(16)


def message(layer, channel: str, reply: str | None, order: int = 1, **content) -> Message:
    if reply is not None:
        content["reply_channel"] = reply
    content.setdefault("path", "/")
    content.setdefault("order", order)
    return Message(content, channel, layer)


def stored(reply: str) -> dict | None:
    """The channel session of ``reply`` as the database has it, or None."""
    row = Session.objects.filter(session_key=session_key_for(reply)).first()
    return None if row is None else row.get_decoded()


def session_queries(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "django_session" in q["sql"]]


# -- channel_session -------------------------------------------------------------------------


def test_created_on_first_save_and_read_back_on_the_next_message(layer):
    reply = new_reply()

    @channel_session
    def look(message):
        return dict(message.channel_session.items())

    @channel_session
    def write(message):
        message.channel_session["room"] = "lobby"

    assert look(message(layer, "websocket.connect", reply, 0)) == {}
    assert stored(reply) is None  # nothing changed: nothing written
    write(message(layer, "websocket.receive", reply, 1))
    assert stored(reply) == {"room": "lobby"}
    cache.clear()  # the next message loads it from the store
    assert look(message(layer, "websocket.receive", reply, 2)) == {"room": "lobby"}


def test_the_key_is_the_channels_1x_one():
    import hashlib

    reply = "websocket.send!abc"
    assert session_key_for(reply) == "chn" + hashlib.sha1(reply.encode()).hexdigest()[:29]
    assert len(session_key_for(reply)) == 32


def test_works_on_methods_and_nested_decorators_load_and_save_once(layer):
    reply = new_reply()

    class Consumer:
        @channel_session
        @channel_session
        def receive(self, message):
            message.channel_session["n"] = message.channel_session.get("n", 0) + 1
            return message.channel_session["n"]

    with CaptureQueriesContext(connection) as queries:
        assert Consumer().receive(message(layer, "websocket.receive", reply)) == 1
    sql = session_queries(queries)
    assert len([q for q in sql if q.startswith("SELECT")]) == 1, sql
    assert len([q for q in sql if q.startswith("INSERT")]) == 1, sql
    assert stored(reply) == {"n": 1}


def test_a_message_without_reply_channel_is_refused(layer):
    @channel_session
    def consumer(message):
        pass

    with pytest.raises(ValueError, match="reply_channel"):
        consumer(message(layer, "thumbnails", None))


def test_signed_cookie_sessions_are_refused_and_channel_session_engine_overrides():
    layer = InMemoryChannelLayer()
    reply = new_reply()

    @channel_session
    def consumer(message):
        message.channel_session["x"] = 1

    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"):
        with pytest.raises(ImproperlyConfigured, match="signed-cookie"):
            consumer(message(layer, "websocket.receive", reply))
        with override_settings(CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.cache"):
            consumer(message(layer, "websocket.receive", reply))
            from django.contrib.sessions.backends.cache import SessionStore as CacheStore

            assert CacheStore(session_key=session_key_for(reply)).load() == {"x": 1}
    assert stored(reply) is None  # not in the database engine's store


def test_a_failing_consumer_saves_nothing_and_leaves_no_changed_copy(layer):
    reply = new_reply()

    @channel_session
    def good(message):
        message.channel_session["value"] = "kept"

    @channel_session
    def bad(message):
        message.channel_session["value"] = "lost"
        raise RuntimeError("half-way")

    @channel_session
    def look(message):
        return message.channel_session.get("value")

    good(message(layer, "websocket.receive", reply, 1))
    with pytest.raises(RuntimeError):
        bad(message(layer, "websocket.receive", reply, 2))
    assert stored(reply) == {"value": "kept"}
    assert look(message(layer, "websocket.receive", reply, 3)) == "kept"


def test_deleted_from_the_store_after_the_disconnect_consumer(layer):
    reply = new_reply()
    seen = []

    @channel_session
    def consumer(message):
        seen.append(message.channel_session.get("x"))
        message.channel_session["x"] = 1

    consumer(message(layer, "websocket.connect", reply, 0))
    assert stored(reply) == {"x": 1}
    consumer(message(layer, "websocket.disconnect", reply, 1, code=1000))
    assert seen == [None, 1]
    assert stored(reply) is None
    assert cache.get(reply) is None


def test_socket_closed_deletes_the_session_when_no_disconnect_consumer_is_decorated(layer):
    from geventchannels.sessions import socket_closed

    reply = new_reply()

    @channel_session
    def connect(message):
        message.channel_session["x"] = 1

    connect(message(layer, "websocket.connect", reply, 0))
    assert stored(reply) == {"x": 1}
    socket_closed(message(layer, "websocket.disconnect", reply, 1, code=1000))
    assert stored(reply) is None
    assert cache.get(reply) is None


def test_socket_closed_keeps_the_session_of_a_disconnect_waiting_for_its_turn(layer):
    from geventchannels.sessions import enforce_ordering, socket_closed

    reply = new_reply()

    @enforce_ordering
    def consumer(message):
        message.channel_session["ran"] = message["order"]

    consumer(message(layer, "websocket.connect", reply, 0))
    early = message(layer, "websocket.disconnect", reply, 2, code=1000)
    consumer(early)  # message 1 has not run: the disconnect waits
    socket_closed(early)
    assert stored(reply) == {"ran": 0, "__channels_next_order": 1}


@pytest.mark.parametrize("how", ["deny", "close", "accept-false"])
def test_a_refused_handshake_leaves_no_session(layer, how):
    reply = new_reply()

    @channel_session
    def connect(message):
        message.channel_session["tried"] = True
        if how == "deny":
            raise DenyConnection
        reply_content = {"close": True} if how == "close" else {"accept": False}
        message.reply_channel.send(reply_content)

    start_buffering()
    try:
        try:
            connect(message(layer, "websocket.connect", reply, 0))
        except DenyConnection:
            pass
    finally:
        discard_buffered()
    assert stored(reply) is None
    assert cache.get(reply) is None


def test_in_memory_layer_keeps_the_session_and_frames_cost_no_query(layer):
    reply = new_reply()

    @channel_session
    def count(message):
        message.channel_session["n"] = message.channel_session.get("n", 0) + 1

    @channel_session
    def read(message):
        return message.channel_session["n"]

    count(message(layer, "websocket.connect", reply, 0))
    with CaptureQueriesContext(connection) as queries:
        for order in range(1, 11):
            assert read(message(layer, "websocket.receive", reply, order)) == 1
    assert session_queries(queries) == []
    # A change is written through.
    count(message(layer, "websocket.receive", reply, 11))
    assert stored(reply) == {"n": 2}


def test_messages_of_a_socket_loading_at_once_share_one_copy(layer):
    reply = new_reply()

    @channel_session
    def mark(message):
        message.channel_session[message["text"]] = True

    with override_settings(CHANNEL_SESSION_ENGINE="tests.project.slow_sessions"):
        gevent.joinall(
            [
                gevent.spawn(mark, message(layer, "websocket.receive", reply, 1, text="a")),
                gevent.spawn(mark, message(layer, "websocket.receive", reply, 2, text="b")),
            ],
            raise_error=True,
        )
    assert stored(reply) == {"a": True, "b": True}
    assert dict(cache.get(reply).items()) == {"a": True, "b": True}


def test_the_cache_is_bounded_least_recently_used_first_out():
    bounded = ChannelSessionCache(size=2)
    sessions = {name: SessionStore() for name in "abc"}
    bounded.put("a", sessions["a"])
    bounded.put("b", sessions["b"])
    assert bounded.get("a") is sessions["a"]
    bounded.put("c", sessions["c"])
    assert bounded.get("b") is None
    assert bounded.get("a") is sessions["a"] and bounded.get("c") is sessions["c"]


@pytest.mark.redis
def test_a_layer_that_crosses_processes_never_reads_a_stale_copy(redis_url):
    layer = RedisChannelLayer(hosts=[redis_url])
    try:
        assert cache_for(layer) is None
        reply = "websocket.send.x!" + secrets.token_urlsafe(16)

        @channel_session
        def count(message):
            message.channel_session["n"] = message.channel_session.get("n", 0) + 1
            return message.channel_session["n"]

        assert count(message(layer, "websocket.receive", reply, 1)) == 1
        # Another process handles the socket's next message and changes the session.
        other = session_for_reply_channel(reply)
        other["n"] = 10
        other.save()
        assert count(message(layer, "websocket.receive", reply, 3)) == 11
        assert stored(reply) == {"n": 11}
    finally:
        layer.close()


# -- http_session ----------------------------------------------------------------------------


def browser_session(**data) -> SessionStore:
    session = SessionStore()
    session.update(data)
    session.create()
    return session


def test_http_session_from_the_cookie_or_the_query_and_none_without(layer):
    browser = browser_session(colour="blue")
    seen = []

    @http_session
    def connect(message):
        session = message.http_session
        seen.append(None if session is None else session.get("colour"))
        if session is not None:
            session["visits"] = session.get("visits", 0) + 1

    cookie = [[b"cookie", b"other=1; sessionid=" + browser.session_key.encode()]]
    connect(message(layer, "websocket.connect", new_reply(), 0, headers=cookie))
    query = b"a=1&session_key=" + browser.session_key.encode()
    connect(message(layer, "websocket.connect", new_reply(), 0, query_string=query, headers=[]))
    connect(message(layer, "websocket.connect", new_reply(), 0, headers=[], query_string=b""))
    assert seen == ["blue", "blue", None]
    assert SessionStore(session_key=browser.session_key).load()["visits"] == 2


def test_channel_and_http_session_keeps_the_http_session_for_later_frames(layer):
    browser = browser_session(colour="green")
    reply = new_reply()
    seen = []

    @channel_and_http_session
    def consumer(message):
        seen.append(message.http_session.get("colour"))

    cookie = [[b"cookie", b"sessionid=" + browser.session_key.encode()]]
    consumer(message(layer, "websocket.connect", reply, 0, headers=cookie))
    cache.clear()
    consumer(message(layer, "websocket.receive", reply, 1, text="hi"))
    assert seen == ["green", "green"]


# -- through the server ----------------------------------------------------------------------


def test_the_pool_deletes_the_session_of_a_socket_whose_disconnect_nobody_decorated():
    """Only the connect consumer uses a channel session, the disconnect goes to the
    default (ignoring) consumer: the session still goes with the socket."""

    @channel_session
    def connect(message):
        message.channel_session["room"] = "lobby"
        message.reply_channel.send({"text": message.reply_channel.name})

    with live_server([route("websocket.connect", connect)]) as server:
        ws = websocket.create_connection(server.ws_url + "/", timeout=10)
        reply = ws.recv()
        assert stored(reply) == {"room": "lobby"}
        ws.close()
        deadline = time.monotonic() + 10
        while stored(reply) is not None:
            assert time.monotonic() < deadline, "the channel session outlived its socket"
            gevent.sleep(0.02)


def test_a_value_written_on_connect_is_read_back_on_receive_and_gone_after_disconnect():
    @channel_session
    def connect(message):
        message.channel_session["room"] = "lobby"
        message.reply_channel.send({"accept": True})

    @channel_session
    def receive(message):
        session = dict(message.channel_session.items())
        message.reply_channel.send({"text": json.dumps([message.reply_channel.name, session])})

    @channel_session
    def disconnect(message):
        pass

    routes = [
        route("websocket.connect", connect),
        route("websocket.receive", receive),
        route("websocket.disconnect", disconnect),
    ]
    with live_server(routes) as server:
        ws = websocket.create_connection(server.ws_url + "/", timeout=10)
        ws.send("hi")
        reply, session = json.loads(ws.recv())
        assert session == {"room": "lobby"}
        assert stored(reply) == {"room": "lobby"}
        ws.close()
        deadline = time.monotonic() + 10
        while stored(reply) is not None:
            assert time.monotonic() < deadline, "the channel session outlived its socket"
            gevent.sleep(0.02)
