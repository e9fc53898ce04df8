"""Schedules the delay workload's messages: ``python delay_sender.py REDIS_URL COUNT MIN MAX``.

Sends COUNT messages to asgi.delay on the Redis layer, each with a random delay of MIN to
MAX seconds, to ``bench.delayed`` with its number and due time (the send time plus the
delay), from a few greenlets; prints one JSON line: how many, how long it took, and how
often asgi.delay was full (each is retried until it goes in).
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from geventchannels.channel import Channel  # noqa: E402
from geventchannels.exceptions import ChannelFull  # noqa: E402
from geventchannels.layers import RedisChannelLayer  # noqa: E402

SENDERS = 4


def main() -> None:
    url, count, low, high = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    layer = RedisChannelLayer(hosts=[url])
    channel = Channel("bench.delayed", channel_layer=layer)
    full = 0

    def send(numbers: range) -> None:
        nonlocal full
        rng = random.Random(numbers.start)
        for n in numbers:
            seconds = rng.uniform(low, high)
            while True:
                sent = time.time()
                try:
                    channel.send({"n": n, "due": sent + seconds}, delay=seconds)
                    break
                except ChannelFull:
                    full += 1
                    gevent.sleep(0.005)

    started = time.time()
    share = -(-count // SENDERS)
    gevent.joinall(
        [gevent.spawn(send, range(i, min(count, i + share))) for i in range(0, count, share)],
        raise_error=True,
    )
    print(
        json.dumps(
            {"sent": count, "started": started, "seconds": time.time() - started, "full": full}
        )
    )
    layer.close()


if __name__ == "__main__":
    main()
