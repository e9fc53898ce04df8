"""Statistics counted in this process and added to Redis in batches.

A send used to bump its channel's and the layer's counters inside its script: four
HINCRBY, two HGET and an EXPIRE per message, half of the script's work. Now a send only
counts in a dict here, and what was counted goes to Redis in one script call per shard
and second counted, ``FLUSH_SECONDS`` after the first count since the last flush (and
before this process reads statistics, and when the layer closes). The hashes keep their
format (see stored.py), so totals still add up across processes; another process's
counts show up to ``FLUSH_SECONDS`` late.
"""

from __future__ import annotations

#: Seconds between the first count of a batch and its flush to Redis.
FLUSH_SECONDS = 0.5

#: second -> list name -> [messages sent, messages refused as full]
Counts = dict[int, dict[str, list[int]]]


class Tally:
    """Counts of one shard's lists, by the second they were counted in."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Counts = {}

    def __bool__(self) -> bool:
        return bool(self._counts)

    def add(self, list_name: str, sent: int, full: int, now: float) -> None:
        second = int(now)
        lists = self._counts.get(second)
        if lists is None:
            lists = self._counts[second] = {}
        counts = lists.get(list_name)
        if counts is None:
            lists[list_name] = [sent, full]
        else:
            counts[0] += sent
            counts[1] += full

    def take(self) -> Counts:
        """Everything counted since the last take (oldest second first)."""
        counts, self._counts = self._counts, {}
        return dict(sorted(counts.items()))

    def put_back(self, counts: Counts) -> None:
        """Counts a flush could not write, to go with the next one."""
        for second, lists in counts.items():
            for list_name, (sent, full) in lists.items():
                self.add(list_name, sent, full, second)
