"""Shared fixtures: Django settings, a real redis-server on a free port, free ports, a
headless Chromium for the browser tests, and the interpreter of pytest-xdist workers.

The suite runs under ``python -m gevent.monkey --module pytest`` (see the Makefile), so
everything here is already gevent-patched.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")

import django  # noqa: E402

django.setup()


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n``), each local worker runs tests/xdist_worker.py, which
    monkey-patches it before anything is imported, as the main run is."""
    specs = getattr(config.option, "tx", None)
    if specs:
        python = shlex.join(
            [sys.executable, "-u", str(Path(__file__).with_name("xdist_worker.py"))]
        )
        config.option.tx = [
            spec + "//python=" + python if spec.rpartition("*")[2] == "popen" else spec
            for spec in specs
        ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Return once something accepts connections on host:port; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "nothing listens on %s:%d after %.0f s" % (host, port, timeout)
                ) from None
            time.sleep(0.05)


class RedisServer:
    """A private redis-server process: its own port (or ``port``, e.g. to restart one that
    was stopped), no persistence, its own working folder; ``extra_args`` are added to the
    command line (cluster mode, renamed commands)."""

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH; install it (apt-get install redis-server) "
                "or run `make test`, which installs it when run as root"
            )
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="gc-redis-")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--loglevel",
                "warning",
                *extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    def flushall(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server started for this test session and stopped after it."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The URL of an empty Redis database."""
    redis_server.flushall()
    return redis_server.url


#: Debian's Chromium for the browser tests (tests/test_demo_browser.py, test_js_client.py).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000


@pytest.fixture(scope="module")
def chromium():
    """Headless Debian Chromium under Playwright (never Playwright's downloaded browsers),
    launched once per module: a launch costs more than most browser tests. Not once per
    session: while Playwright runs, its asyncio loop counts as running in this thread, and
    Django refuses database calls from an async context in the tests that follow."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: run `make system-deps` as root (or apt-get install chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT_MS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def browser(chromium):
    """The session's Chromium; the contexts (cookies, pages, sockets) a test opens are
    closed when it ends, so no test sees another's."""
    yield chromium
    for context in chromium.contexts:
        context.close()
