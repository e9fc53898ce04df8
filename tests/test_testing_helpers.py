"""geventchannels.test: ChannelTestCase, Client, WSClient, apply_routes, the live server
test case, and the pytest plugin's fixtures (run in a pytest subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import unittest
from pathlib import Path

import pytest
import websocket
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import SessionBase
from django.db import transaction
from django.test import override_settings
from django.test.utils import setup_databases, teardown_databases

from geventchannels import Channel, Group, channel_layers
from geventchannels.exceptions import ConsumeLater, DenyConnection, WebsocketCloseException
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.routing import route
from geventchannels.test import (
    ChannelLiveServerTestCase,
    ChannelTestCase,
    Client,
    ConsumerError,
    HttpClient,
    WSClient,
    apply_routes,
    live_server,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def test_database():
    """Django's test database (migrated), as `manage.py test` makes it."""
    old = setup_databases(verbosity=0, interactive=False)
    try:
        yield
    finally:
        teardown_databases(old, verbosity=0)


# -- consumers used below -------------------------------------------------------------


def echo(message, **kwargs):
    message.reply_channel.send({"text": message["text"]})


def raises(message, **kwargs):
    message.reply_channel.send({"text": "never sent"})
    raise ZeroDivisionError("boom in the consumer")


def deny(message, **kwargs):
    raise DenyConnection


def close_4001(message, **kwargs):
    message.reply_channel.send({"text": "bye"})
    raise WebsocketCloseException(4001)


later_calls = []


def later(message, **kwargs):
    later_calls.append(message["text"])
    if len(later_calls) == 1:
        raise ConsumeLater


def whoami(message, **kwargs):
    """Reads the site's session from the connect's cookie header, as an http_session
    decorator does, and answers with its user id."""
    from importlib import import_module

    cookies = dict(message["headers"]).get(b"cookie", b"").decode()
    jar = dict(part.strip().split("=", 1) for part in cookies.split(";") if "=" in part)
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key=jar.get(settings.SESSION_COOKIE_NAME))
    message.reply_channel.send({"accept": True, "text": json.dumps(session.get("_auth_user_id"))})


def user_count(message, **kwargs):
    message.reply_channel.send({"text": str(get_user_model().objects.count())})


HELPER_ROUTES = [
    route("websocket.connect", deny, path=r"^/deny/$"),
    route("websocket.connect", whoami, path=r"^/whoami/$"),
    route("websocket.receive", raises, path=r"^/raise/$"),
    route("websocket.receive", close_4001, path=r"^/close/$"),
    route("websocket.receive", user_count, path=r"^/users/$"),
    route("websocket.receive", echo),
    route("later", later),
]
LAYERS = {
    "default": {
        "BACKEND": "asgi_redis.RedisChannelLayer",
        "ROUTING": "tests.test_testing_helpers.HELPER_ROUTES",
        "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"], "capacity": 50},
        "TEST_CONFIG": {"capacity": 7},
    },
    "other": {"BACKEND": "geventchannels.layers.InMemoryChannelLayer", "ROUTING": []},
}


# -- ChannelTestCase and the client -------------------------------------------------------


@override_settings(CHANNEL_LAYERS=LAYERS)
class ChannelTestCaseTests(ChannelTestCase):
    def test_layers_are_in_memory_whatever_the_backend_with_test_config(self):
        for alias in ("default", "other"):
            self.assertIs(type(channel_layers[alias].channel_layer), InMemoryChannelLayer)
        self.assertEqual(channel_layers["default"].channel_layer.capacity, 7)

    def test_each_test_starts_empty_1(self):
        self.assertIsNone(self.get_next_message("leftover"))
        Channel("leftover").send({"n": 1})

    def test_each_test_starts_empty_2(self):
        self.assertIsNone(self.get_next_message("leftover"))
        Channel("leftover").send({"n": 2})

    def test_get_next_message_and_require(self):
        Channel("thumbnails").send({"id": 42})
        message = self.get_next_message("thumbnails", require=True)
        self.assertEqual(message["id"], 42)
        self.assertEqual(message.channel.name, "thumbnails")
        with self.assertRaisesRegex(AssertionError, "expected a message on channel 'thumbnails'"):
            self.get_next_message("thumbnails", require=True)

    def test_client_runs_the_routed_consumer_and_its_sends_go_out_after_it(self):
        client = Client()
        client.send_and_consume("websocket.receive", {"text": "hi", "path": "/"})
        self.assertEqual(client.receive(), {"text": "hi"})
        self.assertIsNone(client.receive())
        self.assertIs(client.get_consumer_by_channel("later"), later)

    def test_consumer_error_is_raised_in_the_test_and_its_sends_dropped(self):
        client = Client()
        with self.assertRaisesRegex(ZeroDivisionError, "boom in the consumer"):
            client.send_and_consume("websocket.receive", {"text": "x", "path": "/raise/"})
        self.assertIsNone(client.receive())

    def test_missing_message_or_route_fails_clearly(self):
        client = Client()
        with self.assertRaisesRegex(AssertionError, "no message on channel 'nothing'"):
            client.consume("nothing")
        self.assertIsNone(client.consume("nothing", fail_on_none=False))
        client.send("unrouted", {})
        with self.assertRaisesRegex(AssertionError, "no route matches"):
            client.consume("unrouted")

    def test_consume_later_puts_the_message_back(self):
        later_calls.clear()
        client = Client()
        client.send_and_consume("later", {"text": "a"})
        client.consume("later")
        self.assertEqual(later_calls, ["a", "a"])

    def test_groups_reach_the_client(self):
        client = Client()
        client.join_group("room")
        Group("room").send({"text": "to all"})
        self.assertEqual(client.receive(), {"text": "to all"})


@override_settings(CHANNEL_LAYERS=LAYERS)
class OnCommitTests(ChannelTestCase):
    """What is sent on commit (bindings) reaches the test as in autocommit."""

    def test_on_commit_in_the_tests_transaction_runs_at_once(self):
        transaction.on_commit(lambda: Channel("committed").send({"n": 1}))
        self.assertEqual(self.get_next_message("committed", require=True)["n"], 1)

    def test_inside_a_block_of_the_test_it_waits_and_a_rollback_drops_it(self):
        with self.assertRaises(ZeroDivisionError), transaction.atomic():
            transaction.on_commit(lambda: Channel("dropped").send({"n": 1}))
            raise ZeroDivisionError
        self.assertIsNone(self.get_next_message("dropped"))
        with transaction.atomic():
            transaction.on_commit(lambda: Channel("inner").send({"n": 2}))
            self.assertIsNone(self.get_next_message("inner"))
        self.assertEqual(self.get_next_message("inner", require=True)["n"], 2)

    def test_a_consumers_block_is_committed_when_it_returns(self):
        def saves(message, **kwargs):
            with transaction.atomic():
                transaction.on_commit(lambda: message.reply_channel.send({"text": "saved"}))

        with apply_routes([route("save", saves)]):
            client = Client()
            client.send_and_consume("save")
        self.assertEqual(client.receive(), {"text": "saved"})


@override_settings(CHANNEL_LAYERS=LAYERS)
class DjangoOnCommitTests(ChannelTestCase):
    on_commit_immediately = False

    def test_djangos_behaviour_when_turned_off(self):
        with self.captureOnCommitCallbacks() as callbacks:
            transaction.on_commit(lambda: Channel("later").send({}))
        self.assertEqual(len(callbacks), 1)
        self.assertIsNone(self.get_next_message("later"))


# -- WSClient -------------------------------------------------------------------------------


@override_settings(CHANNEL_LAYERS=LAYERS)
class WSClientTests(ChannelTestCase):
    def test_messages_are_shaped_like_the_servers_and_numbered(self):
        client = WSClient()
        client.set_header("origin", "http://example.com")
        client.set_cookie("theme", "dark")
        client.send("websocket.connect", path="/chat/?room=1")
        client.send("websocket.receive", text={"a": 1})
        client.send("websocket.disconnect")
        connect = self.get_next_message("websocket.connect", require=True)
        self.assertEqual(connect["path"], "/chat/")
        self.assertEqual(connect["query_string"], b"room=1")
        self.assertEqual(connect["order"], 0)
        headers = dict(connect["headers"])
        self.assertEqual(headers[b"origin"], b"http://example.com")
        self.assertEqual(headers[b"cookie"], b"theme=dark")
        self.assertEqual(headers[b"host"], b"testserver")
        receive = self.get_next_message("websocket.receive", require=True)
        self.assertEqual((receive["path"], receive["order"]), ("/chat/", 1))
        self.assertEqual(json.loads(receive["text"]), {"a": 1})
        self.assertNotIn("headers", receive.content)
        disconnect = self.get_next_message("websocket.disconnect", require=True)
        self.assertEqual((disconnect["order"], disconnect["code"]), (2, 1000))
        with self.assertRaises(ValueError):
            client.set_header("Cookie", "x=1")

    def test_unordered_client_and_explicit_order(self):
        client = WSClient(ordered=False)
        client.send("websocket.receive", text="x")
        self.assertNotIn("order", self.get_next_message("websocket.receive").content)
        client = WSClient()
        client.send("websocket.receive", {"order": 5}, text="x")
        client.send("websocket.receive", text="y")
        orders = [self.get_next_message("websocket.receive")["order"] for _ in range(2)]
        self.assertEqual(orders, [5, 6])

    def test_connect_accept_check_and_json_round_trip(self):
        client = WSClient()
        client.send_and_consume("websocket.connect", path="/chat/")
        client.send_and_consume("websocket.receive", text={"message": "hi"})
        self.assertEqual(client.receive(), {"message": "hi"})
        client.send_and_consume("websocket.receive", text="plain")
        self.assertEqual(client.receive(json=False), "plain")

    def test_refused_connect_fails_the_check(self):
        client = WSClient()
        with self.assertRaisesRegex(AssertionError, "Connection rejected.*'close': True"):
            client.send_and_consume("websocket.connect", path="/deny/")
        client.send_and_consume("websocket.connect", path="/deny/", check_accept=False)
        self.assertEqual(client.receive(), {"close": True})

    def test_close_exception_sends_first_then_closes(self):
        client = WSClient()
        client.send_and_consume("websocket.receive", text="x", path="/close/")
        self.assertEqual(client.receive(json=False), "bye")
        self.assertEqual(client.receive(), {"close": 4001})

    def test_login_sends_the_session_cookie_on_connect(self):
        user = get_user_model().objects.create_user("ann", password="secret")
        client = WSClient()
        self.assertFalse(client.login(username="ann", password="wrong"))
        self.assertTrue(client.login(username="ann", password="secret"))
        # An accept with a text frame: the frame is kept for receive().
        client.send_and_consume("websocket.connect", path="/whoami/")
        self.assertEqual(client.receive(), str(user.pk))
        self.assertIsInstance(client.session, SessionBase)
        client.logout()
        client.send_and_consume("websocket.connect", path="/whoami/")
        self.assertIsNone(client.receive())

    def test_force_login(self):
        user = get_user_model().objects.create_user("bob")
        client = HttpClient()
        client.force_login(user)
        cookie = dict(client.headers)[b"cookie"].decode()
        self.assertIn(f"{settings.SESSION_COOKIE_NAME}={client.session.session_key}", cookie)
        client.send_and_consume("websocket.connect", path="/whoami/")
        self.assertEqual(client.receive(), str(user.pk))


# -- apply_routes ------------------------------------------------------------------------------


def shout(message, **kwargs):
    message.reply_channel.send({"text": message["text"].upper()})


@override_settings(CHANNEL_LAYERS=LAYERS)
class ApplyRoutesTests(ChannelTestCase):
    def test_context_manager_replaces_and_restores(self):
        client = WSClient()
        with apply_routes([route("websocket.receive", shout)]):
            client.send_and_consume("websocket.receive", text="hi")
            self.assertEqual(client.receive(json=False), "HI")
        client.send_and_consume("websocket.receive", text="hi")
        self.assertEqual(client.receive(json=False), "hi")

    @apply_routes([[route("websocket.receive", shout)], [route("later", echo)]])
    def test_decorator_with_lists_of_routes(self):
        client = WSClient()
        client.send_and_consume("websocket.receive", text="hey")
        self.assertEqual(client.receive(json=False), "HEY")
        self.assertIs(client.get_consumer_by_channel("later"), echo)


@override_settings(CHANNEL_LAYERS=LAYERS)
@apply_routes(route("websocket.receive", shout))
class ApplyRoutesOnAClass(ChannelTestCase):
    def test_class_decorator(self):
        client = WSClient()
        client.send_and_consume("websocket.receive", text="abc")
        self.assertEqual(client.receive(json=False), "ABC")


def test_apply_routes_on_a_plain_function_restores_the_router():
    wrapper = channel_layers["default"]
    before = wrapper.router

    @apply_routes([route("x", shout)])
    def inner():
        assert wrapper.router is not before
        assert "x" in wrapper.router.channels

    inner()
    assert wrapper.router is before


# -- the live server ---------------------------------------------------------------------------


LIVE_LAYERS = {
    "default": {
        "BACKEND": "geventchannels.layers.InMemoryChannelLayer",
        "ROUTING": "tests.test_testing_helpers.HELPER_ROUTES",
    }
}


@pytest.fixture
def static_dir(tmp_path):
    (tmp_path / "site.css").write_text("body {}")
    return tmp_path


class LiveServerCase(ChannelLiveServerTestCase):
    """Run by the pytest tests below through unittest, so that their outcomes (including
    a failure) can be checked."""

    __test__ = False

    def test_echo_static_and_database(self):
        get_user_model().objects.create_user("carol")
        ws = websocket.create_connection(self.live_server_ws_url + "/users/", timeout=5)
        ws.send("count")
        assert ws.recv() == "1"  # the server sees the test's row
        ws.close()
        ws = websocket.create_connection(self.live_server_ws_url + "/echo/", timeout=5)
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.close()
        import httpx

        response = httpx.get(self.live_server_url + "/static/site.css")
        assert (response.status_code, response.text) == (200, "body {}")
        assert httpx.get(self.live_server_url + "/hello/").text == "hello"

    def test_consumer_error_fails_the_test_at_once(self):
        ws = websocket.create_connection(self.live_server_ws_url + "/raise/", timeout=30)
        ws.send("x")
        ws.recv()  # no reply ever comes: the consumer's error ends the wait

    def test_runs_after_the_failed_one(self):
        ws = websocket.create_connection(self.live_server_ws_url + "/echo/", timeout=5)
        ws.send("still serving")
        assert ws.recv() == "still serving"
        ws.close()


def test_channel_live_server_test_case(static_dir):
    suite = unittest.TestSuite(
        LiveServerCase(name)
        for name in (
            "test_echo_static_and_database",
            "test_consumer_error_fails_the_test_at_once",
            "test_runs_after_the_failed_one",
        )
    )
    result = unittest.TestResult()
    started = time.monotonic()
    with override_settings(
        CHANNEL_LAYERS=LIVE_LAYERS, STATICFILES_DIRS=[str(static_dir)], STATIC_URL="/static/"
    ):
        suite.run(result)
    assert time.monotonic() - started < 20
    assert result.testsRun == 3
    assert not result.failures
    (case, trace), *others = result.errors
    assert not others, others
    assert case.id().endswith("test_consumer_error_fails_the_test_at_once")
    assert "ConsumerError" in trace and "ZeroDivisionError: boom in the consumer" in trace
    assert "in raises" in trace  # the consumer's own frame


def test_the_live_server_case_allows_its_own_host_like_djangos(static_dir):
    """A project whose ALLOWED_HOSTS names only its real domain still reaches its live
    server over HTTP and WebSocket (the server's Host and Origin checks pass)."""
    suite = unittest.TestSuite([LiveServerCase("test_echo_static_and_database")])
    result = unittest.TestResult()
    with override_settings(
        CHANNEL_LAYERS=LIVE_LAYERS,
        STATICFILES_DIRS=[str(static_dir)],
        STATIC_URL="/static/",
        ALLOWED_HOSTS=["www.example.com"],
    ):
        suite.run(result)
        assert settings.ALLOWED_HOSTS == ["www.example.com"]
    assert (result.testsRun, result.errors, result.failures) == (1, [], [])


def test_live_server_raises_a_consumer_error_where_the_test_waits():
    started = time.monotonic()
    with pytest.raises(ConsumerError, match="error in consumer .*raises") as caught:
        with live_server(HELPER_ROUTES) as server:
            ws = websocket.create_connection(server.ws_url + "/raise/", timeout=30)
            ws.send("x")
            ws.recv()
    assert time.monotonic() - started < 10
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_live_server_raises_an_unseen_consumer_error_when_it_stops():
    with pytest.raises(ConsumerError):
        with live_server(HELPER_ROUTES) as server:
            server.layer.send("websocket.receive", {"path": "/raise/", "text": "x"})
            server.app.worker.join(0.5)  # the error happens while the test does not wait
            server.errors.armed = False


def test_live_server_can_leave_consumer_errors_to_the_log(caplog):
    with live_server(HELPER_ROUTES, raise_consumer_errors=False) as server:
        ws = websocket.create_connection(server.ws_url + "/raise/", timeout=5)
        ws.send("x")
        ws.send("y")
        deadline = time.monotonic() + 5
        while "boom in the consumer" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        ws.close()
    assert "boom in the consumer" in caplog.text


# -- the pytest plugin, in a pytest of its own -------------------------------------------------

PLUGIN_TESTS = """
import json
import websocket
from geventchannels.routing import route
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.test import apply_routes

def echo(message, **kwargs):
    message.reply_channel.send({"text": message["text"]})

def test_channel_layer_is_fresh_and_in_memory(channel_layer):
    assert type(channel_layer.channel_layer) is InMemoryChannelLayer
    assert channel_layer.receive(["anything"]) == (None, None)
    channel_layer.send("anything", {"a": 1})

def test_ws_client(ws_client):
    with apply_routes([route("websocket.receive", echo)]):
        ws_client.send_and_consume("websocket.receive", text={"hi": 1})
    assert ws_client.receive() == {"hi": 1}

def test_the_ini_option_patched_gevent_first():
    import geventchannels.monkey
    assert geventchannels.monkey.is_patched()

def test_live_server_ws(live_server_ws, channels_live_server):
    ws = websocket.create_connection(live_server_ws + "/", timeout=5)
    assert channels_live_server.url.startswith("http://127.0.0.1:")
    ws.send("x")
    ws.close()
"""

PLUGIN_CONFTEST = """
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
import django
django.setup()
"""


def run_pytest(folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, *arguments, "-p", "no:cacheprovider", "-q", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )


@pytest.mark.timeout(110)
def test_pytest_plugin_fixtures(tmp_path):
    (tmp_path / "conftest.py").write_text(PLUGIN_CONFTEST)
    (tmp_path / "test_plugin.py").write_text(textwrap.dedent(PLUGIN_TESTS))
    (tmp_path / "pytest.ini").write_text("[pytest]\ngeventchannels_patch = true\n")
    # Plain `pytest`: the ini option patches gevent before the conftest imports Django.
    run = run_pytest(tmp_path, "-m", "pytest")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout


def test_live_fixture_without_gevent_says_how_to_run(tmp_path):
    (tmp_path / "conftest.py").write_text(PLUGIN_CONFTEST)
    (tmp_path / "test_plugin.py").write_text(textwrap.dedent(PLUGIN_TESTS))
    run = run_pytest(tmp_path, "-m", "pytest", "-k", "live_server_ws")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "needs a gevent-patched process" in run.stdout
