"""message.user from the site's login: a browser logs in through Django's login view over
HTTP to the running server, opens a WebSocket with its session cookie, and the consumers
see its user; logout, a session flush and a password change end the socket's login."""

from __future__ import annotations

import secrets
from contextlib import contextmanager

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db.backends.utils import CursorWrapper
from django.test.utils import override_settings

from geventchannels.auth import (
    LOGOUT_CLOSE_CODE,
    channel_and_http_session_user_from_http,
    channel_session_user,
    http_session_user,
    logout_group_name,
    transfer_user,
)
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.message import Message
from geventchannels.sessions import channel_and_http_session
from tests.project import auth_routing, auth_settings

from .browser import Browser, ask, new_user
from .dbfile import file_database
from .livesrv import close_code, live_server

SITE_SETTINGS = {
    name: getattr(auth_settings, name)
    for name in (
        "MIDDLEWARE",
        "TEMPLATES",
        "LOGIN_REDIRECT_URL",
        "LOGOUT_REDIRECT_URL",
        "PASSWORD_HASHERS",
    )
}


def visit(server) -> Browser:
    return Browser(server.url, server.ws_url)


@pytest.fixture(scope="module")
def site():
    """The test project with logins, served in-process with the auth test consumers."""
    file_database()
    with override_settings(**SITE_SETTINGS):
        with live_server(auth_routing.channel_routing) as server:
            yield server


def test_a_login_through_the_login_view_is_the_sockets_user(site):
    user = new_user()
    browser = visit(site).log_in(user)
    assert browser.who() == user.username
    ws = browser.socket()
    first, second = ask(ws), ask(ws)
    assert first["user"] == user.username and first["authenticated"]
    assert first["connected_as"] == user.username
    assert (first["frames"], second["frames"]) == (1, 2)
    ws.close()


def test_without_a_login_the_user_is_anonymous(site):
    ws = visit(site).socket()
    reply = ask(ws)
    assert reply["user"] == "" and not reply["authenticated"]
    ws.close()


def test_logout_closes_that_sessions_sockets_with_4001_and_no_other(site):
    alice, bob = visit(site).log_in(new_user()), visit(site).log_in(new_user())
    alice_ws, bob_ws = alice.socket(), bob.socket()
    # Someone who stole alice's cookie opens a socket of their own with it.
    thief_ws = visit(site).socket(cookie=alice.session_key)
    assert ask(thief_ws)["authenticated"] and ask(alice_ws)["authenticated"]
    assert ask(bob_ws)["authenticated"]

    alice.log_out()
    assert close_code(alice_ws) == LOGOUT_CLOSE_CODE
    assert close_code(thief_ws) == LOGOUT_CLOSE_CODE
    assert ask(bob_ws)["user"] == bob.who()
    bob_ws.close()


def test_a_session_flushed_by_another_login_closes_its_sockets(site):
    browser = visit(site).log_in(new_user())
    ws = browser.socket()
    assert ask(ws)["authenticated"]
    # Logging in as someone else in the same browser flushes the session (new key).
    other = new_user()
    browser.log_in(other)
    assert close_code(ws) == LOGOUT_CLOSE_CODE
    assert ask(browser.socket())["user"] == other.username


def test_a_password_change_logs_the_socket_out_like_the_browser(site):
    user = new_user()
    browser = visit(site).log_in(user)
    ws = browser.socket()
    assert ask(ws)["user"] == user.username

    user.set_password("something else")
    user.save()
    reply = ask(ws)
    assert not reply["authenticated"] and reply["connected_as"] == user.username
    # The browser's next request finds the same; its session ends, and with it the socket.
    assert browser.who() == "-"
    assert close_code(ws) == LOGOUT_CLOSE_CODE


@contextmanager
def counted_queries():
    """Every SQL statement run in this process (any greenlet) while the block runs."""
    statements: list[str] = []
    original = CursorWrapper.execute

    def execute(self, sql, params=None):
        statements.append(sql)
        return original(self, sql, params)

    CursorWrapper.execute = execute
    try:
        yield statements
    finally:
        CursorWrapper.execute = original


def test_frames_of_a_logged_in_socket_cost_no_database_query(site):
    user = new_user()
    ws = visit(site).log_in(user).socket()
    assert ask(ws)["user"] == user.username
    with counted_queries() as statements:
        for frame in range(2, 22):
            assert ask(ws)["frames"] == frame
    # Each frame changes the session (its counter): written through, never read back.
    assert [s for s in statements if "SELECT" in s.upper()] == []
    assert len([s for s in statements if s.startswith("UPDATE")]) == 20

    user.first_name = "changed"
    user.save()
    with counted_queries() as statements:
        assert ask(ws)["user"] == user.username
    assert len([s for s in statements if "auth_user" in s]) == 1  # loaded again, once
    ws.close()


def logged_in_session(user) -> SessionStore:
    """What django.contrib.auth.login() leaves in a browser's session."""
    session = SessionStore()
    session.update(
        {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": user.get_session_auth_hash(),
        }
    )
    session.create()
    return session


def test_http_session_user_and_the_http_session_on_later_frames():
    file_database()
    user = new_user()
    browser = logged_in_session(user)
    layer = InMemoryChannelLayer()
    reply = "websocket.send!" + secrets.token_urlsafe(16)
    cookie = [[b"cookie", b"sessionid=" + browser.session_key.encode()]]
    seen = []

    @http_session_user
    def plain(message):
        seen.append(("plain", message.user.username, message.http_session.session_key))

    @channel_and_http_session_user_from_http
    def connect(message):
        seen.append(("connect", message.user.username, message.http_session.session_key))

    @channel_session_user
    @channel_and_http_session
    def receive(message):
        seen.append(("receive", message.user.username, message.http_session.session_key))

    def content(order, **extra):
        return {"reply_channel": reply, "path": "/", "order": order, **extra}

    plain(Message(content(0, headers=cookie, query_string=b""), "websocket.connect", layer))
    connect(Message(content(0, headers=cookie, query_string=b""), "websocket.connect", layer))
    receive(Message(content(1, text="hi"), "websocket.receive", layer))
    key = browser.session_key
    assert seen == [
        ("plain", user.username, key),
        ("connect", user.username, key),
        ("receive", user.username, key),
    ]
    assert layer.group_channels(logout_group_name(key)) == [reply]


def test_a_long_lived_socket_renews_its_logout_group_membership():
    import time

    from geventchannels.auth import LOGOUT_GROUP_KEY, channel_session_user_from_http
    from geventchannels.sessions import cache

    file_database()
    browser = logged_in_session(new_user())
    group = logout_group_name(browser.session_key)
    layer = InMemoryChannelLayer(group_expiry=100)
    reply = "websocket.send!" + secrets.token_urlsafe(16)

    @channel_session_user_from_http
    def connect(message):
        pass

    @channel_session_user
    def receive(message):
        pass

    cookie = [[b"cookie", b"sessionid=" + browser.session_key.encode()]]
    connect(
        Message(
            {"reply_channel": reply, "order": 0, "path": "/", "headers": cookie},
            "websocket.connect",
            layer,
        )
    )
    membership = cache.get(reply)[LOGOUT_GROUP_KEY]
    assert membership[0] == group and 40 < membership[1] - time.time() <= 50
    # Half the group's expiry later the membership is renewed by the next frame.
    layer.group_discard(group, reply)
    cache.get(reply)[LOGOUT_GROUP_KEY] = [group, int(time.time()) - 1]
    receive(Message({"reply_channel": reply, "order": 1, "path": "/"}, "websocket.receive", layer))
    assert layer.group_channels(group) == [reply]
    assert cache.get(reply)[LOGOUT_GROUP_KEY][1] > time.time() + 40


def test_transfer_user_copies_a_complete_login_only():
    file_database()
    source, target = SessionStore(), SessionStore()
    source.update({"_auth_user_id": "7", "_auth_user_backend": "b"})
    transfer_user(source, target)
    assert dict(target.items()) == {}
    source["_auth_user_hash"] = "h"
    transfer_user(source, target)
    assert dict(target.items()) == {
        "_auth_user_id": "7",
        "_auth_user_backend": "b",
        "_auth_user_hash": "h",
    }


def test_the_logout_group_does_not_reveal_the_session_key():
    key = secrets.token_urlsafe(24)
    name = logout_group_name(key)
    assert key not in name and len(name) < 100
    assert name == logout_group_name(key) != logout_group_name(key + "x")
