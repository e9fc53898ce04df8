"""HTTP through the real server with http.client / raw sockets: Django's fast path,
routed http.request (message keys, streaming, long-poll, disconnect, timeout, limits),
proxy headers, TCP_NODELAY and the access log."""

from __future__ import annotations

import http.client
import logging
import re
import socket

import gevent
import pytest
from django.test import override_settings

from geventchannels.channel import Channel
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.routing import route
from geventchannels.server.handler import ChannelsHandler
from tests.livesrv import Recorder, live_server

pytestmark = pytest.mark.timeout(30)


def answer(message) -> None:
    message.reply_channel.send(
        {
            "status": 201,
            "headers": [[b"X-Routed", b"yes"], [b"Content-Type", b"text/plain"]],
            "content": b"routed " + message["body"],
        }
    )


def request(
    server,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 5,
) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server():
    recorded = Recorder(reply={"status": 200, "content": b"recorded"})
    parked = Recorder()
    disconnects = Recorder()
    routing = [
        route("http.request", answer, path=r"^/routed/"),
        route("http.request", recorded, path=r"^/recorded/"),
        route("http.request", parked, path=r"^/poll/"),
        route("http.disconnect", disconnects),
    ]
    with live_server(routing, HTTP_TIMEOUT=2) as srv:
        srv.recorded = recorded
        srv.parked = parked
        srv.disconnects = disconnects
        yield srv


def eventually(condition, timeout: float = 5.0) -> None:
    deadline = gevent.get_hub().loop.now() + timeout
    while not condition():
        assert gevent.get_hub().loop.now() < deadline, "condition not met in %.1f s" % timeout
        gevent.sleep(0.01)


def no_parked_requests(server) -> bool:
    return not [name for name in server.app._endpoints if "!http" in name]


# -- the fast path -----------------------------------------------------------------


def test_unrouted_path_is_served_by_django(server):
    status, headers, body = request(server, "GET", "/hello/")
    assert (status, body) == (200, b"hello")
    assert headers["Content-Length"] == "5"


def test_fast_path_streams_django_streaming_responses(server):
    status, headers, body = request(server, "GET", "/stream/")
    assert status == 200
    assert headers.get("Transfer-Encoding") == "chunked"
    assert body == b"".join(b"chunk%d;" % i for i in range(5))


def test_fast_path_takes_large_posts(server):
    body = b"x" * (1024 * 1024)
    status, _, answer_body = request(server, "POST", "/body-size/", body=body)
    assert (status, answer_body) == (200, b"1048576")


def test_keep_alive_serves_several_requests_on_one_socket(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        for path in ("/hello/", "/routed/", "/hello/"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status in (200, 201)
    finally:
        conn.close()


# -- routed requests ------------------------------------------------------------


def test_routed_request_gets_the_consumer_response(server):
    status, headers, body = request(server, "POST", "/routed/x", body=b"data")
    assert status == 201
    assert headers["X-Routed"] == "yes"
    assert body == b"routed data"


def test_routed_request_message_has_the_asgi_keys(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.putrequest("PUT", "/recorded/a%20b/?q=1&r=%20")
    conn.putheader("X-Dup", "one")
    conn.putheader("X-Dup", "two")
    conn.putheader("Content-Length", "4")
    conn.endheaders(b"body")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"recorded")
    conn.close()
    message = server.recorded.wait_for(lambda m: m["method"] == "PUT")
    assert message["path"] == "/recorded/a b/"
    assert message["query_string"] == b"q=1&r=%20"
    assert message["http_version"] == "1.1"
    assert message["scheme"] == "http"
    assert message["root_path"] == ""
    assert message["body"] == b"body"
    assert [b"x-dup", b"one"] in message["headers"]
    assert [b"x-dup", b"two"] in message["headers"]
    assert message["client"][0] == "127.0.0.1"
    assert message["server"] == ["127.0.0.1", server.port]
    assert message["reply_channel"].startswith(server.app.reply_prefix)


def test_long_poll_parks_a_hundred_requests_until_answered(server):
    count = 100
    before = len(server.parked.messages)
    results: dict[int, tuple] = {}

    def client(index: int) -> None:
        results[index] = request(server, "GET", f"/poll/{index}", timeout=10)

    clients = [gevent.spawn(client, i) for i in range(count)]
    parked = server.parked.wait_count(before + count, timeout=10)[before:]
    gevent.sleep(0.05)
    assert not results, "a parked request was answered before its response was sent"
    for message in parked:
        number = message["path"].rsplit("/", 1)[1].encode()
        Channel(message["reply_channel"]).send({"status": 200, "content": b"late " + number})
    gevent.joinall(clients, timeout=10, raise_error=True)
    assert sorted(results) == list(range(count))
    assert all(results[i][0] == 200 and results[i][2] == b"late %d" % i for i in range(count))
    eventually(lambda: no_parked_requests(server))


def test_chunks_with_more_content_are_streamed_as_they_come(server):
    before = len(server.parked.messages)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("GET", "/poll/stream")
    reply = Channel(server.parked.wait_count(before + 1)[before]["reply_channel"])
    reply.send(
        {
            "status": 200,
            "headers": [[b"Content-Type", b"text/plain"]],
            "content": b"first;",
            "more_content": True,
        }
    )
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.read(6) == b"first;"  # arrives before the rest is even sent
    reply.send({"content": b"second;", "more_content": True})
    reply.send({"content": b"last"})
    assert response.read() == b"second;last"
    conn.close()
    eventually(lambda: no_parked_requests(server))


def test_client_going_away_sends_http_disconnect(server):
    before = len(server.parked.messages)
    sock = socket.create_connection((server.host, server.port))
    sock.sendall(b"GET /poll/gone HTTP/1.1\r\nHost: x\r\n\r\n")
    message = server.parked.wait_count(before + 1)[before]
    sock.close()
    gone = server.disconnects.wait_for(lambda m: m["reply_channel"] == message["reply_channel"])
    assert gone["path"] == "/poll/gone"
    eventually(lambda: no_parked_requests(server))


def test_no_response_within_http_timeout_is_503(server):
    started = gevent.get_hub().loop.now()
    status, _, _ = request(server, "GET", "/poll/never")
    assert status == 503
    assert 1.5 < gevent.get_hub().loop.now() - started < 5


def test_stalled_stream_is_cut_off_not_completed():
    stalled = Recorder(reply={"status": 200, "content": b"part", "more_content": True})
    with live_server([route("http.request", stalled)], HTTP_TIMEOUT=0.3) as srv:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
        conn.request("GET", "/stalls/")
        response = conn.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead):
            response.read()
        conn.close()


def test_full_http_request_channel_is_503():
    layer = InMemoryChannelLayer(channel_capacity={"http.request": 1})
    with live_server(
        [route("http.request", answer)], layer=layer, run_worker=False, HTTP_TIMEOUT=3
    ) as srv:
        first = gevent.spawn(request, srv, "GET", "/a/")
        deadline = gevent.get_hub().loop.now() + 5
        while layer.channel_statistics("http.request")["messages_pending"] < 1:
            assert gevent.get_hub().loop.now() < deadline
            gevent.sleep(0.01)
        status, _, _ = request(srv, "GET", "/b/")
        assert status == 503
        first.kill()


def slow_answer(message) -> None:
    gevent.sleep(0.02)
    answer(message)


@pytest.mark.timeout(30)
def test_a_burst_into_a_full_http_request_channel_waits_for_room():
    """Twelve requests at once into a channel that holds one: each waits its turn for
    room (up to REQUEST_PATIENCE) instead of being answered 503."""
    layer = InMemoryChannelLayer(channel_capacity={"http.request": 1})
    with live_server(
        [route("http.request", slow_answer)], layer=layer, worker_concurrency=1
    ) as srv:
        burst = [gevent.spawn(request, srv, "POST", "/burst/", b"%d" % i) for i in range(12)]
        gevent.joinall(burst, timeout=20, raise_error=True)
        assert sorted(g.value[0] for g in burst) == [201] * 12
        assert sorted(g.value[2] for g in burst) == sorted(b"routed %d" % i for i in range(12))


def test_routed_body_over_django_limit_is_413():
    with (
        override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000),
        live_server([route("http.request", answer)]) as srv,
    ):
        assert request(srv, "POST", "/x/", body=b"y" * 1000)[0] == 201
        assert request(srv, "POST", "/x/", body=b"y" * 1001)[0] == 413
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
        conn.request(
            "POST",
            "/x/",
            body=iter([b"z" * 600, b"z" * 600]),
            encode_chunked=True,
            headers={"Transfer-Encoding": "chunked"},
        )
        assert conn.getresponse().status == 413
        conn.close()


def test_proxy_headers_are_used_only_when_enabled():
    seen = Recorder(reply={"status": 204})
    headers = {
        "X-Forwarded-For": "10.1.2.3, 10.0.0.1",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "8443",
    }
    with live_server([route("http.request", seen, path=r"^/$")]) as srv:
        request(srv, "GET", "/", headers=headers)
        plain = seen.wait_count(1)[0]
        assert request(srv, "GET", "/whoami/", headers=headers)[2] == b"127.0.0.1 http"
    with live_server([route("http.request", seen, path=r"^/$")], PROXY_HEADERS=True) as srv:
        request(srv, "GET", "/", headers=headers)
        proxied = seen.wait_count(2)[1]
        assert request(srv, "GET", "/whoami/", headers=headers)[2] == b"10.1.2.3 https"
    assert plain["client"][0] == "127.0.0.1" and plain["scheme"] == "http"
    assert proxied["client"] == ["10.1.2.3", 8443]
    assert proxied["scheme"] == "https"


def test_root_path_comes_from_force_script_name():
    seen = Recorder(reply={"status": 204})
    with (
        override_settings(FORCE_SCRIPT_NAME="/prefix"),
        live_server([route("http.request", seen)]) as srv,
    ):
        request(srv, "GET", "/x/")
    assert seen.wait_for()["root_path"] == "/prefix"


# -- socket details and logging ------------------------------------------------------


def test_accepted_sockets_get_tcp_nodelay():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    accepted, address = listener.accept()
    try:
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        ChannelsHandler(accepted, address, server=None)
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for sock in (client, accepted, listener):
            sock.close()


def test_access_log_line_for_http(server, caplog):
    with caplog.at_level(logging.INFO, logger="geventchannels.server.access"):
        request(server, "GET", "/hello/?a=1")
        request(server, "POST", "/routed/", body=b"")
    lines = [r.getMessage() for r in caplog.records if r.name == "geventchannels.server.access"]
    assert any(
        re.fullmatch(r"HTTP GET /hello/\?a=1 200 \[\d+\.\d\d, 127\.0\.0\.1:\d+\]", line)
        for line in lines
    ), lines
    assert any(line.startswith("HTTP POST /routed/ 201 [") for line in lines), lines
