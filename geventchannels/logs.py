"""Logging helpers shared by the server, the layers and the worker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent

#: Seconds between two log lines of a warning that many connections hit at once.
TALLY_INTERVAL = 5.0


class Tally:
    """A warning that many connections can hit at once (a burst, a shutdown): the first
    is logged at once, later ones are counted and logged as one line per TALLY_INTERVAL.

    ``template`` takes the count, then the arguments of the latest ``add``. ``on_idle``
    is called when an interval passes with nothing counted, so that a caller keeping one
    Tally per kind of event can forget it.
    """

    __slots__ = ("template", "logger", "count", "args", "reporter", "on_idle")

    def __init__(
        self, template: str, logger: logging.Logger, on_idle: Callable[[], object] | None = None
    ):
        self.template = template
        self.logger = logger
        self.count = 0
        self.args: tuple = ()
        self.reporter: gevent.Greenlet | None = None
        self.on_idle = on_idle

    def add(self, *args: Any, logged: bool = False) -> None:
        """Count one more; ``logged``: the caller logged this first one in its own words
        (with a traceback, say), so only later ones are counted."""
        if self.reporter is None:
            if not logged:
                self.logger.warning(self.template, 1, *args)
            self.reporter = gevent.spawn_later(TALLY_INTERVAL, self._report)
        else:
            self.count += 1
            self.args = args

    def _report(self) -> None:
        count, self.count = self.count, 0
        if count:
            self.logger.warning(self.template, count, *self.args)
            self.reporter = gevent.spawn_later(TALLY_INTERVAL, self._report)
        else:
            self.reporter = None
            if self.on_idle is not None:
                self.on_idle()
