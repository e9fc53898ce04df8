"""The delay workload: delayed messages (asgi.delay) fall due on ``bench.delayed``, and a
consumer in any worker notes how late each one came.

Each arrival is kept as (message number, seconds late) and the batch is added to the
Redis list ``bench:delay:fired`` every 0.1 s, so noting costs no round trip per message;
the harness reads the list once everything has fallen due.
"""

import struct
import time

import gevent
import redis
from django.conf import settings

DELAYED = "bench.delayed"
FIRED_KEY = "bench:delay:fired"
#: One arrival: message number, seconds late (negative: early).
RECORD = struct.Struct("<Id")

_records: list[bytes] = []
_flusher = None


def fired(message) -> None:
    global _flusher
    _records.append(RECORD.pack(message["n"], time.time() - message["due"]))
    if _flusher is None:
        _flusher = gevent.spawn(_flush_forever)


def _flush_forever() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    while True:
        gevent.sleep(0.1)
        if _records:
            batch = b"".join(_records)
            _records.clear()
            client.rpush(FIRED_KEY, batch)
