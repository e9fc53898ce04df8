"""The ceiling: a WebSocket + HTTP server on plain gevent with no framework.

It does the least any server must do for each workload (parse a request, frame a message,
one queue and one writer per socket) so the tables show how far a framework sits from it.
Paths: /hello/ (HTTP), /echo/, /broadcast/ (join the group), /send/ (each message goes to
the whole group), /idle/, and long-poll /poll/ (parked), /fire/ (answers all parked),
/poll-count/.

Usage: python bare.py --port PORT
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.queue import Queue  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension

    def apply_mask(data: bytes, mask: bytes) -> bytes:
        return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER = 16384
MAX_FRAME = 1 << 20

group: set[Connection] = set()
parked: list[Event] = []
fire_event = Event()


class Closed(Exception):
    """The peer went away or broke the protocol."""


class Connection:
    """One accepted socket: a buffered reader, and for WebSockets a queue drained by one writer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.outbox: Queue = Queue(maxsize=10000)

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed()
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEADER:
                raise Closed()
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed()
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    def read_frame(self) -> tuple[int, bytes]:
        first, second = self.read_exact(2)
        opcode = first & 0x0F
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self.read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self.read_exact(8))
        if length > MAX_FRAME or not second & 0x80:
            raise Closed()
        mask = self.read_exact(4)
        return opcode, apply_mask(self.read_exact(length), mask)

    def writer(self) -> None:
        try:
            while True:
                frame = self.outbox.get()
                if frame is None:
                    return
                self.sock.sendall(frame)
        except OSError:
            pass


def frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        return bytes((0x80 | opcode, length)) + payload
    if length < 65536:
        return bytes((0x80 | opcode, 126)) + struct.pack("!H", length) + payload
    return bytes((0x80 | opcode, 127)) + struct.pack("!Q", length) + payload


def http_response(conn: Connection, body: bytes, status: str = "200 OK") -> None:
    conn.sock.sendall(
        b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
        % (status.encode(), len(body), body)
    )


def serve_websocket(conn: Connection, path: str, key: bytes) -> None:
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    if path == "/broadcast/":
        group.add(conn)
    conn.sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    writer = gevent.spawn(conn.writer)
    try:
        while True:
            opcode, payload = conn.read_frame()
            if opcode == 0x8:
                conn.outbox.put(frame(0x8, payload[:2]))
                break
            if opcode == 0x9:
                conn.outbox.put(frame(0xA, payload))
            elif opcode in (0x1, 0x2):
                if path == "/echo/":
                    conn.outbox.put(frame(opcode, payload))
                elif path == "/send/":
                    data = frame(opcode, payload)
                    for member in list(group):
                        member.outbox.put_nowait(data)
    finally:
        group.discard(conn)
        conn.outbox.put(None)
        writer.join(timeout=1)


def serve_http(conn: Connection, path: str) -> None:
    global fire_event
    if path == "/hello/":
        http_response(conn, b"hello")
    elif path == "/poll/":
        event = fire_event
        parked.append(event)
        event.wait()
        http_response(conn, b"fired")
    elif path == "/poll-count/":
        http_response(conn, b"%d" % len(parked))
    elif path == "/fire/":
        event, fire_event = fire_event, Event()
        parked.clear()
        event.set()
        http_response(conn, b"ok")
    else:
        http_response(conn, b"not found", "404 Not Found")


def handle(sock: socket.socket, address: tuple) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Connection(sock)
    try:
        while True:
            head = conn.read_head()
            request_line, *header_lines = head.split(b"\r\n")
            path = request_line.split(b" ")[1].decode("latin-1").split("?", 1)[0]
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if headers.get(b"upgrade", b"").lower() == b"websocket":
                serve_websocket(conn, path, headers[b"sec-websocket-key"])
                return
            serve_http(conn, path)
    except (Closed, OSError):
        pass
    finally:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = StreamServer((args.host, args.port), handle, backlog=4096)
    server.serve_forever()


if __name__ == "__main__":
    main()
