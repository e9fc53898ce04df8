-- Delayed messages on the Redis layer (geventchannels/delay/on_redis.py).
--
-- A delayed message is pushed onto its channel's list as the layer's own send pushes one
-- (layers/redis/redis_layer.lua): the same stored entry, struct.pack('>dH', expires_at,
-- #name) .. name .. payload (see layers/redis/stored.py), the same capacity check (expired
-- entries at the head make room), the same key expiry. It is not counted in the layer's
-- statistics: the delay service counts what it delivers.
--
-- A member of the sorted set of delayed messages is
--   "1|" id "|" list name "|" name "|" capacity "|" L or R "|" due time "|" payload
-- where name is the full channel name of a process-local channel ("a!x" in list "a!") and
-- empty otherwise, L says the channel's list is on this shard (pushed here) and R on
-- another one (handed back to the caller), the due time is the one the message was sent
-- with (its score may be later: a retry) and payload is the content as the layer stores it.
--
-- A message whose channel is full is tried again "retry" seconds later, until it is
-- "expiry" seconds (the layer's message expiry) past its due time; then it is dropped.
--
--   "take"    KEYS: asgi.delay list, lease key
--             ARGV: "take", this process's token, lease in milliseconds, most entries
--             returns the first entries of the list and renews this process's lease, or
--             false while another process holds it
--   "untake"  KEYS: lease key   ARGV: "untake", this process's token
--             ends this process's lease (a service that stops), so another takes over
--   "intake"  KEYS: asgi.delay list, delayed sorted set
--             ARGV: "intake", then (entry, due time, member) triples; an empty member
--                   drops the entry
--             removes each entry and, only if this call removed it, adds its member, so an
--             entry read by two processes is stored once;
--             returns {1 or 0 per entry: removed by this call, entries left, earliest due or false}
--   "due"     KEYS: delayed sorted set, claimed sorted set
--             ARGV: "due", now, most members, expiry, key ttl, key prefix, claimed before, retry
--             takes the members due by now: pushes the L ones, moves the R ones to the
--             claimed set (scored now), and hands back with them the claimed members older
--             than "claimed before" (their process died before delivering them);
--             returns {pushed, {list names of messages dropped as full}, {R members},
--                      earliest due or false}
--   "deliver" KEYS: per message its list and its marker key
--             ARGV: "deliver", now, expiry, key ttl, marker ttl,
--                   then per message: name, payload, capacity, due time
--             pushes each message whose marker was not set yet, and sets it;
--             returns per message 1 (pushed), 0 (dropped: full for too long), 2 (full: to be
--             tried again; its marker is unset) or -1 (delivered before)

local op = ARGV[1]

-- Push an entry unless the list holds capacity entries once expired ones at its head are
-- dropped; 1 when pushed, 0 when full.
local function push(list, entry, capacity, ttl, now)
  local length = redis.call('LLEN', list)
  while length >= capacity and length > 0 do
    local expires_at = struct.unpack('>d', redis.call('LINDEX', list, 0))
    if expires_at >= now then
      return 0
    end
    redis.call('LPOP', list)
    length = length - 1
  end
  if length >= capacity then
    return 0
  end
  redis.call('RPUSH', list, entry)
  redis.call('EXPIRE', list, ttl)
  return 1
end

local function earliest(zset)
  local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
  return first[2] or false
end

-- list name, name, capacity, L or R, due time, payload
local function fields(member)
  local parts, start = {}, 1
  for i = 1, 7 do
    local bar = string.find(member, '|', start, true)
    parts[i] = string.sub(member, start, bar - 1)
    start = bar + 1
  end
  return parts[3], parts[4], tonumber(parts[5]), parts[6], tonumber(parts[7]),
         string.sub(member, start)
end

local function entry(name, payload, expires_at)
  return struct.pack('>dH', expires_at, #name) .. name .. payload
end

if op == 'take' then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[2] then
    return false
  end
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)
end

if op == 'untake' then
  if redis.call('GET', KEYS[1]) == ARGV[2] then
    redis.call('DEL', KEYS[1])
  end
  return 1
end

if op == 'intake' then
  local list, delayed = KEYS[1], KEYS[2]
  local removed = {}
  for i = 2, #ARGV, 3 do
    local taken = redis.call('LREM', list, 1, ARGV[i])
    removed[#removed + 1] = taken
    if taken == 1 and ARGV[i + 2] ~= '' then
      redis.call('ZADD', delayed, ARGV[i + 1], ARGV[i + 2])
    end
  end
  removed[#removed + 1] = redis.call('LLEN', list)
  removed[#removed + 1] = earliest(delayed)
  return removed
end

if op == 'due' then
  local delayed, claimed = KEYS[1], KEYS[2]
  local now, limit, expiry = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local ttl, prefix, retry = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[8])
  local pushed, full, remote = 0, {}, {}
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', ARGV[2], 'LIMIT', 0, limit)
  for _, member in ipairs(due) do
    redis.call('ZREM', delayed, member)
    local list_name, name, capacity, where, due_at, payload = fields(member)
    if where == 'L' then
      local list = prefix .. list_name
      if push(list, entry(name, payload, now + expiry), capacity, ttl, now) == 1 then
        pushed = pushed + 1
      elseif now - due_at > expiry then
        full[#full + 1] = list_name
      else
        redis.call('ZADD', delayed, now + retry, member)
      end
    else
      redis.call('ZADD', claimed, now, member)
      remote[#remote + 1] = member
    end
  end
  local stale = redis.call('ZRANGEBYSCORE', claimed, '-inf', '(' .. ARGV[7], 'LIMIT', 0, limit)
  for _, member in ipairs(stale) do
    redis.call('ZADD', claimed, now, member)
    remote[#remote + 1] = member
  end
  return {pushed, full, remote, earliest(delayed)}
end

if op == 'deliver' then
  local now, expiry, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local marker_ttl = ARGV[5]
  local outcomes = {}
  for i = 1, #KEYS, 2 do
    local at = 6 + (i - 1) * 2
    local outcome = -1
    if redis.call('SET', KEYS[i + 1], 1, 'NX', 'EX', marker_ttl) then
      local capacity, due_at = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
      outcome = push(KEYS[i], entry(ARGV[at], ARGV[at + 1], now + expiry), capacity, ttl, now)
      if outcome == 0 and now - due_at <= expiry then
        redis.call('DEL', KEYS[i + 1])
        outcome = 2
      end
    end
    outcomes[#outcomes + 1] = outcome
  end
  return outcomes
end

return redis.error_reply('unknown operation ' .. tostring(op))
