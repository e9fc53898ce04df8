"""Presence (geventchannels.presence) on both layers: join and leave events, members in the
order they joined, metadata that comes back as it went in, members tracked by another
process, and sockets that close untracked by the server itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import gevent
import pytest
import websocket

from geventchannels import Channel
from geventchannels.exceptions import MessageTooLarge
from geventchannels.layers import RedisChannelLayer
from geventchannels.presence import Presence
from geventchannels.routing import route

from .layers.conftest import make_layer, wait_until  # noqa: F401  (the fixture)
from .livesrv import live_server

EVENTS = "room.events"


def events_of(layer, count: int, timeout: float = 5.0) -> list[dict]:
    """The next ``count`` presence events on EVENTS, waited for up to ``timeout``."""
    seen = []
    with gevent.Timeout(timeout, AssertionError(f"only {len(seen)} of {count} events")):
        while len(seen) < count:
            channel, message = layer.receive([EVENTS], block=True, timeout=timeout)
            if channel is not None:
                seen.append(message)
    return seen


def no_more_events(layer) -> bool:
    return layer.receive([EVENTS]) == (None, None)


def test_join_leave_and_members_in_join_order(make_layer):  # noqa: F811
    layer = make_layer()
    room = Presence("room-1", events=EVENTS, channel_layer=layer)
    room.track("gc.a!ws1", {"user": "ann"})
    room.track(Channel("gc.b!ws2", channel_layer=layer), {"user": "bob"})
    assert room.members() == [{"user": "ann"}, {"user": "bob"}]
    assert events_of(layer, 2) == [
        {"presence": "room-1", "event": "join", "channel": "gc.a!ws1", "meta": {"user": "ann"}},
        {"presence": "room-1", "event": "join", "channel": "gc.b!ws2", "meta": {"user": "bob"}},
    ]

    # Tracking again replaces the meta without an event.
    room.track("gc.a!ws1", {"user": "ann", "away": True})
    assert {"user": "ann", "away": True} in room.members()
    assert no_more_events(layer)

    room.untrack("gc.a!ws1")
    room.untrack("gc.a!ws1")  # not a member any more: ignored, no second event
    assert room.members() == [{"user": "bob"}]
    assert events_of(layer, 1) == [
        {
            "presence": "room-1",
            "event": "leave",
            "channel": "gc.a!ws1",
            "meta": {"user": "ann", "away": True},
        }
    ]
    assert no_more_events(layer)
    assert Presence("room-2", channel_layer=layer).members() == []


def test_meta_round_trip_and_limits(make_layer):  # noqa: F811
    layer = make_layer()
    room = Presence("room-1", channel_layer=layer)  # no events channel: nothing announced
    meta = {"user": "ann", "id": 7, "ratio": 0.5, "tags": ["a", "b"], "raw": b"\x00\xff", "x": None}
    room.track("gc.a!ws1", meta)
    meta["user"] = "changed after track"
    assert room.members() == [{**meta, "user": "ann"}]
    room.members()[0]["user"] = "changed a copy"
    assert room.members()[0]["user"] == "ann"
    assert layer.receive([EVENTS]) == (None, None)

    with pytest.raises(MessageTooLarge, match="presence meta"):
        room.track("gc.a!ws2", {"bio": "x" * 5000})
    with pytest.raises(TypeError):
        room.track("gc.a!ws2", ["not", "a", "dict"])
    with pytest.raises(TypeError):
        Presence("no spaces allowed", channel_layer=layer).members()
    assert room.members() == [{**meta, "user": "ann"}]


def test_presence_follows_the_layer_the_project_runs_with():
    """A Presence made at import time, before a test swaps the default layer, uses the
    layer that is current when it is used."""
    room = Presence("room-1", events=EVENTS)
    with live_server() as server:
        room.track("gc.a!ws1", {"user": "ann"})
        assert Presence("room-1", channel_layer=server.layer).members() == [{"user": "ann"}]


# -- sockets that close -------------------------------------------------------------------


def track_on_connect(message):
    message.reply_channel.send({"accept": True})
    user = message.content["query_string"].decode().partition("=")[2]
    Presence("room-1", events=EVENTS).track(message.reply_channel, {"user": user})
    message.reply_channel.send({"text": message.reply_channel.name})


ROUTES = [route("websocket.connect", track_on_connect)]  # no websocket.disconnect consumer


def open_socket(server, user: str) -> tuple[websocket.WebSocket, str]:
    ws = websocket.create_connection(f"{server.ws_url}/room/?user={user}", timeout=10)
    return ws, ws.recv()


@pytest.fixture(params=["inmemory", pytest.param("redis", marks=pytest.mark.redis)])
def server(request):
    layer = None
    if request.param == "redis":
        layer = RedisChannelLayer(hosts=[request.getfixturevalue("redis_url")])
    with live_server(ROUTES, layer=layer) as running:
        yield running
    if layer is not None:
        layer.close()


def test_a_socket_that_closes_is_untracked_by_the_server(server):
    layer = server.layer
    room = Presence("room-1", channel_layer=layer)
    ann, ann_channel = open_socket(server, "ann")
    bob, bob_channel = open_socket(server, "bob")
    assert [e["channel"] for e in events_of(layer, 2)] == [ann_channel, bob_channel]
    assert room.members() == [{"user": "ann"}, {"user": "bob"}]

    ann.close()  # a clean close
    assert events_of(layer, 1) == [
        {"presence": "room-1", "event": "leave", "channel": ann_channel, "meta": {"user": "ann"}}
    ]
    # Dropped without a close frame.
    bob.sock.shutdown(socket.SHUT_RDWR)
    bob.sock.close()
    assert events_of(layer, 1)[0]["channel"] == bob_channel
    assert room.members() == []
    assert layer.memberships.tracked == {}


def test_a_channel_tracked_after_its_socket_closed_is_not_added(server):
    """A slow consumer that tracks a socket which is gone already adds nothing."""
    layer = server.layer
    gone = server.app.reply_prefix + "wsgone"
    Presence("room-1", events=EVENTS, channel_layer=layer).track(gone, {"user": "late"})
    assert Presence("room-1", channel_layer=layer).members() == []
    assert no_more_events(layer)


# -- another process ------------------------------------------------------------------------

PEER = r"""
import sys
from gevent import monkey
monkey.patch_all()
from geventchannels.layers import RedisChannelLayer
from geventchannels.presence import Presence

url = sys.argv[1]
layer = RedisChannelLayer(hosts=[url])
room = Presence("room-1", events="room.events", channel_layer=layer)
room.track("peer.x!ws1", {"user": "pat", "from": "peer", "n": [1, 2]})
print(repr(room.members()), flush=True)
sys.stdin.readline()
room.untrack("peer.x!ws1")
print("UNTRACKED", flush=True)
layer.close()
"""


@pytest.mark.redis
def test_members_tracked_by_another_process(redis_url):
    layer = RedisChannelLayer(hosts=[redis_url])
    root = str(Path(__file__).resolve().parent.parent)
    peer = subprocess.Popen(
        [sys.executable, "-c", PEER, redis_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": root},
        cwd=root,
    )
    try:
        room = Presence("room-1", events=EVENTS, channel_layer=layer)
        room.track("gc.here!ws1", {"user": "ann"})
        line = peer.stdout.readline()
        assert "pat" in line, line + peer.stderr.read()
        members = room.members()
        assert members == [{"user": "ann"}, {"user": "pat", "from": "peer", "n": [1, 2]}]
        events = events_of(layer, 2)
        assert [(e["event"], e["meta"]["user"]) for e in events] == [
            ("join", "ann"),
            ("join", "pat"),
        ]

        peer.stdin.write("\n")
        peer.stdin.flush()
        assert peer.stdout.readline().strip() == "UNTRACKED", peer.stderr.read()
        assert events_of(layer, 1)[0]["event"] == "leave"
        wait_until(lambda: room.members() == [{"user": "ann"}])
        assert peer.wait(10) == 0
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        layer.close()
