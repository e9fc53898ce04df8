"""What the in-memory layer promises beyond the shared contract: greenlet-native waiting
(no polling, sends that never yield, hand-over to parked receivers), fairness between
channels, and correctness with many concurrent consumers."""

from __future__ import annotations

import logging
import random
import time

import gevent
import greenlet
import pytest

from geventchannels.exceptions import ChannelFull
from geventchannels.layers.inmemory import InMemoryChannelLayer
from tests.layers.conftest import wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def layer():
    layer = InMemoryChannelLayer()
    yield layer
    layer.close()


@pytest.mark.timeout(60)
def test_fifty_blocked_consumers_process_100000_messages_exactly_once():
    layer = InMemoryChannelLayer()
    channels = ["load.a", "load.b", "load.c", "load.d", "load.local!"]
    total = 100_000
    counts = [0] * total
    handled = [0]

    def consume(listen_on: list[str]) -> None:
        while True:
            _channel, message = layer.receive(listen_on, block=True, timeout=5)
            if message is not None:
                counts[message["id"]] += 1
                handled[0] += 1
                if message["id"] % 7 == 0:
                    gevent.sleep(0)

    rng = random.Random(7)
    consumers = []
    for index in range(50):
        listen_on = rng.sample(channels, rng.randint(1, 3))
        if index < len(channels):
            listen_on.append(channels[index])  # every channel has at least one reader
        consumers.append(gevent.spawn(consume, listen_on))
    gevent.sleep(0)

    started = time.monotonic()
    targets = ["load.a", "load.b", "load.c", "load.d", "load.local!sock1", "load.local!sock2"]
    full = 0
    message_id = 0
    while message_id < total:
        for _ in range(rng.randint(1, 300)):
            if message_id == total:
                break
            try:
                layer.send(targets[message_id % len(targets)], {"id": message_id, "text": "x"})
            except ChannelFull:
                full += 1
                break
            message_id += 1
        gevent.sleep(0)
    wait_until(lambda: handled[0] >= total, timeout=15)
    elapsed = time.monotonic() - started
    gevent.sleep(0.05)
    gevent.killall(consumers)

    assert handled[0] == total
    duplicated = [i for i, n in enumerate(counts) if n > 1]
    lost = [i for i, n in enumerate(counts) if n == 0]
    assert not duplicated and not lost, (duplicated[:10], lost[:10])
    print(f"50 consumers: {total} messages in {elapsed:.2f} s ({full} ChannelFull retries)")


def test_many_receivers_parked_on_overlapping_channels_each_get_one_message(layer):
    channels = [f"overlap.{n}" for n in range(5)]
    receivers = [
        gevent.spawn(
            layer.receive, [channels[n % 5], channels[(n + 1) % 5]], block=True, timeout=10
        )
        for n in range(60)
    ]
    gevent.sleep(0.05)
    for n in range(60):
        layer.send(channels[n % 5], {"n": n})
    results = [g.get(timeout=5) for g in receivers]
    assert sorted(message["n"] for _channel, message in results) == list(range(60))
    assert all(channel in channels for channel, _message in results)
    assert [layer.receive([c]) for c in channels] == [(None, None)] * 5


def test_each_of_n_channels_is_tried_first_once_in_n_receives():
    layer = InMemoryChannelLayer(capacity=1000)
    for n in range(500):
        layer.send("fair.busy", {"n": n})
    layer.send("fair.quiet1", {"n": "q1"})
    layer.send("fair.quiet2", {"n": "q2"})
    first_three = {layer.receive(["fair.busy", "fair.quiet1", "fair.quiet2"])[0] for _ in range(3)}
    assert first_three == {"fair.busy", "fair.quiet1", "fair.quiet2"}


def test_send_never_switches_to_the_woken_receiver(layer):
    receiver = gevent.spawn(layer.receive, ["nowait"], block=True, timeout=5)
    gevent.sleep(0)
    layer.send("nowait", {"n": 1})
    assert not receiver.ready(), "send() yielded to the receiver"
    assert receiver.get(timeout=2) == ("nowait", {"n": 1})


def test_a_parked_receiver_is_not_woken_until_something_arrives(layer):
    """No polling: while nothing is sent, the parked greenlet is never switched to."""
    receiver = gevent.spawn(layer.receive, ["idle.a", "idle.b"], block=True)
    gevent.sleep(0)
    switches = []

    def trace(event, args):
        if event in ("switch", "throw") and args[1] is receiver:
            switches.append(event)

    previous = greenlet.settrace(trace)
    try:
        gevent.sleep(0.3)
    finally:
        greenlet.settrace(previous)
    assert switches == []
    layer.send("idle.b", {"n": 1})
    assert receiver.get(timeout=2) == ("idle.b", {"n": 1})


def test_a_message_handed_to_a_receiver_killed_before_it_ran_is_not_lost(layer):
    receiver = gevent.spawn(layer.receive, ["handover"], block=True, timeout=5)
    gevent.sleep(0)
    layer.send("handover", {"n": 1})
    # Kill it now, before the wake-up just scheduled runs; the hub then switches back here.
    gevent.get_hub().loop.run_callback(greenlet.getcurrent().switch)
    greenlet.greenlet.throw(receiver, gevent.GreenletExit)
    assert receiver.dead
    gevent.sleep(0)
    assert layer.receive(["handover"]) == ("handover", {"n": 1})


def test_a_timed_out_receiver_is_skipped_by_later_sends(layer):
    assert layer.receive(["late"], block=True, timeout=0.05) == (None, None)
    waiting = gevent.spawn(layer.receive, ["late"], block=True, timeout=5)
    gevent.sleep(0)
    layer.send("late", {"n": 1})
    assert waiting.get(timeout=2) == ("late", {"n": 1})


def test_group_send_hands_messages_to_parked_receivers(layer):
    layer.group_add("parked.room", "parked.a")
    layer.group_add("parked.room", "parked.local!x")
    receivers = [
        gevent.spawn(layer.receive, [name], block=True, timeout=5)
        for name in ("parked.a", "parked.local!")
    ]
    gevent.sleep(0)
    layer.send_group("parked.room", {"text": "hi"})
    assert [g.get(timeout=2) for g in receivers] == [
        ("parked.a", {"text": "hi"}),
        ("parked.local!x", {"text": "hi"}),
    ]


def test_single_reader_channels_leave_nothing_behind(layer):
    for _ in range(500):
        name = layer.new_channel("reply?")
        layer.send(name, {"ok": True})
        assert layer.receive([name]) == (name, {"ok": True})
    for _ in range(50):
        name = layer.new_channel("reply?")
        assert layer.receive([name], block=True, timeout=0.001) == (None, None)
    receiver = gevent.spawn(layer.receive, [layer.new_channel("reply?")], block=True, timeout=5)
    gevent.sleep(0)
    receiver.kill()
    assert len(layer._queues) == 0  # white-box: one-off reply channels must not leak


def test_receivers_that_gave_up_do_not_pile_up(layer):
    for _ in range(200):
        layer.receive(["named.idle", "named.busy"], block=True, timeout=0.0001)
    layer.send("named.busy", {})
    assert len(layer._queues["named.idle"].receivers) <= 64  # white-box: swept as they grow


def test_close_wakes_parked_receivers(layer):
    receivers = [gevent.spawn(layer.receive, ["closing"], block=True) for _ in range(3)]
    gevent.sleep(0)
    layer.close()
    assert [g.get(timeout=2) for g in receivers] == [(None, None)] * 3


def test_flush_keeps_parked_receivers_waiting(layer):
    receiver = gevent.spawn(layer.receive, ["flushed"], block=True, timeout=5)
    gevent.sleep(0)
    layer.flush()
    layer.send("flushed", {"after": "flush"})
    assert receiver.get(timeout=2) == ("flushed", {"after": "flush"})


def test_process_local_queues_have_the_larger_local_capacity(layer):
    for n in range(150):
        layer.send(f"sockets!{n}", {"n": n})
    with pytest.raises(ChannelFull):
        for n in range(150):
            layer.send("plain", {"n": n})


def test_per_second_rates_are_averaged_since_the_previous_call(layer):
    layer.channel_statistics("rates")
    for n in range(20):
        layer.send("rates", {"n": n})
    gevent.sleep(0.1)
    stats = layer.channel_statistics("rates")
    assert 20 / 5 < stats["messages_count_per_second"] <= 20 / 0.1
    assert layer.global_statistics()["messages_count_per_second"] > 0


def test_unanswered_single_reader_channels_are_swept_once_expired():
    layer = InMemoryChannelLayer(expiry=0.05)
    for _ in range(1000):
        layer.send(layer.new_channel("abandoned?"), {"nobody": "came"})
    gevent.sleep(0.1)
    for _ in range(1100):
        layer.send(layer.new_channel("abandoned?"), {"nobody": "came"})
    assert len(layer._queues) < 1200  # white-box: the first 1000 were swept


def test_a_receiver_killed_after_close_woke_it_dies_quietly(layer):
    receiver = gevent.spawn(layer.receive, ["closing"], block=True)
    gevent.sleep(0)
    layer.close()
    gevent.get_hub().loop.run_callback(greenlet.getcurrent().switch)
    greenlet.greenlet.throw(receiver, gevent.GreenletExit)
    assert receiver.dead and receiver.successful()
    assert layer.receive(["closing"]) == (None, None)


def test_a_handed_over_message_is_not_copied(layer):
    message = {"text": "mine", "nested": {"n": 1}}
    layer.send_owned("test.owned", message)
    _channel, received = layer.receive(["test.owned"])
    assert received is message


def test_a_checked_hand_over_skips_the_size_check():
    layer = InMemoryChannelLayer(max_message_size=100)
    layer.send_owned("test.owned", {"text": "x" * 200}, checked=True)
    assert layer.receive(["test.owned"])[1] == {"text": "x" * 200}
    layer.close()


def test_group_send_shares_one_copy_between_local_members_only(layer):
    delivered = []
    layer.attach_local("test.sockets!", lambda channel, message: delivered.append(message))
    for name in ("test.sockets!a", "test.plain.a", "test.sockets!b", "test.plain.b"):
        layer.group_add("test.room", name)
    message = {"nested": {"value": "original"}}
    layer.send_group("test.room", message)
    assert len(delivered) == 2 and delivered[0] is delivered[1]
    assert delivered[0] == message and delivered[0] is not message
    assert delivered[0]["nested"] is not message["nested"]
    _c, first = layer.receive(["test.plain.a"])
    _c, second = layer.receive(["test.plain.b"])
    assert first is not second and first is not delivered[0]
    first["nested"]["value"] = "changed by a consumer"
    assert second == delivered[0] == {"nested": {"value": "original"}}


def test_group_send_forgets_expired_members():
    layer = InMemoryChannelLayer(group_expiry=0.05)
    layer.group_add("test.room", "test.gone")
    time.sleep(0.1)
    layer.group_add("test.room", "test.here")
    layer.send_group("test.room", {"text": "hi"})
    assert layer.receive(["test.gone"]) == (None, None)
    assert layer.receive(["test.here"]) == ("test.here", {"text": "hi"})
    assert layer.group_channels("test.room") == ["test.here"]
    time.sleep(0.1)
    layer.send_group("test.room", {"text": "late"})
    assert "test.room" not in layer._groups
    layer.close()


# -- nothing consumes ------------------------------------------------------------------


def _unconsumed_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "geventchannels.layers.inmemory" and r.levelno == logging.WARNING
    ]


def test_the_in_memory_layer_does_not_cross_processes(layer):
    assert layer.crosses_processes is False


def test_a_message_nobody_here_consumes_is_warned_about_once(caplog, layer):
    """As under plain ``gunicorn -k gevent``: sends return, and no consumer pool runs."""
    caplog.set_level(logging.WARNING, logger="geventchannels.layers.inmemory")
    layer.send("tasks", {"n": 1})
    layer.send("tasks", {"n": 2})
    layer.send_owned("other.tasks", {"n": 3})
    [warning] = _unconsumed_warnings(caplog)
    assert "'tasks'" in warning and "no consumer pool runs in this process" in warning
    for how in ("-k geventchannels.gunicorn.Worker", "manage.py runserver", "geventchannels serve"):
        assert how in warning


def test_each_layer_warns_once(caplog):
    caplog.set_level(logging.WARNING, logger="geventchannels.layers.inmemory")
    for _ in range(2):
        layer = InMemoryChannelLayer()
        layer.send("tasks", {})
        layer.send("tasks", {})
    assert len(_unconsumed_warnings(caplog)) == 2


def test_a_registered_consumer_pool_silences_the_warning(caplog, layer):
    caplog.set_level(logging.WARNING, logger="geventchannels.layers.inmemory")
    layer.register_consumer_pool(object())
    layer.send("tasks", {"n": 1})
    assert _unconsumed_warnings(caplog) == []


def test_replies_and_waiting_receivers_are_not_warned_about(caplog, layer):
    caplog.set_level(logging.WARNING, logger="geventchannels.layers.inmemory")
    layer.send("test.reply!sock", {"text": "to a socket"})
    layer.send(layer.new_channel("test.reply?"), {"text": "to whoever made the name"})
    receiver = gevent.spawn(layer.receive, ["tasks"], block=True, timeout=5)
    gevent.sleep(0)
    layer.send("tasks", {"n": 1})
    assert receiver.get(timeout=5) == ("tasks", {"n": 1})
    assert _unconsumed_warnings(caplog) == []
