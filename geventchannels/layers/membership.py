"""Group memberships and presence that follow the sockets of this process.

Every layer has one :class:`Memberships` (``layer.memberships``). The server tells it which
process-local prefix it serves (its reply prefix ``gc.xxxx!``) and when one of its channels
closes; the layer's ``group_add`` / ``group_discard`` and :mod:`geventchannels.presence`
tell it what those channels joined. So when a socket ends, for whatever reason, the server
takes it out of every group and presence itself, whether or not a ``websocket.disconnect``
consumer does. Channels under prefixes nobody serves here are left to their owner.

This class keeps presence in this process's memory, which is right for the in-memory layer;
the Redis layer's subclass (``layers/redis/memberships.py``) keeps it in Redis, with leases
so that the members of a process that died are purged too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent

from ..exceptions import ChannelFull
from ..logs import Tally
from .base import copy_message, non_local_name

if TYPE_CHECKING:
    from .base import BaseChannelLayer

logger = logging.getLogger("geventchannels.groups")

#: What a tracked channel carries: (its meta dict, the channel its events go to or "").
Tracked = tuple[dict, str]
#: Answers "is this channel still open?" for the channels of a served prefix.
IsOpen = Callable[[str], bool]

#: The largest meta dict, counted as a message is (see layers/base.py).
MAX_META_SIZE = 4096

_events_lost = Tally(
    "%d presence event(s) not sent: %s (latest to %r); let a consumer read that channel",
    logger,
)


def presence_event(name: str, event: str, channel: str, meta: dict) -> dict:
    """The message a join or leave sends to the presence's events channel."""
    return {"presence": name, "event": event, "channel": channel, "meta": meta}


class Memberships:
    """Which groups and presences the channels served by this process are in, and, here,
    the presences themselves."""

    def __init__(self, layer: BaseChannelLayer):
        self.layer = layer
        #: Served prefix -> how to ask whether one of its channels is still open.
        self.served: dict[str, IsOpen] = {}
        #: Channel of a served prefix -> the groups it joined.
        self.groups: dict[str, set[str]] = {}
        #: Channel of a served prefix -> {presence name: what it was tracked with}.
        self.tracked: dict[str, dict[str, Tracked]] = {}
        #: Presence name -> {channel: (meta, events)}: the in-memory store.
        self._presences: dict[str, dict[str, Tracked]] = {}
        self._refresher: gevent.Greenlet | None = None

    # -- what the server says ---------------------------------------------------------

    def serve(
        self, prefix: str, is_open: IsOpen, overrides: Mapping[str, Any] | None = None
    ) -> None:
        """From now on this process owns the channels under ``prefix``: their
        memberships end when ``closed`` is called for them (and with ``release``)."""
        self.served[prefix] = is_open
        if self._refresher is None:
            self._refresher = gevent.spawn(self._refresh_forever)

    def release(self, prefix: str) -> None:
        """The server stops serving ``prefix``: what its channels are still in is left."""
        for channel in [c for c in (*self.groups, *self.tracked) if c.startswith(prefix)]:
            self.closed(channel)
        self.served.pop(prefix, None)
        if not self.served:
            self.stop()

    def stop(self) -> None:
        """The layer closes: stop renewing anything."""
        if self._refresher is not None:
            self._refresher.kill(block=False)
            self._refresher = None

    def closed(self, channel: str) -> None:
        """``channel`` ended (a socket closed, for any reason): leave every group and
        presence it is in, with a leave event for each presence."""
        groups = self.groups.pop(channel, None)
        tracked = self.tracked.pop(channel, None)
        if groups or tracked:
            self.leave_all(channel, groups or (), tracked or {})

    def owner(self, channel: str) -> IsOpen | None:
        """How to ask whether ``channel`` is open, when this process serves it."""
        if "!" not in channel or not self.served:
            return None
        return self.served.get(non_local_name(channel))

    def leave_all(
        self, channel: str, groups: Iterable[str], tracked: Mapping[str, Tracked]
    ) -> None:
        """Take ``channel`` out of ``groups`` and the ``tracked`` presences."""
        failed_groups: set[str] = set()
        failed_tracked: dict[str, Tracked] = {}
        error: Exception | None = None
        for group in groups:
            try:
                self.layer.group_discard(group, channel)
            except Exception as failure:
                failed_groups.add(group)
                error = failure
        for name, what in tracked.items():
            try:
                self.untrack(name, channel)
            except Exception as failure:
                failed_tracked[name] = what
                error = failure
        if error is not None:
            self.leave_failed(channel, failed_groups, failed_tracked, error)

    def leave_failed(
        self, channel: str, groups: set[str], tracked: dict[str, Tracked], error: Exception
    ) -> None:
        logger.warning(
            "%s closed but could not leave %s: %s",
            channel,
            ", ".join([*sorted(groups), *(f"presence {name}" for name in sorted(tracked))]),
            error,
        )

    # -- what the layer says ------------------------------------------------------------

    def joined(self, group: str, channel: str) -> None:
        """Called by the layer after ``group_add``. A channel that closed before a slow
        consumer added it is taken out again at once."""
        is_open = self.owner(channel)
        if is_open is None:
            return
        if is_open(channel):
            self.groups.setdefault(channel, set()).add(group)
        else:
            self.layer.group_discard(group, channel)

    def left(self, group: str, channel: str) -> None:
        """Called by the layer on ``group_discard``."""
        groups = self.groups.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self.groups[channel]

    def forget(self) -> None:
        """The layer was flushed: no channel is in anything any more."""
        self.groups.clear()
        self.tracked.clear()
        self._presences.clear()

    # -- presence -------------------------------------------------------------------------

    def track(self, name: str, channel: str, meta: dict, events: str) -> bool:
        """Add ``channel`` to presence ``name`` (or give it new ``meta``); True when it is
        new there, so that the caller announces the join. A channel of this process that
        closed already is not added."""
        is_open = self.owner(channel)
        if is_open is not None and not is_open(channel):
            return False
        new = self.store_track(name, channel, meta, events)
        if is_open is not None:
            self.tracked.setdefault(channel, {})[name] = (meta, events)
        return new

    def untrack(self, name: str, channel: str) -> bool:
        """Take ``channel`` out of presence ``name``; True (and a leave event) when it was
        there. Only the first of several concurrent untracks of a member announces it."""
        tracked = self.tracked.get(channel)
        if tracked is not None:
            tracked.pop(name, None)
            if not tracked:
                del self.tracked[channel]
        removed = self.store_untrack(name, channel)
        if removed is not None:
            self.announce(name, "leave", channel, *removed)
        return removed is not None

    def announce(self, name: str, event: str, channel: str, meta: dict, events: str) -> None:
        """Send a join or leave event, when the presence has an events channel."""
        if not events:
            return
        try:
            self.layer.send(events, presence_event(name, event, channel, meta))
        except ChannelFull:
            _events_lost.add("the channel is full", events)
        except Exception as error:
            _events_lost.add(f"{type(error).__name__}: {error}", events)

    def store_track(
        self, name: str, channel: str, meta: dict, events: str, replace: bool = True
    ) -> bool:
        """Store a member; True when it is new. ``replace=False`` keeps a member that is
        there already as it is (and where it is in the join order)."""
        members = self._presences.setdefault(name, {})
        new = channel not in members
        if new or replace:
            members[channel] = (meta, events)
        return new

    def store_untrack(self, name: str, channel: str) -> Tracked | None:
        members = self._presences.get(name)
        if not members:
            return None
        removed = members.pop(channel, None)
        if not members:
            del self._presences[name]
        return removed

    def members(self, name: str) -> list[dict]:
        """The meta of each member of presence ``name``, in the order they joined."""
        members = self._presences.get(name) or {}
        return [copy_message(meta, MAX_META_SIZE) for meta, _events in members.values()]

    # -- keeping memberships past group_expiry ----------------------------------------------

    def reassert(self, prefixes: Iterable[str], announce: bool = False) -> None:
        """Add the channels of ``prefixes`` to their groups and presences again (renewing
        ``group_expiry``; on Redis, after it lost them); ``announce`` sends join events for
        the presence members that were missing."""
        wanted = tuple(prefixes)
        jobs: list[Callable[[], None]] = []
        for channel, groups in list(self.groups.items()):
            if channel.startswith(wanted):
                jobs.extend(partial(self.layer.group_add, group, channel) for group in groups)
        for channel, tracked in list(self.tracked.items()):
            if channel.startswith(wanted):
                for name, (meta, events) in tracked.items():
                    jobs.append(partial(self._track_again, name, channel, meta, events, announce))
        self.run_all(jobs)

    def _track_again(
        self, name: str, channel: str, meta: dict, events: str, announce: bool
    ) -> None:
        if self.store_track(name, channel, meta, events, replace=False) and announce:
            self.announce(name, "join", channel, meta, events)

    def run_all(self, jobs: list[Callable[[], None]]) -> None:
        """Run layer calls one after the other (the Redis subclass runs them side by side)."""
        for job in jobs:
            job()

    def _refresh_forever(self) -> None:
        """Re-add served channels before ``group_expiry`` drops them: a socket stays in its
        groups for as long as it is open."""
        while True:
            gevent.sleep(max(1.0, self.layer.group_expiry / 2))
            try:
                self.reassert(list(self.served))
            except Exception:
                logger.exception("renewing the group memberships of this process failed")
