"""The WebSocket protocol engine: RFC 6455 handshake checks and framing.

Everything the server knows about the wire format goes through this module, which wraps
the Sans-I/O ``websockets.server.ServerProtocol`` (its C speedups unmask frames). The
connection code owns the socket and calls in here with bytes; nothing here does I/O.

The HTTP request line and headers were already parsed by pywsgi, so the handshake is
checked with :func:`check_handshake` on that parsed request, and frames are parsed by a
fresh protocol object in the OPEN state (:class:`FrameEngine`). For speed, FrameEngine
handles the most common frames itself (whole unfragmented data frames in, data frames
out); every other case, and every error, is websockets' own code. No extension (such as
permessage-deflate, which costs a lot of memory per connection) is ever negotiated.
"""

from __future__ import annotations

import http
import logging
import struct
from collections.abc import Iterable

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import CLOSED, CLOSING, OPEN
from websockets.server import ServerProtocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "BINARY",
    "CLOSE",
    "CONT",
    "PING",
    "PONG",
    "TEXT",
    "OPEN_STATE",
    "FrameEngine",
    "check_handshake",
    "http_response",
]

CONT, TEXT, BINARY = Opcode.CONT, Opcode.TEXT, Opcode.BINARY
#: The engine's state while frames may be sent (compare with ``is``).
OPEN_STATE = OPEN
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG

logger = logging.getLogger("geventchannels.server.websocket")


class _QuietLogger:
    """websockets logs every connection open/close at INFO; the server writes its own
    access log, so only the library's warnings and errors are passed on."""

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's API
        return level >= logging.WARNING and logger.isEnabledFor(level)

    def debug(self, *args, **kwargs) -> None:
        pass

    info = debug

    def warning(self, *args, **kwargs) -> None:
        logger.warning(*args, **kwargs)

    def error(self, *args, **kwargs) -> None:
        logger.error(*args, **kwargs)

    def exception(self, *args, **kwargs) -> None:
        logger.exception(*args, **kwargs)


_QUIET = _QuietLogger()


def check_handshake(
    method: str, path: str, protocol: str, headers: Iterable[tuple[str, str]]
) -> Response:
    """Check an opening handshake request. Returns the 101 response to send on accept
    (without a subprotocol yet) or the error response (400/405/426/505) to send now."""
    request = Request(path, Headers(headers), method=method, protocol=protocol)
    response = ServerProtocol(logger=_QUIET).accept(request)
    if response.status_code != 101 and request.headers.get_all("Sec-WebSocket-Version") != ["13"]:
        # RFC 6455 4.4: a refused version is answered with the version the server speaks.
        response.headers["Sec-WebSocket-Version"] = "13"
    return response


def accept_bytes(response: Response, subprotocol: str | None) -> bytes:
    """The serialized 101 response, naming ``subprotocol`` if one was chosen."""
    if subprotocol:
        response.headers["Sec-WebSocket-Protocol"] = subprotocol
    return response.serialize()


def http_response(status: int, text: str = "") -> bytes:
    """A small ``Connection: close`` HTTP response refusing a handshake (403, 503)."""
    phrase = http.HTTPStatus(status).phrase
    body = text.encode()
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (status, phrase.encode(), len(body), body)
    )


def offered_subprotocols(header_values: Iterable[str]) -> list[str]:
    return [p.strip() for value in header_values for p in value.split(",") if p.strip()]


def _data_header(first_byte: int, length: int) -> bytes:
    if length < 126:
        return bytes((first_byte, length))
    if length < 65536:
        return _HEADER_16.pack(first_byte, 126, length)
    return _HEADER_64.pack(first_byte, 127, length)


def _wire_size(length: int) -> int:
    """Bytes of a masked client frame with a ``length``-byte payload, shortest encoding."""
    return length + (6 if length < 126 else 8 if length < 65536 else 14)


#: First header byte (FIN, no reserved bits) of the frames the shortcut parses.
_SIMPLE_OPCODES = {0x81: TEXT, 0x82: BINARY}

_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


class FrameEngine(ServerProtocol):
    """Frame parser and serializer of one open connection.

    ``max_message`` and ``max_frame`` bound incoming data; over either, the engine fails
    the connection with 1009. Protocol errors fail it with 1002, bad UTF-8 in a close
    reason with 1007 (text payloads are checked by the connection as it decodes them).
    """

    def __init__(self, max_message: int | None, max_frame: int | None):
        super().__init__(state=OPEN, max_size=(max_message, max_frame), logger=_QUIET)
        limits = [limit for limit in (max_message, max_frame, 65535) if limit is not None]
        self.fast_limit = min(limits)
        #: Bytes given to websockets' parser that no complete frame accounts for yet;
        #: 0 means its parser waits at a frame boundary (see ``receive_data``).
        self.unparsed = 0

    # Receiving. Whole, unfragmented, masked text/binary frames up to 64 KB without
    # reserved bits are parsed here when websockets' parser is at a frame boundary;
    # anything else (control frames, fragments, partial frames, errors) goes through
    # websockets, so its checks decide every case the shortcut does not handle.

    def receive_data(self, data: bytes | bytearray) -> None:
        if not self.unparsed and self.current_size is None and self._state is OPEN:
            data = self._parse_simple_frames(data)
            if not data:
                return
        events = self.events
        before = len(events)
        super().receive_data(data)
        unparsed = self.unparsed + len(data)
        for index in range(before, len(events)):
            unparsed -= _wire_size(len(events[index].data))
        # Counting each frame at its shortest encoding never undercounts what is left
        # (a client may use longer length encodings): 0 here means truly at a boundary.
        self.unparsed = max(unparsed, 0)

    def _parse_simple_frames(self, data: bytes | bytearray) -> bytes | bytearray:
        """Parse leading simple frames into ``events``; return the bytes left over."""
        size = len(data)
        position = 0
        limit = self.fast_limit
        events = self.events
        while size - position >= 6:
            opcode = _SIMPLE_OPCODES.get(data[position])
            length = data[position + 1] ^ 0x80  # the mask bit must be set
            if opcode is None or length > 127:
                break
            if length < 126:
                start = position + 2
            elif length == 126 and size - position >= 8:
                length = (data[position + 2] << 8) | data[position + 3]
                start = position + 4
            else:
                break
            end = start + 4 + length
            if length > limit or end > size:
                break
            events.append(Frame(opcode, apply_mask(data[start + 4 : end], data[start : start + 4])))
            position = end
        return data[position:] if position else data

    # Unmasked, unfragmented data frames without extensions are most of what a server
    # sends; their header is built here directly (websockets' general serializer costs
    # several times more). Anything else goes through websockets.

    def send_text(self, data: bytes, fin: bool = True) -> None:
        if fin and self._state is OPEN and not self.expect_continuation_frame:
            self.writes.append(_data_header(0x81, len(data)) + data)
        else:
            super().send_text(data, fin)

    def send_binary(self, data: bytes, fin: bool = True) -> None:
        if fin and self._state is OPEN and not self.expect_continuation_frame:
            self.writes.append(_data_header(0x82, len(data)) + bytes(data))
        else:
            super().send_binary(data, fin)

    def recv_frame(self, frame) -> None:
        if frame.opcode is CLOSE and self.current_size is not None:
            # A close inside a fragmented message ends the connection cleanly; the
            # unfinished message is dropped (RFC 6455 5.4 allows control frames there).
            self.current_size = None
        super().recv_frame(frame)

    @property
    def is_open(self) -> bool:
        return self.state is OPEN

    @property
    def is_closing(self) -> bool:
        return self.state is CLOSING

    @property
    def is_closed(self) -> bool:
        return self.state is CLOSED

    def received_close_code(self) -> int | None:
        """The code of the close frame the client sent (1005 for none), else None."""
        return None if self.close_rcvd is None else self.close_rcvd.code

    def sent_close_code(self) -> int | None:
        return None if self.close_sent is None else self.close_sent.code

    def take_output(self) -> tuple[bytes, bool]:
        """The bytes to write now, and whether the TCP connection should then be closed."""
        writes = self.writes
        if not writes:
            return b"", False
        self.writes = []
        if writes[-1] == b"":
            writes.pop()
            return b"".join(writes), True
        if len(writes) == 1:
            return writes[0], False
        return b"".join(writes), False

    def pending_frames(self) -> int:
        return len(self.writes)
