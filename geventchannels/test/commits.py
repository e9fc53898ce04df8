"""``transaction.on_commit`` inside a TestCase, as in the autocommit code runs in.

A TestCase wraps each test in a transaction that is rolled back, so callbacks waiting for
a commit (a binding's messages) would never run. While :class:`ImmediateCommits` is
active, a callback made at the depth of the test's own transaction runs at once, and one
made inside a block opened since (by the test, or by the code under test) runs once that
block has been released, when the test next reads a channel or a consumer returns. A
block that is rolled back drops its callbacks, as Django does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import connections

logger = logging.getLogger(__name__)

#: The ImmediateCommits of the test running now, if any.
active: ImmediateCommits | None = None


class ImmediateCommits:
    """Makes the test's own transaction behave as autocommit for ``on_commit``, on the
    databases ``aliases``, until :meth:`stop`."""

    def __init__(self, aliases: list[str]) -> None:
        global active
        #: connection -> (atomic depth of the test, callbacks pending before it started)
        self._baselines = {
            connections[alias]: (
                len(connections[alias].atomic_blocks),
                len(connections[alias].run_on_commit),
            )
            for alias in aliases
        }
        for connection, (depth, _) in self._baselines.items():
            connection.on_commit = self._on_commit_for(connection, depth)  # type: ignore[method-assign]
        active = self

    @staticmethod
    def _on_commit_for(connection: Any, depth: int) -> Callable[..., None]:
        deferred = type(connection).on_commit.__get__(connection)

        def on_commit(func: Callable[[], Any], robust: bool = False) -> None:
            if len(connection.atomic_blocks) > depth:
                deferred(func, robust)
            else:
                _call(func, robust)

        return on_commit

    def run_released(self) -> None:
        """Run the callbacks of blocks released into the test's transaction."""
        for connection, (depth, start) in self._baselines.items():
            if len(connection.atomic_blocks) == depth and len(connection.run_on_commit) > start:
                pending = connection.run_on_commit[start:]
                del connection.run_on_commit[start:]
                for entry in pending:  # (savepoint ids, callback, robust)
                    _call(entry[1], bool(entry[2:3] and entry[2]))

    def stop(self) -> None:
        global active
        for connection in self._baselines:
            connection.__dict__.pop("on_commit", None)
        if active is self:
            active = None


def run_released() -> None:
    if active is not None:
        active.run_released()


def _call(func: Callable[[], Any], robust: bool) -> None:
    if not robust:
        func()
        return
    try:
        func()
    except Exception as error:
        logger.error("error calling %r in on_commit() (%s)", func, error, exc_info=True)
