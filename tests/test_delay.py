"""Delayed messages (asgi.delay) in one process, on the in-memory layer and on a real Redis:
never early, woken by an earlier message, bad input dropped with one log line each, the
Channel.send(delay=) spelling, the consumer pool's service, statistics. The Redis-only
parts: messages waiting while no service ran, two shards, a claim left by a dead process,
encryption. Several processes: test_delay_processes.py."""

from __future__ import annotations

import logging
import random
import time

import gevent
import pytest
from django.test import override_settings

from geventchannels import delay
from geventchannels.asgi import ChannelLayerWrapper
from geventchannels.channel import Channel
from geventchannels.delay import on_redis
from geventchannels.exceptions import InvalidChannelName
from geventchannels.layers import RedisChannelLayer
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.routing import route
from geventchannels.worker import Worker

from .conftest import RedisServer
from .runmodes.process import ServerProcess, manage

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_layer(request):
    """Builds layers of the parametrized kind (Redis ones on one private server); all are
    closed at the end."""
    layers = []

    def make(**config):
        if request.param == "memory":
            layer = InMemoryChannelLayer(**config)
        else:
            layer = RedisChannelLayer(hosts=[request.getfixturevalue("redis_url")], **config)
        layers.append(layer)
        return layer

    yield make
    for layer in layers:
        layer.close()


class Service:
    """The delay service of a layer, released on exit."""

    def __init__(self, layer):
        self.layer = layer

    def __enter__(self):
        self.service = delay.acquire(self.layer)
        return self.service

    def __exit__(self, *exc):
        delay.release(self.service)


def receive_all(layer, channel: str, count: int, timeout: float = 15.0) -> list[tuple[float, dict]]:
    """``count`` messages of ``channel`` with the time each arrived; fails at the deadline."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(got)} of {count} messages arrived"
        name, message = layer.receive([channel], block=True, timeout=left)
        if name is not None:
            got.append((time.time(), message))
    return got


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        gevent.sleep(0.01)
    return result


def test_messages_arrive_after_their_delay_never_before(make_layer):
    layer = make_layer()
    with Service(layer):
        # Due times 25 ms apart, sent in shuffled order: the service stamps a message's
        # due time when it takes it (the two paths below take it at different moments), so
        # due times closer than the scheduling lag of a loaded machine could swap.
        delays = random.Random(7).sample([0.025 * k for k in range(30)], 30)
        for n, seconds in enumerate(delays):
            sent = time.time()
            content = {"n": n, "due": sent + seconds}
            if n % 2:
                Channel("delayed.out", channel_layer=layer).send(content, delay=seconds)
            else:
                layer.send(
                    "asgi.delay",
                    {"channel": "delayed.out", "delay": seconds * 1000, "content": content},
                )
        arrived = receive_all(layer, "delayed.out", len(delays))
        assert sorted(m["n"] for _, m in arrived) == list(range(len(delays)))
        for at, message in arrived:
            assert at >= message["due"], (
                f"message {message['n']} came {message['due'] - at:.4f} s early"
            )
            assert at < message["due"] + 1.0, (
                f"message {message['n']} came {at - message['due']:.3f} s late"
            )
        # Delivered in the order they fell due.
        dues = [m["due"] for _, m in arrived]
        assert dues == sorted(dues)
        assert layer.receive(["delayed.out"], block=True, timeout=0.3) == (None, None)


def test_an_earlier_message_wakes_the_waiting_service(make_layer, monkeypatch):
    # Without the wake-up, the Redis service would only look again after REFRESH.
    monkeypatch.setattr(on_redis, "REFRESH", 30.0)
    layer = make_layer()
    with Service(layer):
        Channel("wake.out", channel_layer=layer).send({"which": "late"}, delay=20)
        wait_for(lambda: layer.global_statistics()["delayed_messages_pending"] == 1)
        sent = time.time()
        Channel("wake.out", channel_layer=layer).send({"which": "early"}, delay=0.05)
        [(at, message)] = receive_all(layer, "wake.out", 1, timeout=5)
        assert message == {"which": "early"}
        assert 0.05 <= at - sent < 0.5


def test_bad_messages_are_logged_once_and_dropped_while_good_ones_flow(make_layer, caplog):
    layer = make_layer()
    bad = [
        ({"delay": 10, "content": {}}, "no channel key"),
        ({"channel": "bad.out", "delay": 10}, "no content key"),
        ({"channel": "bad.out", "content": {}}, "no delay key"),
        ({"channel": "bad.out", "delay": -5, "content": {}}, "must not be negative"),
        ({"channel": "bad.out", "delay": "10", "content": {}}, "must be a number"),
        ({"channel": "bad.out", "delay": True, "content": {}}, "must be a number"),
        ({"channel": "bad.out", "delay": float("nan"), "content": {}}, "finite"),
        ({"channel": "bad name!", "delay": 10, "content": {}}, "channel is not valid"),
        ({"channel": "bad.pattern?", "delay": 10, "content": {}}, "channel is not valid"),
        ({"channel": 7, "delay": 10, "content": {}}, "channel is not valid"),
        ({"channel": "bad.out", "delay": 10, "content": "text"}, "content is a str"),
    ]
    caplog.set_level(logging.WARNING, logger="geventchannels.delay")
    with Service(layer):
        for n, (message, _reason) in enumerate(bad):
            layer.send("asgi.delay", message)
            layer.send("asgi.delay", {"channel": "good.out", "delay": 20, "content": {"n": n}})
        arrived = receive_all(layer, "good.out", len(bad))
        assert sorted(m["n"] for _, m in arrived) == list(range(len(bad)))
        wait_for(lambda: len(dropped(caplog)) >= len(bad), what="log lines")
        gevent.sleep(0.2)  # a second line for the same message would come by now
        lines = dropped(caplog)
        assert len(lines) == len(bad), lines
        # Each reason is given as often as a message had it (Redis may log them out of order).
        for reason in {reason for _message, reason in bad}:
            expected = sum(1 for _message, why in bad if why == reason)
            assert sum(1 for line in lines if reason in line) == expected, (reason, lines)
        assert layer.receive(["bad.out"]) == (None, None)


def dropped(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if "dropped a message on asgi.delay" in r.getMessage()
    ]


def test_channel_send_with_a_bad_delay_raises_at_once():
    layer = InMemoryChannelLayer()
    channel = Channel("x.out", channel_layer=layer)
    with pytest.raises(ValueError, match="negative"):
        channel.send({}, delay=-1)
    with pytest.raises(TypeError, match="number of seconds"):
        channel.send({}, delay="1")
    with pytest.raises(ValueError, match="finite"):
        channel.send({}, delay=float("inf"))
    with pytest.raises(TypeError, match="only dicts"):
        channel.send(["x"], delay=1)
    with pytest.raises(InvalidChannelName):
        Channel("no good", channel_layer=layer).send({}, delay=1)
    assert layer.receive(["asgi.delay"]) == (None, None)
    channel.send({"a": 1}, delay=0.25)
    assert layer.receive(["asgi.delay"]) == (
        "asgi.delay",
        {"channel": "x.out", "delay": 250, "content": {"a": 1}},
    )


class Pool:
    """A started Worker on ``layer`` with ``routes``; stopped on exit."""

    def __init__(self, layer, routes):
        self.worker = Worker(ChannelLayerWrapper(layer, "default", routes), concurrency=4)

    def __enter__(self):
        self.worker.start()
        return self.worker

    def __exit__(self, *exc):
        self.worker.stop(timeout=5)


def test_the_consumer_pool_runs_the_service_and_buffers_delayed_sends(make_layer):
    layer = make_layer()

    def schedule(message):
        Channel("pool.out", channel_layer=layer).send({"n": message["n"]}, delay=0.05)
        if message["fail"]:
            raise RuntimeError("the consumer fails after its delayed send")

    with Pool(layer, [route("pool.in", schedule)]):
        assert delay.running(layer) is not None
        layer.send("pool.in", {"n": 1, "fail": True})
        layer.send("pool.in", {"n": 2, "fail": False})
        [(_at, message)] = receive_all(layer, "pool.out", 1)
        assert message == {"n": 2}
        assert layer.receive(["pool.out"], block=True, timeout=0.3) == (None, None)
    assert delay.running(layer) is None


def test_delay_service_off_starts_no_service(make_layer):
    layer = make_layer()
    with override_settings(GEVENTCHANNELS={"DELAY_SERVICE": False}):
        with Pool(layer, [route("pool.in", lambda message: None)]):
            assert delay.running(layer) is None
            Channel("off.out", channel_layer=layer).send({}, delay=0)
            assert layer.receive(["off.out"], block=True, timeout=0.3) == (None, None)
            assert layer.receive(["asgi.delay"])[1] == {
                "channel": "off.out",
                "delay": 0,
                "content": {},
            }


def test_statistics_count_pending_messages_and_the_next_due_time(make_layer):
    layer = make_layer()
    stats = layer.global_statistics()
    with Service(layer):
        assert layer.global_statistics()["delayed_messages_pending"] == 0
        assert layer.global_statistics()["delayed_messages_next_due"] == 0
        before = time.time()
        for seconds in (30, 20, 0.3):
            Channel("stats.out", channel_layer=layer).send({}, delay=seconds)
        stats = wait_for(
            lambda: (s := layer.global_statistics())["delayed_messages_pending"] == 3 and s,
            what="3 pending",
        )
        assert before + 0.3 <= stats["delayed_messages_next_due"] < time.time() + 0.3
        assert delay.statistics(layer) == {
            "delayed_messages_pending": 3,
            "delayed_messages_next_due": pytest.approx(
                stats["delayed_messages_next_due"], abs=0.01
            ),
        }
        receive_all(layer, "stats.out", 1)
        stats = layer.global_statistics()
        assert stats["delayed_messages_pending"] == 2
        assert stats["delayed_messages_next_due"] >= before + 20
    assert "delayed_messages_pending" not in layer.global_statistics()


def test_a_full_channel_at_due_time_is_tried_again_until_the_layers_expiry(make_layer, caplog):
    # "never" has no room at all; "tiny" holds one message.
    layer = make_layer(channel_capacity={"tiny": 1, "never": 0}, expiry=2)
    caplog.set_level(logging.WARNING, logger="geventchannels.delay")
    with Service(layer) as service:
        layer.send("tiny", {"first": True})
        Channel("tiny", channel_layer=layer).send({"second": True}, delay=0.02)
        Channel("never", channel_layer=layer).send({"lost": True}, delay=0.02)
        gevent.sleep(0.3)  # the second has been due for a while; its channel is full
        assert layer.receive(["tiny"]) == ("tiny", {"first": True})
        [(_at, message)] = receive_all(layer, "tiny", 1, timeout=1.0)
        assert message == {"second": True}
        wait_for(lambda: "stayed full" in caplog.text, what="a warning")
        assert "never" in caplog.text
        assert delay.statistics(layer)["delayed_messages_pending"] == 0
        assert service.delivered == 1


def test_the_in_memory_service_says_what_it_loses_when_it_stops(caplog):
    layer = InMemoryChannelLayer()
    with Service(layer):
        Channel("lost.out", channel_layer=layer).send({}, delay=60)
        wait_for(lambda: layer.global_statistics()["delayed_messages_pending"] == 1)
    assert "1 delayed messages are lost" in caplog.text


def test_rundelay_refuses_the_in_memory_layer():
    with ServerProcess(manage("rundelay")) as process:
        assert process.exit_code(40) == 1
        assert "lives inside one process" in process.output
        assert "Traceback" not in process.output


# -- Redis only ---------------------------------------------------------------------


@pytest.mark.redis
def test_messages_sent_while_no_service_ran_go_at_once_when_one_starts(redis_url):
    layer = RedisChannelLayer(hosts=[redis_url])
    try:
        sent = time.time()
        Channel("late.out", channel_layer=layer).send({"n": 1}, delay=0.05)
        gevent.sleep(0.3)  # past due before any service runs
        with Service(layer):
            [(at, _message)] = receive_all(layer, "late.out", 1)
        assert at - sent < 1.0
        # Stored, then its service stopped, then due: the next service sends it at once.
        with Service(layer):
            Channel("late.out", channel_layer=layer).send({"n": 2}, delay=1.0)
            wait_for(lambda: layer.global_statistics()["delayed_messages_pending"] == 1)
        gevent.sleep(1.2)
        started = time.time()
        with Service(layer):
            [(at, message)] = receive_all(layer, "late.out", 1)
        assert message == {"n": 2}
        assert at - started < 0.5
    finally:
        layer.close()


@pytest.mark.redis
def test_two_services_deliver_each_message_once(redis_url):
    # Half of them fall due together: the channel must hold them all.
    layers = [
        RedisChannelLayer(hosts=[redis_url], channel_capacity={"once.out": 300}) for _ in range(2)
    ]
    services = [delay.acquire(layer) for layer in layers]
    try:
        due = time.time() + 0.5
        for n in range(300):
            seconds = max(0.0, due - time.time()) if n % 2 else random.uniform(0, 0.6)
            Channel("once.out", channel_layer=layers[n % 2]).send({"n": n}, delay=seconds)
        arrived = receive_all(layers[0], "once.out", 300)
        assert sorted(m["n"] for _, m in arrived) == list(range(300))
        assert layers[0].receive(["once.out"], block=True, timeout=1.5) == (None, None)
        assert sum(s.delivered for s in services) == 300
    finally:
        for service in services:
            delay.release(service)
        for layer in layers:
            layer.close()


@pytest.fixture
def second_redis():
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


def names_on(layer: RedisChannelLayer, shard, count: int) -> list[str]:
    """Channel names whose list is on ``shard``."""
    names = (f"elsewhere.{n}" for n in range(10_000))
    return [name for name in names if layer.shard_for(name) is shard][:count]


@pytest.mark.redis
def test_messages_for_another_shard_arrive_once_even_after_a_claimer_died(
    redis_url, second_redis, monkeypatch
):
    layer = RedisChannelLayer(hosts=[redis_url, second_redis.url])
    try:
        home = layer.shard_for("asgi.delay")
        [other] = [shard for shard in layer.shards if shard is not home]
        here, there = names_on(layer, home, 2), names_on(layer, other, 3)
        claimed = home.list_key("asgi.delay") + ":claimed"

        # A normal run: both shards' channels get their messages.
        with Service(layer):
            for name in here + there:
                Channel(name, channel_layer=layer).send({"to": name}, delay=0.02)
            for name in here + there:
                [(_at, message)] = receive_all(layer, name, 1)
                assert message == {"to": name}
            wait_for(lambda: delay.statistics(layer)["delayed_messages_pending"] == 0)

        # A process that took messages for the other shard and died before pushing them,
        # and one that died after pushing, before unclaiming: either way, once.
        monkeypatch.setattr(on_redis, "STALE", 0.3)
        for dies_after_push in (False, True):
            original = on_redis.RedisDelays._deliver_on

            def dying(self, shard, messages, now, original=original, push=dies_after_push):
                if push:
                    original(self, shard, messages, now)
                raise on_redis.UNREACHABLE[0]("killed here")

            monkeypatch.setattr(on_redis.RedisDelays, "_deliver_on", dying)
            with Service(layer):
                for name in there:
                    Channel(name, channel_layer=layer).send({"push": dies_after_push}, delay=0.01)
                wait_for(lambda: home.client.zcard(claimed) == 3, what="3 claimed")
            monkeypatch.setattr(on_redis.RedisDelays, "_deliver_on", original)
            with Service(layer):
                for name in there:
                    [(_at, message)] = receive_all(layer, name, 1)
                    assert message == {"push": dies_after_push}
                # Once nothing is claimed any more, a second push could only be there already.
                wait_for(lambda: delay.statistics(layer)["delayed_messages_pending"] == 0)
                for name in there:
                    assert layer.receive([name]) == (None, None)
    finally:
        layer.close()


@pytest.mark.redis
def test_encrypted_delayed_messages_and_ones_nobody_can_read(redis_url, caplog):
    layer = RedisChannelLayer(hosts=[redis_url], symmetric_encryption_keys=["one"])
    stranger = RedisChannelLayer(hosts=[redis_url], symmetric_encryption_keys=["other"])
    caplog.set_level(logging.WARNING, logger="geventchannels.delay")
    try:
        with Service(layer):
            Channel("secret.out", channel_layer=stranger).send({"x": 1}, delay=0.01)
            Channel("secret.out", channel_layer=layer).send({"x": b"\x00bytes"}, delay=0.02)
            [(_at, message)] = receive_all(layer, "secret.out", 1)
            assert message == {"x": b"\x00bytes"}
            wait_for(lambda: dropped(caplog), what="a log line")
            assert len(dropped(caplog)) == 1
            assert "cannot be read" in dropped(caplog)[0]
        raw = layer.shards[0].client.zrange("asgi:asgi.delay:delayed", 0, -1)
        assert raw == []
    finally:
        layer.close()
        stranger.close()
