"""Live groups with real gunicorn workers on a real Redis: 200 sockets in a room (group and
presence) spread over 3 workers of tests/runmodes/groupsproject, which has no disconnect
consumer.

- One worker is SIGKILLed: its sockets leave the group and the presence within
  GROUP_LEASE_TIMEOUT (15 s), a leave event is sent for each, the others keep receiving.
- Redis is restarted empty: within 5 s of its return, group sends reach all 200 sockets
  again (counted by the clients), and the presence lists them all.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import gevent
import pytest
import redis
import websocket

from geventchannels.exceptions import ChannelLayerUnavailable
from geventchannels.layers import RedisChannelLayer
from geventchannels.presence import Presence

from .conftest import RedisServer, free_port
from .runmodes.process import BIN, ServerProcess, http_json

pytestmark = [pytest.mark.redis, pytest.mark.timeout(150)]

SOCKETS = 200
WORKERS = 3
ROOM = "room"
EVENTS = "room.events"
BOUND = 15.0  # GROUP_LEASE_TIMEOUT's default


class Client:
    """One socket of the room, read by its own greenlet: what it received and when."""

    def __init__(self, port: int, user: str):
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/room/?user={user}", timeout=15
        )
        self.channel: str = json.loads(self.ws.recv())["channel"]
        #: The reply prefix of the worker that holds the socket.
        self.server = self.channel.partition("!")[0] + "!"
        self.received: list[tuple[float, str]] = []
        self.ws.settimeout(None)
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        try:
            while True:
                text = self.ws.recv()
                if not text:
                    return
                self.received.append((time.monotonic(), text))
        except (websocket.WebSocketException, OSError):
            return

    def got(self, text: str) -> bool:
        return any(t == text for _, t in self.received)

    def close(self) -> None:
        self.reader.kill(block=False)
        try:
            self.ws.close(timeout=1)
        except (websocket.WebSocketException, OSError):
            pass


def wait_for(predicate, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        gevent.sleep(0.05)
    return time.monotonic() - started


def worker_pids(port: int, prefixes: set[str]) -> dict[str, int]:
    """The pid of the worker behind each reply prefix (HTTP requests spread over the
    workers like the sockets do)."""
    pids: dict[str, int] = {}
    deadline = time.monotonic() + 20
    while set(pids) != prefixes:
        assert time.monotonic() < deadline, f"found only {pids} of {prefixes}"
        who = http_json(port, "/whoami/")
        pids[who["prefix"]] = who["pid"]
    return pids


def read_events(layer: RedisChannelLayer, count: int, timeout: float = 20) -> list[dict]:
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{len(seen)} of {count} presence events"
        channel, message = layer.receive([EVENTS], block=True, timeout=remaining)
        if channel is not None:
            seen.append(message)
    return seen


@pytest.fixture
def room(request) -> Iterator[tuple[ServerProcess, list[Client], RedisChannelLayer, RedisServer]]:
    """3 gunicorn workers on a private Redis, 200 clients in the room, the 200 join events
    read; yields (server, clients, a layer of the test's own, the Redis)."""
    redis_server = RedisServer()
    port = free_port()
    command = [
        str(BIN / "gunicorn"),
        "-k",
        "geventchannels.gunicorn.Worker",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        str(WORKERS),
        "--reuse-port",
        "--no-control-socket",
        "--graceful-timeout",
        "5",
        "groupsproject.wsgi",
    ]
    server = ServerProcess(command, port, {"GP_REDIS_URL": redis_server.url})
    layer = RedisChannelLayer(hosts=[redis_server.url], channel_capacity={EVENTS: 5000})
    clients: list[Client] = []
    try:
        server.wait_until(
            lambda: server.output.count("consumers on:") >= WORKERS, what="3 workers ready"
        )
        clients.extend(Client(port, f"u{n}") for n in range(SOCKETS))
        servers = {client.server for client in clients}
        assert len(servers) == WORKERS, f"the sockets reached {len(servers)} workers"
        server.pids = worker_pids(port, servers)  # type: ignore[attr-defined]
        joins = read_events(layer, SOCKETS)
        assert {e["channel"] for e in joins} == {c.channel for c in clients}
        assert {e["event"] for e in joins} == {"join"}
        assert len(layer.group_channels(ROOM)) == SOCKETS
        assert len(Presence(ROOM, channel_layer=layer).members()) == SOCKETS
        # The consumer that added a socket may run in another worker than the socket's:
        # wait until each worker has learnt what others added for its sockets.
        changes = redis.Redis(port=redis_server.port)
        wait_for(lambda: not changes.keys("asgi:remote:*"), 10, "changes learnt by the owners")
        yield server, clients, layer, redis_server
    finally:
        for client in clients:
            client.close()
        server.kill()
        layer.close()
        redis_server.stop()


def test_a_killed_workers_sockets_leave_the_room_within_the_bound(room):
    server, clients, layer, _redis = room
    victim = max(server.pids, key=lambda prefix: sum(c.server == prefix for c in clients))
    gone = {c.channel for c in clients if c.server == victim}
    staying = [c for c in clients if c.server != victim]
    members = Presence(ROOM, channel_layer=layer)

    os.kill(server.pids[victim], signal.SIGKILL)
    try:
        elapsed = wait_for(
            lambda: (
                len(layer.group_channels(ROOM)) == len(staying)
                and len(members.members()) == len(staying)
            ),
            BOUND + 5,
            "purge of the killed worker's sockets",
        )
    except AssertionError as error:
        counts = (len(layer.group_channels(ROOM)), len(members.members()), len(staying))
        raise AssertionError(f"{error}: {counts}; output:\n{server.output}") from None
    assert elapsed <= BOUND, f"purged after {elapsed:.1f} s"
    assert set(layer.group_channels(ROOM)) == {c.channel for c in staying}
    leaves = read_events(layer, len(gone))
    assert {e["event"] for e in leaves} == {"leave"}
    assert {e["channel"] for e in leaves} == gone
    users = {c.channel: f"u{n}" for n, c in enumerate(clients)}
    assert {e["meta"]["user"] for e in leaves} == {users[channel] for channel in gone}
    # Logged by the purging worker after the events it sent, so it may come just after them.
    server.wait_output("purged %d membership(s)" % (2 * len(gone)), timeout=10)

    staying[0].ws.send("broadcast:after the kill")
    wait_for(
        lambda: all(c.got("broadcast:after the kill") for c in staying),
        10,
        "broadcast to every remaining socket",
    )
    assert layer.receive([EVENTS]) == (None, None)  # each leave announced once


def test_group_sends_reach_every_socket_again_soon_after_redis_restarts_empty(room):
    server, clients, layer, redis_server = room
    port = redis_server.port
    redis_server.stop()
    gevent.sleep(1)  # the sockets stay open; Redis is gone
    restarted = RedisServer(port=port)
    returned = time.monotonic()
    try:
        n = 0

        def everyone_got_a_ping() -> bool:
            nonlocal n
            n += 1
            try:
                layer.send_group(ROOM, {"text": f"ping:{n}"})
            except ChannelLayerUnavailable:
                pass
            gevent.sleep(0.2)
            return all(any(t.startswith("ping:") for _, t in c.received) for c in clients)

        wait_for(everyone_got_a_ping, 10, "ping reaching all 200 sockets")
        firsts = [min(at for at, t in c.received if t.startswith("ping:")) for c in clients]
        assert max(firsts) - returned <= 5.0, f"last socket reached {max(firsts) - returned:.1f} s"
        assert len(layer.group_channels(ROOM)) == SOCKETS
        assert len(Presence(ROOM, channel_layer=layer).members()) == SOCKETS
        # No leave was announced, so the re-assertion announces no join either.
        assert layer.receive([EVENTS]) == (None, None)
        assert all(c.reader and not c.reader.dead for c in clients), "sockets closed"
    finally:
        restarted.stop()
