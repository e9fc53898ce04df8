"""The browser client (geventchannels/static/geventchannels/js/) in headless Chromium, against
a real server subprocess that the tests stop and start again on the same port: it connects,
demultiplexes two streams, reconnects after a restart and sends what was queued meanwhile,
and stops for good on the application's close codes (1000, 1008, 4000-4999)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import WAIT_MS, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "tests" / "jsclient" / "manage.py"

pytestmark = pytest.mark.timeout(90)


class Site:
    """tests/jsclient served by `manage.py runserver` on a port that outlives restarts."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = log_dir / "runserver.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(MANAGE),
                    "runserver",
                    "--noreload",
                    "--insecure",
                    "127.0.0.1:%d" % self.port,
                ],
                cwd=ROOT,
                env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.jsclient.settings"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.port, timeout=20)
        except TimeoutError:
            raise AssertionError("the site did not start:\n" + self.log_path.read_text()) from None

    def stop(self, how: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(how)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextlib.contextmanager
def running_site(log_dir: Path):
    site = Site(log_dir)
    site.start()
    try:
        yield site
    finally:
        site.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One site for the tests that do not stop it."""
    with running_site(tmp_path_factory.mktemp("jsclient")) as site:
        yield site


@pytest.fixture
def own_site(tmp_path):
    """A site of the test's own, which it may stop and start."""
    with running_site(tmp_path) as site:
        yield site


def open_page(browser, site: Site, kind: str = "module"):
    page = browser.new_context().new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{site.url}/{kind}/")
    page.wait_for_function("window.ready === true")
    return page


#: Makes window.bridges[key] (logging opens, closes and stream payloads in window.logs[key])
#: and connects it to the site's multiplexed socket.
CONNECT = """([key, options]) => {
  const log = {opens: 0, closes: [], received: []};
  const bridge = new window.client.WebSocketBridge(options);
  bridge.onopen = () => { log.opens += 1; };
  bridge.onclose = (event, info) => { log.closes.push({code: event.code, reconnect: info.reconnect}); };
  for (const name of ["echo", "upper"]) {
    bridge.demultiplex(name, (payload, stream) => log.received.push([stream, payload]));
  }
  bridge.connect("/streams/");
  (window.bridges = window.bridges || {})[key] = bridge;
  (window.logs = window.logs || {})[key] = log;
}"""

FAST = {"minDelay": 50, "maxDelay": 250}


def connect(page, key: str = "b", **options) -> None:
    page.evaluate(CONNECT, [key, {**FAST, **options}])
    page.wait_for_function(f"window.logs.{key}.opens === 1")


def test_it_connects_and_demultiplexes_two_streams(browser, site):
    page = open_page(browser, site)
    connect(page)
    page.evaluate("""() => {
      bridges.b.stream("echo").send({n: 1});
      bridges.b.stream("upper").send({text: "abc"});
    }""")
    page.wait_for_function("logs.b.received.length === 2")
    received = page.evaluate("logs.b.received")
    assert sorted(received, key=str) == sorted(
        [["echo", {"echo": {"n": 1}}], ["upper", {"upper": "ABC"}]], key=str
    )


def test_it_survives_a_server_restart_and_sends_what_was_queued(browser, own_site):
    site = own_site
    page = open_page(browser, site)
    connect(page)
    site.stop(signal.SIGTERM)
    page.wait_for_function("logs.b.closes.length >= 1")
    assert page.evaluate("logs.b.closes[0]") == {"code": 1001, "reconnect": True}
    # The server is gone: these wait in the queue.
    assert page.evaluate("bridges.b.stream('echo').send({n: 'queued 1'})") is True
    assert page.evaluate("bridges.b.stream('echo').send({n: 'queued 2'})") is True
    assert page.evaluate("bridges.b.queued") == 2
    page.wait_for_function("logs.b.closes.some(c => c.code === 1006)")
    site.start()
    page.wait_for_function("logs.b.opens === 2", timeout=30_000)
    page.wait_for_function("logs.b.received.length === 2")
    assert page.evaluate("logs.b.received") == [
        ["echo", {"echo": {"n": "queued 1"}}],
        ["echo", {"echo": {"n": "queued 2"}}],
    ]
    assert page.evaluate("bridges.b.queued") == 0
    assert all(c["reconnect"] for c in page.evaluate("logs.b.closes"))


@pytest.mark.parametrize("code", [1000, 1008, 4000, 4999])
def test_it_stops_on_the_applications_close_codes(browser, site, code):
    page = open_page(browser, site)
    connect(page)
    page.evaluate(f"bridges.b.stream('bye').send({{code: {code}}})")
    page.wait_for_function("logs.b.closes.length === 1")
    assert page.evaluate("logs.b.closes[0]") == {"code": code, "reconnect": False}
    # No retry is scheduled, so none can happen; sending now is refused.
    assert page.evaluate("[bridges.b.reconnecting, bridges.b.timer]") == [False, None]
    assert page.evaluate("bridges.b.send({late: true})") is False
    assert page.evaluate("logs.b.opens") == 1


@pytest.mark.parametrize("code", [1011, 1012, 1013])
def test_it_reconnects_on_server_trouble_codes(browser, site, code):
    page = open_page(browser, site)
    connect(page)
    page.evaluate(f"bridges.b.stream('bye').send({{code: {code}}})")
    page.wait_for_function("logs.b.opens === 2")
    assert page.evaluate("logs.b.closes") == [{"code": code, "reconnect": True}]
    page.evaluate("bridges.b.stream('upper').send({text: 'back'})")
    page.wait_for_function("logs.b.received.length === 1")
    assert page.evaluate("logs.b.received") == [["upper", {"upper": "BACK"}]]


def test_closing_from_the_page_is_final(browser, site):
    page = open_page(browser, site)
    connect(page)
    page.evaluate("bridges.b.close()")
    page.wait_for_function("logs.b.closes.length === 1")
    assert page.evaluate("logs.b.closes[0]") == {"code": 1000, "reconnect": False}


def test_the_classic_script_works_the_same(browser, site):
    page = open_page(browser, site, "classic")
    assert page.evaluate("typeof channels.WebSocketBridge") == "function"
    connect(page)
    page.evaluate("bridges.b.stream('echo').send({classic: true})")
    page.wait_for_function("logs.b.received.length === 1")
    assert page.evaluate("logs.b.received") == [["echo", {"echo": {"classic": True}}]]


def test_urls_queue_limit_and_back_off(browser, site):
    page = open_page(browser, site)
    resolve = "([path, base]) => client.resolveUrl(path, base)"
    assert page.evaluate(resolve, ["streams/", "http://h:1/page/"]) == "ws://h:1/page/streams/"
    assert page.evaluate(resolve, ["/x/?a=1#top", "https://h/a/"]) == "wss://h/x/?a=1"
    assert page.evaluate(resolve, ["ws://other/y", "https://h/"]) == "ws://other/y"
    assert page.evaluate("client.resolveUrl()") == f"ws://127.0.0.1:{site.port}/"

    sent = page.evaluate("""() => {
      const bridge = new client.WebSocketBridge({queueLimit: 2});
      return [bridge.send(1), bridge.send(2), bridge.send(3), bridge.queued];
    }""")
    assert sent == [True, True, False, 2]

    delays = page.evaluate("""() => {
      const bridge = new client.WebSocketBridge({minDelay: 100, factor: 2, maxDelay: 1000});
      const delays = [];
      for (bridge.attempts = 0; bridge.attempts < 6; bridge.attempts++) {
        delays.push(bridge.nextDelay());
      }
      return delays;
    }""")
    for attempt, delay in enumerate(delays):
        full = min(1000, 100 * 2**attempt)
        assert full / 2 <= delay <= full
