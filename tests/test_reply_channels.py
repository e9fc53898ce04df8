"""Reply channel names are capabilities: whoever knows one writes to that socket, so each
carries 128 random bits (``secrets``) after the process prefix, and a consumer that
forwards to a client-supplied name cannot reach another client by guessing."""

from __future__ import annotations

import base64
import http.client

import pytest
import websocket

from geventchannels.channel import Channel
from geventchannels.layers.base import CHANNEL_NAME_RE, MAX_NAME_LENGTH, non_local_name
from geventchannels.routing import route
from tests.livesrv import Recorder, live_server

pytestmark = pytest.mark.timeout(30)


def forward(message) -> None:
    """ "to NAME": send "hijacked" to the named channel (a consumer trusting its client);
    anything else: say our own reply channel."""
    text = message["text"]
    if text.startswith("to "):
        Channel(text[3:]).send({"text": "hijacked"})
        message.reply_channel.send({"text": "sent"})
    else:
        message.reply_channel.send({"text": message.reply_channel.name})


@pytest.fixture(scope="module")
def server():
    recorded = Recorder(reply={"status": 200, "content": b"ok"})
    routing = [route("websocket.receive", forward), route("http.request", recorded)]
    with live_server(routing) as srv:
        srv.recorded = recorded
        yield srv


def open_socket(server) -> tuple[websocket.WebSocket, str]:
    ws = websocket.create_connection(server.ws_url + "/", timeout=5)
    ws.send("who")
    return ws, ws.recv()


def random_part(server, name: str, kind: str) -> bytes:
    prefix = server.app.reply_prefix + kind
    assert name.startswith(prefix), name
    token = name[len(prefix) :]
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_websocket_reply_channels_carry_128_random_bits(server):
    sockets = [open_socket(server) for _ in range(50)]
    names = [name for _, name in sockets]
    for ws, _ in sockets:
        ws.close()
    assert len(set(names)) == len(names)
    tokens = [random_part(server, name, "ws") for name in names]
    assert {len(token) for token in tokens} == {16}
    for name in names:
        # The layers still see the process prefix and a valid channel name.
        assert non_local_name(name) == server.app.reply_prefix
        assert CHANNEL_NAME_RE.fullmatch(name) and len(name) <= MAX_NAME_LENGTH


def test_routed_http_reply_channels_carry_128_random_bits(server):
    before = len(server.recorded.messages)
    for _ in range(5):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"ok"
        conn.close()
    names = [m["reply_channel"] for m in server.recorded.wait_count(before + 5)[before:]]
    assert len(set(names)) == 5
    assert all(len(random_part(server, name, "http")) == 16 for name in names)


def test_guessed_names_reach_no_other_socket(server):
    victim, victim_name = open_socket(server)
    attacker, attacker_name = open_socket(server)
    prefix = server.app.reply_prefix
    # What numbered names would have been, and near misses of the real one.
    guesses = [f"{prefix}ws{n}" for n in range(1, 200)]
    guesses += [victim_name[:-1] + c for c in "AQgw" if c != victim_name[-1]]
    guesses += [attacker_name[: len(prefix) + 2] + victim_name[len(prefix) + 2 : -3] + "abc"]
    try:
        for guess in guesses:
            attacker.send("to " + guess)
            assert attacker.recv() == "sent"
        victim.send("who")
        assert victim.recv() == victim_name  # nothing else came before it
        attacker.send("to " + victim_name)  # the real name does reach it
        assert attacker.recv() == "sent"
        assert victim.recv() == "hijacked"
    finally:
        victim.close()
        attacker.close()
