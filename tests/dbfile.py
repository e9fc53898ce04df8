"""A migrated SQLite file as the test project's database, for the tests that need users and
sessions.

The test settings use ``:memory:``, and under gevent every greenlet has its own connection,
so each would see its own empty database; a file is shared by all of them (and by the
server processes a test starts). Made once per test process, on first use.
"""

from __future__ import annotations

import os
import tempfile

_path: str | None = None


def skip_fsync(sender, connection, **kwargs) -> None:
    """``connection_created`` receiver: no fsync per commit (a test database need not
    survive a power cut, and the tests write a session per message)."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=OFF")


def connect_skip_fsync() -> None:
    from django.db.backends.signals import connection_created

    connection_created.connect(skip_fsync, dispatch_uid="tests.dbfile.skip_fsync")


def file_database() -> str:
    """Point the ``default`` database at a migrated SQLite file (made on the first call);
    returns its path. Call it at the start of every module that needs it: Django's test
    database helpers (setup_databases) may have moved the connection since."""
    global _path
    from django.core.management import call_command
    from django.db import connection, connections

    fresh = _path is None
    if _path is None:
        connect_skip_fsync()
        descriptor, _path = tempfile.mkstemp(prefix="gc-tests-", suffix=".sqlite3")
        os.close(descriptor)
    # Named first: Django ignores close() on an in-memory database, so closing while the
    # name is still ":memory:" would keep this greenlet's connection on it.
    connections.settings["default"]["NAME"] = _path
    connections.close_all()
    if fresh:
        with connection.cursor() as cursor:
            # Several processes (the multi-process tests) write to it at once.
            cursor.execute("PRAGMA journal_mode=WAL")
        call_command("migrate", verbosity=0, interactive=False)
    return _path
