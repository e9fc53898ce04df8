"""What the server needs to know about an accepted socket: plain TCP or TLS.

A plain socket's OS-level socket can be used directly where a greenlet switch is not
allowed or not wanted: a non-blocking ``send`` in the greenlet that produced a reply, a
peek from an event-loop callback. A TLS socket must never be bypassed that way: its bytes
are records of the TLS stream, so they go through the TLS layer (and its writer greenlet).
"""

from __future__ import annotations

import socket
from typing import Any

import gevent.socket
from gevent.ssl import SSLSocket


def set_nodelay(sock: Any) -> None:
    """Send small responses and frames at once instead of after the peer's delayed ACK."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not TCP (a Unix socket)


def is_tls(sock: Any) -> bool:
    return isinstance(sock, SSLSocket)


def os_socket(sock: Any) -> socket.socket | None:
    """The non-blocking OS-level socket under a plain gevent socket (gevent's ``_sock``);
    None for a TLS socket or anything else."""
    if isinstance(sock, gevent.socket.socket) and not isinstance(sock, SSLSocket):
        return sock._sock
    return None
