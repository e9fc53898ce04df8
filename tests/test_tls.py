"""HTTPS and wss:// (issue 7.1): the WebSocket writer and the parked-request watcher must
go through TLS, never around it to the TCP socket underneath.

A self-signed certificate for 127.0.0.1 is made at test time; clients (websocket-client,
http.client, the ssl module) verify it. In-process servers cover the details (partial
writes to a slow reader, racing replies, drops, a client leaving a parked request); the
run modes are started as real processes: gunicorn with ``--certfile`` and
``geventchannels serve --certfile --keyfile``.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import json
import socket
import ssl
import time

import gevent
import pytest
import websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from geventchannels.routing import route
from geventchannels.server import ChannelsWSGIServer
from geventchannels.test.live import LiveServer
from tests.livesrv import Recorder

from .conftest import free_port
from .runmodes.process import BIN, ServerProcess, gunicorn

pytestmark = pytest.mark.timeout(60)

LARGE = 300_000  # over 64 KiB: the kernel takes it in pieces, TLS in several records


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """(certificate file, key file) of a fresh self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(certfile), str(keyfile)


def client_context(certfile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certfile)


def server_context(certificate: tuple[str, str]) -> ssl.SSLContext:
    from geventchannels.runner import tls_context

    return tls_context(*certificate)


@contextlib.contextmanager
def live_tls_server(certificate: tuple[str, str], routing: list, **settings):
    """The in-process test server (geventchannels.test.live), listening with TLS; yields
    it and its ``wss://`` base URL."""
    live = LiveServer(routing, **settings)
    live.server = ChannelsWSGIServer(
        (live.host, 0), live.app, ssl_context=server_context(certificate)
    )
    live.start()
    try:
        yield live, f"wss://{live.host}:{live.port}"
    finally:
        live.stop()


def wss(url: str, certfile: str, **kwargs) -> websocket.WebSocket:
    return websocket.create_connection(
        url, timeout=10, sslopt={"context": client_context(certfile)}, **kwargs
    )


def echo(message) -> None:
    if message.get("text") is not None:
        message.reply_channel.send({"text": message["text"]})
    else:
        message.reply_channel.send({"bytes": message["bytes"]})


def blast(message) -> None:
    """Eight greenlets reply at once, ten 100 KB messages each."""
    reply_channel = message.reply_channel

    def sender(number: int) -> None:
        for index in range(10):
            reply_channel.send({"bytes": bytes([number, index]) * 50_000})
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(sender, number) for number in range(8)])


# -- in-process ---------------------------------------------------------------------


@pytest.fixture
def tls_server(certificate):
    routing = [
        route("websocket.receive", blast, path=r"^/blast/$"),
        route("websocket.receive", echo),
    ]
    # The blast queues 8 MB for a slow reader: above the default WEBSOCKET_OUTBOUND_BYTES.
    with live_tls_server(certificate, routing, WEBSOCKET_OUTBOUND_BYTES=16 << 20) as (_, url):
        yield url


@pytest.mark.parametrize("size", [5, 70_000, 1_000_000])
def test_wss_echo_of_text_and_binary(tls_server, certificate, size):
    ws = wss(tls_server + "/echo/", certificate[0])
    try:
        text = "é" * (size // 2)
        ws.send(text)
        assert ws.recv() == text
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        ws.send_binary(data)
        assert ws.recv() == data
    finally:
        ws.close()


def test_wss_to_a_client_that_reads_slowly_gets_every_frame_whole(tls_server, certificate):
    """A small receive buffer makes the server's writes partial; eight greenlets race
    large replies. Every frame must arrive whole and in each sender's order."""
    ws = wss(
        tls_server + "/blast/",
        certificate[0],
        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
    )
    try:
        ws.send("go")
        seen: dict[int, list[int]] = {n: [] for n in range(8)}
        for _ in range(80):
            data = ws.recv()
            assert len(data) == 100_000 and data == data[:2] * 50_000
            seen[data[0]].append(data[1])
        assert seen == {n: list(range(10)) for n in range(8)}
    finally:
        ws.close()


def test_wss_close_and_server_stop_leave_no_error(certificate, caplog):
    """A client close, and the server closing (1001 on stop) and dropping what is left,
    end TLS connections without an error logged."""
    disconnected = Recorder()
    routing = [route("websocket.receive", echo), route("websocket.disconnect", disconnected)]
    with live_tls_server(certificate, routing) as (_, url):
        first = wss(url + "/a/", certificate[0])
        first.send("hi")
        assert first.recv() == "hi"
        first.close()
        assert disconnected.wait_for()["code"] == 1000
        second = wss(url + "/b/", certificate[0])
        second.send("hi")
        assert second.recv() == "hi"
    opcode, data = second.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and data[:2] == b"\x03\xe9"  # 1001
    second.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_wss_client_that_stops_reading_is_dropped_with_1008(certificate, caplog):
    """The outbound queue limit drops a TLS connection from another greenlet while its
    reader waits in a TLS read: consumers get 1008, nothing logs an error."""
    disconnected = Recorder()

    def flood(message) -> None:
        for _ in range(200):
            message.reply_channel.send({"bytes": b"z" * 50_000})
            gevent.sleep(0)

    routing = [route("websocket.receive", flood), route("websocket.disconnect", disconnected)]
    with live_tls_server(certificate, routing, WEBSOCKET_OUTBOUND_QUEUE=8) as (_, url):
        ws = wss(
            url + "/",
            certificate[0],
            sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
        )
        ws.send("flood me")
        assert disconnected.wait_for(timeout=20)["code"] == 1008
        ws.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("close_notify", [True, False], ids=["close-notify", "tcp-close"])
def test_https_client_leaving_a_parked_request_is_noticed(certificate, close_notify):
    """The parked request's watcher reads through TLS: a client that leaves (with a TLS
    close_notify or just a TCP close) sends http.disconnect at once."""
    parked, left = Recorder(), Recorder()
    routing = [route("http.request", parked), route("http.disconnect", left)]
    with live_tls_server(certificate, routing, HTTP_TIMEOUT=30) as (server, _):
        raw = socket.create_connection((server.host, server.port), timeout=10)
        client = client_context(certificate[0]).wrap_socket(raw, server_hostname=server.host)
        client.sendall(b"GET /poll/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply_channel = parked.wait_for()["reply_channel"]
        started = time.monotonic()
        if close_notify:
            # The server notices the close_notify before the TCP close: it answers the
            # request it gave up on, which this one-way shutdown then reads as an error.
            with contextlib.suppress(ssl.SSLError):
                client.unwrap()
        client.close()
        assert left.wait_for(timeout=10)["reply_channel"] == reply_channel
        assert time.monotonic() - started < 5


def test_https_parked_request_is_answered(certificate):
    routing = [route("http.request", Recorder(reply={"status": 200, "content": b"parked ok"}))]
    with live_tls_server(certificate, routing) as (server, _):
        connection = http.client.HTTPSConnection(
            server.host, server.port, timeout=10, context=client_context(certificate[0])
        )
        connection.request("GET", "/poll/")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"parked ok")
        connection.close()


# -- run modes as processes ------------------------------------------------------------


def https_get(port: int, path: str, certfile: str) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=10, context=client_context(certfile)
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def check_wss_echo(port: int, certfile: str, pid_of_consumer: int | None = None) -> None:
    """wss:// echo through the run-mode project: small and large (> 64 KiB) messages."""
    ws = wss(f"wss://127.0.0.1:{port}/ws/", certfile)
    try:
        for text in ["small", "x" * LARGE, "é" * (LARGE // 6)]:  # JSON: 6 bytes per é
            ws.send(text)
            reply = json.loads(ws.recv())
            assert reply["text"] == text
            if pid_of_consumer is not None:
                assert reply["consumer_pid"] == pid_of_consumer
    finally:
        ws.close()


def wait_https(server: ServerProcess, port: int, certfile: str) -> int:
    """Wait until HTTPS answers; the pid of the process that answered."""

    def answered():
        try:
            status, body = https_get(port, "/patched/", certfile)
        except (OSError, ssl.SSLError):
            return None
        return json.loads(body)["pid"] if status == 200 else None

    return server.wait_until(answered, what="an HTTPS answer")


def test_gunicorn_with_certfile_serves_https_and_wss(certificate):
    certfile, keyfile = certificate
    port = free_port()
    command = gunicorn(port, "-w", "1", "--certfile", certfile, "--keyfile", keyfile)
    with ServerProcess(command, port) as server:
        server.wait_listening()
        worker = wait_https(server, port, certfile)
        assert https_get(port, "/hello/", certfile) == (200, f"hello from {worker}".encode())
        check_wss_echo(port, certfile, worker)
        assert "WRONG_VERSION_NUMBER" not in server.output


def serve(port: int, *options: str) -> list[str]:
    """``geventchannels serve`` of the run-mode project on ``port``."""
    return [
        str(BIN / "geventchannels"),
        "serve",
        "rmproject.wsgi",
        "--settings",
        "rmproject.settings",
        "--bind",
        str(port),
        *options,
    ]


def test_geventchannels_serve_with_certfile_and_keyfile_serves_https_and_wss(certificate):
    certfile, keyfile = certificate
    port = free_port()
    with ServerProcess(serve(port, "--certfile", certfile, "--keyfile", keyfile), port) as server:
        server.wait_listening()
        assert wait_https(server, port, certfile) == server.pid
        check_wss_echo(port, certfile, server.pid)
        assert f"at https://127.0.0.1:{port}/" in server.output
        assert server.stop() == 0


def test_geventchannels_serve_with_an_unreadable_certificate_says_why(tmp_path):
    missing = tmp_path / "missing.pem"
    with ServerProcess(serve(free_port(), "--certfile", str(missing))) as server:
        assert server.exit_code() == 2
        assert f"cannot serve TLS with {missing}" in server.output


def test_keyfile_without_certfile_is_a_usage_error(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("")
    with ServerProcess(serve(free_port(), "--keyfile", str(key))) as server:
        assert server.exit_code() == 2
        assert "--keyfile needs --certfile" in server.output
