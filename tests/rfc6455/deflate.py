"""The client's side of permessage-deflate (RFC 7692) for the raw client: parsing what the
server agreed to, compressing what we send and decompressing what it sends, with each
negotiated parameter enforced on the server (a server that used a larger window or its
context when it agreed not to makes the decompression here fail)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .rawclient import OP_CONTINUATION, OP_PING, OP_PONG, RawWebSocket

#: The bytes a sync flush ends with, which RFC 7692 7.2.1 removes from each message.
TAIL = b"\x00\x00\xff\xff"
RSV1 = 4
#: Bytes inflated per call: back references may reach this far past the window.
INFLATE_STEP = 256


@dataclass(frozen=True)
class Agreed:
    """The parameters of a permessage-deflate response; window bits 15 when absent."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15

    @classmethod
    def parse(cls, header: str) -> Agreed:
        name, *params = [part.strip() for part in header.split(";")]
        assert name == "permessage-deflate", f"negotiated {header!r}"
        values: dict = {}
        for param in params:
            key, _, value = param.partition("=")
            key = key.strip()
            assert key not in values, f"{key} twice in {header!r}"
            values[key] = int(value.strip('" ')) if value else True
        assert set(values) <= set(cls.__dataclass_fields__), f"unknown parameter in {header!r}"
        return cls(**values)


def response_params(ws: RawWebSocket) -> Agreed | None:
    header = ws.response.header("Sec-WebSocket-Extensions") if ws.response else None
    return None if header is None else Agreed.parse(header)


class DeflateClient:
    """Sends and receives compressed messages over ``ws`` as ``agreed``."""

    def __init__(self, ws: RawWebSocket, agreed: Agreed, window_bits: int | None = None):
        self.ws = ws
        self.agreed = agreed
        ws.allowed_rsv = RSV1
        #: Our compressor's window (at most what the server allowed).
        self.window_bits = window_bits or agreed.client_max_window_bits
        assert self.window_bits <= agreed.client_max_window_bits
        self._compressor = None
        self._decompressor = None

    def compress(self, payload: bytes) -> bytes:
        if self._compressor is None or self.agreed.client_no_context_takeover:
            self._compressor = zlib.compressobj(wbits=-self.window_bits)
        data = self._compressor.compress(payload) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(TAIL)
        return data[:-4]

    def send(self, opcode: int, payload: bytes, fragments: int = 1, **frame_options) -> int:
        """Send ``payload`` compressed, in ``fragments`` frames; returns its compressed size."""
        data = self.compress(payload)
        step = max(1, -(-len(data) // fragments))
        pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        for index, piece in enumerate(pieces):
            self.ws.send_frame(
                opcode if index == 0 else OP_CONTINUATION,
                piece,
                fin=index == len(pieces) - 1,
                rsv=RSV1 if index == 0 else 0,
                **frame_options,
            )
        return len(data)

    def recv(self, timeout: float = 10.0) -> tuple[int, bytes, int]:
        """The next message: (opcode, payload, bytes on the wire); a server message must be
        compressed."""
        first = self.ws.recv_frame(timeout)
        while first.opcode in (OP_PING, OP_PONG):
            first = self.ws.recv_frame(timeout)
        assert first.rsv == RSV1, f"uncompressed message from the server: {first!r}"
        parts = [first.payload]
        frame = first
        while not frame.fin:
            frame = self.ws.recv_frame(timeout)
            assert frame.opcode == OP_CONTINUATION, frame
            parts.append(frame.payload)
        data = b"".join(parts)
        if self._decompressor is None or self.agreed.server_no_context_takeover:
            self._decompressor = zlib.decompressobj(wbits=-self.agreed.server_max_window_bits)
        return first.opcode, self._inflate(data + TAIL), len(data)

    def _inflate(self, data: bytes) -> bytes:
        """Inflate a little at a time, so that back references reach only into the agreed
        window (zlib lets one call refer to anything it output): a server that used a
        larger window fails here with "invalid distance too far back"."""
        out = []
        decompressor = self._decompressor
        while data:
            out.append(decompressor.decompress(data, INFLATE_STEP))
            data = decompressor.unconsumed_tail
        return b"".join(out)
