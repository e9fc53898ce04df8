"""geventchannels' own settings: one ``GEVENTCHANNELS`` dict in Django settings.

Every key has a default here, so a project sets only what it changes::

    GEVENTCHANNELS = {"WEBSOCKET_HANDSHAKE_TIMEOUT": 10, "WORKER_CONCURRENCY": 100}

Read them through :func:`get`, which also accepts overrides (command-line options).
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    # Consumer pool
    "WORKER_CONCURRENCY": 50,  # consumer greenlets per process
    "ORDERED_DISPATCH": True,  # messages sharing a reply_channel are consumed one at a time, in order
    "CONSUME_LATER_LIMIT": 100,  # times one message may be put back by ConsumeLater before it is dropped
    # HTTP
    "HTTP_TIMEOUT": 120,  # seconds a routed http.request may wait for its response (then 503)
    "PROXY_HEADERS": False,  # trust X-Forwarded-For / -Proto / -Port
    "MAX_CONNECTIONS": 20_000,  # open sockets per process; above it new ones get 503
    # WebSocket
    "WEBSOCKET_HANDSHAKE_TIMEOUT": 5,  # seconds websocket.connect may take to answer (then 403)
    # 1 MB of payload: with its envelope (reply_channel, path, order) a websocket.receive
    # message then still fits the channel layer's 1 MiB max_message_size.
    "WEBSOCKET_MAX_MESSAGE_SIZE": 1_000_000,  # bytes; larger incoming messages close with 1009
    "WEBSOCKET_MAX_FRAME_SIZE": 1_000_000,  # bytes; larger incoming frames close with 1009
    "WEBSOCKET_OUTBOUND_QUEUE": 1024,  # messages waiting for a slow client; when full, close 1008
    "WEBSOCKET_PING_INTERVAL": 20,  # seconds of silence before the server pings; 0 turns it off
    "WEBSOCKET_PING_TIMEOUT": 20,  # seconds to wait for the pong before closing 1011
    # Shutdown
    "GRACEFUL_TIMEOUT": 10,  # seconds in-flight requests and consumers get to finish on stop
}


def get(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The value of setting ``name``: an override if given and not None, else the project's
    ``GEVENTCHANNELS`` entry, else the default."""
    if name not in DEFAULTS:
        raise KeyError("unknown geventchannels setting %r; known: %s" % (name, ", ".join(DEFAULTS)))
    if overrides and overrides.get(name) is not None:
        return overrides[name]
    from django.conf import settings

    if settings.configured:
        project = getattr(settings, "GEVENTCHANNELS", None) or {}
        if name in project:
            return project[name]
    return DEFAULTS[name]
