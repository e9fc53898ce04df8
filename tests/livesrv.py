"""The real geventchannels server in-process for a test: ``live_server(routing)``, a thin
layer over :func:`geventchannels.test.live_server` (see its docs)::

    with live_server([route("websocket.receive", echo)], HTTP_TIMEOUT=2) as server:
        ws = websocket.create_connection(server.ws_url + "/chat/")

Unlike the public helper, ``routing`` defaults to no routes (not the project's). The layer
is a fresh InMemoryChannelLayer unless ``layer`` is given; keyword arguments are
GEVENTCHANNELS settings overrides (``WEBSOCKET_PING_INTERVAL=0.2``). A consumer that raises
fails the test where it waits. Blocking clients must run in real threads or be
gevent-patched (the suite runs under ``python -m gevent.monkey``).
"""

from __future__ import annotations

import struct
import time
from contextlib import AbstractContextManager
from typing import Any

import websocket
from gevent.event import Event

from geventchannels.test.live import LiveServer
from geventchannels.test.live import live_server as _live_server

__all__ = ["LiveServer", "Recorder", "live_server"]


def live_server(routing: Any = (), **options: Any) -> AbstractContextManager[LiveServer]:
    """Start the server, yield a :class:`LiveServer`, stop it (WebSockets get 1001)."""
    return _live_server(list(routing) if isinstance(routing, tuple) else routing, **options)


class Recorder:
    """A consumer that keeps what it receives, and a way to wait for it::

    seen = Recorder()
    route("websocket.disconnect", seen)
    ...
    seen.wait_for(lambda m: m["code"] == 4001)
    """

    def __init__(self, reply: dict | None = None):
        self.messages: list[dict] = []
        self.reply = reply
        self._arrived = Event()

    def __call__(self, message: Any, **kwargs: Any) -> None:
        self.messages.append(dict(message.content))
        if self.reply is not None:
            message.reply_channel.send(dict(self.reply))
        self._arrived.set()

    def wait_for(self, predicate: Any = None, timeout: float = 5.0) -> dict:
        """The first message matching ``predicate`` (any message when None); fails
        after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if predicate is None or predicate(message):
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no matching message within {timeout:.1f} s; got {self.messages!r}"
                )
            self._arrived.clear()
            self._arrived.wait(remaining)

    def wait_count(self, count: int, timeout: float = 5.0) -> list[dict]:
        """Wait until at least ``count`` messages arrived; returns them all."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{len(self.messages)} of {count} messages within {timeout:.1f} s"
                )
            self._arrived.clear()
            self._arrived.wait(remaining)
        return self.messages


def close_code(ws: websocket.WebSocket, timeout: float = 15) -> int:
    """Read until the server's close frame; its code."""
    ws.settimeout(timeout)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
