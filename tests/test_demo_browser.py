"""The demo chat in a real browser: headless Chromium (Debian's ``chromium`` package) driven
by Playwright talks to ``demo_project/manage.py runserver`` running as a real subprocess.

Two browser contexts (two users, no shared cookies) open the page; a message sent from one
must reach both logs through the browser client, the demultiplexer, the message binding and
the ``chat`` group, once on the demo's default in-memory layer and once on Redis
(``DEMO_REDIS_URL``). A third tab sees the history, every tab who is in the room (the
presence list, by the names in the pages' addresses) and how many.
Playwright's sync API runs fine in this gevent-patched process; only the test side uses it,
the product process has no asyncio in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import WAIT_MS, free_port, wait_for_port

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo_project"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def demo_environment(db_path: Path, redis_url: str | None) -> dict[str, str]:
    """The environment of a plain `make demo` run, with the database in ``db_path``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DEMO_"))}
    environ.update(
        DEMO_DB_PATH=str(db_path),
        PYTHONUNBUFFERED="1",
        DJANGO_RUNSERVER_HIDE_WARNING="true",
    )
    if redis_url:
        environ["DEMO_REDIS_URL"] = redis_url
    return environ


@pytest.fixture(params=["in-memory", pytest.param("redis", marks=pytest.mark.redis)])
def demo_url(request) -> Iterator[str]:
    """The URL of the demo served by its own manage.py runserver on a free port, on the
    in-memory layer or on a real redis-server."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    workdir = Path(tempfile.mkdtemp(prefix="gc-demo-"))
    environ = demo_environment(workdir / "db.sqlite3", redis_url)
    manage = [sys.executable, str(DEMO_DIR / "manage.py")]
    subprocess.run(
        [*manage, "migrate", "--noinput", "-v", "0"],
        cwd=DEMO_DIR,
        env=environ,
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    port = free_port()
    log_path = workdir / "runserver.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [*manage, "runserver", "--noreload", "127.0.0.1:%d" % port],
            cwd=DEMO_DIR,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_for_port(port, timeout=20)
        except TimeoutError:
            raise AssertionError(
                "the demo did not start; its output:\n" + log_path.read_text()
            ) from None
        yield "http://127.0.0.1:%d/" % port
    finally:
        server.kill()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def open_chat(browser, url: str, name: str):
    """A page of the chat in a fresh context for ``name``, once its WebSocket reports
    "connected"."""
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{url}?name={name}")
    expect(page.locator("#status")).to_have_text("connected", timeout=WAIT_MS)
    return page


@pytest.mark.timeout(60)
def test_a_message_typed_in_one_browser_appears_in_both(browser, demo_url, tmp_path):
    from playwright.sync_api import expect

    alice = open_chat(browser, demo_url, "alice")
    bob = open_chat(browser, demo_url, "bob")
    for page in (alice, bob):
        expect(page.locator("#online")).to_have_text("2 online", timeout=WAIT_MS)
        expect(page.locator("#people li")).to_have_text(["alice", "bob"], timeout=WAIT_MS)

    alice.fill("#text", "hello from alice")
    alice.get_by_role("button", name="Send").click()

    for page in (alice, bob):
        expect(page.locator("#log div.message")).to_have_text(["hello from alice"], timeout=WAIT_MS)
    expect(alice.locator("#text")).to_have_value("")

    bob.fill("#text", "hi alice")
    bob.press("#text", "Enter")
    both = ["hello from alice", "hi alice"]
    for page in (alice, bob):
        expect(page.locator("#log div.message")).to_have_text(both, timeout=WAIT_MS)

    # A tab opened later gets the history from the page, then the new ones live.
    carol = open_chat(browser, demo_url, "carol")
    expect(carol.locator("#log div.message")).to_have_text(both, timeout=WAIT_MS)
    for page in (alice, bob, carol):
        expect(page.locator("#online")).to_have_text("3 online", timeout=WAIT_MS)
        expect(page.locator("#people li")).to_have_text(["alice", "bob", "carol"])

    # The binding validates what clients send: too long is refused, and said so.
    carol.fill("#text", "x" * 2001)
    carol.press("#text", "Enter")
    expect(carol.locator("#error")).to_contain_text("at most 2000 characters", timeout=WAIT_MS)
    # Closing the tab ends its socket: the server untracks it and the others are told.
    carol.context.close()
    for page in (alice, bob):
        expect(page.locator("#online")).to_have_text("2 online", timeout=WAIT_MS)
        expect(page.locator("#people li")).to_have_text(["alice", "bob"], timeout=WAIT_MS)
        expect(page.locator("#log div.message")).to_have_text(both, timeout=WAIT_MS)

    screenshot = tmp_path / "chat.png"
    alice.screenshot(path=str(screenshot))
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)
    assert screenshot.stat().st_size > 1000
    if os.environ.get("DEMO_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["DEMO_SCREENSHOT"])
