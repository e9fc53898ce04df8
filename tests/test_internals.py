"""The internals of gevent and websockets the server relies on (issue 8.6).

The server overrides private methods of gevent's pywsgi handler, reads the OS socket
under a gevent socket, and reads undocumented state of websockets' Sans-I/O protocol.
pyproject pins gevent<27 and websockets<18; when an upgrade inside (or past) those pins
removes or renames one of these, this test fails naming it and the module that needs it,
instead of the server failing at run time.
"""

from __future__ import annotations

import _socket
import inspect
import socket

import gevent.socket
import gevent.ssl
import pytest
from gevent import get_hub, pywsgi
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol

#: (owner, name, "method" | "attribute", where the server uses it)
PYWSGI = [
    (pywsgi.WSGIHandler, "read_request", "method", "handler.py overrides it"),
    (pywsgi.WSGIHandler, "get_environ", "method", "handler.py overrides it"),
    (pywsgi.WSGIHandler, "handle", "method", "handler.py overrides it"),
    (pywsgi.WSGIHandler, "handle_one_request", "method", "handler.py overrides it"),
    (pywsgi.WSGIHandler, "handle_one_response", "method", "handler.py overrides it"),
    (pywsgi.WSGIHandler, "run_application", "method", "handler.py overrides it"),
    (pywsgi.WSGIHandler, "finalize_headers", "method", "handler.py overrides it"),
    (pywsgi.WSGIHandler, "_write_with_headers", "method", "handler.py overrides it"),
    (pywsgi.WSGIHandler, "log_request", "method", "handler.py overrides it"),
    (pywsgi.WSGIHandler, "log_error", "method", "handler.py overrides it"),
    (pywsgi.WSGIHandler, "_check_http_version", "method", "handler.py read_request"),
    (pywsgi.WSGIHandler, "_sendall", "method", "handler.py _write_with_headers"),
    (pywsgi.WSGIHandler, "_write", "method", "handler.py _write_with_headers"),
    (pywsgi.WSGIHandler, "start_response", "method", "http.py routed responses"),
    (pywsgi.WSGIHandler, "process_result", "method", "handler.py run_application"),
    (pywsgi.WSGIHandler, "status", "attribute", "handler.py _write_with_headers"),
    (pywsgi.WSGIHandler, "code", "attribute", "handler.py log_request"),
    (pywsgi.WSGIHandler, "response_headers", "attribute", "handler.py _write_with_headers"),
    (pywsgi.WSGIHandler, "response_use_chunked", "attribute", "handler.py _write_with_headers"),
    (pywsgi.WSGIHandler, "headers_sent", "attribute", "handler.py _write_with_headers"),
    (pywsgi.WSGIHandler, "provided_date", "attribute", "handler.py finalize_headers"),
    (pywsgi.WSGIHandler, "close_connection", "attribute", "handler.py, http.py"),
    (pywsgi.WSGIHandler, "content_length", "attribute", "handler.py read_request"),
    (pywsgi.WSGIHandler, "requestline", "attribute", "handler.py read_request"),
    (pywsgi.WSGIHandler, "request_version", "attribute", "handler.py, http.py"),
    (pywsgi.WSGIHandler, "command", "attribute", "handler.py, http.py"),
    (pywsgi.WSGIHandler, "path", "attribute", "handler.py, http.py, websocket.py"),
    (pywsgi.WSGIHandler, "environ", "attribute", "handshake.py take_buffered_input"),
    (pywsgi.WSGIHandler, "wsgi_input", "attribute", "handshake.py take_buffered_input"),
    (pywsgi.WSGIHandler, "result", "attribute", "handler.py run_application"),
    (pywsgi.WSGIHandler, "time_start", "attribute", "handler.py log_request"),
    (pywsgi.WSGIHandler, "time_finish", "attribute", "handler.py log_request"),
    (pywsgi.WSGIServer, "get_environ", "method", "handler.py get_environ"),
    (pywsgi, "format_date_time", "method", "handler.py _HttpDate"),
    (pywsgi, "unquote_latin1", "method", "handler.py get_environ"),
    (pywsgi, "Input", "method", "handler.py get_environ; body.py RequestBody subclasses it"),
    (pywsgi.Input, "_chunked_read", "method", "body.py RequestBody overrides it"),
    (pywsgi.Input, "_send_100_continue", "method", "body.py RequestBody._chunked_read"),
    (pywsgi.Input, "chunk_length", "attribute", "body.py RequestBody._chunked_read"),
    (pywsgi.Input, "_chunked_input_error", "attribute", "body.py RequestBody._fail"),
    (pywsgi.Input, "_do_read", "method", "body.py RequestBody overrides it"),
    (pywsgi.Input, "_discard", "method", "body.py RequestBody overrides it"),
    (pywsgi.Input, "position", "attribute", "body.py RequestBody._do_read"),
    (pywsgi.WSGIServer, "wrap_socket_and_handle", "method", "handler.py overrides it"),
]
GEVENT = [
    (gevent.socket.socket, "timeout", "attribute", "handshake.py, http.py (TLS watcher)"),
    (gevent.ssl, "SSLSocket", "attribute", "sockets.py tells TLS from plain TCP"),
    (type(get_hub().loop), "io", "method", "http.py watches a parked request's socket"),
    (type(get_hub().loop), "run_callback", "method", "writer.py flushes at the loop's turn"),
    (type(get_hub().loop), "timer", "method", "handler.py keep-alive turn"),
]
WEBSOCKETS = [
    (Protocol, "recv_frame", "method", "frames.py overrides it (reassembly, UTF-8)"),
    (Protocol, "fail", "method", "frames.py overrides it (deferred failure)"),
    (Protocol, "send_text", "method", "frames.py overrides it"),
    (Protocol, "send_binary", "method", "frames.py overrides it"),
    (Protocol, "receive_data", "method", "frames.py receive"),
    (Protocol, "receive_eof", "method", "websocket.py"),
    (Protocol, "send_close", "method", "websocket.py close"),
    (Protocol, "send_ping", "method", "websocket.py keepalive"),
    (Protocol, "data_to_send", "method", "tests; frames.py take_output reads writes"),
]
#: websockets state set in Protocol.__init__ that frames.py reads or writes.
WEBSOCKETS_STATE = [
    "_state",
    "current_size",
    "expect_continuation_frame",
    "events",
    "writes",
    "close_rcvd",
    "close_sent",
    "eof_sent",
]


def _name(owner, name: str) -> str:
    prefix = getattr(owner, "__qualname__", None) or owner.__name__
    return f"{getattr(owner, '__module__', '') or ''}.{prefix}.{name}".lstrip(".")


@pytest.mark.parametrize(
    ("owner", "name", "kind", "where"),
    PYWSGI + GEVENT + WEBSOCKETS,
    ids=[_name(o, n) for o, n, _, _ in PYWSGI + GEVENT + WEBSOCKETS],
)
def test_internal_the_server_relies_on_exists(owner, name, kind, where):
    assert hasattr(owner, name), f"{_name(owner, name)} is gone: {where}"
    if kind == "method":
        assert callable(getattr(owner, name)), f"{_name(owner, name)} is not callable: {where}"


@pytest.mark.parametrize("name", WEBSOCKETS_STATE)
def test_websockets_protocol_state_frames_py_reads_exists(name):
    protocol = ServerProtocol(state=OPEN, max_size=(1000, 1000))
    assert hasattr(protocol, name), (
        f"websockets.protocol.Protocol instances have no {name!r} any more: "
        "geventchannels/server/frames.py reads it"
    )


def test_websockets_close_has_the_code_frames_py_reads():
    assert hasattr(Close(1000, ""), "code"), (
        "websockets.frames.Close has no 'code' any more: frames.py close_code_seen reads it"
    )


def test_pywsgi_handler_keeps_its_socket_and_reader_per_instance():
    """handshake.py pops ``rfile`` from the handler's __dict__ to release pywsgi's
    reader; handler.py passes (sock, address, server, rfile) to the constructor."""
    parameters = list(inspect.signature(pywsgi.WSGIHandler.__init__).parameters)
    assert parameters[:5] == ["self", "sock", "address", "server", "rfile"], (
        f"gevent.pywsgi.WSGIHandler.__init__ takes {parameters} now: handler.py passes "
        "(sock, address, server, rfile)"
    )
    left, right = socket.socketpair()
    try:
        handler = pywsgi.WSGIHandler(left, ("127.0.0.1", 1), None)
        assert "rfile" in vars(handler), (
            "gevent.pywsgi.WSGIHandler no longer keeps rfile on the instance: "
            "handshake.py take_buffered_input pops it"
        )
        assert handler.socket is left and handler.client_address == ("127.0.0.1", 1), (
            "gevent.pywsgi.WSGIHandler no longer sets socket / client_address"
        )
    finally:
        left.close()
        right.close()


def test_pywsgi_input_takes_the_keywords_handler_py_passes():
    parameters = inspect.signature(pywsgi.Input).parameters
    for name in ("rfile", "content_length", "socket", "chunked_input"):
        assert name in parameters, f"gevent.pywsgi.Input has no {name!r} parameter any more"


def test_gevent_socket_has_a_non_blocking_os_socket_under_it():
    """sockets.os_socket sends and peeks on ``gevent.socket.socket._sock`` directly."""
    left, right = gevent.socket.socketpair()
    try:
        raw = getattr(left, "_sock", None)
        assert isinstance(raw, _socket.socket), (
            "gevent.socket.socket._sock is gone: geventchannels/server/sockets.py "
            "os_socket returns it for non-blocking sends and peeks"
        )
        assert raw.gettimeout() == 0.0, "gevent.socket.socket._sock is not non-blocking"
    finally:
        left.close()
        right.close()


def test_gevent_ssl_socket_is_a_gevent_socket():
    """sockets.os_socket must recognise TLS sockets (which also have ``_sock``)."""
    assert issubclass(gevent.ssl.SSLSocket, gevent.socket.socket), (
        "gevent.ssl.SSLSocket is no longer a gevent.socket.socket: check sockets.py"
    )


def test_websockets_parser_reports_frames_and_errors_through_the_overridden_methods():
    """frames.py depends on websockets' parser calling ``recv_frame(frame)`` for each
    frame and ``fail(code, reason)`` on a protocol error, and on ``send_eof`` queueing
    ``b""`` in ``writes``."""
    seen = []

    class Probe(ServerProtocol):
        def recv_frame(self, frame: Frame) -> None:
            seen.append(("frame", frame.opcode))
            super().recv_frame(frame)

        def fail(self, code: int, reason: str = "") -> None:
            seen.append(("fail", code))
            super().fail(code, reason)

    probe = Probe(state=OPEN)
    probe.receive_data(b"\x81\x82\x00\x00\x00\x00hi" + b"\xc1\x80\x00\x00\x00\x00")
    assert seen == [("frame", Opcode.TEXT), ("fail", 1002)], (
        f"websockets' parser no longer calls recv_frame() / fail() as frames.py expects: {seen}"
    )
    assert probe.writes[-1] == b"", "websockets no longer marks the end of stream with b''"
