-- Process leases of geventchannels' Redis layer (see leases.py). One sorted set, KEYS[1],
-- scored by Redis' own clock in milliseconds, so that the processes' clocks never matter:
--   <prefix>    the lease of the live process that serves <prefix>, until its score;
--   ~<prefix>   <prefix>'s lease expired and a live process is purging its members, until
--               its score (a purge not finished by then is claimed again);
--   #<prefix>   <prefix>'s members were purged (leave events were sent), until its score.
--
-- ARGV[1] selects the operation:
--   "round"   ARGV: "round", lease ms, claim limit, own prefixes...
--             renews the caller's leases and returns {states, claimed}: one state per own
--             prefix (0 renewed, 1 the lease was missing: Redis lost it, 2 being purged by
--             another process, 3 it was purged) and the dead prefixes the caller now purges
--             (their leases expired, or an earlier purge of them was abandoned).
--   "purged"  ARGV: "purged", prefix, tombstone ms
--             the caller finished purging prefix.
--   "release" ARGV: "release", prefix
--             the process serving prefix stops: its lease and markers go.

redis.replicate_commands()
local leases = KEYS[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local op = ARGV[1]

if op == 'round' then
  local lease, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
  local states = {}
  for i = 4, #ARGV do
    local prefix = ARGV[i]
    local state
    if redis.call('ZSCORE', leases, '~' .. prefix) then
      state = 2
    elseif redis.call('ZREM', leases, '#' .. prefix) == 1 then
      state = 3
    else
      state = 0
    end
    if redis.call('ZADD', leases, now + lease, prefix) == 1 and state == 0 then
      state = 1
    end
    states[#states + 1] = state
  end
  local claimed = {}
  local due = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)
  for _, member in ipairs(due) do
    redis.call('ZREM', leases, member)
    local first = string.sub(member, 1, 1)
    if first ~= '#' then
      local prefix = member
      if first == '~' then prefix = string.sub(member, 2) end
      redis.call('ZADD', leases, now + lease, '~' .. prefix)
      claimed[#claimed + 1] = prefix
    end
  end
  return {states, claimed}
end

if op == 'purged' then
  local prefix = ARGV[2]
  redis.call('ZREM', leases, '~' .. prefix)
  redis.call('ZADD', leases, now + tonumber(ARGV[3]), '#' .. prefix)
  return 1
end

if op == 'release' then
  return redis.call('ZREM', leases, ARGV[2], '~' .. ARGV[2], '#' .. ARGV[2])
end

return redis.error_reply('unknown operation ' .. tostring(op))
