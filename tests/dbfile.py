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
    """Point the ``default`` database at a migrated SQLite file; returns its path."""
    global _path
    if _path is not None:
        return _path
    from django.core.management import call_command
    from django.db import connection, connections

    connect_skip_fsync()
    descriptor, path = tempfile.mkstemp(prefix="gc-tests-", suffix=".sqlite3")
    os.close(descriptor)
    connections.close_all()
    connections.settings["default"]["NAME"] = path
    with connection.cursor() as cursor:
        # Several processes (the multi-process tests) write to it at once.
        cursor.execute("PRAGMA journal_mode=WAL")
    call_command("migrate", verbosity=0, interactive=False)
    _path = path
    return path
