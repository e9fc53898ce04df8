"""Delayed messages across real processes sharing one Redis: ``manage.py rundelay``
processes of the run-mode test project deliver what this test sends.

Three processes deliver each message once, none early, also when hundreds fall due at the
same moment; a process killed with SIGKILL, even in the middle of taking a burst off
asgi.delay, loses nothing: the next process delivers every message once."""

from __future__ import annotations

import json
import random
import re
import signal
import time

import pytest

from geventchannels import delay
from geventchannels.channel import Channel
from geventchannels.layers import RedisChannelLayer

from .runmodes.process import ServerProcess, manage

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

OUT = "mp.delayed"


def rundelay(redis_url: str) -> ServerProcess:
    config = {"hosts": [redis_url], "channel_capacity": {OUT: 5000}}
    env = {"RM_REDIS_URL": redis_url, "RM_LAYER_CONFIG": json.dumps(config)}
    process = ServerProcess(manage("rundelay"), None, env)
    process.wait_output("Delivering delayed messages")
    return process


def delivered_by(process: ServerProcess) -> int:
    found = re.search(r"this process delivered (\d+) delayed messages", process.output)
    assert found, process.output
    return int(found.group(1))


def receive_all(layer, count: int, timeout: float) -> dict[int, list[float]]:
    """Arrival times of ``count`` messages on OUT, by their number."""
    arrived: dict[int, list[float]] = {}
    deadline = time.monotonic() + timeout
    got = 0
    while got < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{got} of {count} delayed messages arrived"
        channel, message = layer.receive([OUT], block=True, timeout=left)
        if channel is not None:
            arrived.setdefault(message["n"], []).append((time.time(), message["due"]))
            got += 1
    return arrived


def check_once_and_on_time(layer, arrived, count: int) -> None:
    assert sorted(arrived) == list(range(count))
    doubled = {n: len(times) for n, times in arrived.items() if len(times) > 1}
    assert not doubled, f"delivered more than once: {doubled}"
    early = [n for n, [(at, due)] in arrived.items() if at < due]
    assert not early, f"delivered early: {early}"
    # A message delivered twice would have come by now.
    assert layer.receive([OUT], block=True, timeout=1.5) == (None, None)


def test_three_processes_deliver_each_message_once(redis_url):
    layer = RedisChannelLayer(hosts=[redis_url])
    processes = [rundelay(redis_url) for _ in range(3)]
    try:
        together = time.time() + 1.5
        for n in range(600):
            now = time.time()
            # Half of them fall due at the same moment: every process sees them due at once.
            seconds = together - now if n % 2 else random.uniform(0.1, 2.0)
            Channel(OUT, channel_layer=layer).send({"n": n, "due": now + seconds}, delay=seconds)
        check_once_and_on_time(layer, receive_all(layer, 600, 30), 600)
        for process in processes:
            assert process.stop() == 0, process.output
        counts = [delivered_by(process) for process in processes]
        print("delivered by each process:", counts)
        assert sum(counts) == 600, counts
    finally:
        for process in processes:
            process.kill()
        layer.close()


def test_a_process_killed_with_sigkill_loses_nothing(redis_url):
    layer = RedisChannelLayer(hosts=[redis_url])
    first = rundelay(redis_url)
    second = None
    try:
        # A burst: the first process is killed while it is taking it off asgi.delay.
        for n in range(1000):
            now = time.time()
            seconds = random.uniform(1.0, 2.0)
            Channel(OUT, channel_layer=layer).send({"n": n, "due": now + seconds}, delay=seconds)
            if n == 600:
                first.send_signal(signal.SIGKILL)
        assert first.exit_code(10) == -signal.SIGKILL
        stats = delay.statistics(layer)
        waiting = layer.channel_statistics("asgi.delay")["messages_pending"]
        assert 0 < stats["delayed_messages_pending"] + waiting
        assert stats["delayed_messages_pending"] + waiting == 1000, (stats, waiting)
        # Some fall due while no process runs; the next process sends those at once.
        time.sleep(1.2)
        second = rundelay(redis_url)
        started = time.time()
        arrived = receive_all(layer, 1000, 30)
        check_once_and_on_time(layer, arrived, 1000)
        past_due = [at for times in arrived.values() for at, due in times if due < started]
        assert past_due and max(past_due) - started < 2.0
        assert second.stop() == 0, second.output
    finally:
        first.kill()
        if second is not None:
            second.kill()
        layer.close()
