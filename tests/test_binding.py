"""Data binding: model saves reach the bound groups after commit (group moves as delete
plus create, nothing for a rollback), and clients create, update and delete rows through
a demultiplexed socket, with permission granted and refused."""

from __future__ import annotations

import json

import pytest
import websocket
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from geventchannels.binding.websockets import WebsocketBinding, WebsocketBindingWithMembers
from tests.bindapp.bindings import ItemBinding, Items
from tests.bindapp.models import Item, Tag
from tests.dbfile import file_database
from tests.livesrv import live_server

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def database():
    """A database file every greenlet's connection shares (tests/dbfile.py)."""
    file_database()


@pytest.fixture(autouse=True)
def empty_tables(database, monkeypatch):
    Item.objects.all().delete()
    Tag.objects.all().delete()
    monkeypatch.setattr(ItemBinding, "allowed", {"create", "update", "delete"})


@pytest.fixture(scope="module")
def server(database):
    with live_server([Items.as_route(path=r"^/items/(?P<room>\w+)/$")]) as srv:
        yield srv


class Probe:
    """A channel in a group, read without blocking: what the group got, and when."""

    def __init__(self, server, group: str) -> None:
        self.layer = server.layer
        self.name = self.layer.new_channel("probe?")
        self.layer.group_add(group, self.name)

    def take(self) -> list[dict]:
        got = []
        while True:
            channel, message = self.layer.receive([self.name], block=False)
            if channel is None:
                return got
            got.append(json.loads(message["text"]))


def connect(server, room: str) -> websocket.WebSocket:
    return websocket.create_connection(f"{server.ws_url}/items/{room}/", timeout=5)


def receive(ws: websocket.WebSocket) -> dict:
    envelope = json.loads(ws.recv())
    assert envelope["stream"] == "items"
    return envelope["payload"]


def send(ws: websocket.WebSocket, **payload) -> None:
    ws.send(json.dumps({"stream": "items", "payload": payload}))


def test_a_binding_needs_fields_or_exclude_and_a_stream():
    with pytest.raises(ImproperlyConfigured, match="fields"):

        class NoFields(WebsocketBinding):
            model = "bindapp.Item"
            stream = "x"

    with pytest.raises(ImproperlyConfigured, match="fields"):

        class Both(WebsocketBinding):
            model = "bindapp.Item"
            stream = "x"
            fields = ["name"]
            exclude = ["secret"]

    with pytest.raises(ImproperlyConfigured, match="stream"):

        class NoStream(WebsocketBinding):
            model = "bindapp.Item"
            fields = ["name"]

    with pytest.raises(ImproperlyConfigured, match="model"):

        class NoModel(WebsocketBinding):
            fields = ["name"]
            stream = "x"


def test_save_and_delete_reach_the_group_with_the_right_action(server):
    ws = connect(server, "a")
    item = Item.objects.create(name="lamp", price=3, room="a")
    created = receive(ws)
    assert created == {
        "action": "create",
        "pk": item.pk,
        "model": "bindapp.item",
        "data": {"name": "lamp", "price": 3, "room": "a", "tags": []},
    }
    item.price = 4
    item.save()
    assert receive(ws)["action"] == "update"
    pk = item.pk
    item.delete()
    deleted = receive(ws)
    assert (deleted["action"], deleted["pk"]) == ("delete", pk)
    ws.close()


def test_excluded_fields_are_not_sent(server):
    class Public(WebsocketBinding):
        model = Item
        stream = "public"
        exclude = ["secret", "tags"]

        @classmethod
        def group_names(cls, instance):
            return ["public-items"]

    try:
        probe = Probe(server, "public-items")
        Item.objects.create(name="hat", secret="s3cret")
        (message,) = probe.take()
        assert message["stream"] == "public"
        assert set(message["payload"]["data"]) == {"name", "price", "room"}
    finally:
        Public.unregister()


def test_members_are_sent_too(server):
    class WithMembers(WebsocketBindingWithMembers):
        model = Item
        stream = "members"
        fields = ["name"]
        send_members = ["room", "name.upper"]

        @classmethod
        def group_names(cls, instance):
            return ["member-items"]

    try:
        probe = Probe(server, "member-items")
        Item.objects.create(name="lamp", room="b")
        (message,) = probe.take()
        assert message["payload"]["data"] == {"name": "lamp", "room": "b", "name__upper": "LAMP"}
    finally:
        WithMembers.unregister()


def test_a_group_move_sends_delete_to_the_old_group_and_create_to_the_new(server):
    item = Item.objects.create(name="chair", room="a")
    ws_a, ws_b = connect(server, "a"), connect(server, "b")
    # Changed in memory only: the groups before the save are those of the stored row.
    item.room = "b"
    item.save()
    assert receive(ws_a) == {
        "action": "delete",
        "pk": item.pk,
        "model": "bindapp.item",
        "data": {"name": "chair", "price": 0, "room": "b", "tags": []},
    }
    created = receive(ws_b)
    assert (created["action"], created["pk"], created["data"]["room"]) == ("create", item.pk, "b")
    ws_a.close()
    ws_b.close()


def test_messages_wait_for_the_commit_and_a_rollback_sends_nothing(server):
    probe = Probe(server, "items-a")
    with transaction.atomic():
        Item.objects.create(name="kept", room="a")
        assert probe.take() == []
    assert [m["payload"]["data"]["name"] for m in probe.take()] == ["kept"]

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            Item.objects.create(name="undone", room="a")
            raise RuntimeError("roll back")
    with transaction.atomic():
        with pytest.raises(RuntimeError):
            with transaction.atomic():  # a savepoint
                Item.objects.create(name="undone too", room="a")
                raise RuntimeError("roll back the savepoint")
        Item.objects.create(name="after", room="a")
    assert [m["payload"]["data"]["name"] for m in probe.take()] == ["after"]
    assert not Item.objects.filter(name__startswith="undone").exists()


def test_inbound_create_update_delete_with_permission(server):
    ws = connect(server, "a")
    Tag.objects.create(label="red")
    tag = Tag.objects.get()
    send(ws, action="create", data={"name": "desk", "price": 7, "room": "a", "tags": [tag.pk]})
    created = receive(ws)
    item = Item.objects.get()
    assert (created["action"], created["pk"]) == ("create", item.pk)
    assert (item.name, item.price) == ("desk", 7)
    assert list(item.tags.all()) == [tag]

    send(ws, action="update", pk=item.pk, data={"price": 8})
    updated = receive(ws)
    assert (updated["action"], updated["data"]["price"]) == ("update", 8)
    item.refresh_from_db()
    assert (item.name, item.price) == ("desk", 8)

    send(ws, action="delete", pk=item.pk)
    assert receive(ws)["action"] == "delete"
    assert not Item.objects.exists()
    ws.close()


def test_inbound_actions_refused_are_answered_and_change_nothing(server):
    item = Item.objects.create(name="sofa", price=1, room="a")
    ws = connect(server, "a")
    ItemBinding.allowed = {"create"}
    send(ws, action="update", pk=item.pk, data={"price": 99})
    assert receive(ws) == {"action": "update", "pk": item.pk, "error": "permission denied"}
    send(ws, action="delete", pk=item.pk)
    assert receive(ws) == {"action": "delete", "pk": item.pk, "error": "permission denied"}
    item.refresh_from_db()
    assert item.price == 1
    ItemBinding.allowed = set()
    send(ws, action="create", data={"name": "x"})
    assert receive(ws)["error"] == "permission denied"
    assert Item.objects.count() == 1
    ws.close()


def test_invalid_inbound_actions_are_answered(server):
    item = Item.objects.create(name="bed", room="a")
    ws = connect(server, "a")
    send(ws, action="explode", pk=item.pk)
    assert "unknown action" in receive(ws)["error"]
    send(ws, action="update", data={"price": 1})
    assert receive(ws)["error"] == "update needs a pk"
    send(ws, action="update", pk=item.pk + 1000, data={"price": 1})
    assert receive(ws)["error"] == "not found"
    send(ws, action="delete", pk=item.pk + 1000)
    assert receive(ws)["error"] == "not found"
    send(ws, action="update", pk=item.pk, data={"secret": "mine"})
    assert receive(ws)["error"] == "fields that cannot be set: secret"
    send(ws, action="update", pk=item.pk, data={"price": "lots"})
    assert receive(ws)["error"].startswith("invalid data")
    send(ws, action="create", data={"name": "x" * 50})
    refused = receive(ws)
    assert refused["error"] == "invalid data" and "name" in refused["errors"]
    ws.send(json.dumps({"stream": "items", "payload": "not an object"}))
    assert receive(ws)["error"].startswith("expected")
    item.refresh_from_db()
    assert (item.price, item.secret) == (0, "")
    assert Item.objects.count() == 1
    ws.close()
