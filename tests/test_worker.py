"""The consumer pool, run for real on the in-memory layer."""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict

import gevent
import pytest
from django.test import override_settings
from gevent.event import Event

from geventchannels import Channel
from geventchannels.asgi import ChannelLayerWrapper
from geventchannels.exceptions import (
    ChannelFull,
    ConsumeLater,
    DenyConnection,
    WebsocketCloseException,
)
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.routing import route
from geventchannels.signals import consumer_finished, consumer_started, worker_ready
from geventchannels.worker import Worker

pytestmark = pytest.mark.timeout(30)


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f} s")
        gevent.sleep(0.005)


class Pool:
    """A started Worker over a fresh layer and the given routes; stopped on exit."""

    def __init__(self, routes, layer=None, **options):
        self.layer = layer or InMemoryChannelLayer()
        self.wrapper = ChannelLayerWrapper(self.layer, "default", routes)
        self.worker = Worker(self.wrapper, **options)

    def __enter__(self):
        self.worker.start()
        return self

    def __exit__(self, *exc):
        self.worker.stop(timeout=5)


def test_dispatch_with_kwargs_and_reply():
    seen = []

    def chat(message, room):
        seen.append((message.channel.name, room, message["text"]))
        message.reply_channel.send({"text": "echo " + message["text"]})

    routes = [route("websocket.receive", chat, path=r"^/chat/(?P<room>\w+)/$")]
    with Pool(routes, concurrency=4) as pool:
        pool.layer.send(
            "websocket.receive", {"path": "/chat/lobby/", "text": "hi", "reply_channel": "reply.1"}
        )
        assert pool.layer.receive(["reply.1"], block=True, timeout=5) == (
            "reply.1",
            {"text": "echo hi"},
        )
    assert seen == [("websocket.receive", "lobby", "hi")]


def test_default_routes_accept_websocket():
    with Pool([], concurrency=1) as pool:
        pool.layer.send("websocket.connect", {"path": "/", "reply_channel": "reply.2"})
        assert pool.layer.receive(["reply.2"], block=True, timeout=5) == (
            "reply.2",
            {"accept": True},
        )


def test_channel_filters():
    routes = [route(["a.one", "a.two", "b.one"], lambda message: None)]
    pool = Pool(routes, only_channels=["a.*", "b.*"], exclude_channels=["a.two"])
    assert pool.worker.channels == ["a.one", "b.one"]
    pool = Pool(routes, only_channels=["nothing.*"])
    with pytest.raises(ValueError, match="no channel to listen on"):
        pool.worker.start()


def test_consume_later_puts_message_back():
    calls = []
    done = Event()

    def later(message):
        calls.append(message.get("__retries__", 0))
        if len(calls) < 3:
            raise ConsumeLater()
        done.set()

    with Pool([route("test.later", later)], concurrency=2) as pool:
        pool.layer.send("test.later", {"n": 1})
        assert done.wait(5)
    assert calls == [0, 1, 2]


@override_settings(GEVENTCHANNELS={"CONSUME_LATER_LIMIT": 3})
def test_consume_later_limit_drops_with_warning(caplog):
    calls = []

    def never(message):
        calls.append(1)
        raise ConsumeLater()

    caplog.set_level(logging.WARNING, logger="geventchannels.worker")
    with Pool([route("test.later", never)], concurrency=2) as pool:
        pool.layer.send("test.later", {"n": 1})
        wait_for(lambda: "CONSUME_LATER_LIMIT" in caplog.text)
        assert pool.layer.receive(["test.later"]) == (None, None)
    assert len(calls) == 4


def test_exception_is_logged_and_pool_keeps_running(caplog):
    done = Event()

    def fragile(message):
        if message["fail"]:
            Channel("test.out").send({"never": True})
            raise KeyError("boom")
        done.set()

    with Pool([route("test.fragile", fragile)], concurrency=1) as pool:
        pool.layer.send("test.fragile", {"fail": True})
        pool.layer.send("test.fragile", {"fail": False})
        assert done.wait(5)
        assert pool.layer.receive(["test.out"]) == (None, None)
    record = next(r for r in caplog.records if r.name == "geventchannels.worker")
    assert record.levelno == logging.ERROR and record.exc_info[0] is KeyError
    assert "tests.test_worker.test_exception_is_logged_and_pool_keeps_running.<locals>.fragile" in (
        record.getMessage()
    )
    assert "test.fragile" in record.getMessage()


def test_unrouted_message_is_logged(caplog):
    done = Event()
    routes = [route("test.f", lambda message: done.set(), path=r"^/yes/$")]
    with Pool(routes, concurrency=1) as pool:
        pool.layer.send("test.f", {"path": "/no/"})
        pool.layer.send("test.f", {"path": "/yes/"})
        assert done.wait(5)
    assert "no route matches the message on test.f" in caplog.text


def test_socket_exception_runs_and_flushes_first():
    def closer(message):
        message.reply_channel.send({"text": "bye"})
        raise WebsocketCloseException(4001)

    def denier(message):
        message.reply_channel.send({"accept": True})
        raise DenyConnection()

    routes = [route("websocket.receive", closer), route("websocket.connect", denier)]
    with Pool(routes, concurrency=2) as pool:
        pool.layer.send("websocket.receive", {"reply_channel": "reply.3", "text": "x"})
        receive = pool.layer.receive
        assert receive(["reply.3"], block=True, timeout=5) == ("reply.3", {"text": "bye"})
        assert receive(["reply.3"], block=True, timeout=5) == ("reply.3", {"close": 4001})
        pool.layer.send("websocket.connect", {"reply_channel": "reply.4"})
        assert receive(["reply.4"], block=True, timeout=5) == ("reply.4", {"close": True})
        assert receive(["reply.4"]) == (None, None)


def test_signals_fire_around_each_consumer():
    events = []

    def started(sender, environ, **kwargs):
        events.append(("started", sender))

    def finished(sender, **kwargs):
        events.append(("finished", sender))

    def ready(sender, **kwargs):
        events.append(("ready", sender))

    def consumer(message):
        events.append(("consumer", message["n"]))

    consumer_started.connect(started)
    consumer_finished.connect(finished)
    worker_ready.connect(ready)
    try:
        with Pool([route("test.sig", consumer)], concurrency=1) as pool:
            pool.layer.send("test.sig", {"n": 1})
            wait_for(lambda: len(events) >= 4)
    finally:
        consumer_started.disconnect(started)
        consumer_finished.disconnect(finished)
        worker_ready.disconnect(ready)
    assert events == [
        ("ready", pool.worker),
        ("started", Worker),
        ("consumer", 1),
        ("finished", Worker),
    ]


@pytest.mark.timeout(20)
def test_ordering_per_reply_channel_under_concurrency():
    sockets, per_socket = 6, 40
    running: set[str] = set()
    seen: dict[str, list[int]] = defaultdict(list)
    overlaps = []
    rng = random.Random(7)

    def consumer(message):
        reply = message["reply_channel"]
        if reply in running:
            overlaps.append(reply)
        running.add(reply)
        gevent.sleep(rng.random() * 0.002)
        seen[reply].append(message["seq"])
        running.discard(reply)

    layer = InMemoryChannelLayer(capacity=1000)
    with Pool([route("test.ordered", consumer)], layer=layer, concurrency=20, ordered=True):
        for seq in range(per_socket):
            for socket in range(sockets):
                layer.send("test.ordered", {"reply_channel": f"r.{socket}", "seq": seq})
        wait_for(lambda: sum(map(len, seen.values())) == sockets * per_socket, timeout=15)
    assert overlaps == []
    assert {reply: order for reply, order in seen.items()} == {
        f"r.{socket}": list(range(per_socket)) for socket in range(sockets)
    }


def test_unordered_dispatch_runs_one_socket_concurrently():
    gate = Event()
    running = []

    def consumer(message):
        running.append(1)
        gate.wait(5)

    with Pool([route("test.u", consumer)], concurrency=3, ordered=False) as pool:
        for _ in range(3):
            pool.layer.send("test.u", {"reply_channel": "r.1"})
        wait_for(lambda: len(running) == 3)
        gate.set()


def test_pending_messages_of_one_socket_are_bounded(caplog):
    gate = Event()
    seen = []

    def consumer(message):
        gate.wait(10)
        seen.append(message["seq"])

    layer = InMemoryChannelLayer(channel_capacity={"websocket.receive": 3})
    with Pool([route("websocket.receive", consumer)], layer=layer, concurrency=4) as pool:
        for seq in range(5):
            layer.send("websocket.receive", {"reply_channel": "reply.5", "seq": seq})
            wait_for(lambda: layer.channel_statistics("websocket.receive")["messages_pending"] == 0)
        assert pool.layer.receive(["reply.5"]) == ("reply.5", {"close": 1013})
        gate.set()
        wait_for(lambda: len(seen) == 4)
    assert seen == [0, 1, 2, 3]
    assert "3 messages of reply.5 already wait" in caplog.text


def test_flooded_channel_does_not_starve_another():
    handled = []
    other_seen = Event()

    def consumer(message):
        handled.append(message.channel.name)
        if message.channel.name == "test.other":
            other_seen.set()

    layer = InMemoryChannelLayer(capacity=5000)
    for n in range(3000):
        layer.send("test.flood", {"n": n})
    layer.send("test.other", {})
    with Pool([route(["test.flood", "test.other"], consumer)], layer=layer, concurrency=1):
        assert other_seen.wait(5)
    assert handled.index("test.other") < 5


def test_graceful_stop_waits_for_running_consumer():
    started = Event()
    release = Event()
    finished = []

    def slow(message):
        started.set()
        release.wait(10)
        finished.append(message["n"])

    with Pool([route("test.slow", slow)], concurrency=2) as pool:
        pool.layer.send("test.slow", {"n": 1})
        assert started.wait(5)
        stopper = gevent.spawn(pool.worker.stop, 5)
        stopper.join(0.2)
        assert not stopper.ready() and finished == []
        pool.layer.send("test.slow", {"n": 2})
        release.set()
        stopper.get(timeout=5)
        assert finished == [1]
        assert not pool.worker.running
        assert pool.layer.receive(["test.slow"]) == ("test.slow", {"n": 2})


def test_stop_right_after_start_is_quick():
    pool = Pool([route("test.x", lambda message: None)], concurrency=3)
    pool.worker.start()
    began = time.monotonic()
    pool.worker.stop(timeout=5)
    assert time.monotonic() - began < 2 and not pool.worker.running


def test_stop_kills_consumers_past_timeout(caplog):
    started = Event()

    def stuck(message):
        started.set()
        gevent.sleep(60)

    pool = Pool([route("test.stuck", stuck)], concurrency=1)
    pool.worker.start()
    pool.layer.send("test.stuck", {})
    assert started.wait(5)
    began = time.monotonic()
    pool.worker.stop(timeout=0.3)
    assert time.monotonic() - began < 3
    assert not pool.worker.running
    assert "still running after 0.3 s" in caplog.text


@pytest.mark.timeout(60)
def test_acceptance_100k_messages_50_greenlets_none_lost_or_duplicated():
    """The issue's acceptance test: 50 consumer greenlets, 100,000 messages, each
    consumed exactly once, and in order for each reply channel."""
    total, sockets = 100_000, 500
    seen: list[int] = []
    last_seq: dict[str, int] = {}
    out_of_order = []
    all_done = Event()

    def record(message):
        number = message["id"]
        seen.append(number)
        reply = message["reply_channel"]
        if last_seq.get(reply, -1) > number:
            out_of_order.append(number)
        last_seq[reply] = number
        if len(seen) == total:
            all_done.set()

    layer = InMemoryChannelLayer(capacity=2000)
    pool = Pool([route("test.bulk", record)], layer=layer, concurrency=50, ordered=True)

    def produce():
        send = layer.send
        for number in range(total):
            message = {"id": number, "reply_channel": f"r.{number % sockets}"}
            while True:
                try:
                    send("test.bulk", message)
                    break
                except Exception:
                    gevent.sleep(0)

    began = time.monotonic()
    with pool:
        producer = gevent.spawn(produce)
        assert all_done.wait(45), f"only {len(seen)} of {total} messages consumed"
        producer.get(timeout=5)
    elapsed = time.monotonic() - began
    assert len(seen) == total
    assert len(set(seen)) == total
    assert out_of_order == []
    print(
        f"\n{total} messages through 50 consumer greenlets in {elapsed:.2f} s "
        f"({total / elapsed:.0f} msg/s)"
    )


def test_consumer_can_stop_its_own_pool():
    stopped = Event()
    holder = {}

    def stopper(message):
        holder["worker"].stop(timeout=5)
        stopped.set()

    pool = Pool([route("test.stop", stopper)], concurrency=2)
    holder["worker"] = pool.worker
    pool.worker.start()
    began = time.monotonic()
    pool.layer.send("test.stop", {})
    assert stopped.wait(5)
    assert pool.worker.join(timeout=5)
    assert time.monotonic() - began < 3


def test_start_names_the_channels_it_consumes_at_info(caplog):
    """Every run mode starts a Worker, so this one line tells what the process consumes
    (the default websocket.connect and websocket.disconnect routes included)."""
    caplog.set_level(logging.INFO, logger="geventchannels.worker")
    routes = [route("websocket.receive", lambda message: None), route("tasks", lambda m: None)]
    with Pool(routes, concurrency=3):
        pass
    lines = [r for r in caplog.records if r.name == "geventchannels.worker"]
    assert [(r.levelno, r.getMessage()) for r in lines[:1]] == [
        (
            logging.INFO,
            "consumers on: tasks, websocket.connect, websocket.disconnect, websocket.receive "
            "(3 greenlets)",
        )
    ]


def test_a_started_pool_means_messages_are_consumed_so_nothing_warns(caplog):
    caplog.set_level(logging.WARNING, logger="geventchannels.layers.inmemory")
    done = Event()
    layer = InMemoryChannelLayer()
    pool = Pool([route("tasks", lambda message: done.set())], layer=layer, concurrency=1)
    pool.worker.start()
    try:
        for _ in range(3):  # more than the one free consumer takes at once: some are queued
            layer.send("tasks", {})
        assert done.wait(5)
    finally:
        pool.worker.stop(timeout=5)
    assert [r for r in caplog.records if r.name == "geventchannels.layers.inmemory"] == []


# -- local first: messages offered by the server of this process --------------------------


def test_offered_messages_run_in_order_per_socket_and_once():
    seen = defaultdict(list)

    def consumer(message):
        gevent.sleep(random.random() / 1000)
        seen[message["reply_channel"]].append(message["n"])

    with Pool([route("t.offered", consumer)], concurrency=5) as pool:
        assert pool.worker.takes("t.offered") and not pool.worker.takes("t.other")
        for n in range(100):
            for socket in range(20):
                while True:
                    try:
                        pool.worker.offer("t.offered", {"reply_channel": f"s!{socket}", "n": n})
                        break
                    except ChannelFull:
                        gevent.sleep(0.001)
        wait_for(lambda: sum(map(len, seen.values())) == 2000)
    assert all(numbers == list(range(100)) for numbers in seen.values())
    assert not pool.worker.takes("t.offered")  # stopped: the server sends through the layer


def test_offered_messages_wait_in_a_queue_of_the_channels_capacity():
    gate = Event()
    layer = InMemoryChannelLayer(channel_capacity={"t.queued": 2})
    with Pool([route("t.queued", lambda message: gate.wait(10))], layer, concurrency=1) as pool:
        pool.worker.offer("t.queued", {"n": 0})  # runs, waits at the gate
        pool.worker.offer("t.queued", {"n": 1})
        pool.worker.offer("t.queued", {"n": 2})
        with pytest.raises(ChannelFull):
            pool.worker.offer("t.queued", {"n": 3})
        stats = layer.channel_statistics("t.queued")
        assert stats["messages_pending"] == 2 and stats["channel_full_count"] == 1
        assert stats["messages_count"] == 3
        gate.set()
        wait_for(lambda: layer.channel_statistics("t.queued")["messages_pending"] == 0)
        pool.worker.offer("t.queued", {"n": 4})


def test_stopping_runs_the_messages_waiting_in_the_queue():
    done = []

    def slow(message):
        gevent.sleep(0.02)
        done.append(message["n"])

    pool = Pool([route("t.drain", slow)], concurrency=1)
    pool.worker.start()
    for n in range(5):
        pool.worker.offer("t.drain", {"n": n})
    pool.worker.stop(timeout=5)
    assert done == [0, 1, 2, 3, 4]
