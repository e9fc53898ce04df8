"""The small plain-text HTTP responses the server answers by itself (403, 413, 503...)."""

from __future__ import annotations

import http


def status_line(status: int) -> str:
    """``"503 Service Unavailable"``; an unregistered code gets "Unknown"."""
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def plain_text(status: int, text: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, headers, body) of a UTF-8 text response, for WSGI's start_response."""
    body = text.encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    return status_line(status), headers, body


def plain_response(status: int, text: str) -> bytes:
    """The whole ``Connection: close`` HTTP/1.1 response, for a socket no WSGI handler
    writes to (a refused WebSocket handshake, a connection over MAX_CONNECTIONS)."""
    line, headers, body = plain_text(status, text)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return f"HTTP/1.1 {line}\r\n{head}Connection: close\r\n\r\n".encode("latin-1") + body
