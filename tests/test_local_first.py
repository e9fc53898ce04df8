"""Local first: the messages of a server's own sockets go straight to its consumer pool.

Over real sockets with the real server in-process: on Redis a socket's round trips cost
no Redis command; the pool's queue keeps the capacity rules of a channel (a handshake
that finds it full waits, then gets 503; a socket whose consumer is stuck waits alone,
then gets 1013); ConsumeLater and statistics keep their meaning; the layer's messages
still get consumers while sockets flood the pool.
"""

from __future__ import annotations

import json
import time

import gevent
import pytest
import redis
import websocket
from gevent.event import Event

from geventchannels import Channel
from geventchannels.exceptions import ConsumeLater
from geventchannels.layers import InMemoryChannelLayer, RedisChannelLayer
from geventchannels.routing import route
from tests.conftest import RedisServer
from tests.layers.conftest import wait_until
from tests.livesrv import close_code, live_server

pytestmark = pytest.mark.timeout(60)


def echo(message) -> None:
    message.reply_channel.send({"text": message["text"]})


def connect(server, path: str = "/", timeout: float = 5) -> websocket.WebSocket:
    return websocket.create_connection(server.ws_url + path, timeout=timeout)


@pytest.fixture(scope="module")
def redis_server():
    """A redis-server of this module's own: the command counts read from it must be this
    module's, not those of layers that other test files of the same worker process may
    still run (lease rounds, statistics flushes) on the session's server."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


def command_calls(client: redis.Redis) -> dict[str, int]:
    return {
        name.removeprefix("cmdstat_"): int(fields["calls"])
        for name, fields in client.info("commandstats").items()
    }


@pytest.mark.redis
def test_round_trips_of_a_socket_cost_no_redis_command(redis_url):
    client = redis.Redis.from_url(redis_url)
    layer = RedisChannelLayer(hosts=[redis_url])
    with live_server([route("websocket.receive", echo)], layer=layer) as server:
        sockets = [connect(server) for _ in range(5)]
        for ws in sockets:  # connected, and the pool's receiver is blocked in Redis
            ws.send("warm")
            assert ws.recv() == "warm"
        before = command_calls(client)
        for n in range(50):
            for ws in sockets:
                ws.send(f"m{n}")
            assert [ws.recv() for ws in sockets] == [f"m{n}"] * 5
        after = command_calls(client)
        for ws in sockets:
            ws.close()
    used = {name: after[name] - before.get(name, 0) for name in after}
    # 250 round trips: only the batched statistics (a script call per half second) and the
    # receiver's blocking pop renewing itself (every 5 s) may show up.
    assert used.get("evalsha", 0) <= 10, used
    assert used.get("blmpop", 0) + used.get("lmpop", 0) <= 4, used
    assert layer.channel_statistics("websocket.receive")["messages_count"] == 255


def test_statistics_count_the_messages_the_pool_took_directly():
    layer = InMemoryChannelLayer()
    with live_server([route("websocket.receive", echo)], layer=layer) as server:
        ws = connect(server)
        for n in range(10):
            ws.send(f"m{n}")
            assert ws.recv() == f"m{n}"
        stats = layer.channel_statistics("websocket.receive")
        assert stats["messages_count"] == 10 and stats["messages_pending"] == 0
        ws.close()


def test_a_handshake_that_finds_the_pool_queue_full_waits_then_gets_503():
    gate = Event()

    def slow_accept(message) -> None:
        gate.wait(20)
        message.reply_channel.send({"accept": True})

    layer = InMemoryChannelLayer(channel_capacity={"websocket.connect": 1})
    with live_server(
        [route("websocket.connect", slow_accept)],
        layer=layer,
        worker_concurrency=1,
        WEBSOCKET_HANDSHAKE_TIMEOUT=10,
    ) as server:
        running = gevent.spawn(connect, server, "/one/", 15)  # its consumer waits at the gate
        wait_until(lambda: layer.channel_statistics("websocket.connect")["messages_count"] == 1)
        queued = gevent.spawn(connect, server, "/two/", 15)  # waits in the pool's queue
        wait_until(lambda: layer.channel_statistics("websocket.connect")["messages_pending"] == 1)
        started = time.monotonic()
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            connect(server, "/three/")
        assert refused.value.status_code == 503
        assert 0.8 < time.monotonic() - started < 5  # it waited for room first
        assert layer.channel_statistics("websocket.connect")["channel_full_count"] > 0
        gate.set()
        for opening in (running, queued):
            ws = opening.get(timeout=10)
            assert ws.connected
            ws.close()


def test_a_socket_whose_consumer_is_stuck_waits_alone_then_gets_1013():
    gate = Event()

    def stuck_or_echo(message) -> None:
        if message["path"] == "/stuck/":
            gate.wait(20)
        echo(message)

    layer = InMemoryChannelLayer(channel_capacity={"websocket.receive": 2})
    with live_server(
        [route("websocket.receive", stuck_or_echo)], layer=layer, worker_concurrency=4
    ) as server:
        other = connect(server, "/other/")
        stuck = connect(server, "/stuck/")
        started = time.monotonic()
        for n in range(5):  # one runs, two wait behind it, the fourth finds no room
            stuck.send(f"s{n}")
        gevent.sleep(0.2)
        for n in range(5):  # the other socket is not held up by the stuck one's wait
            other.send(f"o{n}")
            assert other.recv() == f"o{n}"
        assert time.monotonic() - started < 0.9
        assert close_code(stuck) == 1013
        assert 0.9 < time.monotonic() - started < 5
        gate.set()
        other.close()


def test_consume_later_puts_an_offered_message_back_and_it_runs_again():
    attempts: list[dict] = []

    def later_once(message) -> None:
        attempts.append(dict(message.content))
        if message["text"] == "first" and len(attempts) == 1:
            raise ConsumeLater()
        echo(message)

    with live_server([route("websocket.receive", later_once)]) as server:
        ws = connect(server)
        ws.send("first")
        assert ws.recv() == "first"
        ws.send("second")
        assert ws.recv() == "second"
        ws.close()
    assert [a["text"] for a in attempts] == ["first", "first", "second"]
    assert attempts[1]["__retries__"] == 1


def test_the_layers_messages_still_run_while_sockets_keep_the_pool_busy():
    """Two consumer greenlets and eight sockets, each sending its next message as soon as
    the last is answered, so that offered messages always wait for a greenlet: tasks
    sent on a named channel through the layer run while that goes on."""
    tasks_done: list[float] = []
    replies = {"count": 0}

    def slow_echo(message) -> None:
        gevent.sleep(0.002)
        echo(message)

    def task(message) -> None:
        tasks_done.append(time.monotonic())

    stop = Event()
    with live_server(
        [route("websocket.receive", slow_echo), route("lf.tasks", task)],
        worker_concurrency=2,
    ) as server:
        sockets = [connect(server, timeout=20) for _ in range(8)]

        def keep_busy(ws) -> None:
            while not stop.is_set():
                ws.send("x")
                ws.recv()
                replies["count"] += 1

        busy = [gevent.spawn(keep_busy, ws) for ws in sockets]
        wait_until(lambda: replies["count"] > 50, what="busy sockets")
        # The first task wakes the pool's receiver, which then has to wait for a turn.
        for n in range(10):
            Channel("lf.tasks").send({"n": n})
            gevent.sleep(0.02)
        wait_until(lambda: len(tasks_done) == 10, timeout=10, what="tasks")
        stop.set()
        gevent.joinall(busy, timeout=10, raise_error=True)
        for ws in sockets:
            ws.close()


def test_a_server_without_a_pool_sends_through_the_layer():
    layer = InMemoryChannelLayer()
    with live_server([], layer=layer, run_worker=False) as server:
        opening = gevent.spawn(connect, server)
        channel, message = layer.receive(["websocket.connect"], block=True, timeout=5)
        layer.send(message["reply_channel"], {"accept": True})
        ws = opening.get(timeout=5)
        ws.send(json.dumps({"n": 1}))
        channel, message = layer.receive(["websocket.receive"], block=True, timeout=5)
        assert channel == "websocket.receive" and json.loads(message["text"]) == {"n": 1}
        ws.close()
