"""What a message costs in Redis, read from the real server's own counters (INFO): sends
of many greenlets share round trips, statistics are added in batches rather than per
send, and the consumer pool takes a batch of messages per pop."""

from __future__ import annotations

import gevent
import pytest
import redis

from geventchannels.asgi import ChannelLayerWrapper
from geventchannels.layers import RedisChannelLayer
from geventchannels.routing import route
from geventchannels.worker import Worker

from .conftest import RedisServer
from .layers.conftest import wait_until
from .test_redis_layer import kill_receivers_on_hand_over

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


@pytest.fixture(scope="module")
def redis_server():
    """A redis-server of this module's own: its counters must count these tests' clients
    only, not the background work (statistics flushes, lease rounds) of layers that other
    test files of the same worker process may still run on the session's server."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(redis_server) -> redis.Redis:
    client = redis.Redis(port=redis_server.port)
    yield client
    client.close()


@pytest.fixture
def layer(redis_url):
    layer = RedisChannelLayer(hosts=[redis_url], capacity=1000)
    yield layer
    layer.close()


def calls(client: redis.Redis) -> dict[str, int]:
    """Commands run so far, scripts' own commands included, by name."""
    return {
        name.removeprefix("cmdstat_"): int(fields["calls"])
        for name, fields in client.info("commandstats").items()
    }


def reads(client: redis.Redis) -> int:
    """Reads Redis has done on its client connections so far."""
    return int(client.info("stats")["total_reads_processed"])


#: Keeps Redis busy for about 1 s, so that a send in flight meanwhile waits for its reply
#: (long enough for 200 greenlets to queue their sends on a loaded machine: under xdist,
#: 0.2 s was sometimes not).
BUSY = """
local start = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > 1000000
return 1
"""


def test_sends_of_many_greenlets_share_round_trips(layer, client, redis_server):
    layer.send("cost.warm", {})  # connection made, script loaded
    before = reads(client)
    busy = gevent.spawn(redis.Redis(port=redis_server.port).eval, BUSY, 0)
    gevent.sleep(0.2)  # the script is running
    senders = [gevent.spawn(layer.send, "cost.many", {"n": n}) for n in range(200)]
    gevent.joinall([busy, *senders], timeout=10, raise_error=True)
    # The first send waits for Redis; the 199 others queue behind it and go as one
    # pipeline, read in a few reads (Redis reads 16 KB at a time), not 199.
    assert reads(client) - before < 20
    assert [m["n"] for _c, m in layer.receive_batch(["cost.many"], 300)] == list(range(200))


def test_a_send_runs_no_statistics_command_in_redis(layer, client):
    layer.send("cost.warm", {})
    layer.channel_statistics("cost.warm")
    before = calls(client)
    for n in range(100):
        layer.send("cost.stats", {"n": n})
    during = calls(client)
    assert during.get("hincrby", 0) == before.get("hincrby", 0)
    assert during.get("expire", 0) - before.get("expire", 0) == 100  # the list's own ttl
    stats = layer.channel_statistics("cost.stats")  # adds what this process counted
    assert stats["messages_count"] == 100 and stats["messages_pending"] == 100
    assert calls(client).get("hincrby", 0) - before.get("hincrby", 0) <= 6


def test_statistics_reach_redis_within_the_flush_interval(layer, redis_url):
    other = RedisChannelLayer(hosts=[redis_url])
    try:
        layer.send("cost.seen", {})
        wait_until(lambda: other.channel_statistics("cost.seen")["messages_count"] == 1, 3)
    finally:
        other.close()


def test_the_pool_takes_a_batch_of_messages_per_pop(layer, client):
    done: list[int] = []
    for n in range(200):
        layer.send("cost.work", {"n": n})
    wrapper = ChannelLayerWrapper(
        layer, "default", [route("cost.work", lambda message: done.append(message["n"]))]
    )
    worker = Worker(wrapper, concurrency=50)
    before = calls(client)
    worker.start()
    try:
        wait_until(lambda: len(done) == 200)
    finally:
        worker.stop(timeout=2)
    used = calls(client)
    pops = sum(used.get(name, 0) - before.get(name, 0) for name in ("blmpop", "lmpop"))
    assert pops <= 12, pops
    assert sorted(done) == list(range(200))


def test_a_receiver_killed_as_a_batch_is_handed_to_it_puts_the_batch_back(layer, monkeypatch):
    receivers = []
    for n in range(3):
        layer.send("cost.kill", {"n": n})
    kill_receivers_on_hand_over(monkeypatch, receivers)
    receivers.append(gevent.spawn(layer.receive_batch, ["cost.kill"], 10, True, 5))
    receivers[0].join(5)
    assert receivers[0].dead and isinstance(receivers[0].value, gevent.GreenletExit)
    monkeypatch.undo()
    assert layer.receive_batch(["cost.kill"], 10) == [("cost.kill", {"n": n}) for n in range(3)]
