"""Sessions, logins and ordering with several real processes sharing Redis and one SQLite
file: a socket server that runs no consumers (``serve --noworker``), two ``runworker``
processes that consume its sockets' messages (any of them may take any message), and a
second server where the browser logs in and out."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from .browser import Browser, ask, new_user
from .conftest import free_port
from .dbfile import file_database
from .livesrv import close_code
from .runmodes.process import BIN, PYTHON, ServerProcess

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "tests.project.auth_settings"


def serve(port: int) -> list[str]:
    return [
        str(BIN / "geventchannels"),
        "serve",
        "tests.project.auth_wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--noworker",
        "--settings",
        SETTINGS,
    ]


RUNWORKER = [PYTHON, "-m", "django", "runworker", "--settings", SETTINGS]


class Site:
    def __init__(self, sockets: int, logins: int, workers: list[ServerProcess], redis_url: str):
        self.sockets = Browser(f"http://127.0.0.1:{sockets}")
        self.logins_url = f"http://127.0.0.1:{logins}"
        self.worker_pids = {worker.pid for worker in workers}
        self.redis = redis.Redis.from_url(redis_url)

    def browser(self) -> Browser:
        """A browser that logs in on the logins server and opens sockets on the other."""
        browser = Browser(self.logins_url)
        browser.ws_url = self.sockets.ws_url
        return browser


@pytest.fixture(scope="module")
def site(redis_server):
    redis_server.flushall()
    env = {
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "GC_TEST_DB": file_database(),
        "GC_TEST_REDIS_URL": redis_server.url,
        "GC_TEST_ORDER_REDIS": redis_server.url,
    }
    sockets_port, logins_port = free_port(), free_port()
    processes = [
        ServerProcess(serve(sockets_port), sockets_port, env),
        ServerProcess(serve(logins_port), logins_port, env),
        ServerProcess(RUNWORKER, None, env),
        ServerProcess(RUNWORKER, None, env),
    ]
    try:
        for process in processes[:2]:
            process.wait_listening()
        for process in processes[2:]:
            process.wait_output("consumer greenlets")
        yield Site(sockets_port, logins_port, processes[2:], redis_server.url)
    finally:
        for process in processes:
            process.kill()


def test_the_channel_session_is_shared_by_the_processes_consuming_a_socket(site):
    user = new_user()
    browser = site.browser().log_in(user)
    ws = browser.socket()
    pids = set()
    for frame in range(1, 41):
        reply = ask(ws)
        # Written on connect, counted on every frame, whichever process ran the consumer:
        # a process never reads a copy another process has changed since.
        assert reply["user"] == user.username and reply["connected_as"] == user.username
        assert reply["frames"] == frame, reply
        pids.add(reply["pid"])
    assert pids == site.worker_pids
    ws.close()


def test_logout_on_one_server_closes_the_socket_on_another_with_4001(site):
    alice, bob = site.browser().log_in(new_user()), site.browser().log_in(new_user())
    alice_ws, bob_ws = alice.socket(), bob.socket()
    assert ask(alice_ws)["authenticated"] and ask(bob_ws)["authenticated"]
    alice.log_out()
    assert close_code(alice_ws) == 4001
    assert ask(bob_ws)["user"] == bob.who()
    bob_ws.close()


def test_a_thousand_frames_run_in_order_across_two_processes(site):
    before = set(site.redis.keys("ordered:*"))
    ws = site.sockets.socket("/ordered/")
    for n in range(1000):
        ws.send(str(n))
    ws.send("last")
    ws.settimeout(60)
    assert ws.recv() == "done"
    ws.close()
    (key,) = set(site.redis.keys("ordered:*")) - before
    runs = [text.decode() for text in site.redis.lrange(key, 0, -1)]
    assert runs == [str(n) for n in range(1000)] + ["last"]
    assert {int(pid) for pid in site.redis.smembers("ordered-pids")} == site.worker_pids
