"""A bounded, seeded fuzz run: 300 random and mutated frames over 30 connections to
127.0.0.1, one after the other, then 300 more over 10 connections at a time; each
connection ends in a close and a half-close from the client.

Whatever arrives, the server must only send valid server frames, at most one close
(and nothing after it), never 1011 "internal error" unless we sent it first, and must
end TCP; afterwards it still serves new connections. The seed is fixed so a failure
reproduces; set GC_FUZZ_SEED to explore other sequences.
"""

from __future__ import annotations

import os
import random
import socket
import struct
from collections import Counter

import gevent
import pytest

from .rawclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SENDABLE_CLOSE_CODES,
    RawWebSocket,
    ServerClosedTCP,
    close_payload,
    encode_frame,
)

pytestmark = pytest.mark.timeout(40)

SEED = int(os.environ.get("GC_FUZZ_SEED", "6455"))
CONNECTIONS = 30
FRAMES_PER_CONNECTION = 10
SERVER_FAILURE_CODES = {1000, 1002, 1007, 1009}
#: Marks frames whose bytes were scrambled: any close code the client may send could be
#: echoed back, except 1011, which only a failing server would choose.
ANY_CODE = -1

WORDS = ["hello", "κόσμε", "😀", "ß", "\x00", "text", "𝄞", "é"]
BAD_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe0\xa0", b"\x80"]


def random_payload(rng: random.Random, opcode: int) -> bytes:
    if opcode == OP_TEXT or (opcode == OP_CONTINUATION and rng.random() < 0.5):
        text = "".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 20))).encode()
        if rng.random() < 0.3:
            cut = rng.randrange(len(text) + 1)
            text = text[:cut] + rng.choice(BAD_UTF8) + text[cut:]
        return text
    if opcode == OP_CLOSE:
        return rng.choice(
            [
                b"",
                b"\x03",
                close_payload(rng.choice([1000, 1001, 3000, 4999]), "bye"),
                close_payload(rng.choice([0, 999, 1005, 1006, 1015, 2999, 5000, 65535])),
                close_payload(1000, b"\xff\xfe"),
                close_payload(1000, b"r" * 124),
            ]
        )
    if opcode in (OP_PING, OP_PONG):
        return rng.randbytes(rng.choice([0, 1, 10, 125, 126, 200]))
    return rng.randbytes(rng.choice([0, 1, 100, 125, 126, 1000, 3000]))


def wild_frame(rng: random.Random) -> tuple[bytes, int | None]:
    """One frame that is often malformed: any opcode, bits, lengths, masks; and the close
    code it carries (ANY_CODE when its bytes were scrambled: a flipped bit or a cut can
    turn any bytes into a close frame with any code)."""
    opcode = rng.choices(
        [OP_TEXT, OP_BINARY, OP_CONTINUATION, OP_PING, OP_PONG, OP_CLOSE, 3, 7, 11, 15],
        weights=[25, 20, 15, 10, 5, 5, 1, 1, 1, 1],
    )[0]
    payload = random_payload(rng, opcode)
    frame = encode_frame(
        opcode,
        payload,
        fin=rng.random() < 0.8,
        rsv=0 if rng.random() < 0.8 else rng.randrange(1, 8),
        mask=rng.random() < 0.9,
    )
    code = struct.unpack("!H", payload[:2])[0] if opcode == OP_CLOSE and len(payload) >= 2 else None
    mutation = rng.random()
    if mutation < 0.35:
        code = ANY_CODE
    if mutation < 0.15:
        position = rng.randrange(min(len(frame), 2))
        frame = (
            frame[:position]
            + bytes([frame[position] ^ (1 << rng.randrange(8))])
            + frame[position + 1 :]
        )
    elif mutation < 0.25:
        frame = frame[: rng.randrange(len(frame))]
    elif mutation < 0.35:
        frame += rng.randbytes(rng.randrange(1, 16))
    elif mutation < 0.45:
        declared = rng.choice([2**16, 2**31, 2**62, 2**63 + 5, 2**64 - 1])
        frame = bytes([0x82, 0xFF]) + struct.pack("!Q", declared) + b"mask"
    return frame, code


def frame_stream(rng: random.Random, count: int, wildness: float):
    """``count`` frames of a well-formed conversation (messages, fragments, pings),
    each replaced by a wild frame with probability ``wildness``."""
    in_message = text_message = False
    for _ in range(count):
        if rng.random() < wildness:
            yield wild_frame(rng)
            continue
        kind = rng.random()
        if kind < 0.2:
            opcode = rng.choice([OP_PING, OP_PONG])
            yield encode_frame(opcode, rng.randbytes(rng.randrange(126))), None
            continue
        if in_message:
            opcode = OP_CONTINUATION
        else:
            opcode = rng.choice([OP_TEXT, OP_BINARY])
            text_message = opcode == OP_TEXT
        fin = rng.random() < 0.6
        if text_message:
            payload = "".join(rng.choice(WORDS) for _ in range(rng.randrange(10))).encode()
        else:
            payload = rng.randbytes(rng.choice([0, 1, 125, 126, 2000]))
        in_message = not fin
        yield encode_frame(opcode, payload, fin=fin), None


def fuzz_one_connection(server, rng: random.Random, label: str) -> int | None:
    """Run one fuzzed connection; return the server's close code (None: no close frame
    or an empty one)."""
    sent_codes: set[int] = set()
    with RawWebSocket.connect(server.host, server.port, "/echo/") as ws:
        wildness = rng.choice([0.0, 0.05, 0.1, 0.3, 1.0])
        for frame, code in frame_stream(rng, FRAMES_PER_CONNECTION, wildness):
            if code is not None:
                sent_codes.add(code)
            try:
                ws.send_raw(frame)
            except OSError:
                break
        try:
            ws.send_close(1000)
            ws.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        closes = []
        try:
            while True:
                frame = ws.recv_frame(timeout=5)
                assert not closes, f"{label}: server sent {frame!r} after its close"
                if frame.opcode == OP_TEXT:
                    frame.payload.decode("utf-8")
                if frame.opcode == OP_CLOSE:
                    closes.append(frame.close_code)
        except ServerClosedTCP:
            pass
        except TimeoutError:
            raise AssertionError(f"{label}: the server did not close TCP within 5 s") from None
        if closes and closes[0] is not None:
            allowed = SERVER_FAILURE_CODES | sent_codes
            if ANY_CODE in sent_codes:
                allowed |= SENDABLE_CLOSE_CODES - {1011}
            assert closes[0] in allowed, f"{label}: unexpected close code {closes[0]}"
        return closes[0] if closes else None


def test_fuzzed_frames_never_break_the_server(echo_server):
    rng = random.Random(SEED)
    outcomes = Counter(
        fuzz_one_connection(echo_server, rng, f"seed {SEED} connection {number}")
        for number in range(CONNECTIONS)
    )
    # The run is only worth something if it reached both kinds of end.
    assert outcomes[1000] and outcomes.keys() & {1002, 1007, 1009}, (
        f"fuzz outcomes too uniform: {dict(outcomes)}"
    )
    print("fuzz outcomes (close code: connections):", dict(outcomes))
    with RawWebSocket.connect(echo_server.host, echo_server.port, "/echo/") as ws:
        ws.send_text("still serving")
        assert ws.recv_text() == "still serving"
        ws.send_close(1000)
        assert ws.expect_close().close_code == 1000


def test_fuzzed_connections_running_at_once(echo_server):
    """The same, 10 connections at a time (3 rounds): one connection's garbage must
    never leak into another's frames or stop the server from serving the others."""

    def worker(number: int) -> Counter:
        rng = random.Random(SEED * 1000 + number)
        return Counter(
            fuzz_one_connection(echo_server, rng, f"seed {SEED} worker {number} round {r}")
            for r in range(3)
        )

    workers = [gevent.spawn(worker, number) for number in range(10)]
    gevent.joinall(workers, timeout=30)
    outcomes = sum((w.get(block=False) for w in workers), Counter())
    assert sum(outcomes.values()) == 30
    with RawWebSocket.connect(echo_server.host, echo_server.port, "/echo/") as ws:
        ws.send_binary(b"still serving")
        assert ws.recv_binary() == b"still serving"
