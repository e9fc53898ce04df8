"""monkey.patch(), its too-late errors, and the geventchannels.E001 system check.

Patching is process-wide, so every case that needs an unpatched interpreter runs in a
fresh subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from geventchannels import checks, monkey

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


def run_fresh(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a new, unpatched interpreter from the project root."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.project.settings", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )


def test_patch_is_idempotent_in_fresh_interpreter():
    result = run_fresh("""
        from geventchannels.monkey import is_patched, patch
        assert not is_patched()
        patch()
        patch()
        assert is_patched()
        import socket, threading, gevent.socket
        assert socket.socket is gevent.socket.socket
        import django.db, redis  # after the patch: fine
        patch()
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("module", ["django.db", "redis"])
def test_patch_too_late_after_blocking_import(module):
    result = run_fresh(f"""
        import {module}
        from geventchannels.monkey import patch
        patch()
    """)
    assert result.returncode != 0
    assert "RuntimeError" in result.stderr
    assert f"ran after {module} was imported" in result.stderr
    assert "manage.py" in result.stderr and "wsgi.py" in result.stderr


def test_patch_too_late_with_live_threads():
    result = run_fresh("""
        import threading
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait, name="early-thread", daemon=True)
        thread.start()
        from geventchannels.monkey import patch
        try:
            patch()
        except RuntimeError as error:
            print(error)
        finally:
            stop.set()
    """)
    assert result.returncode == 0, result.stderr
    assert "threads were started (early-thread)" in result.stdout


def test_patch_in_already_patched_process():
    assert monkey.is_patched()  # the suite runs under python -m gevent.monkey
    monkey.patch()
    monkey.patch()
    assert monkey.is_patched()


def test_psycopg2_waits_cooperatively():
    """A psycopg2 connect to a server that never answers must let other greenlets run
    (without the wait callback it blocks the whole process)."""
    pytest.importorskip("psycopg2")
    result = run_fresh("""
        from geventchannels.monkey import patch
        patch()
        import socket
        import gevent, psycopg2
        from psycopg2 import extensions
        from geventchannels.monkey import _wait_for_psycopg2
        assert extensions.get_wait_callback() is _wait_for_psycopg2

        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        port = silent.getsockname()[1]
        ticks = []

        def tick():
            while True:
                ticks.append(1)
                gevent.sleep(0.01)

        ticker = gevent.spawn(tick)
        connecting = gevent.spawn(psycopg2.connect, host="127.0.0.1", port=port,
                                  dbname="x", user="x", connect_timeout=20)
        gevent.sleep(0.5)
        print("pending", not connecting.ready(), "ticks", len(ticks) >= 10)
        connecting.kill()
        ticker.kill()

        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        free_port = closed.getsockname()[1]
        closed.close()
        try:
            psycopg2.connect(host="127.0.0.1", port=free_port, dbname="x", user="x")
        except psycopg2.OperationalError:
            print("refused ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["pending True ticks True", "refused ok"]


def test_check_silent_when_patched_or_not_serving():
    assert checks.check_gevent_patched() == []
    checks.expect_serving()
    try:
        assert checks.check_gevent_patched() == []
    finally:
        checks.expect_serving(False)


def test_check_e001_when_serving_unpatched():
    result = run_fresh("""
        import django
        django.setup()
        from django.core import checks
        from geventchannels.checks import expect_serving
        print("idle", [m.id for m in checks.run_checks(tags=["geventchannels"])])
        expect_serving()
        errors = checks.run_checks(tags=["geventchannels"])
        print("serving", [m.id for m in errors])
        print(errors[0].hint)
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "idle []"
    assert lines[1] == "serving ['geventchannels.E001']"
    assert "geventchannels.monkey.patch()" in lines[2]
