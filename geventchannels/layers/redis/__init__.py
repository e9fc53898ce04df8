"""The Redis channel layer: several processes or machines share channels and groups.

Everything that must be atomic happens inside Redis (redis_layer.lua): a send checks
capacity, pushes and sets the key's expiry in one script call; a group send reads the
members and pushes to each member with room in one call per shard. Members that share a
process-local list (the sockets of one server process) get ONE fan-out entry there with
their names and the message once, so a burst of group messages cannot overflow it. With
several hosts a channel lives on the host chosen by rendezvous hashing of its name (``a!x``
by ``a!``); a group's members are kept on the host of each member channel, so a group send
is one script call per host.

The modules, in the order a message meets them:

- ``layer``: RedisChannelLayer, the ASGI 1.0 contract on top of the rest;
- ``stored``: the bytes stored in Redis (entries, payloads, statistics hashes), which
  redis_layer.lua writes and reads too;
- ``shards``: one Redis (Shard) or one Redis Cluster (ClusterShard) and the commands the
  layer runs on it;
- ``hosts``: from the ``hosts`` / Sentinel / Cluster settings to shards;
- ``connections``: connections of our own for the hot commands, and back-off;
- ``receiving``: non-blocking receives, the fetchers blocking receivers share, and the
  drains of attached local prefixes.
"""

from .layer import RedisChannelLayer

__all__ = ["RedisChannelLayer"]
