"""Process leases: how the members of a process that died leave their groups, and how a
process gets its memberships back when Redis lost them.

A process that serves sockets holds a lease on its reply prefix in Redis (``P leases``,
scored by Redis' clock: leases.lua). Every ``GROUP_LEASE_TIMEOUT / 6`` seconds (2.5 s by
default) its keeper greenlet, in one script call per shard:

- renews its lease for ``2/3 * GROUP_LEASE_TIMEOUT`` (10 s), and learns whether it had
  gone missing (Redis restarted empty or failed over: re-assert every membership at once)
  or whether the process was taken for dead and purged (re-assert, with join events for
  the leave events the purge sent);
- claims the leases that expired (a process killed, a machine lost), and purges their
  members from every group and presence, with a leave event for each presence member.
  Whichever live process runs its round first claims them; a claim not finished within a
  lease is claimed again.

So a dead process's members are gone at most ``lease + round`` seconds (12.5 s of the
default 15) after its last renewal, plus the purge itself. At rest a process sends one
script call per shard and one LRANGE on its own shard per round.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event

from ...exceptions import ChannelLayerUnavailable
from .connections import UNREACHABLE
from .shards import Shard

if TYPE_CHECKING:
    from .memberships import RedisMemberships

logger = logging.getLogger("geventchannels.groups")

SCRIPT = Path(__file__).with_name("leases.lua").read_text()
#: Dead processes one round claims on one shard.
CLAIM_LIMIT = 20
#: Seconds between rounds while Redis is unreachable, so that a Redis that comes back is
#: noticed soon.
RETRY_SECONDS = 1.0

RENEWED, MISSING, PURGING, PURGED = 0, 1, 2, 3


class LeaseKeeper:
    """The greenlet that keeps this process's leases and purges the dead."""

    def __init__(self, memberships: RedisMemberships, timeout: float):
        self.memberships = memberships
        self.layer = memberships.layer
        self.lease_ms = max(1, int(timeout * 1000 * 2 / 3))
        self.interval = timeout / 6
        #: A purged process that comes back is told so for this long (leave events were
        #: sent for its members: it re-announces them).
        self.tombstone_ms = int(max(timeout, self.layer.group_expiry) * 1000)
        self.leases_key = self.layer.prefix + "leases"
        self.scripts = {shard: shard.client.register_script(SCRIPT) for shard in self.layer.shards}
        #: Own prefixes found being purged by another process: re-asserted when it is done.
        self.purged: set[str] = set()
        #: Own prefixes that held a lease once: a lease missing after that was lost.
        self.leased: set[str] = set()
        self._wake = Event()
        self.rounds = 0
        self.greenlet = gevent.spawn(self._run)

    def wake(self) -> None:
        """Run a round now (a prefix to take a lease for)."""
        self._wake.set()

    def stop(self) -> None:
        self.greenlet.kill(block=False)

    def release(self, prefix: str) -> None:
        """``prefix`` is served no more: purge what is left of it and drop its lease."""
        self.leased.discard(prefix)
        shard = self.layer._shard_for(prefix)
        self.memberships.purge(shard, prefix)
        try:
            self.scripts[shard](keys=[self.leases_key], args=["release", prefix])
        except UNREACHABLE as error:
            raise shard.unavailable(error) from None

    def _run(self) -> None:
        while True:
            self._wake.clear()
            pause = self.interval
            try:
                if not self.round():
                    pause = min(pause, RETRY_SECONDS)
            except ChannelLayerUnavailable:
                pause = min(pause, RETRY_SECONDS)
            except Exception:
                logger.exception("a lease round failed; retrying")
                pause = min(pause, RETRY_SECONDS)
            self.rounds += 1
            self._wake.wait(pause)

    def round(self) -> bool:
        """Renew, claim and purge on every shard, then catch up on what failed before and
        on what other processes changed. False when a shard was unreachable."""
        memberships = self.memberships
        served = dict(memberships.served)
        reached = True
        for shard in self.layer.shards:
            own = [prefix for prefix in served if self.layer._shard_for(prefix) is shard]
            try:
                states, claimed = self.scripts[shard](
                    keys=[self.leases_key], args=["round", self.lease_ms, CLAIM_LIMIT, *own]
                )
            except UNREACHABLE as error:
                shard.mark_down(error)
                reached = False
                continue
            shard.mark_up()
            for prefix, state in zip(own, states, strict=True):
                self._renewed(prefix, int(state))
            for prefix in claimed:
                self._purge(shard, prefix.decode())
        memberships.retry_unclean()
        for prefix, is_open in served.items():
            memberships.learn_remote(prefix, is_open)
        return reached

    def _renewed(self, prefix: str, state: int) -> None:
        if prefix not in self.leased:
            self.leased.add(prefix)
            if state == MISSING:
                return  # the first lease of a new prefix: nothing was lost
        if state == PURGING:
            self.purged.add(prefix)
            return
        if state == RENEWED and prefix not in self.purged:
            return
        announce = state == PURGED or prefix in self.purged
        self.purged.discard(prefix)
        if announce:
            logger.warning(
                "this process was taken for dead (its lease on %s expired) and its members "
                "were purged: adding them back",
                prefix,
            )
        self.memberships.reassert([prefix], announce=announce)

    def _purge(self, shard: Shard, prefix: str) -> None:
        left = self.memberships.purge(shard, prefix)
        self.scripts[shard](keys=[self.leases_key], args=["purged", prefix, self.tombstone_ms])
        logger.info("purged %d membership(s) of %s, whose lease expired", left, prefix)
