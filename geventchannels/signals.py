"""Signals of the consumer pool.

- ``consumer_started`` / ``consumer_finished``: around every consumer call (``environ``
  is passed to ``consumer_started`` for Channels 1.x receivers). Django's
  ``close_old_connections`` runs on both, as Django does around every request, so a
  consumer never runs on a broken or expired database connection.
- ``worker_ready``: a consumer pool has started (sender: the Worker).
- ``worker_process_ready``: the process is serving and its pools are running.
"""

from typing import Any

from django.db import close_old_connections as django_close_old_connections
from django.db.backends.signals import connection_created
from django.dispatch import Signal

# Not cached by sender: Channels 1.x code sends them with sender=None, which a cache keyed
# by weak references refuses; the pool's usual case skips Signal.send altogether (below).
consumer_started = Signal()
consumer_finished = Signal()
worker_ready = Signal()
worker_process_ready = Signal()

_database_used = False


def _note_database_used(**kwargs: Any) -> None:
    global _database_used
    _database_used = True


def close_old_connections(**kwargs: Any) -> None:
    """Django's ``close_old_connections``, skipped until the process has opened a
    database connection (a pure WebSocket consumer then pays nothing for it)."""
    if _database_used:
        django_close_old_connections()


_CLOSE_UID = "geventchannels.close_old_connections"
connection_created.connect(_note_database_used, dispatch_uid="geventchannels.database_used")
consumer_started.connect(close_old_connections, dispatch_uid=_CLOSE_UID)
consumer_finished.connect(close_old_connections, dispatch_uid=_CLOSE_UID)


def send_consumer_started(sender: Any) -> None:
    """``consumer_started.send``, shortened when close_old_connections is the only
    receiver (the usual case: Signal.send costs more than the consumer call itself)."""
    receivers = consumer_started.receivers
    if len(receivers) == 1 and receivers[0][0][0] == _CLOSE_UID:
        if _database_used:
            django_close_old_connections()
    elif receivers:
        consumer_started.send(sender=sender, environ={})


def send_consumer_finished(sender: Any) -> None:
    """``consumer_finished.send``, shortened like :func:`send_consumer_started`."""
    receivers = consumer_finished.receivers
    if len(receivers) == 1 and receivers[0][0][0] == _CLOSE_UID:
        if _database_used:
            django_close_old_connections()
    elif receivers:
        consumer_finished.send(sender=sender)
