"""PROXY_HEADERS: what a trusted reverse proxy says about the client.

One rule for the WSGI fast path (the environ Django sees) and for the ``http.request``
and ``websocket.connect`` messages:

- ``X-Forwarded-For``: its first address is the client's host; the client's port is
  ``X-Forwarded-Port`` when that is a number (ASCII digits), else 0. Without ``X-Forwarded-For`` the
  socket's peer stays the client (and ``X-Forwarded-Port`` is ignored).
- ``X-Forwarded-Proto``: ``https`` or ``wss`` mean the client's connection is secure,
  ``http`` or ``ws`` that it is not (any case, spaces ignored); any other value, or none,
  leaves the scheme of the socket.

Only the first value of each header counts.
"""

from __future__ import annotations

from .interfaces import RequestHeaders

_SECURE = {"https": True, "wss": True, "http": False, "ws": False}


def forwarded(headers: RequestHeaders) -> tuple[tuple[str, int] | None, bool | None]:
    """(client host and port, or None; secure True / False, or None when not said)."""
    client = None
    forwarded_for = headers.get("X-Forwarded-For")
    if forwarded_for:
        port = (headers.get("X-Forwarded-Port") or "").strip()
        client = (
            forwarded_for.split(",")[0].strip(),
            int(port) if port.isascii() and port.isdigit() else 0,
        )
    proto = headers.get("X-Forwarded-Proto")
    secure = _SECURE.get(proto.strip().lower()) if proto else None
    return client, secure
