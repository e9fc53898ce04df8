"""What only the Redis layer does, against real redis-server processes: sharding, encryption,
prefix-scoped flush, capacity kept in Redis, outages, local drains and bounded connections.

The behaviour every layer shares is tested in tests/layers/.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time

import gevent
import pytest
import redis
from gevent.event import AsyncResult
from gevent.queue import Queue

from geventchannels.exceptions import ChannelFull, ChannelLayerUnavailable
from geventchannels.layers import RedisChannelLayer
from geventchannels.layers.redis import tally
from tests.conftest import RedisServer, free_port, wait_for_port
from tests.layers.conftest import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


@pytest.fixture
def layer(redis_url):
    layer = RedisChannelLayer(hosts=[redis_url])
    yield layer
    layer.close()


@pytest.fixture(scope="module")
def second_redis():
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def raw(redis_server) -> redis.Redis:
    """A plain client on the test database, to look at what the layer stored."""
    client = redis.Redis(port=redis_server.port)
    yield client
    client.close()


def test_the_redis_layer_crosses_processes(layer):
    assert layer.crosses_processes is True


def test_bytes_and_str_stay_distinct(layer):
    layer.send("kinds", {"b": b"\x00\xff", "s": "text", "n": [1, 2.5, None, True]})
    assert layer.receive(["kinds"]) == (
        "kinds",
        {"b": b"\x00\xff", "s": "text", "n": [1, 2.5, None, True]},
    )


# -- several hosts -------------------------------------------------------------


def test_channels_and_groups_shard_across_two_hosts(redis_url, redis_server, second_redis):
    second_redis.flushall()
    layer = RedisChannelLayer(hosts=[redis_url, second_redis.url])
    try:
        names = [f"shard-{i}" for i in range(40)] + [f"proc{i}!" for i in range(10)]
        for name in names:
            layer.send(name + ("x" if name.endswith("!") else ""), {"to": name})
            layer.group_add("everyone", name + ("x" if name.endswith("!") else ""))
        first = redis.Redis(port=redis_server.port).keys("asgi:shard-*")
        second = redis.Redis(port=second_redis.port).keys("asgi:shard-*")
        assert first and second, "40 channels should not all land on one of two hosts"
        assert len(first) + len(second) == 40

        # A process-local name lives with its prefix: receive on "procN!" finds "procN!x".
        for name in names:
            channel, message = layer.receive([name])
            assert message == {"to": name}
            assert channel == (name + "x" if name.endswith("!") else name)

        # The group reaches members on both hosts, and a second layer agrees where they live.
        other = RedisChannelLayer(hosts=[redis_url, second_redis.url])
        assert sorted(other.group_channels("everyone")) == sorted(
            n + ("x" if n.endswith("!") else "") for n in names
        )
        other.send_group("everyone", {"all": True})
        for name in names:
            assert layer.receive([name])[1] == {"all": True}
        other.close()

        # Blocking receive over channels on both hosts.
        on_first = next(n for n in names if layer._shard_for(n) is layer.shards[0])
        on_second = next(n for n in names if layer._shard_for(n) is layer.shards[1])
        gevent.spawn_later(0.05, layer.send, on_second, {"late": 2})
        assert layer.receive([on_first, on_second], block=True, timeout=5) == (
            on_second,
            {"late": 2},
        )

        layer.flush()
        assert redis.Redis(port=redis_server.port).dbsize() == 0
        assert redis.Redis(port=second_redis.port).dbsize() == 0
    finally:
        layer.close()


def test_adding_a_host_moves_only_part_of_the_channels(redis_url, second_redis):
    two = RedisChannelLayer(hosts=[redis_url, second_redis.url])
    three = RedisChannelLayer(hosts=[redis_url, second_redis.url, "redis://127.0.0.1:1/0"])
    names = [f"chan-{i}" for i in range(300)]
    moved = sum(1 for n in names if two._shard_for(n).label != three._shard_for(n).label)
    assert 40 < moved < 180  # about a third move; a modulo hash would move two thirds
    # Every process must agree where a channel lives, however it spells the hosts.
    spelled = RedisChannelLayer(
        hosts=[
            ("127.0.0.1", second_redis.port),
            redis_url.replace("/0", ""),
        ]
    )
    assert all(two._shard_for(n).identity == spelled._shard_for(n).identity for n in names)
    for each in (two, three, spelled):
        each.close()


# -- encryption --------------------------------------------------------------------


def test_encrypted_messages_round_trip_and_are_not_stored_in_plaintext(redis_url, raw):
    layer = RedisChannelLayer(hosts=[redis_url], symmetric_encryption_keys=["a secret"])
    layer.send("secret", {"text": "attack at dawn", "bytes": b"launch codes"})
    stored = raw.lindex("asgi:secret", 0)
    assert b"attack at dawn" not in stored and b"launch codes" not in stored
    assert layer.receive(["secret"]) == (
        "secret",
        {"text": "attack at dawn", "bytes": b"launch codes"},
    )

    # Key rotation: a layer with a new first key still reads messages sealed with the old one.
    layer.send("secret", {"n": 1})
    rotated = RedisChannelLayer(hosts=[redis_url], symmetric_encryption_keys=["new", "a secret"])
    assert rotated.receive(["secret"]) == ("secret", {"n": 1})

    # A layer with the wrong key drops what it cannot read instead of crashing.
    layer.send("secret", {"n": 2})
    wrong = RedisChannelLayer(hosts=[redis_url], symmetric_encryption_keys=["other"])
    assert wrong.receive(["secret"]) == (None, None)
    for each in (layer, rotated, wrong):
        each.close()


# -- flush, capacity, expiry -------------------------------------------------------


def test_flush_deletes_only_keys_under_its_prefix(redis_url, raw):
    mine = RedisChannelLayer(hosts=[redis_url], prefix="app1:")
    theirs = RedisChannelLayer(hosts=[redis_url], prefix="app2:")
    mine.send("c", {})
    mine.group_add("g", "c")
    theirs.send("c", {})
    theirs.channel_statistics("c")  # writes what it counted in this process
    raw.set("unrelated", "keep me")
    raw.set("app1", "no colon, not under the prefix")
    mine.flush()
    assert sorted(raw.keys()) == sorted(
        [b"unrelated", b"app1", b"app2:c", b"app2:stats:c", b"app2:stats:"]
    )
    assert theirs.receive(["c"]) == ("c", {})
    # Glob characters in a prefix are literal: "odd*:" must not flush "oddity:".
    odd = RedisChannelLayer(hosts=[redis_url], prefix="odd*:")
    raw.set("oddity:c", "keep me")
    odd.send("c", {})
    odd.flush()
    assert raw.get("oddity:c") == b"keep me" and not raw.keys("odd[*]:*")
    for each in (mine, theirs, odd):
        each.close()


def test_capacity_is_enforced_in_redis_across_layer_instances(redis_url, raw):
    one = RedisChannelLayer(hosts=[redis_url], capacity=3, channel_capacity={"big.*": 5})
    two = RedisChannelLayer(hosts=[redis_url], capacity=3, channel_capacity={"big.*": 5})
    one.send("small", {"n": 1})
    two.send("small", {"n": 2})
    one.send("small", {"n": 3})
    with pytest.raises(ChannelFull):
        two.send("small", {"n": 4})
    assert raw.llen("asgi:small") == 3
    for n in range(5):
        one.send("big.one", {"n": n})
    with pytest.raises(ChannelFull):
        two.send("big.one", {})
    assert two.channel_statistics("small")["channel_full_count"] == 1
    # A group send skips the full member and still reaches the others.
    one.group_add("g", "small")
    one.group_add("g", "roomy")
    two.send_group("g", {"group": True})
    assert raw.llen("asgi:small") == 3
    assert one.receive(["roomy"]) == ("roomy", {"group": True})
    one.close()
    two.close()


def test_group_members_sharing_a_process_list_take_one_entry_of_its_capacity(redis_url, raw):
    """The sockets of one process share a list: a group message is ONE fan-out entry
    there whatever their number, so capacity counts group messages, not sockets."""
    layer = RedisChannelLayer(hosts=[redis_url], local_capacity=3)
    for n in range(5):
        layer.group_add("sockets", f"proc!s{n}")
    layer.group_add("sockets", "alone!s0")
    for n in range(4):
        layer.send_group("sockets", {"n": n})
    assert raw.llen("asgi:proc!") == 3
    stats = layer.channel_statistics("proc!")
    assert (stats["messages_count"], stats["channel_full_count"]) == (15, 5)
    # receive() hands out one member's message at a time and keeps the rest at the head.
    received = [layer.receive(["proc!"]) for _ in range(15)]
    assert received == [(f"proc!s{m}", {"n": n}) for n in range(3) for m in range(5)]
    assert layer.receive(["proc!"]) == (None, None)
    # A lone member of a list gets a plain entry.
    assert [layer.receive(["alone!"]) for _ in range(4)] == [
        ("alone!s0", {"n": n}) for n in range(3)
    ] + [(None, None)]
    layer.close()


def test_expired_messages_are_dropped_and_free_capacity(redis_url, raw):
    layer = RedisChannelLayer(hosts=[redis_url], expiry=0.3, capacity=2)
    layer.send("old", {"n": 1})
    layer.send("old", {"n": 2})
    with pytest.raises(ChannelFull):
        layer.send("old", {"n": 3})
    assert 0 < raw.ttl("asgi:old") <= 1
    gevent.sleep(0.4)  # past the 0.3 s expiry: the deadline itself is under test
    assert layer.channel_statistics("old")["messages_pending"] == 0
    layer.send("old", {"n": 4})
    assert layer.receive(["old"]) == ("old", {"n": 4})
    layer.send("old", {"n": 5})
    gevent.sleep(0.4)
    assert layer.receive(["old"]) == (None, None)
    layer.close()


def test_statistics_are_kept_in_redis(redis_url):
    """Each process counts its sends and adds them to Redis in batches: another process
    sees them within FLUSH_SECONDS, the counting one at once."""
    one = RedisChannelLayer(hosts=[redis_url], capacity=2)
    two = RedisChannelLayer(hosts=[redis_url], capacity=2)
    one.send("stat", {})
    two.send("stat", {})
    with pytest.raises(ChannelFull):
        one.send("stat", {})
    assert two.channel_statistics("stat")["messages_count"] >= 1  # its own, at once
    started = time.monotonic()
    wait_until(
        lambda: two.channel_statistics("stat")["messages_count"] == 2,
        what="counts of the other layer",
    )
    assert time.monotonic() - started < tally.FLUSH_SECONDS + 1
    stats = two.channel_statistics("stat")
    assert stats["messages_count"] == 2 and stats["messages_pending"] == 2
    assert stats["channel_full_count"] == 1
    assert 0 <= stats["messages_max_age"] < 5
    overall = one.global_statistics()
    assert overall["messages_count"] == 2 and overall["messages_pending"] == 2
    assert set(overall) == set(stats)
    one.close()
    two.close()


def test_statistics_include_counts_a_background_flush_is_still_writing(redis_url):
    """The background flush takes the counts, then writes them; a reader in the meantime
    waits for that write instead of reading Redis before it lands."""
    layer = RedisChannelLayer(hosts=[redis_url])
    (shard,) = layer.shards
    control = redis.Redis.from_url(redis_url)
    layer.send("stat", {})
    control.execute_command("CLIENT", "PAUSE", 1500, "WRITE")  # Redis holds the flush's write
    try:
        wait_until(lambda: not shard.tally, what="background flush taking the counts")
        assert layer.channel_statistics("stat")["messages_count"] == 1
        assert layer.global_statistics()["messages_count"] == 1
    finally:
        control.execute_command("CLIENT", "UNPAUSE")
        layer.close()


# -- outages ------------------------------------------------------------------------


def test_outage_send_raises_and_receivers_recover(caplog):
    server = RedisServer()
    layer = RedisChannelLayer(hosts=[server.url])
    restarted = None
    got = Queue()
    layer.attach_local("drain!", lambda channel, message: got.put((channel, message)))

    def receive_forever():
        while True:
            channel, message = layer.receive(["work"], block=True, timeout=1)
            if channel is not None:
                got.put((channel, message))

    receiver = gevent.spawn(receive_forever)
    try:
        layer.send("work", {"before": True})
        assert got.get(timeout=5) == ("work", {"before": True})

        caplog.set_level(logging.WARNING, logger="geventchannels.layers.redis")
        server.process.terminate()
        server.process.wait(10)
        with pytest.raises(ChannelLayerUnavailable) as failure:
            layer.send("work", {"during": True})
        assert f"127.0.0.1:{server.port}" in str(failure.value)
        assert "redis-server is running" in str(failure.value)
        with pytest.raises(ChannelLayerUnavailable):
            layer.send_group("g", {})
        gevent.sleep(0.5)  # let the receiver and the drain meet the outage and back off
        assert not receiver.dead

        restarted = RedisServer(port=server.port)
        other = RedisChannelLayer(hosts=[server.url])
        other.send("work", {"after": True})
        other.send("drain!x", {"after": True})
        results = sorted([got.get(timeout=10), got.get(timeout=10)])
        assert results == [("drain!x", {"after": True}), ("work", {"after": True})]
        other.close()
        downs = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(downs) == 1, "an outage is logged once, not once per retry"
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        receiver.kill()
        layer.close()
        if restarted is not None:
            restarted.stop()
        server.stop()


def test_nothing_listening_is_a_clear_error():
    port = free_port()
    layer = RedisChannelLayer(hosts=[("127.0.0.1", port)])
    with pytest.raises(ChannelLayerUnavailable, match=f"127.0.0.1:{port}"):
        layer.send("x", {})
    with pytest.raises(ChannelLayerUnavailable):
        layer.receive(["x"])
    layer.close()


# -- process-local channels ----------------------------------------------------------


def test_attach_local_drains_messages_from_other_processes(redis_url, raw):
    server_side = RedisChannelLayer(hosts=[redis_url])
    elsewhere = RedisChannelLayer(hosts=[redis_url])
    got = Queue()
    server_side.attach_local("gc.ab12!", lambda channel, message: got.put((channel, message)))
    # A receive() on the attached prefix must not compete with the drain (and reorder).
    competing = gevent.spawn(server_side.receive, ["gc.ab12!"], block=True, timeout=0.5)
    try:
        for n in range(250):
            elsewhere.send(f"gc.ab12!sock{n % 3}", {"n": n})
        received = [got.get(timeout=5) for _ in range(250)]
        assert [m["n"] for _, m in received] == list(range(250))
        assert competing.get(timeout=5) == (None, None)
        assert {c for c, _ in received} == {"gc.ab12!sock0", "gc.ab12!sock1", "gc.ab12!sock2"}

        # A send from this process skips Redis entirely.
        server_side.send("gc.ab12!sock0", {"local": True})
        assert got.get(timeout=1) == ("gc.ab12!sock0", {"local": True})
        # The sender's counts reach Redis in its next statistics flush (every 0.5 s); this
        # process's own would show at once, so a counted local send could never make 250.
        wait_until(
            lambda: server_side.channel_statistics("gc.ab12!")["messages_count"] == 250,
            timeout=3,
        )

        server_side.detach_local("gc.ab12!")
        elsewhere.send("gc.ab12!sock0", {"after": "detach"})
        assert raw.llen("asgi:gc.ab12!") == 1
        assert got.empty()
    finally:
        server_side.close()
        elsewhere.close()


def test_send_group_delivers_to_local_members_directly(redis_url, raw):
    layer = RedisChannelLayer(hosts=[redis_url])
    got = Queue()
    layer.attach_local("gc.cd34!", lambda channel, message: got.put((channel, message)))
    try:
        layer.group_add("room", "gc.cd34!a")
        layer.group_add("room", "gc.cd34!b")
        layer.group_add("room", "gc.other!c")
        layer.group_add("room", "plain")
        layer.send_group("room", {"hello": "room"})
        assert sorted([got.get(timeout=2), got.get(timeout=2)]) == [
            ("gc.cd34!a", {"hello": "room"}),
            ("gc.cd34!b", {"hello": "room"}),
        ]
        assert layer.channel_statistics("gc.cd34!")["messages_count"] == 0
        assert layer.receive(["gc.other!"]) == ("gc.other!c", {"hello": "room"})
        assert layer.receive(["plain"]) == ("plain", {"hello": "room"})
        assert got.empty()
    finally:
        layer.close()


def test_a_burst_of_group_messages_to_another_process_loses_nothing(redis_url, raw):
    """400 sockets of another process, 25 group messages sent while its drain is behind:
    10 000 deliveries through a list of capacity 1 000. One fan-out entry per message
    fits; one entry per socket would have overflowed after the third message."""
    sender = RedisChannelLayer(hosts=[redis_url], local_capacity=1000)
    other = RedisChannelLayer(hosts=[redis_url], local_capacity=1000)
    mine, theirs = Queue(), Queue()
    sender.attach_local("gc.mine!", lambda channel, message: mine.put((channel, message)))
    try:
        for n in range(400):
            other.group_add("crowd", f"gc.theirs!s{n}")
        for n in range(10):
            sender.group_add("crowd", f"gc.mine!s{n}")
        for n in range(25):
            sender.send_group("crowd", {"n": n})
        assert raw.llen("asgi:gc.theirs!") == 25
        other.attach_local("gc.theirs!", lambda channel, message: theirs.put((channel, message)))
        seen: dict[str, list[int]] = {}
        for _ in range(400 * 25):
            channel, message = theirs.get(timeout=5)
            seen.setdefault(channel, []).append(message["n"])
        assert seen == {f"gc.theirs!s{n}": list(range(25)) for n in range(400)}
        assert mine.qsize() == 10 * 25 and theirs.empty()
        stats = sender.channel_statistics("gc.theirs!")
        assert (stats["messages_count"], stats["channel_full_count"]) == (10_000, 0)
    finally:
        sender.close()
        other.close()


def test_blocking_receivers_share_out_a_fan_out_entry(layer):
    """Three receivers, one group message for five members of one list: each member's
    message is received exactly once, the two left over stay first in line."""
    for n in range(5):
        layer.group_add("five", f"proc!m{n}")
    receivers = [gevent.spawn(layer.receive, ["proc!"], block=True, timeout=5) for _ in range(3)]
    wait_until(lambda: layer._fetchers, what="waiting receivers")
    layer.send_group("five", {"hello": 5})
    layer.send("proc!late", {"after": True})
    first = [receiver.get(timeout=5) for receiver in receivers]
    rest = [layer.receive(["proc!"], block=True, timeout=5) for _ in range(3)]
    assert sorted(first) + rest[:2] == [(f"proc!m{n}", {"hello": 5}) for n in range(5)]
    assert rest[2] == ("proc!late", {"after": True})


# -- blocking receivers --------------------------------------------------------------


def _clients(raw: redis.Redis, name: str) -> list[bytes]:
    """CLIENT LIST lines of the connections named ``name`` (other tests' layers may share
    the server)."""
    lines = raw.execute_command("CLIENT", "LIST", "TYPE", "normal").splitlines()
    return [line for line in lines if b" name=%s " % name.encode() in line]


def test_many_blocking_receivers_share_few_connections(redis_url, raw):
    layer = RedisChannelLayer(hosts=[redis_url], connection_kwargs={"client_name": "fifty"})
    results = []

    def receive_one():
        results.append(layer.receive(["work", "other"], block=True, timeout=10))

    greenlets = [gevent.spawn(receive_one) for _ in range(50)]
    gevent.sleep(0.2)  # let all 50 reach the point where they wait
    connections = _clients(raw, "fifty")
    assert sum(b"cmd=blmpop" in line for line in connections) == 1
    assert len(connections) <= 2
    sender = RedisChannelLayer(hosts=[redis_url])
    for n in range(50):
        sender.send("work" if n % 2 else "other", {"n": n})
    gevent.joinall(greenlets, timeout=10)
    assert sorted(m["n"] for _, m in results) == list(range(50))
    assert len(_clients(raw, "fifty")) <= 3
    layer.close()
    sender.close()


def test_a_receiver_that_gave_up_loses_nothing(layer):
    assert layer.receive(["late"], block=True, timeout=0.1) == (None, None)
    layer.send("late", {"n": 1})
    assert layer.receive(["late"], block=True, timeout=5) == ("late", {"n": 1})


def kill_receivers_on_hand_over(monkeypatch, receivers: list) -> None:
    """Make the layer kill ``receivers[0]`` the moment a fetcher hands it what it took
    from Redis (after the message left Redis, before the receiver ran)."""
    from geventchannels.layers.redis import receiving

    class KilledOnHandOver(AsyncResult):
        def set(self, value=None):
            receivers[0].kill(block=False)  # queued before the wake-up, so it lands first
            super().set(value)

    class Waiter(receiving.Waiter):
        def __init__(self, deadline, wanted=1):
            super().__init__(deadline, wanted)
            self.result = KilledOnHandOver()

    monkeypatch.setattr(receiving, "Waiter", Waiter)


def test_killed_receiver_puts_its_message_back(layer, monkeypatch):
    """A receiver killed after its message left Redis but before it ran pushes it back."""
    receivers = []
    kill_receivers_on_hand_over(monkeypatch, receivers)
    receivers.append(gevent.spawn(layer.receive, ["kill"], block=True))
    wait_until(lambda: layer._fetchers, what="waiting receiver")
    layer.send("kill", {"n": 1})
    receivers[0].join(5)
    assert receivers[0].dead and isinstance(receivers[0].value, gevent.GreenletExit)
    monkeypatch.undo()
    assert layer.receive(["kill"], block=True, timeout=5) == ("kill", {"n": 1})


def test_close_wakes_blocked_receivers(redis_url):
    layer = RedisChannelLayer(hosts=[redis_url])
    waiter = gevent.spawn(layer.receive, ["never"], block=True)
    gevent.sleep(0.05)
    layer.close()
    assert waiter.get(timeout=2) == (None, None)


# -- Sentinel and Cluster ---------------------------------------------------------------


def _spawn(*args: str, port: int) -> subprocess.Popen:
    """A redis-server in a mode RedisServer does not start: a sentinel from its config."""
    process = subprocess.Popen(
        [shutil.which("redis-server"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return process


def _exercise(layer: RedisChannelLayer) -> None:
    """The same short round of every operation, for deployments other than a plain server."""
    for n in range(20):
        layer.send(f"c{n}", {"n": n})
    assert [layer.receive([f"c{n}"]) for n in range(20)] == [(f"c{n}", {"n": n}) for n in range(20)]
    gevent.spawn_later(0.05, layer.send, "late", {"late": True})
    assert layer.receive(["c1", "late", "c2"], block=True, timeout=5) == ("late", {"late": True})
    got = Queue()
    layer.attach_local("node!", lambda channel, message: got.put((channel, message)))
    for member in ("a", "b", "node!x", "node!w", "other!y", "other!z"):
        layer.group_add("g", member)
    layer.send_group("g", {"g": 1})
    assert [layer.receive(["a"]), layer.receive(["b"])] == [("a", {"g": 1}), ("b", {"g": 1})]
    assert [layer.receive(["other!"]) for _ in range(3)] == [
        ("other!y", {"g": 1}),
        ("other!z", {"g": 1}),
        (None, None),
    ]
    assert [got.get(timeout=2), got.get(timeout=2)] == [("node!x", {"g": 1}), ("node!w", {"g": 1})]
    assert layer.global_statistics()["messages_count"] >= 24
    layer.flush()
    assert layer.global_statistics()["messages_pending"] == 0


@pytest.mark.timeout(30)
def test_sentinel_by_keywords_and_by_url(tmp_path):
    master = RedisServer()
    master_port, sentinel_port = master.port, free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor main 127.0.0.1 {master_port} 1\n"
    )
    sentinel = _spawn(str(config), "--sentinel", port=sentinel_port)
    try:
        by_keywords = RedisChannelLayer(
            sentinels=[("127.0.0.1", sentinel_port)], service_name="main"
        )
        _exercise(by_keywords)
        by_keywords.close()
        by_url = RedisChannelLayer(hosts=[f"redis+sentinel://127.0.0.1:{sentinel_port}/main/0"])
        by_url.send("via-url", {})
        assert redis.Redis(port=master_port).llen("asgi:via-url") == 1
        by_url.close()
    finally:
        sentinel.terminate()
        sentinel.wait(10)
        master.stop()


@pytest.mark.timeout(40)
def test_cluster():
    nodes = []
    try:
        for _ in range(3):
            nodes.append(
                RedisServer(
                    extra_args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        str(free_port()),
                        "--cluster-config-file",
                        "nodes.conf",
                    ]
                )
            )
        ports = [node.port for node in nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=20,
        )
        wait_until(
            lambda: all(
                b"cluster_state:ok" in redis.Redis(port=p).execute_command("CLUSTER", "INFO")
                for p in ports
            ),
            timeout=15,
            what="cluster formed",
        )
        layer = RedisChannelLayer(hosts=[f"redis://127.0.0.1:{ports[0]}/0"], cluster=True)
        _exercise(layer)
        layer.close()
    finally:
        for node in nodes:
            node.stop()


def test_redis_without_multi_pop_still_works():
    """Redis before 7.0 has no LMPOP/BLMPOP: renaming them away stands in for an old server."""
    server = RedisServer(
        extra_args=["--rename-command", "LMPOP", "", "--rename-command", "BLMPOP", ""]
    )
    port = server.port
    layer = RedisChannelLayer(hosts=[("127.0.0.1", port)])
    try:
        layer.send("old", {"n": 1})
        assert layer.receive(["none", "old"]) == ("old", {"n": 1})
        gevent.spawn_later(0.05, layer.send, "old", {"n": 2})
        assert layer.receive(["old"], block=True, timeout=5) == ("old", {"n": 2})
        got = Queue()
        layer.attach_local("o!", lambda channel, message: got.put(message))
        sender = RedisChannelLayer(hosts=[("127.0.0.1", port)])
        sender.send("o!x", {"n": 3})
        # Closed, or its statistics flush would find this server gone and log it in a
        # later test.
        sender.close()
        assert got.get(timeout=5) == {"n": 3}
    finally:
        layer.close()
        server.stop()
