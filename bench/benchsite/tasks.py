"""The task workload (task_redis): a view queues a task on a named channel, a consumer in
any worker runs it.

What was queued and what was run is counted in each process and added to Redis every
0.1 s (``bench:sent``, ``bench:done:<pid>``), so counting costs no Redis round trip per
task; the harness reads the totals once the load has stopped.
"""

import os

import gevent
import redis
from django.conf import settings
from django.http import HttpResponse

from geventchannels import Channel
from geventchannels.exceptions import ChannelFull

TASKS = "bench.tasks"
_counts: dict[str, int] = {}
_flusher = None


def count(name: str) -> None:
    global _flusher
    _counts[name] = _counts.get(name, 0) + 1
    if _flusher is None:
        _flusher = gevent.spawn(_flush_forever)


def _flush_forever() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    while True:
        gevent.sleep(0.1)
        if not _counts:
            continue
        counts = dict(_counts)
        _counts.clear()
        pipe = client.pipeline(transaction=False)
        for name, value in counts.items():
            pipe.incrby("bench:" + name, value)
        pipe.execute()


def enqueue(request):
    try:
        Channel(TASKS).send({"n": 1})
    except ChannelFull:
        return HttpResponse(b"full", status=503, content_type="text/plain")
    count("sent")
    return HttpResponse(b"queued", content_type="text/plain")


def run_task(message) -> None:
    count(f"done:{os.getpid()}")
