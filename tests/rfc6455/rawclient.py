"""A raw WebSocket client for conformance tests.

It writes exactly the bytes a test asks for on a real socket and parses every frame the
server sends, so a test can send what a well-behaved library never would (unmasked frames,
reserved bits, broken UTF-8, truncated close payloads) and check the exact frames that come
back. Every read has a deadline; nothing here sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from dataclasses import dataclass

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

#: Close codes a server may put on the wire (RFC 6455 7.4.1 and the IANA registry);
#: 1005, 1006 and 1015 are reserved for reporting and never sent.
SENDABLE_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
) | frozenset(range(3000, 5000))

DEFAULT_TIMEOUT = 5.0


class ServerClosedTCP(Exception):
    """The server closed (or reset) the TCP connection while a frame was awaited."""


class BadServerFrame(AssertionError):
    """The server sent bytes that are not a valid RFC 6455 server frame."""


@dataclass(frozen=True)
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    masked: bool = False
    header: bytes = b""

    def __repr__(self) -> str:
        payload = repr(self.payload[:60])
        if len(self.payload) > 60:
            payload += f"... ({len(self.payload)} bytes)"
        return (
            f"Frame(fin={self.fin}, rsv={self.rsv}, opcode={self.opcode:#x}, "
            f"masked={self.masked}, payload={payload})"
        )

    @property
    def close_code(self) -> int | None:
        """The status code of a close frame, None when its payload is empty."""
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:] if self.opcode == OP_CLOSE else b""


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value a server must answer to ``key`` (RFC 6455 4.2.2)."""
    digest = hashlib.sha1((key + WS_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def close_payload(code: int | None = None, reason: bytes | str = b"") -> bytes:
    """A close frame body: two-byte status code then the reason (raw bytes allowed)."""
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


def encode_frame(
    opcode: int,
    payload: bytes | str = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    mask_key: bytes | None = None,
    length_form: int | None = None,
) -> bytes:
    """One frame's bytes, exactly as asked: any opcode, any RSV bits, masked or not.

    ``length_form`` forces the 7-bit (0), 16-bit (126) or 64-bit (127) length encoding
    even where a shorter one would do.
    """
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    first = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    mask_bit = 0x80 if mask else 0
    length = len(payload)
    if length_form is None:
        length_form = 0 if length < 126 else 126 if length < 65536 else 127
    if length_form == 0:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length_form == 126:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not mask:
        return header + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return header + key + apply_mask(payload, key)


def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``key`` (RFC 6455 5.3); it is its own inverse."""
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big"
    )


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The header's values joined with ", " (case-insensitive name), None if absent."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None


def upgrade_request(
    host: str,
    port: int,
    path: str = "/",
    *,
    key: str | None = "",
    version: str | None = "13",
    method: str = "GET",
    extra_headers: list[tuple[str, str]] | None = None,
) -> bytes:
    """The bytes of an opening handshake; ``key``/``version`` None leaves that header out,
    ``key=""`` uses a fresh random key."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
    ]
    if key is not None:
        lines.append("Sec-WebSocket-Key: %s" % (key or new_key()))
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    for name, value in extra_headers or []:
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class RawWebSocket:
    """One TCP connection to the server, spoken to in raw bytes and frames."""

    def __init__(self, sock: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = sock
        self.timeout = timeout
        self.buffer = bytearray()
        self.response: HttpResponse | None = None
        #: RSV bits the server may set on the first frame of a data message (4: RSV1,
        #: once permessage-deflate is negotiated).
        self.allowed_rsv = 0

    @classmethod
    def open_tcp(
        cls,
        host: str,
        port: int,
        timeout: float = DEFAULT_TIMEOUT,
        receive_buffer: int | None = None,
    ) -> RawWebSocket:
        """A TCP connection; a small ``receive_buffer`` makes the server's writes block
        soon, as with a slow client."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, timeout)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        path: str = "/",
        *,
        extra_headers: list[tuple[str, str]] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        receive_buffer: int | None = None,
    ) -> RawWebSocket:
        """Open a connection and complete a valid handshake; fail unless the server
        answers 101 with the right Sec-WebSocket-Accept."""
        ws = cls.open_tcp(host, port, timeout, receive_buffer)
        key = new_key()
        ws.send_raw(upgrade_request(host, port, path, key=key, extra_headers=extra_headers))
        response = ws.read_http_response(timeout)
        if response.status != 101:
            ws.close()
            raise AssertionError(
                f"handshake refused: {response.status} {response.reason} {response.body!r}"
            )
        if response.header("Sec-WebSocket-Accept") != accept_key(key):
            ws.close()
            raise AssertionError(f"wrong Sec-WebSocket-Accept in {response.headers!r}")
        return ws

    # -- writing ---------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` as is; a server that stops reading fails this after ``timeout``."""
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes | str = b"", **options) -> None:
        self.send_raw(encode_frame(opcode, payload, **options))

    def send_text(self, text: str | bytes) -> None:
        self.send_frame(OP_TEXT, text)

    def send_binary(self, data: bytes) -> None:
        self.send_frame(OP_BINARY, data)

    def send_close(self, code: int | None = 1000, reason: bytes | str = b"") -> None:
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    # -- reading ---------------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        """Read more bytes into the buffer before ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete reply from the server before the deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no complete reply from the server before the deadline") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ServerClosedTCP("the server closed the TCP connection")
        self.buffer += chunk

    def _take(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count:
            self._fill(deadline)
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def read_http_response(self, timeout: float = DEFAULT_TIMEOUT) -> HttpResponse:
        """Read a status line and headers (and a Content-Length body, if any)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            self._fill(deadline)
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status_line, *header_lines = head.split("\r\n")
        _version, status, reason = (status_line.split(" ", 2) + [""])[:3]
        headers = []
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        response = HttpResponse(int(status), reason, headers)
        length = response.header("Content-Length")
        if response.status != 101 and length is not None:
            response.body = self._take(int(length), deadline)
        self.response = response
        return response

    def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The next frame from the server; checks that it is a valid server frame."""
        deadline = time.monotonic() + timeout
        header = self._take(2, deadline)
        first, second = header
        length = second & 0x7F
        if length == 126:
            extended = self._take(2, deadline)
            length = struct.unpack("!H", extended)[0]
        elif length == 127:
            extended = self._take(8, deadline)
            length = struct.unpack("!Q", extended)[0]
        else:
            extended = b""
        masked = bool(second & 0x80)
        key = self._take(4, deadline) if masked else b""
        payload = self._take(length, deadline)
        frame = Frame(
            bool(first & 0x80),
            (first >> 4) & 0x7,
            first & 0xF,
            apply_mask(payload, key) if masked else payload,
            masked,
            header + extended + key,
        )
        check_server_frame(frame, self.allowed_rsv)
        return frame

    def recv_message(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bytes]:
        """The next whole data message as (opcode, payload); control frames other than
        close are skipped, a close frame raises AssertionError showing its code."""
        deadline = time.monotonic() + timeout
        opcode, parts = None, []
        while True:
            frame = self.recv_frame(max(deadline - time.monotonic(), 0.001))
            if frame.opcode == OP_CLOSE:
                raise AssertionError(
                    f"server closed with {frame.close_code} {frame.close_reason!r} while a message was expected"
                )
            if frame.opcode in (OP_PING, OP_PONG):
                continue
            if opcode is None:
                if frame.opcode == OP_CONTINUATION:
                    raise BadServerFrame("server sent a continuation frame with no message")
                opcode = frame.opcode
            elif frame.opcode != OP_CONTINUATION:
                raise BadServerFrame("server started a new message inside a fragmented one")
            parts.append(frame.payload)
            if frame.fin:
                return opcode, b"".join(parts)

    def recv_text(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        opcode, payload = self.recv_message(timeout)
        assert opcode == OP_TEXT, f"expected a text message, got opcode {opcode}"
        return payload.decode("utf-8")

    def recv_binary(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        opcode, payload = self.recv_message(timeout)
        assert opcode == OP_BINARY, f"expected a binary message, got opcode {opcode}"
        return payload

    def expect_close(
        self, timeout: float = DEFAULT_TIMEOUT, *, allow: tuple[int, ...] | None = None
    ) -> Frame:
        """Read frames until the server's close frame and return it. Frames before it
        are skipped when their opcode is in ``allow`` (None: any), else fail the test."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_frame(max(deadline - time.monotonic(), 0.001))
            if frame.opcode == OP_CLOSE:
                return frame
            if allow is not None and frame.opcode not in allow:
                raise AssertionError(f"expected a close frame, got {frame!r}")

    def wait_tcp_close(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Wait for the server to close TCP; return what it sent meanwhile (normally
        nothing after its close frame)."""
        deadline = time.monotonic() + timeout
        start = len(self.buffer)
        try:
            while True:
                self._fill(deadline)
        except ServerClosedTCP:
            return bytes(self.buffer[start:])

    def fail_with(
        self, code: int, timeout: float = DEFAULT_TIMEOUT, *, allow: tuple[int, ...] = ()
    ) -> Frame:
        """Assert the server fails the connection with ``code`` (RFC 6455 7.1.7): its
        next frame (after any whose opcode is in ``allow``) is a close with that code,
        and it then closes TCP without waiting for our close (the server closes first,
        7.1.1)."""
        frame = self.expect_close(timeout, allow=allow)
        assert frame.close_code == code, (
            f"expected close {code}, got {frame.close_code} {frame.close_reason!r}"
        )
        trailing = self.wait_tcp_close(timeout)
        assert not trailing, f"server sent {trailing!r} after its close frame"
        return frame

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def check_server_frame(frame: Frame, allowed_rsv: int = 0) -> None:
    """Raise BadServerFrame unless ``frame`` is one a server may send (RFC 6455 5.1-5.5);
    ``allowed_rsv`` are the bits a negotiated extension uses on a message's first frame
    (RFC 7692 6.1)."""
    if frame.masked:
        raise BadServerFrame("server frames must not be masked (RFC 6455 5.1)")
    if frame.rsv & ~allowed_rsv:
        raise BadServerFrame(f"server set reserved bits {frame.rsv:#x} without an extension")
    if frame.rsv and frame.opcode not in (OP_TEXT, OP_BINARY):
        raise BadServerFrame(f"server set reserved bits {frame.rsv:#x} on opcode {frame.opcode:#x}")
    if frame.opcode not in DATA_OPCODES + CONTROL_OPCODES:
        raise BadServerFrame(f"server used reserved opcode {frame.opcode:#x}")
    if frame.opcode in CONTROL_OPCODES:
        if not frame.fin:
            raise BadServerFrame("server fragmented a control frame")
        if len(frame.payload) > 125:
            raise BadServerFrame("server control frame longer than 125 bytes")
    if frame.opcode == OP_CLOSE:
        if len(frame.payload) == 1:
            raise BadServerFrame("server close frame with a 1-byte payload")
        if frame.close_code is not None and frame.close_code not in SENDABLE_CLOSE_CODES:
            raise BadServerFrame(f"server sent close code {frame.close_code}")
        try:
            frame.close_reason.decode("utf-8")
        except UnicodeDecodeError:
            raise BadServerFrame("server close reason is not UTF-8") from None
