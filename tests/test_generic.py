"""Class-based consumers through the real server, with websocket-client as the client:
connect and accept, groups joined on connect and left on disconnect, raw and JSON frames,
close, group sends, and several streams multiplexed on one socket."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import websocket

from geventchannels import Channel, Group
from geventchannels.exceptions import DenyConnection, SendNotAvailableOnDemultiplexer
from geventchannels.generic import BaseConsumer
from geventchannels.generic.websockets import (
    JsonWebsocketConsumer,
    WebsocketConsumer,
    WebsocketDemultiplexer,
    WebsocketMultiplexer,
)
from geventchannels.message import Message
from tests.layers.conftest import wait_until
from tests.livesrv import Recorder, close_code, live_server

pytestmark = pytest.mark.timeout(30)

seen = Recorder()


def note(**content) -> None:
    """Record ``content`` in ``seen`` (from inside a consumer)."""
    seen(SimpleNamespace(content=content))


class Echo(WebsocketConsumer):
    groups = ["echoes"]

    def receive(self, text=None, bytes=None, **kwargs):
        if text == "close please":
            self.close(4001)
        elif text is not None:
            self.send(text=f"{self.path} {text}")
        else:
            self.send(bytes=bytes[::-1])

    def disconnect(self, message, **kwargs):
        note(left="echo", code=message["code"], channel=message.reply_channel.name)


class Room(JsonWebsocketConsumer):
    def connection_groups(self, room, **kwargs):
        return ["room-" + room]

    def receive(self, content, room, **kwargs):
        if content.get("shout"):
            self.group_send("room-" + room, {"room": room, "shout": content["shout"]})
        else:
            self.send({"room": room, "got": content}, close=content.get("bye", False))

    def disconnect(self, message, room, **kwargs):
        note(left="room-" + room, channel=message.reply_channel.name)


class Reverser(JsonWebsocketConsumer):
    groups = ["reversers"]

    def receive(self, content, multiplexer, **kwargs):
        multiplexer.send({"reversed": content["text"][::-1]})


class Upper(JsonWebsocketConsumer):
    def receive(self, content, **kwargs):
        self.send({"upper": content["text"].upper()})


def plain_stream(message, multiplexer, **kwargs):
    if message.channel_name == "websocket.receive":
        multiplexer.send({"raw": message["text"]})


class Streams(WebsocketDemultiplexer):
    consumers = {"reverse": Reverser, "upper": Upper, "plain": plain_stream}


class Picky(JsonWebsocketConsumer):
    def connect(self, message, **kwargs):
        if b"no" in message["query_string"]:
            raise DenyConnection


class PickyStreams(WebsocketDemultiplexer):
    consumers = {"picky": Picky}


class Tasks(BaseConsumer):
    method_mapping = {"tasks.add": "add", "tasks.remove": "remove"}

    def add(self, message, **kwargs):
        note(task="add", n=message["n"])

    def remove(self, message, **kwargs):
        note(task="remove", n=message["n"])


@pytest.fixture(scope="module")
def server():
    routing = [
        Echo.as_route(path=r"^/echo/$"),
        Echo.as_route({"groups": ["other-echoes"]}, path=r"^/echo-other/$"),
        Room.as_route(path=r"^/room/(?P<room>\w+)/$"),
        Streams.as_route(path=r"^/streams/$"),
        PickyStreams.as_route(path=r"^/picky/$"),
        Tasks.as_route(),
    ]
    with live_server(routing) as srv:
        yield srv


@pytest.fixture(autouse=True)
def fresh_recorder():
    seen.messages.clear()


def connect(server, path: str) -> websocket.WebSocket:
    return websocket.create_connection(server.ws_url + path, timeout=5)


def test_channel_names_come_from_the_method_mapping():
    assert Tasks.channel_names() == {"tasks.add", "tasks.remove"}
    assert WebsocketConsumer.channel_names() == {
        "websocket.connect",
        "websocket.receive",
        "websocket.disconnect",
    }


def test_as_route_with_attrs_makes_a_subclass_and_leaves_the_class_alone():
    entry = Echo.as_route({"groups": ["x"]}, path=r"^/x/$")
    assert entry.consumer is not Echo and issubclass(entry.consumer, Echo)
    assert entry.consumer.groups == ["x"] and Echo.groups == ["echoes"]
    with pytest.raises(TypeError):
        Echo.as_route(["groups"])


def test_base_consumer_dispatches_each_channel_to_its_method(server):
    Channel("tasks.add").send({"n": 1})
    Channel("tasks.remove").send({"n": 2})
    seen.wait_count(2)
    assert sorted((m["task"], m["n"]) for m in seen.messages) == [("add", 1), ("remove", 2)]


def test_websocket_consumer_echoes_text_and_bytes_with_its_path(server):
    ws = connect(server, "/echo/")
    ws.send("hello")
    assert ws.recv() == "/echo/ hello"
    ws.send_binary(b"abc")
    assert ws.recv() == b"cba"
    ws.close()


def test_groups_are_joined_on_connect_and_left_on_disconnect(server):
    ws = connect(server, "/echo/")
    other = connect(server, "/echo-other/")
    assert len(server.layer.group_channels("echoes")) == 1
    assert len(server.layer.group_channels("other-echoes")) == 1
    Echo.group_send("echoes", text="to the group")
    assert ws.recv() == "to the group"
    Group("other-echoes").send({"text": "to the others"})
    assert other.recv() == "to the others"

    ws.close()
    left = seen.wait_for(lambda m: m.get("left") == "echo")
    assert left["code"] == 1000
    assert server.layer.group_channels("echoes") == []
    assert len(server.layer.group_channels("other-echoes")) == 1
    other.close()


def test_close_with_a_code(server):
    ws = connect(server, "/echo/")
    ws.send("close please")
    assert close_code(ws) == 4001


def test_connection_groups_take_the_route_kwargs(server):
    kitchen = connect(server, "/room/kitchen/")
    also_kitchen = connect(server, "/room/kitchen/")
    garden = connect(server, "/room/garden/")
    kitchen.send(json.dumps({"shout": "dinner"}))
    expected = {"room": "kitchen", "shout": "dinner"}
    assert json.loads(kitchen.recv()) == expected
    assert json.loads(also_kitchen.recv()) == expected
    garden.send(json.dumps({"hi": 1}))
    assert json.loads(garden.recv()) == {"room": "garden", "got": {"hi": 1}}
    for ws in (kitchen, also_kitchen, garden):
        ws.close()
    wait_until(
        lambda: len([m for m in seen.messages if m.get("left", "").startswith("room-")]) == 3
    )
    assert server.layer.group_channels("room-kitchen") == []


def test_json_round_trip_and_send_with_close(server):
    ws = connect(server, "/room/lab/")
    content = {"list": [1, 2.5, None, True], "text": "é"}
    ws.send(json.dumps(content))
    assert json.loads(ws.recv()) == {"room": "lab", "got": content}
    ws.send(json.dumps({"bye": True}))
    assert json.loads(ws.recv())["got"] == {"bye": True}
    assert close_code(ws) == 1000


def test_json_group_send_encodes_dates():
    import datetime

    text = JsonWebsocketConsumer.encode_json({"when": datetime.date(2024, 5, 1)})
    assert json.loads(text) == {"when": "2024-05-01"}


def test_bad_json_is_logged_once_and_the_socket_keeps_working(server, caplog):
    ws = connect(server, "/room/lab/")
    with caplog.at_level(logging.WARNING, logger="geventchannels.generic.websockets"):
        ws.send("{not json")
        ws.send("[1, 2")
        ws.send_binary(b"\x00\x01")
        ws.send(json.dumps({"after": "garbage"}))
        assert json.loads(ws.recv()) == {"room": "lab", "got": {"after": "garbage"}}
    records = [r for r in caplog.records if r.name == "geventchannels.generic.websockets"]
    # The first of a burst is logged at once, the rest are counted (or all are counted
    # when an earlier test started the tally); never a traceback per frame.
    assert len(records) <= 1
    assert all(r.exc_info is None for r in records)
    if records:
        assert "Room" in records[0].getMessage() and "/room/lab/" in records[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    ws.close()


def test_a_demultiplexed_stream_reaches_its_consumer_and_answers_on_it(server):
    ws = connect(server, "/streams/")
    ws.send(json.dumps({"stream": "reverse", "payload": {"text": "abc"}}))
    assert json.loads(ws.recv()) == {"stream": "reverse", "payload": {"reversed": "cba"}}
    ws.send(json.dumps({"stream": "upper", "payload": {"text": "abc"}}))
    assert json.loads(ws.recv()) == {"stream": "upper", "payload": {"upper": "ABC"}}
    ws.send(json.dumps({"stream": "plain", "payload": [1, 2]}))
    assert json.loads(ws.recv()) == {"stream": "plain", "payload": {"raw": "[1, 2]"}}
    ws.close()


def test_invalid_multiplexed_frames_are_dropped_not_raised(server, caplog):
    ws = connect(server, "/streams/")
    with caplog.at_level(logging.WARNING):
        ws.send(json.dumps({"stream": "nope", "payload": {}}))
        ws.send(json.dumps({"payload": {}}))
        ws.send(json.dumps(["stream", "payload"]))
        ws.send(json.dumps({"stream": ["reverse"], "payload": {}}))
        ws.send(json.dumps({"stream": "upper", "payload": {"text": "still here"}}))
        assert json.loads(ws.recv()) == {"stream": "upper", "payload": {"upper": "STILL HERE"}}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    ws.close()


def test_inner_consumers_join_their_groups_through_the_demultiplexer(server):
    ws = connect(server, "/streams/")
    assert len(server.layer.group_channels("reversers")) == 1
    WebsocketMultiplexer.group_send("reversers", "reverse", {"news": 1})
    assert json.loads(ws.recv()) == {"stream": "reverse", "payload": {"news": 1}}
    ws.close()
    wait_until(lambda: server.layer.group_channels("reversers") == [])


def test_an_inner_consumer_can_refuse_the_socket(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(server, "/picky/?no")
    assert refused.value.status_code == 403
    connect(server, "/picky/?yes").close()


def test_a_demultiplexer_cannot_send_by_itself():
    with pytest.raises(SendNotAvailableOnDemultiplexer):
        WebsocketDemultiplexer.group_send("g", "s", {})
    demux = object.__new__(Streams)
    with pytest.raises(SendNotAvailableOnDemultiplexer):
        demux.send({"x": 1})


def test_a_raw_consumer_cannot_send_text_on_a_stream(server):
    class Raw(WebsocketConsumer):
        def receive(self, text=None, bytes=None, **kwargs):
            self.send(text="not enveloped")

    message = Message(
        {"reply_channel": "websocket.send!x", "path": "/", "text": "{}"},
        "websocket.receive",
        server.layer,
    )
    with pytest.raises(SendNotAvailableOnDemultiplexer):
        Raw(message, multiplexer=WebsocketMultiplexer("s", message.reply_channel))


def test_frame_rules():
    with pytest.raises(ValueError):
        WebsocketConsumer.group_send("g")
    with pytest.raises(ValueError):
        WebsocketConsumer.group_send("g", text="a", bytes=b"b")
