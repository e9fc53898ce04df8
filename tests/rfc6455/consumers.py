"""The consumers behind the conformance server: an echo, plus paths that close on
request, refuse or pick a subprotocol at connect, and race large replies."""

from __future__ import annotations

import gevent

from geventchannels.routing import route


def accept(message) -> None:
    message.reply_channel.send({"accept": True})


def accept_v2_chat(message) -> None:
    """Accept and pick the "v2.chat" subprotocol from those the client offered."""
    message.reply_channel.send({"accept": True, "subprotocol": "v2.chat"})


def refuse(message) -> None:
    message.reply_channel.send({"accept": False})


def echo(message) -> None:
    """Send every message back as it came: text as text, bytes as bytes."""
    text = message.get("text")
    if text is not None:
        message.reply_channel.send({"text": text})
    else:
        message.reply_channel.send({"bytes": message.get("bytes")})


def close_on_request(message) -> None:
    """ "close" closes with 1000 (``close: True``), "close 4321" with that code."""
    _, _, code = message.get("text", "").partition(" ")
    message.reply_channel.send({"close": int(code) if code else True})


BLAST_SENDERS = 8
#: 3.2 MB in all: within the default WEBSOCKET_OUTBOUND_BYTES (4 MiB) for a slow reader.
BLAST_MESSAGES = 4
BLAST_SIZE = 100_000


def blast(message) -> None:
    """Reply from BLAST_SENDERS greenlets at once, BLAST_MESSAGES large messages each,
    so replies race each other and the socket fills: the single writer must keep every
    frame whole. Payload: sender number, message number, filler."""
    reply_channel = message.reply_channel

    def sender(number: int) -> None:
        for index in range(BLAST_MESSAGES):
            reply_channel.send({"bytes": bytes([number, index]) * (BLAST_SIZE // 2)})
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(sender, number) for number in range(BLAST_SENDERS)])


ECHO_ROUTING = [
    route("websocket.connect", accept_v2_chat, path=r"^/subprotocol/$"),
    route("websocket.connect", refuse, path=r"^/refuse/$"),
    route("websocket.connect", accept),
    route("websocket.receive", close_on_request, path=r"^/close/$"),
    route("websocket.receive", blast, path=r"^/blast/$"),
    route("websocket.receive", echo),
]
