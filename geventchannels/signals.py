"""Signals of the consumer pool.

- ``consumer_started`` / ``consumer_finished``: around every consumer call (``environ``
  is passed to ``consumer_started`` for Channels 1.x receivers). Django's
  ``close_old_connections`` runs on both, as Django does around every request, so a
  consumer never runs on a broken or expired database connection; a greenlet without an
  open connection (after CONN_MAX_AGE=0 closed it, or one that never queried) skips it.
- ``worker_ready``: a consumer pool has started (sender: the Worker).
- ``worker_process_ready``: the process is serving and its pools are running.
"""

import threading
from asyncio import _get_running_loop
from typing import Any

from django.db import close_old_connections as django_close_old_connections
from django.db import connections
from django.db.backends.signals import connection_created
from django.dispatch import Signal

# Not cached by sender: Channels 1.x code sends them with sender=None, which a cache keyed
# by weak references refuses; the pool's usual case skips Signal.send altogether (below).
consumer_started = Signal()
consumer_finished = Signal()
worker_ready = Signal()
worker_process_ready = Signal()

_database_used = False

#: Where Django keeps this greenlet's connections: asgiref's thread-critical Local stores
#: them in a threading.local (per greenlet once gevent patched it), which it uses as is
#: outside a running asyncio loop. None when asgiref stores them otherwise.
_storage = getattr(getattr(connections, "_connections", None), "_storage", None)
if not isinstance(_storage, threading.local):
    _storage = None


def _note_database_used(**kwargs: Any) -> None:
    global _database_used
    _database_used = True


def close_old_connections(**kwargs: Any) -> None:
    """Django's ``close_old_connections``, for the connections this greenlet has open.

    Django looks every alias up through asgiref's Local and asks each connection made
    here; one whose database connection is closed (or never opened) has nothing to check,
    so only the open ones are asked, found straight in the greenlet's storage (a few
    times cheaper: this runs twice per message)."""
    if not _database_used:
        return
    if _storage is None or _get_running_loop() is not None:
        django_close_old_connections()
        return
    mine = _storage.__dict__  # getattr(_storage, alias, None) costs a microsecond on a miss
    for alias in connections.settings:
        wrapper = mine.get(alias)
        if wrapper is not None and wrapper.connection is not None:
            wrapper.close_if_unusable_or_obsolete()


_CLOSE_UID = "geventchannels.close_old_connections"
connection_created.connect(_note_database_used, dispatch_uid="geventchannels.database_used")
consumer_started.connect(close_old_connections, dispatch_uid=_CLOSE_UID)
consumer_finished.connect(close_old_connections, dispatch_uid=_CLOSE_UID)


def send_consumer_started(sender: Any) -> None:
    """``consumer_started.send``, shortened when close_old_connections is the only
    receiver (the usual case: Signal.send costs more than the consumer call itself)."""
    receivers = consumer_started.receivers
    if len(receivers) == 1 and receivers[0][0][0] == _CLOSE_UID:
        close_old_connections()
    elif receivers:
        consumer_started.send(sender=sender, environ={})


def send_consumer_finished(sender: Any) -> None:
    """``consumer_finished.send``, shortened like :func:`send_consumer_started`."""
    receivers = consumer_finished.receivers
    if len(receivers) == 1 and receivers[0][0][0] == _CLOSE_UID:
        close_old_connections()
    elif receivers:
        consumer_finished.send(sender=sender)
