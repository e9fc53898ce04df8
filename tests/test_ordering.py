"""@enforce_ordering: a socket's messages run in ``order`` sequence whatever order they
arrive in and however many greenlets the pool runs at once; early ones wait in the layer
without a loop and run as soon as their turn comes."""

from __future__ import annotations

import random
import secrets
import time

import gevent
import pytest
import websocket
from gevent.event import Event

from geventchannels.asgi import ChannelLayerWrapper
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.message import Message
from geventchannels.routing import route
from geventchannels.sessions import cache, enforce_ordering
from geventchannels.worker import Worker
from tests.project import auth_routing

from .dbfile import file_database
from .livesrv import live_server


@pytest.fixture(autouse=True)
def database():
    file_database()


def test_slight_ordering_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="ORDERED_DISPATCH"):
        enforce_ordering(slight=True)
    with pytest.raises(ValueError, match="slight"):

        @enforce_ordering(slight=True)
        def consumer(message):
            pass


def test_a_message_without_order_is_refused():
    @enforce_ordering()
    def consumer(message):
        pass

    layer = InMemoryChannelLayer()
    with pytest.raises(ValueError, match="order"):
        consumer(Message({"reply_channel": "websocket.send!x"}, "websocket.receive", layer))


class Pool:
    """A real consumer pool on an in-memory layer, and the (socket, order) of each message
    its ordered consumer ran, in the order they ran."""

    def __init__(self, concurrency: int, ordered: bool, fail_on: int | None = None) -> None:
        self.layer = InMemoryChannelLayer(capacity=5000)
        self.runs: list[tuple[str, int]] = []
        self.done = Event()
        self.expected = 0

        @enforce_ordering
        def consumer(message):
            gevent.sleep(0.0005 * (message["order"] % 4))
            self.runs.append((message["reply_channel"], message["order"]))
            if len(self.runs) == self.expected:
                self.done.set()
            if message["order"] == fail_on:
                raise RuntimeError("this consumer fails")

        routes = [route("websocket.connect", consumer), route("websocket.receive", consumer)]
        self.worker = Worker(
            ChannelLayerWrapper(self.layer, "default", routes),
            concurrency=concurrency,
            ordered=ordered,
        )

    def send(self, messages) -> None:
        for reply, order in messages:
            channel = "websocket.connect" if order == 0 else "websocket.receive"
            self.layer.send(channel, {"reply_channel": reply, "path": "/", "order": order})

    def run(self, timeout: float = 30) -> dict[str, list[int]]:
        """Run until every sent message ran; the orders each socket's messages ran in."""
        self.expected = self.layer.global_statistics()["messages_count"]
        self.worker.start()
        try:
            assert self.done.wait(timeout), f"{len(self.runs)} of {self.expected} ran"
        finally:
            self.worker.stop(2)
            self.layer.close()
        by_socket: dict[str, list[int]] = {}
        for reply, order in self.runs:
            by_socket.setdefault(reply, []).append(order)
        return by_socket


def new_reply() -> str:
    return "websocket.send!" + secrets.token_urlsafe(16)


@pytest.mark.parametrize("ordered_dispatch", [True, False])
def test_reversed_arrival_is_replayed_in_order(ordered_dispatch):
    pool = Pool(concurrency=50, ordered=ordered_dispatch)
    reply = new_reply()
    pool.send((reply, order) for order in reversed(range(200)))
    assert pool.run() == {reply: list(range(200))}
    # Early messages waited in the layer: each was parked and put back once, not retried
    # in a loop (200 sent, at most 200 parked and 200 put back).
    moved = pool.layer.global_statistics()["messages_count"]
    assert moved <= 200 * 3, moved


def test_shuffled_messages_of_many_sockets_each_run_in_their_order():
    pool = Pool(concurrency=50, ordered=False)
    replies = [new_reply() for _ in range(20)]
    messages = [(reply, order) for reply in replies for order in range(50)]
    random.Random(7).shuffle(messages)
    pool.send(messages)
    assert pool.run() == {reply: list(range(50)) for reply in replies}


def test_a_failing_consumer_does_not_stall_the_socket():
    pool = Pool(concurrency=10, ordered=False, fail_on=3)
    reply = new_reply()
    pool.send((reply, order) for order in reversed(range(8)))
    assert pool.run() == {reply: list(range(8))}


@pytest.mark.parametrize("ordered_dispatch", [False, True])
def test_a_thousand_frames_of_one_socket_run_in_order_with_50_greenlets(ordered_dispatch):
    auth_routing.ORDERED_RUNS.clear()
    cache.clear()
    layer = InMemoryChannelLayer(capacity=2000)
    with live_server(
        auth_routing.channel_routing,
        layer=layer,
        worker_concurrency=50,
        ORDERED_DISPATCH=ordered_dispatch,
    ) as server:
        ws = websocket.create_connection(server.ws_url + "/ordered/", timeout=30)
        started = time.monotonic()
        for n in range(1000):
            ws.send(str(n))
        ws.send("last")
        assert ws.recv() == "done"
        elapsed = time.monotonic() - started
        ws.close()
    (runs,) = auth_routing.ORDERED_RUNS.values()
    assert runs == [str(n) for n in range(1000)] + ["last"]
    assert elapsed < 20
