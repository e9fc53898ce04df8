"""asgi.delay on the Redis layer: delayed messages are kept in Redis, so that a restart or a
crash of every process loses nothing, and every process's service shares the work.

Keys, next to the list ``L`` of asgi.delay on its shard (``<prefix>asgi.delay``):

- ``L:delayed``: a sorted set of the waiting messages, scored by due time (Unix seconds);
- ``L:claimed``: messages taken for a channel on another shard (or any channel, on a
  Redis Cluster), scored by when they were taken, until that shard has them;
- ``<channel's list key>:sent:<id>``: on the channel's shard, set when such a message was
  pushed, for MARKER_TTL seconds;
- ``L:taker``: which process takes entries off L, for LEASE seconds after it last did.

Each step is one call of delay.lua, so it is atomic:

- intake: the service reads entries of L without popping them (one process at a time: the
  read renews its lease on L:taker, and is refused to others while it holds it, so that
  processes do not decode the same entries), decodes and checks them, and one call
  removes each one and adds its member to L:delayed, the latter only when that same call
  removed it. A process killed at any point leaves a message in L or in L:delayed, and
  two processes that read the same entry (a lease that lapsed) store it once. Bad
  messages are removed and logged by the process whose call removed them, so once.
- due: takes every member due by now off L:delayed and pushes it to its channel in the
  same call (the claim is the removal: however many processes find a message due at the
  same moment, one call takes it). A message whose channel is full goes back for RETRY
  seconds, until it is the layer's expiry past its due time; then it is dropped, logged.
- another shard: the due call moves such members to L:claimed; a second call on the
  channel's shard pushes each unless its marker is set, and sets it; then they leave
  L:claimed. A member left there longer than STALE (its process died between the calls)
  is taken again by any service, and the marker keeps it from arriving twice.

Two greenlets. The taking one blocks in ``BLMOVE L L`` (which rotates one entry: nothing
leaves the list); Redis answers it as soon as L has an entry, in every process, and the
holder of the lease takes what came (the others look again once it could have lapsed). The firing one sleeps until the earliest due time on a gevent timer
(Redis' own blocking timeouts are only as precise as its 100 ms clock), until the taking
one finds a message due sooner, or for REFRESH seconds at most: that is how a process
finds what another process stored and did not live to deliver. Taking a burst never
holds up firing.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

import gevent
import redis
from gevent.event import Event

from ..layers.base import non_local_name
from ..layers.redis import RedisChannelLayer, stored
from ..layers.redis.connections import BLOCK_SECONDS, UNREACHABLE, Backoff
from ..layers.redis.shards import ClusterShard, Shard
from .messages import DELAY_CHANNEL, BadDelayMessage, check
from .service import DelayService, log_bad, log_full

logger = logging.getLogger("geventchannels.delay")


SCRIPT = Path(__file__).with_name("delay.lua").read_text()

#: Entries of asgi.delay taken per intake call, and due messages per due call.
BATCH = 200
#: Longest sleep of the firing greenlet: how late a message may be when the process that
#: stored it died before its due time.
REFRESH = 1.0
#: Shortest time between two due calls: messages due within it go in one call.
COALESCE = 0.005
#: Pause after taking what waited on asgi.delay, so that a burst is taken in few calls.
INTAKE_PAUSE = 0.005
#: Seconds the process that took entries off asgi.delay keeps that job after it last did;
#: the longest another one waits to take over from a process that died.
LEASE = 0.5
LEASE_MS = int(LEASE * 1000)
#: Seconds a message may stay claimed for another shard before any service takes it again.
STALE = 10.0
#: Seconds a marker of a message pushed to another shard lives.
MARKER_TTL = 600
#: Seconds before a message whose channel was full is tried again (until it is the
#: layer's expiry past its due time).
RETRY = 0.05


class RedisDelays(DelayService):
    """The delay service of a Redis layer."""

    def __init__(self, layer: RedisChannelLayer):
        super().__init__(layer)
        self.redis_layer = layer
        self.codec = layer.codec
        self.shard = layer.shard_for(DELAY_CHANNEL)
        self.cluster = isinstance(self.shard, ClusterShard)
        self.inbox = self.shard.list_key(DELAY_CHANNEL)
        self.delayed = self.inbox + ":delayed"
        self.claimed = self.inbox + ":claimed"
        self.taker = self.inbox + ":taker"
        self.token = secrets.token_hex(8)
        self._scripts: dict[Shard, Any] = {}
        #: The earliest due time this process knows of, and the earliest that intake
        #: found since the firing greenlet last asked Redis.
        self._next_due = float("inf")
        self._heard = float("inf")
        self._sooner = Event()
        self._greenlets: list[gevent.Greenlet] = []

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        self._next_due = 0.0  # look at once: past-due messages go at once
        self._greenlets = [gevent.spawn(self._take_forever), gevent.spawn(self._fire_forever)]

    def stop(self) -> None:
        # Killing loses nothing: every step is one script call, and what a killed call
        # left claimed for another shard is taken again after STALE seconds.
        gevent.killall(self._greenlets, block=True, timeout=5)
        self._greenlets = []
        try:
            self._call(self.shard, [self.taker], ["untake", self.token])
        except Exception:  # the lease lapses on its own
            logger.debug("could not end the lease on %s", self.taker, exc_info=True)

    def statistics(self) -> dict[str, float]:
        client = self.shard.client
        try:
            pipe = client.pipeline(transaction=False)
            pipe.zcard(self.delayed)
            pipe.zcard(self.claimed)
            pipe.zrange(self.delayed, 0, 0, withscores=True)
            waiting, claimed, first = pipe.execute()
        except UNREACHABLE as error:
            raise self.shard.unavailable(error) from None
        return {
            "delayed_messages_pending": waiting + claimed,
            "delayed_messages_next_due": first[0][1] if first else 0.0,
        }

    # -- the two greenlets -------------------------------------------------------

    def _take_forever(self) -> None:
        """Move what is sent to asgi.delay into the sorted set whenever it has entries,
        and wake the firing greenlet when one falls due sooner than it knew."""
        backoff = Backoff()
        while True:
            try:
                earliest = self._intake()
                if earliest is None:  # another process takes them
                    gevent.sleep(LEASE)
                    continue
                self._learn(earliest)
                gevent.sleep(INTAKE_PAUSE)  # a burst gathers: fewer, larger calls
                self._wait_for_entry()
            except UNREACHABLE as error:
                self.shard.mark_down(error)
                backoff.wait()
                continue
            except Exception:
                logger.exception("taking messages off %s failed; retrying", DELAY_CHANNEL)
                backoff.wait()
                continue
            backoff.reset()

    def _wait_for_entry(self) -> None:
        """Return once asgi.delay has an entry (or after BLOCK_SECONDS)."""
        shard, inbox = self.shard, self.inbox
        try:
            if shard.slow is not None:
                shard.slow.execute("BLMOVE", inbox, inbox, "LEFT", "RIGHT", BLOCK_SECONDS)
            else:
                shard.blocking.blmove(inbox, inbox, BLOCK_SECONDS, "LEFT", "RIGHT")
        except redis.exceptions.ResponseError as error:
            if "unknown command" not in str(error).lower():
                raise
            shard.blocking.brpoplpush(inbox, inbox, BLOCK_SECONDS)  # Redis < 6.2

    def _learn(self, earliest: float) -> None:
        self._heard = min(self._heard, earliest)
        if earliest < self._next_due:
            self._next_due = earliest
            self._sooner.set()

    def _fire_forever(self) -> None:
        backoff = Backoff()
        refresh_at = last_fired = 0.0
        while True:
            now = time.time()
            try:
                if self._next_due <= now or refresh_at <= now:
                    self._sooner.clear()
                    # What intake learns during the call may be newer than its answer.
                    self._heard = float("inf")
                    self._next_due = min(self._fire(now), self._heard)
                    refresh_at, last_fired = now + REFRESH, now
            except UNREACHABLE as error:
                self.shard.mark_down(error)
                backoff.wait()
                continue
            except Exception:
                logger.exception("delivering delayed messages failed; retrying")
                backoff.wait()
                continue
            backoff.reset()
            self.shard.mark_up()
            now = time.time()
            if self._next_due <= now:
                gevent.sleep(0)  # more were due than one call takes: go on after others ran
                continue
            wake = max(min(self._next_due, refresh_at), last_fired + COALESCE)
            self._sooner.wait(wake - now)

    # -- intake: asgi.delay to the sorted set ------------------------------------------

    def _intake(self) -> float | None:
        """Move what waits on asgi.delay into the sorted set; the earliest due time then
        (inf when none), or None when another process holds the lease."""
        earliest = float("inf")
        while True:
            window = self._call(
                self.shard, [self.inbox, self.taker], ["take", self.token, LEASE_MS, BATCH]
            )
            if window is None:
                return None
            if not window:
                return earliest
            arguments: list[Any] = ["intake"]
            reasons: list[BadDelayMessage | None] = []
            for entry in window:
                try:
                    due, member = self._stored_form(entry)
                except BadDelayMessage as bad:
                    arguments += [entry, 0, b""]
                    reasons.append(bad)
                else:
                    arguments += [entry, repr(due), member]
                    reasons.append(None)
            reply = self._call(self.shard, [self.inbox, self.delayed], arguments)
            removed, left, first = reply[:-2], reply[-2], reply[-1]
            for taken, reason in zip(removed, reasons, strict=True):
                if taken and reason is not None:
                    log_bad(reason)
            earliest = float(first) if first else float("inf")
            if not left:
                return earliest

    def _stored_form(self, entry: bytes) -> tuple[float, bytes]:
        """(due time, sorted-set member) of an entry of asgi.delay; the delay counts from
        when it was sent (its expiry time less the layer's expiry)."""
        try:
            expires_at, _channels, payload = stored.open_entry(DELAY_CHANNEL, entry)
            message = self.codec.decode(payload)
        except Exception as error:
            raise BadDelayMessage(
                f"it cannot be read ({type(error).__name__}: {error}); do all processes "
                "share the same symmetric_encryption_keys and geventchannels version?"
            ) from None
        delayed = check(message, self.layer)
        layer = self.redis_layer
        due = expires_at - layer.expiry + delayed.seconds
        list_name = non_local_name(delayed.channel)
        here = not self.cluster and layer.shard_for(list_name) is self.shard
        member = b"|".join(
            (
                b"1",
                secrets.token_hex(8).encode(),
                list_name.encode(),
                (delayed.channel if "!" in delayed.channel else "").encode(),
                str(layer.get_capacity(list_name)).encode(),
                b"L" if here else b"R",
                repr(due).encode(),
                self.codec.encode(delayed.content),
            )
        )
        return due, member

    # -- firing: the sorted set to the channels ---------------------------------------

    def _fire(self, now: float) -> float:
        """Deliver what is due by ``now``; the earliest due time left (inf when none)."""
        layer = self.redis_layer
        reply = self._call(
            self.shard,
            [self.delayed, self.claimed],
            [
                "due",
                repr(now),
                BATCH,
                layer.expiry,
                self.shard.key_ttl,
                layer.prefix,
                repr(now - STALE),
                RETRY,
            ],
        )
        pushed, full, elsewhere, first = reply
        self.delivered += pushed
        if elsewhere:
            self._deliver_elsewhere(elsewhere, now)
        for name in full:
            log_full(name.decode())
        return float(first) if first else float("inf")

    def _deliver_elsewhere(self, members: list[bytes], now: float) -> None:
        """Push claimed members on their channels' shards (those whose channel is full go
        back to wait RETRY seconds), then unclaim them."""
        by_shard: dict[Shard, list[list[bytes]]] = {}
        for member in members:
            fields = member.split(b"|", 7)
            by_shard.setdefault(self.redis_layer.shard_for(fields[2].decode()), []).append(fields)
        done: list[bytes] = []
        retry: dict[bytes, float] = {}
        full: list[str] = []
        for shard, messages in by_shard.items():
            # A cluster's keys of one message share a slot; those of two may not.
            calls = [[m] for m in messages] if self.cluster else [messages]
            for call in calls:
                try:
                    outcomes = self._deliver_on(shard, call, now)
                except UNREACHABLE as error:
                    shard.mark_down(error)  # they stay claimed and are taken again later
                    continue
                for fields, outcome in zip(call, outcomes, strict=True):
                    member = b"|".join(fields)
                    done.append(member)
                    if outcome == 1:
                        self.delivered += 1
                    elif outcome == 2:
                        retry[member] = now + RETRY
                    elif outcome == 0:
                        full.append(fields[2].decode())
        if retry:
            self.shard.client.zadd(self.delayed, retry)  # before leaving the claimed set
        if done:
            self.shard.client.zrem(self.claimed, *done)
        for name in full:
            log_full(name)

    def _deliver_on(self, shard: Shard, messages: list[list[bytes]], now: float) -> list[int]:
        keys: list[str] = []
        arguments: list[Any] = [
            "deliver",
            repr(now),
            self.redis_layer.expiry,
            shard.key_ttl,
            MARKER_TTL,
        ]
        for _version, ident, list_name, name, capacity, _where, due, payload in messages:
            list_key = shard.list_key(list_name.decode())
            keys += [list_key, f"{list_key}:sent:{ident.decode()}"]
            arguments += [name, payload, capacity, due]
        return self._call(shard, keys, arguments)

    # -- helpers --------------------------------------------------------------------

    def _call(self, shard: Shard, keys: list[str], arguments: list[Any]) -> Any:
        """Run delay.lua on ``shard``, over the layer's own connections when it has them
        (a plain Redis: they cost a third of the client's CPU per command)."""
        script = self._scripts.get(shard)
        if script is None:
            script = self._scripts[shard] = shard.client.register_script(SCRIPT)
        if shard.quick is None:
            return script(keys=keys, args=arguments)
        try:
            return shard.quick.execute("EVALSHA", script.sha, len(keys), *keys, *arguments)
        except redis.exceptions.NoScriptError:
            shard.quick.execute("SCRIPT", "LOAD", SCRIPT)
            return shard.quick.execute("EVALSHA", script.sha, len(keys), *keys, *arguments)

    @staticmethod
    def _command(shard: Shard, *command: Any) -> Any:
        if shard.quick is None:
            return shard.client.execute_command(*command)
        return shard.quick.execute(*command)
