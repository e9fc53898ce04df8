"""The session flags of class-based consumers through the real server: channel_session,
http_user (the browser's login on every frame), http_user_and_session, strict_ordering,
and a binding that lets only logged-in users write."""

from __future__ import annotations

import json

import pytest
import websocket
from django.contrib.auth.models import User
from django.test import Client

from geventchannels.generic.websockets import JsonWebsocketConsumer, WebsocketConsumer
from tests.bindapp.bindings import ItemBinding, Items
from tests.bindapp.models import Item
from tests.dbfile import file_database
from tests.livesrv import live_server

pytestmark = pytest.mark.timeout(30)


class Counter(WebsocketConsumer):
    channel_session = True

    def receive(self, text=None, bytes=None, **kwargs):
        session = self.message.channel_session
        session["count"] = session.get("count", 0) + 1
        self.send(text=str(session["count"]))


class Whoami(JsonWebsocketConsumer):
    http_user = True

    def connect(self, message, **kwargs):
        message.channel_session["connected as"] = message.user.username
        super().connect(message, **kwargs)

    def receive(self, content, **kwargs):
        self.send(
            {
                "user": self.message.user.username,
                "at connect": self.message.channel_session["connected as"],
            }
        )


class WhoamiWithSession(JsonWebsocketConsumer):
    http_user_and_session = True

    def receive(self, content, **kwargs):
        session = self.message.http_session
        self.send({"user": self.message.user.username, "key": session and session.session_key})


class InOrder(WebsocketConsumer):
    strict_ordering = True

    def receive(self, text=None, bytes=None, **kwargs):
        self.send(text="%d %s" % (self.message["order"], text))


class LoggedInItems(Items):
    http_user = True


@pytest.fixture(scope="module")
def server():
    file_database()
    routing = [
        Counter.as_route(path=r"^/count/$"),
        Whoami.as_route(path=r"^/whoami/$"),
        WhoamiWithSession.as_route(path=r"^/whoami-session/$"),
        InOrder.as_route(path=r"^/ordered/$"),
        LoggedInItems.as_route(path=r"^/items/(?P<room>\w+)/$"),
    ]
    with live_server(routing) as srv:
        yield srv


@pytest.fixture(scope="module")
def session_cookie(server) -> str:
    user, _ = User.objects.get_or_create(username="ada")
    client = Client()
    client.force_login(user)
    return "sessionid=" + client.cookies["sessionid"].value


def connect(server, path: str, cookie: str | None = None) -> websocket.WebSocket:
    return websocket.create_connection(server.ws_url + path, timeout=5, cookie=cookie)


def test_channel_session_keeps_state_across_frames(server):
    ws = connect(server, "/count/")
    replies = []
    for _ in range(3):
        ws.send("+1")
        replies.append(ws.recv())
    assert replies == ["1", "2", "3"]
    other = connect(server, "/count/")
    other.send("+1")
    assert other.recv() == "1"
    ws.close()
    other.close()


def test_http_user_is_the_login_of_the_browser_on_every_frame(server, session_cookie):
    ws = connect(server, "/whoami/", cookie=session_cookie)
    for _ in range(2):
        ws.send("{}")
        assert json.loads(ws.recv()) == {"user": "ada", "at connect": "ada"}
    anonymous = connect(server, "/whoami/")
    anonymous.send("{}")
    assert json.loads(anonymous.recv()) == {"user": "", "at connect": ""}
    ws.close()
    anonymous.close()


def test_http_user_and_session_keeps_the_http_session(server, session_cookie):
    ws = connect(server, "/whoami-session/", cookie=session_cookie)
    ws.send("{}")
    assert json.loads(ws.recv()) == {"user": "ada", "key": session_cookie.split("=", 1)[1]}
    ws.close()


def test_strict_ordering_handles_frames_in_order(server):
    ws = connect(server, "/ordered/")
    for n in range(1, 6):
        ws.send(str(n))
    assert [ws.recv() for _ in range(5)] == ["%d %d" % (n, n) for n in range(1, 6)]
    ws.close()


def test_a_binding_sees_the_sockets_user(server, session_cookie, monkeypatch):
    Item.objects.all().delete()
    monkeypatch.setattr(ItemBinding, "login_required", True)
    envelope = {"stream": "items", "payload": {"action": "create", "data": {"name": "mine"}}}
    anonymous = connect(server, "/items/a/")
    anonymous.send(json.dumps(envelope))
    assert json.loads(anonymous.recv())["payload"]["error"] == "permission denied"
    ada = connect(server, "/items/a/", cookie=session_cookie)
    ada.send(json.dumps(envelope))
    assert json.loads(ada.recv())["payload"]["action"] == "create"
    assert json.loads(anonymous.recv())["payload"]["action"] == "create"
    assert list(Item.objects.values_list("name", flat=True)) == ["mine"]
    anonymous.close()
    ada.close()
