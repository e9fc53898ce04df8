"""Group memberships that follow the sockets (layers/membership.py) and, on Redis, the
process leases (layers/redis/leases.py), in this process: sockets that end leave their
groups without any disconnect consumer; a process whose lease expires is purged by a live
one; memberships come back after Redis lost them; changes made by another process are
learnt by the owner. tests/test_groups_workers.py does the same with gunicorn workers."""

from __future__ import annotations

import socket
import time

import gevent
import pytest
import redis
import websocket

from geventchannels import Group
from geventchannels.layers import InMemoryChannelLayer, RedisChannelLayer
from geventchannels.presence import Presence
from geventchannels.routing import route

from .conftest import RedisServer
from .layers.conftest import wait_until
from .livesrv import live_server

ROOM = "room"
EVENTS = "room.events"


def join_on_connect(message):
    message.reply_channel.send({"accept": True})
    Group(ROOM).add(message.reply_channel)
    message.reply_channel.send({"text": message.reply_channel.name})


def broadcast(message):
    Group(ROOM).send({"text": message.content["text"]})


ROUTES = [route("websocket.connect", join_on_connect), route("websocket.receive", broadcast)]


@pytest.fixture(params=["inmemory", pytest.param("redis", marks=pytest.mark.redis)])
def make_layer(request):
    """Build a layer of the parametrised backend with any configuration keys."""
    made = []

    def make(**config):
        if request.param == "redis":
            config["hosts"] = [request.getfixturevalue("redis_url")]
            made.append(RedisChannelLayer(**config))
        else:
            made.append(InMemoryChannelLayer(**config))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture
def layer(make_layer):
    return make_layer()


def connect(server) -> tuple[websocket.WebSocket, str]:
    ws = websocket.create_connection(server.ws_url + "/room/", timeout=10)
    return ws, ws.recv()


def test_group_channels_lists_the_members(layer):
    room = Group(ROOM, channel_layer=layer)
    room.add("gc.a!ws1")
    room.add("plain.channel")
    assert sorted(room.channels()) == ["gc.a!ws1", "plain.channel"]
    room.discard("gc.a!ws1")
    assert room.channels() == ["plain.channel"]


def test_sockets_leave_their_groups_however_they_end(layer):
    """No websocket.disconnect consumer: the server takes each socket out itself."""
    with live_server(ROUTES, layer=layer) as server:
        room = Group(ROOM, channel_layer=layer)
        clean, clean_channel = connect(server)
        dropped, dropped_channel = connect(server)
        staying, staying_channel = connect(server)
        assert sorted(room.channels()) == sorted([clean_channel, dropped_channel, staying_channel])

        clean.close()
        wait_until(lambda: clean_channel not in room.channels())
        # TCP dropped without a close frame.
        dropped.sock.shutdown(socket.SHUT_RDWR)
        dropped.sock.close()
        wait_until(lambda: dropped_channel not in room.channels())
        assert room.channels() == [staying_channel]

        staying.send("still here")
        assert staying.recv() == "still here"
        assert list(layer.memberships.groups) == [staying_channel]
    # The server stopped: its last socket left too.
    assert room.channels() == []
    assert layer.memberships.groups == {}


def test_a_socket_added_after_it_closed_is_taken_out_again(layer):
    """A consumer that adds a socket which closed meanwhile leaves no member behind."""
    with live_server(ROUTES, layer=layer) as server:
        gone = server.app.reply_prefix + "wsgone"
        Group(ROOM, channel_layer=layer).add(gone)
        assert Group(ROOM, channel_layer=layer).channels() == []


def test_an_open_socket_stays_in_its_groups_past_group_expiry(make_layer):
    """The server re-adds its open sockets every group_expiry / 2 seconds; a channel no
    server owns still expires."""
    layer = make_layer(group_expiry=2)
    with live_server(ROUTES, layer=layer) as server:
        _ws, channel = connect(server)
        layer.group_add(ROOM, "plain.channel")
        gevent.sleep(3.5)  # the duration under test: past group_expiry
        assert layer.group_channels(ROOM) == [channel]


def test_channels_of_other_prefixes_are_left_alone(layer):
    with live_server(ROUTES, layer=layer) as server:
        ws, channel = connect(server)
        layer.group_add(ROOM, "other.process!ws1")
        ws.close()
        wait_until(lambda: channel not in layer.group_channels(ROOM))
        assert layer.group_channels(ROOM) == ["other.process!ws1"]


# -- Redis: leases ---------------------------------------------------------------------------

LEASE = 1.5  # GROUP_LEASE_TIMEOUT of these tests: lease 1 s, a round every 0.25 s


def serving(url: str, prefix: str, open_channels: set[str]) -> RedisChannelLayer:
    """A layer whose memberships serve ``prefix`` as a server would."""
    made = RedisChannelLayer(hosts=[url], channel_capacity={EVENTS: 1000})
    made.memberships.serve(prefix, open_channels.__contains__, {"GROUP_LEASE_TIMEOUT": LEASE})
    keeper = made.memberships.keeper
    assert keeper is not None
    wait_until(lambda: keeper.rounds > 0)
    return made


def events(layer, count: int) -> list[dict]:
    seen: list[dict] = []
    with gevent.Timeout(10, AssertionError(f"only {len(seen)} of {count} events")):
        while len(seen) < count:
            channel, message = layer.receive([EVENTS], block=True, timeout=10)
            if channel is not None:
                seen.append(message)
    return seen


@pytest.mark.redis
def test_the_members_of_a_dead_process_are_purged_by_a_live_one(redis_url):
    dead_channels = {f"gc.dead!ws{n}" for n in range(30)}
    dead = serving(redis_url, "gc.dead!", dead_channels)
    live = serving(redis_url, "gc.live!", {"gc.live!ws1"})
    try:
        room = Presence(ROOM, events=EVENTS, channel_layer=dead)
        for channel in sorted(dead_channels):
            Group(ROOM, channel_layer=dead).add(channel)
            Group("other", channel_layer=dead).add(channel)
            room.track(channel, {"user": channel[-4:]})
        Group(ROOM, channel_layer=live).add("gc.live!ws1")
        Presence(ROOM, events=EVENTS, channel_layer=live).track("gc.live!ws1", {"user": "live"})
        assert len(events(live, 31)) == 31
        assert len(live.group_channels(ROOM)) == 31

        dead.memberships.stop()  # the process is killed: nothing renews its lease
        died = time.monotonic()
        wait_until(lambda: live.group_channels(ROOM) == ["gc.live!ws1"], timeout=2 * LEASE)
        elapsed = time.monotonic() - died
        assert elapsed <= LEASE + 0.5, elapsed
        assert live.group_channels("other") == []
        assert Presence(ROOM, channel_layer=live).members() == [{"user": "live"}]
        leaves = events(live, 30)
        assert {e["channel"] for e in leaves} == dead_channels
        assert {e["event"] for e in leaves} == {"leave"}
        # The purge drops the dead process's own records last (after the leave events).
        client = redis.Redis.from_url(redis_url)
        wait_until(lambda: client.keys("asgi:owned:gc.dead!") == [], timeout=5)
        # Purged once: no other process announces them again.
        gevent.sleep(LEASE)
        assert live.receive([EVENTS]) == (None, None)
    finally:
        dead.close()
        live.close()


@pytest.mark.redis
def test_a_dead_process_on_another_redis_host_is_purged_too(redis_url):
    """With two hosts, a process's lease and memberships live on its prefix's host: the
    live process checks every host, and members() reads them all."""
    other = RedisServer()
    hosts = [redis_url, other.url]
    try:
        probe = RedisChannelLayer(hosts=hosts)
        live_prefix = "gc.live!"
        dead_prefix = next(
            p
            for p in (f"gc.dead{n}!" for n in range(100))
            if probe._shard_for(p) is not probe._shard_for(live_prefix)
        )
        probe.close()
        dead = RedisChannelLayer(hosts=hosts)
        live = RedisChannelLayer(hosts=hosts, channel_capacity={EVENTS: 100})
        try:
            dead.memberships.serve(
                dead_prefix, lambda channel: True, {"GROUP_LEASE_TIMEOUT": LEASE}
            )
            live.memberships.serve(
                live_prefix, lambda channel: True, {"GROUP_LEASE_TIMEOUT": LEASE}
            )
            Presence(ROOM, channel_layer=dead).track(dead_prefix + "ws1", {"who": "dead"})
            Presence(ROOM, events=EVENTS, channel_layer=live).track(
                live_prefix + "ws1", {"who": "live"}
            )
            Group(ROOM, channel_layer=dead).add(dead_prefix + "ws1")
            assert events(live, 1)[0]["meta"] == {"who": "live"}
            assert Presence(ROOM, channel_layer=live).members() == [
                {"who": "dead"},
                {"who": "live"},
            ]

            dead.memberships.stop()
            wait_until(lambda: live.group_channels(ROOM) == [], timeout=2 * LEASE)
            assert Presence(ROOM, channel_layer=live).members() == [{"who": "live"}]
        finally:
            dead.close()
            live.close()
    finally:
        other.stop()


@pytest.mark.redis
def test_a_process_taken_for_dead_adds_its_members_back_and_announces_them(redis_url):
    """A process that could not renew in time (a long pause, a partition) was purged, with
    leave events: when it is back it re-asserts its members, with join events."""
    paused = serving(redis_url, "gc.paused!", {"gc.paused!ws1"})
    live = serving(redis_url, "gc.live!", set())
    try:
        Group(ROOM, channel_layer=paused).add("gc.paused!ws1")
        Presence(ROOM, events=EVENTS, channel_layer=paused).track("gc.paused!ws1", {"u": 1})
        assert events(live, 1)[0]["event"] == "join"

        memberships = paused.memberships
        assert memberships.keeper is not None
        memberships.keeper.stop()
        wait_until(lambda: live.group_channels(ROOM) == [], timeout=2 * LEASE)
        assert events(live, 1)[0]["event"] == "leave"

        memberships.keeper = None
        memberships.serve(
            "gc.paused!", {"gc.paused!ws1"}.__contains__, {"GROUP_LEASE_TIMEOUT": LEASE}
        )
        wait_until(lambda: live.group_channels(ROOM) == ["gc.paused!ws1"], timeout=2 * LEASE)
        assert events(live, 1) == [
            {"presence": ROOM, "event": "join", "channel": "gc.paused!ws1", "meta": {"u": 1}}
        ]
        assert Presence(ROOM, channel_layer=live).members() == [{"u": 1}]
    finally:
        paused.close()
        live.close()


@pytest.mark.redis
def test_memberships_come_back_when_redis_loses_them(redis_url):
    """Redis restarted empty (or failed over to a replica without the data): every
    process re-asserts its sockets' memberships and presence, without join events (no
    leave was announced), and group sends reach the sockets again."""
    layer = RedisChannelLayer(hosts=[redis_url], channel_capacity={EVENTS: 1000})
    sender = RedisChannelLayer(hosts=[redis_url])
    try:
        with live_server(ROUTES, layer=layer, GROUP_LEASE_TIMEOUT=LEASE) as server:
            sockets = [connect(server) for _ in range(5)]
            for _ws, channel in sockets:
                Presence(ROOM, events=EVENTS, channel_layer=layer).track(channel, {"c": channel})
            assert len(events(layer, 5)) == 5
            redis.Redis.from_url(redis_url).flushall()
            assert sender.group_channels(ROOM) == []

            wait_until(lambda: len(sender.group_channels(ROOM)) == 5, timeout=LEASE)
            assert len(Presence(ROOM, channel_layer=sender).members()) == 5
            sender.send_group(ROOM, {"text": "back"})
            for ws, _channel in sockets:
                assert ws.recv() == "back"
            assert layer.receive([EVENTS]) == (None, None)
    finally:
        layer.close()
        sender.close()


@pytest.mark.redis
def test_memberships_added_by_another_process_leave_with_the_socket(redis_url):
    """A separate runworker (another process, not the socket's) adds the socket to a group
    and a presence: the socket's process learns it, and takes it out when it closes."""
    channels = {"gc.owner!ws1", "gc.owner!ws2"}
    owner = serving(redis_url, "gc.owner!", channels)
    worker = RedisChannelLayer(hosts=[redis_url], channel_capacity={EVENTS: 1000})
    try:
        for channel in sorted(channels):
            Group(ROOM, channel_layer=worker).add(channel)
            Presence(ROOM, events=EVENTS, channel_layer=worker).track(channel, {"c": channel})
        Group(ROOM, channel_layer=worker).discard("gc.owner!ws2")
        assert len(events(worker, 2)) == 2
        wait_until(
            lambda: (
                owner.memberships.groups == {"gc.owner!ws1": {ROOM}}
                and set(owner.memberships.tracked) == channels
            )
        )

        channels.discard("gc.owner!ws1")
        owner.memberships.closed("gc.owner!ws1")
        assert worker.group_channels(ROOM) == []
        assert Presence(ROOM, channel_layer=worker).members() == [{"c": "gc.owner!ws2"}]
        assert events(worker, 1)[0]["channel"] == "gc.owner!ws1"
    finally:
        owner.close()
        worker.close()


@pytest.mark.redis
def test_a_stopping_server_returns_its_lease(redis_url):
    layer = RedisChannelLayer(hosts=[redis_url])
    try:
        with live_server(ROUTES, layer=layer) as server:
            prefix = server.app.reply_prefix
            connect(server)
            client = redis.Redis.from_url(redis_url)
            wait_until(lambda: client.zscore("asgi:leases", prefix) is not None)
        assert client.zrange("asgi:leases", 0, -1) == []
        assert client.keys("asgi:owned:*") == []
        assert layer.group_channels(ROOM) == []
    finally:
        layer.close()
