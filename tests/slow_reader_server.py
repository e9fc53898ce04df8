"""The real server in a process of its own, for measuring its memory from outside
(tests/test_slow_readers.py). Run with gevent patching::

    python -m gevent.monkey tests/slow_reader_server.py '{"WEBSOCKET_OUTBOUND_BYTES": 1048576}'

The argument is GEVENTCHANNELS overrides as JSON. It prints ``port N`` once listening and
serves until its stdin closes. WebSocket messages it understands: ``flood COUNT SIZE``
sends COUNT binary messages of SIZE bytes back (letting other clients in every 8);
``status`` answers with JSON of the open WebSockets and the bytes waiting for slow
clients; anything else is echoed.
"""

from __future__ import annotations

import json
import os
import sys

import django
import gevent


def flood(message) -> None:
    _, count, size = message["text"].split()
    payload = b"x" * int(size)
    for index in range(int(count)):
        message.reply_channel.send({"bytes": payload}, immediately=True)
        if index % 8 == 7:
            gevent.sleep(0)  # the floods go on side by side, and other clients too


def status(message) -> None:
    from geventchannels.server.writer import BACKLOG

    app = SERVER.app
    state = {"websockets": app.websocket_count, "backlog": BACKLOG.total}
    message.reply_channel.send({"text": json.dumps(state)})


def receive(message) -> None:
    text = message.get("text") or ""
    if text.startswith("flood "):
        flood(message)
    elif text == "status":
        status(message)
    else:
        message.reply_channel.send({"text": text})


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
    django.setup()
    from gevent.os import tp_read

    from geventchannels.routing import route
    from geventchannels.test.live import LiveServer

    global SERVER
    if os.environ.get("GC_NO_MALLOC_TRIM"):  # to measure what malloc_trim is worth
        from geventchannels.server.writer import BACKLOG

        BACKLOG._malloc_trim = None
    overrides = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    SERVER = LiveServer([route("websocket.receive", receive)], **overrides).start()
    print(f"port {SERVER.port}", flush=True)
    while tp_read(sys.stdin.fileno(), 1024):
        pass
    SERVER.stop()


SERVER = None

if __name__ == "__main__":
    main()
