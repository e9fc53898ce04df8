"""The WebSocket protocol engine: RFC 6455 handshake checks, framing and whole messages.

Everything the server knows about the wire format goes through this module, which wraps
the Sans-I/O ``websockets.server.ServerProtocol`` (its C speedups unmask frames). The
connection code owns the socket and calls in here with bytes; nothing here does I/O.

The HTTP request line and headers were already parsed by pywsgi, so the handshake is
checked with :func:`check_handshake` on that parsed request, and frames are parsed by a
fresh protocol object in the OPEN state (:class:`FrameEngine`), which reassembles
fragments and decodes text: :meth:`FrameEngine.receive` turns bytes into whole messages.
For speed, FrameEngine handles the most common frames itself (whole unfragmented data
frames in, data frames out); every other case, and every protocol error, is websockets'
own code.

permessage-deflate (RFC 7692) is websockets' own extension, negotiated with the client's
parameters honoured; its zlib objects are made when a connection first needs them, so an
idle connection costs no compression memory. Its decompressor never produces more than
the message limit allows (a decompression bomb fails with 1009).
"""

from __future__ import annotations

import logging
import struct
import zlib
from codecs import getincrementaldecoder
from collections.abc import Iterable, Sequence
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import BytesLike

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "OPEN_STATE",
    "FrameEngine",
    "Message",
    "accept_bytes",
    "check_handshake",
    "offered_subprotocols",
]

CONT, TEXT, BINARY, CLOSE = Opcode.CONT, Opcode.TEXT, Opcode.BINARY, Opcode.CLOSE
#: The engine's state while frames may be sent (compare with ``is``).
OPEN_STATE = OPEN
#: A whole incoming message: text as str, binary as bytes.
Message = str | bytes
#: websockets' code for a connection lost without a close frame (never deferred).
ABNORMAL_CLOSURE = 1006

logger = logging.getLogger("geventchannels.server.websocket")


class _QuietLogger:
    """websockets logs every connection open/close at INFO; the server writes its own
    access log, so only the library's warnings and errors are passed on."""

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's API
        return level >= logging.WARNING and logger.isEnabledFor(level)

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    info = debug

    def warning(self, *args: Any, **kwargs: Any) -> None:
        logger.warning(*args, **kwargs)

    def error(self, *args: Any, **kwargs: Any) -> None:
        logger.error(*args, **kwargs)

    def exception(self, *args: Any, **kwargs: Any) -> None:
        logger.exception(*args, **kwargs)


_QUIET: Any = _QuietLogger()


class LazyDeflate(PerMessageDeflate):
    """websockets' permessage-deflate, whose compressor (about 38 KiB) and decompressor
    (10 to 40 KiB, by the client's window) are made on first use, not at the handshake."""

    def __init__(
        self,
        remote_no_context_takeover: bool,
        local_no_context_takeover: bool,
        remote_max_window_bits: int,
        local_max_window_bits: int,
        compress_settings: dict[Any, Any] | None = None,
    ) -> None:
        # Without context takeover websockets makes no zlib object here: ask for that,
        # then say what was negotiated.
        super().__init__(
            True, True, remote_max_window_bits, local_max_window_bits, compress_settings
        )
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_no_context_takeover = local_no_context_takeover

    #: Payload bytes of the last frame decoded, as it came on the wire (compressed).
    wire_length = 0

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        self.wire_length = len(frame.data)
        return super().decode(frame, max_size=max_size)

    def __getattr__(self, name: str) -> Any:
        value: Any
        if name == "encoder":
            value = zlib.compressobj(wbits=-self.local_max_window_bits, **self.compress_settings)
        elif name == "decoder":
            value = zlib.decompressobj(wbits=-self.remote_max_window_bits)
        else:
            raise AttributeError(name)
        setattr(self, name, value)
        return value


class DeflateFactory(ServerPerMessageDeflateFactory):
    """Negotiates permessage-deflate as websockets does, the extension being LazyDeflate."""

    def process_request_params(
        self, params: Sequence[Any], accepted_extensions: Sequence[Extension]
    ) -> tuple[list[Any], PerMessageDeflate]:
        response, extension = super().process_request_params(params, accepted_extensions)
        return response, LazyDeflate(
            extension.remote_no_context_takeover,
            extension.local_no_context_takeover,
            extension.remote_max_window_bits,
            extension.local_max_window_bits,
            extension.compress_settings,
        )


#: What the server offers: websockets' memory-conscious choice (a 4 KiB window and
#: memLevel 5 for the server's compressor; the client's window at 4 KiB when it lets the
#: server choose), the client's own requests honoured on top.
DEFLATE = DeflateFactory(
    server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
)


def check_handshake(
    method: str,
    path: str,
    protocol: str,
    headers: Iterable[tuple[str, str]],
    compression: bool = False,
) -> tuple[Response, LazyDeflate | None]:
    """Check an opening handshake request. Returns the 101 response to send on accept
    (without a subprotocol yet) and the permessage-deflate it negotiated (when
    ``compression`` and the client offers it), or the error response (400/405/426/505)
    to send now."""
    request = Request(path, Headers(headers), method=method, protocol=protocol)
    engine = ServerProtocol(extensions=[DEFLATE] if compression else None, logger=_QUIET)
    response = engine.accept(request)
    if response.status_code != 101 and request.headers.get_all("Sec-WebSocket-Version") != ["13"]:
        # RFC 6455 4.4: a refused version is answered with the version the server speaks.
        response.headers["Sec-WebSocket-Version"] = "13"
    deflate = engine.extensions[0] if engine.extensions else None
    assert deflate is None or isinstance(deflate, LazyDeflate)  # the only one offered
    return response, deflate


def accept_bytes(response: Response, subprotocol: str | None) -> bytes:
    """The serialized 101 response, naming ``subprotocol`` if one was chosen."""
    if subprotocol:
        response.headers["Sec-WebSocket-Protocol"] = subprotocol
    return response.serialize()


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


#: First header byte (FIN, no reserved bits) of the frames the shortcut parses, and of
#: those compressed with permessage-deflate (RSV1 set). Text has bit 0 set, binary not.
_SIMPLE_TEXT, _SIMPLE_BINARY = 0x81, 0x82
_DEFLATED_TEXT, _DEFLATED_BINARY = 0xC1, 0xC2

_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
_Utf8Decoder = getincrementaldecoder("utf-8")


class FrameEngine(ServerProtocol):
    """Frames and messages of one open connection.

    ``max_message`` and ``max_frame`` bound incoming data (after decompression, with
    ``deflate``, the negotiated permessage-deflate); over either, the connection fails
    with 1009. Protocol errors fail it with 1002, invalid UTF-8 in a text message
    or a close reason with 1007 (a fragmented text fails at the first bad fragment).

    A failure found while parsing is *deferred*: :meth:`receive` returns the messages
    that came before it and sets :attr:`violation`; the caller passes those messages on
    and then calls :meth:`fail_violation`, which queues the close frame and the end of
    the stream (RFC 6455 7.1.7). Data after the violation is never looked at.
    """

    def __init__(
        self,
        max_message: int | None,
        max_frame: int | None,
        deflate: LazyDeflate | None = None,
    ):
        super().__init__(state=OPEN, max_size=(max_message, max_frame), logger=_QUIET)
        limits = [limit for limit in (max_message, max_frame, 65535) if limit is not None]
        self.fast_limit = min(limits)
        self.deflate = deflate
        if deflate is not None:
            self.extensions = [deflate]
        inflated = [limit for limit in (max_message, max_frame) if limit is not None]
        #: Bytes a compressed whole frame may inflate to.
        self.inflate_limit = min(inflated) if inflated else None
        #: Bytes given to websockets' parser that no complete frame accounts for yet;
        #: 0 means its parser waits at a frame boundary (see ``receive``).
        self.unparsed = 0
        #: (close code, reason) of the failure :meth:`receive` found, until it is failed.
        self.violation: tuple[int, str] | None = None
        self._messages: list[Message] = []
        #: The parts of a fragmented message so far: str for text (decoded), else bytes.
        self._fragments: list[Any] | None = None
        self._decoder: Any = None
        self._deferring = False

    # Receiving. Whole, unfragmented, masked text/binary frames up to 64 KB without
    # reserved bits (but RSV1 with permessage-deflate: inflated by websockets' extension)
    # are parsed here when websockets' parser is at a frame boundary; anything else
    # (control frames, fragments, partial frames, errors) goes through websockets, so its
    # checks decide every case the shortcut does not handle.

    def receive(self, data: bytes | bytearray) -> list[Message]:
        """Parse bytes read from the socket; return the whole messages they complete, in
        order. Replies the protocol requires (pongs, the close echo) go to ``writes``."""
        if self.violation is not None:
            return []
        messages = self._messages
        if not self.unparsed and self.current_size is None and self._state is OPEN:
            data = self._parse_simple_frames(data, messages)
            if not data or self.violation is not None:
                self._messages = []
                return messages
        self.unparsed += len(data)
        self._deferring = True
        try:
            super().receive_data(data)
        finally:
            self._deferring = False
        # Counting each frame at its shortest encoding never undercounts what is left
        # (a client may use longer length encodings): 0 here means truly at a boundary.
        self.unparsed = max(self.unparsed, 0)
        if self.events:
            self.events = []
        self._messages = []
        return messages

    def _parse_simple_frames(
        self, data: bytes | bytearray, messages: list[Message]
    ) -> bytes | bytearray:
        """Parse leading simple frames into ``messages``; return the bytes left over."""
        size = len(data)
        position = 0
        limit = self.fast_limit
        deflate = self.deflate
        while size - position >= 6:
            first = data[position]
            length = data[position + 1] ^ 0x80  # the mask bit must be set
            if first == _SIMPLE_TEXT or first == _SIMPLE_BINARY:
                deflated = False
            elif deflate is not None and (first == _DEFLATED_TEXT or first == _DEFLATED_BINARY):
                deflated = True
            else:
                break
            if length > 127:
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
            payload = apply_mask(data[start + 4 : end], data[start : start + 4])
            if deflated:
                inflated = self._inflate(first, payload)
                if inflated is None:
                    return b""
                payload = inflated
            if first & 1:
                try:
                    messages.append(payload.decode())
                except UnicodeDecodeError as error:
                    self._defer(1007, _utf8_reason(error))
                    return b""
            else:
                messages.append(payload)
            position = end
        return data[position:] if position else data

    def _inflate(self, first: int, payload: bytes) -> bytes | None:
        """The payload of a whole compressed frame, inflated within the message limit;
        None after deferring the failure (1009 over the limit, 1002 not deflate data)."""
        assert self.deflate is not None
        frame = Frame(TEXT if first & 1 else BINARY, payload, True, True)
        try:
            return bytes(self.deflate.decode(frame, max_size=self.inflate_limit).data)
        except PayloadTooBig as error:
            self._defer(1009, str(error))
        except ProtocolError as error:
            self._defer(1002, str(error))
        return None

    def recv_frame(self, frame: Frame) -> None:
        """websockets' frame handling (sequence checks, pings, close), then reassembly."""
        deflate = self.deflate
        self.unparsed -= _wire_size(len(frame.data) if deflate is None else deflate.wire_length)
        opcode = frame.opcode
        if opcode is CLOSE and self.current_size is not None:
            # A close inside a fragmented message ends the connection cleanly; the
            # unfinished message is dropped (RFC 6455 5.4 allows control frames there).
            self.current_size = None
            self._fragments = self._decoder = None
        super().recv_frame(frame)
        if opcode is TEXT:
            if frame.fin:
                self._messages.append(bytes(frame.data).decode())  # bad: 1007 (websockets)
            else:
                self._decoder = _Utf8Decoder()
                self._fragments = [self._decoder.decode(frame.data, False)]
        elif opcode is BINARY:
            if frame.fin:
                self._messages.append(bytes(frame.data))
            else:
                self._fragments = [bytes(frame.data)]
        elif opcode is CONT:
            fragments = self._fragments
            if fragments is None:  # never: websockets refuses a continuation without start
                return
            decoder = self._decoder
            if decoder is None:
                fragments.append(bytes(frame.data))
            else:
                # Decoded as they come, so bad UTF-8 fails at its fragment (1007).
                fragments.append(decoder.decode(frame.data, frame.fin))
            if frame.fin:
                self._fragments = self._decoder = None
                self._messages.append(
                    b"".join(fragments) if decoder is None else "".join(fragments)
                )

    def fail(self, code: int, reason: str = "") -> None:
        """websockets' fail(); while :meth:`receive` parses, the failure is deferred."""
        if self._deferring and code != ABNORMAL_CLOSURE and self._state is OPEN:
            self._defer(code, reason)
        else:
            super().fail(code, reason)

    def _defer(self, code: int, reason: str) -> None:
        if self.violation is None:
            self.violation = (code, reason)

    def fail_violation(self) -> None:
        """Fail the connection for the violation :meth:`receive` found: a close frame
        (unless one was sent meanwhile) and the end of the stream."""
        if self.violation is not None:
            code, reason = self.violation
            super().fail(code, reason)

    # Unmasked, unfragmented data frames without extensions are most of what a server
    # sends; their header is built here directly (websockets' general serializer costs
    # several times more). Anything else goes through websockets.

    def send_text(self, data: BytesLike, fin: bool = True) -> None:
        if not self._send_whole(0x81, _DEFLATED_TEXT, data, fin):
            super().send_text(data, fin)

    def send_binary(self, data: BytesLike, fin: bool = True) -> None:
        if not self._send_whole(0x82, _DEFLATED_BINARY, data, fin):
            super().send_binary(data, fin)

    def _send_whole(self, first: int, deflated_first: int, data: BytesLike, fin: bool) -> bool:
        """Frame a whole message here when it needs nothing else (False: websockets does)."""
        if not fin or self._state is not OPEN or self.expect_continuation_frame:
            return False
        if self.deflate is None:
            self.writes.append(_data_header(first, len(data)) + bytes(data))
        else:
            self.writes.append(self._deflated(deflated_first, data))
        return True

    def _deflated(self, first: int, data: BytesLike) -> bytes:
        """A whole frame compressed by the negotiated permessage-deflate."""
        assert self.deflate is not None
        payload = self.deflate.encode(Frame(TEXT if first & 1 else BINARY, data)).data
        return _data_header(first, len(payload)) + bytes(payload)

    def close_code_seen(self) -> int | None:
        """The code of the close frame the client sent (1005 for none), else the code of
        the one the server sent, else None."""
        close = self.close_rcvd or self.close_sent
        return None if close is None else close.code

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


def _utf8_reason(error: UnicodeDecodeError) -> str:
    """The close reason websockets gives for invalid UTF-8, for the frames parsed here."""
    return f"{error.reason} at position {error.start}"
