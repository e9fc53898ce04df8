-- Server side of geventchannels' Redis channel layer: every send is one call of this script,
-- so the capacity check, the push and the key's expiry happen atomically. A send's
-- statistics are counted by the sending process and added in batches ("stats").
--
-- A stored message is  struct.pack('>dH', expires_at, #name) .. name .. payload  where name
-- is the full channel name for process-local channels ("a!x" stored in list "a!") and empty
-- otherwise. A fan-out entry (a group message for several members of one "a!" list) is
--   struct.pack('>dHI4', expires_at, 65535, #names) .. names .. payload
-- where names are the members' parts after "!" joined by "," (names never hold 65535
-- characters nor ",").
--
-- ARGV[1] selects the operation:
--   "send"  KEYS: list
--           ARGV: "send", item, capacity, key ttl, now
--           returns 1 when pushed, 0 when the channel is full
--   "stats" KEYS: stats hashes (channels' first, then any that never expire)
--           ARGV: "stats", key ttl, second counted, how many of KEYS expire,
--                 then per key: messages sent, messages refused as full
--           adds a batch counted by one process in that second; returns #KEYS
--   "group" KEYS: group zset, group capacities hash, global stats hash
--           ARGV: "group", item without name, payload, expires_at, key ttl, now, now second,
--                 membership cutoff, key prefix, local prefixes to skip...
--           returns the members that were skipped because this process delivers them itself,
--           as {list name, their parts after "!" joined by ",", ...};
--           counters count member messages, capacity counts list entries
--   "peek"  KEYS: list   ARGV: "peek", now
--           drops expired messages at the head; returns {length, head message or false}

local op = ARGV[1]

-- Counters: a total, plus this second's and the previous second's counts. A batch may
-- come late (counted in a second another process has already moved past): it then adds to
-- the previous second's count, or only to the total.
local function bump(key, what, sec, n)
  if n == 0 then return end
  redis.call('HINCRBY', key, what, n)
  local seen = tonumber(redis.call('HGET', key, what .. ':sec') or '0')
  if seen == sec then
    redis.call('HINCRBY', key, what .. ':this', n)
  elseif sec == seen - 1 then
    redis.call('HINCRBY', key, what .. ':last', n)
  elseif sec > seen then
    local last = 0
    if seen == sec - 1 then
      last = tonumber(redis.call('HGET', key, what .. ':this') or '0')
    end
    redis.call('HSET', key, what .. ':sec', sec, what .. ':this', n, what .. ':last', last)
  end
end

-- How many more messages the list takes; expired messages at its head are dropped to
-- make room when it is full.
local function room(list, capacity, now)
  local length = redis.call('LLEN', list)
  while length >= capacity and length > 0 do
    local head = redis.call('LINDEX', list, 0)
    local expires_at = struct.unpack('>d', head)
    if expires_at >= now then
      break
    end
    redis.call('LPOP', list)
    length = length - 1
  end
  return capacity - length
end

if op == 'send' then
  local list = KEYS[1]
  if room(list, tonumber(ARGV[3]), tonumber(ARGV[5])) <= 0 then
    return 0
  end
  redis.call('RPUSH', list, ARGV[2])
  redis.call('EXPIRE', list, tonumber(ARGV[4]))
  return 1
end

if op == 'stats' then
  local ttl, sec, expiring = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  for i = 1, #KEYS do
    bump(KEYS[i], 'count', sec, tonumber(ARGV[3 + 2 * i]))
    bump(KEYS[i], 'full', sec, tonumber(ARGV[4 + 2 * i]))
    if i <= expiring then redis.call('EXPIRE', KEYS[i], ttl) end
  end
  return #KEYS
end

if op == 'peek' then
  room(KEYS[1], 0, tonumber(ARGV[2]))
  return {redis.call('LLEN', KEYS[1]), redis.call('LINDEX', KEYS[1], 0)}
end

if op == 'group' then
  local group, capacities, global = KEYS[1], KEYS[2], KEYS[3]
  local item, payload, expires_at = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local ttl, now, sec, cutoff = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
  local prefix = ARGV[9]
  local skip = {}
  for i = 10, #ARGV do
    skip[ARGV[i]] = true
  end

  local stale = redis.call('ZRANGEBYSCORE', group, '-inf', '(' .. cutoff)
  for i = 1, #stale, 1000 do
    redis.call('HDEL', capacities, unpack(stale, i, math.min(i + 999, #stale)))
  end
  redis.call('ZREMRANGEBYSCORE', group, '-inf', '(' .. cutoff)

  -- Members are batched per list. The sockets of one process share its "name!" list: for
  -- two or more of them ONE fan-out entry carries their names and the payload once, so a
  -- group message costs that list one slot whatever the number of sockets.
  local skipped, batches, lists = {}, {}, {}
  local members = redis.call('ZRANGE', group, 0, -1)
  for i = 1, #members, 1000 do
    local last = math.min(i + 999, #members)
    local caps = redis.call('HMGET', capacities, unpack(members, i, last))
    for j = i, last do
      local member = members[j]
      local bang = string.find(member, '!', 1, true)
      local list_name = member
      if bang then list_name = string.sub(member, 1, bang) end
      local batch = batches[list_name]
      if not batch then
        batch = {local_part = bang, skip = bang and skip[list_name],
                 capacity = tonumber(caps[j - i + 1] or '100') or 100}
        batches[list_name] = batch
        lists[#lists + 1] = list_name
      end
      batch[#batch + 1] = member
    end
  end

  local sent, full = 0, 0
  for _, list_name in ipairs(lists) do
    local batch = batches[list_name]
    local names
    if batch.local_part and (batch.skip or #batch > 1) then
      local suffixes = {}
      for k = 1, #batch do
        suffixes[k] = string.sub(batch[k], batch.local_part + 1)
      end
      names = table.concat(suffixes, ',')
    end
    if batch.skip then
      skipped[#skipped + 1] = list_name
      skipped[#skipped + 1] = names
    else
      local list, stats = prefix .. list_name, prefix .. 'stats:' .. list_name
      local entry = item
      if names then
        entry = struct.pack('>dHI4', expires_at, 65535, #names) .. names .. payload
      elseif batch.local_part then
        entry = struct.pack('>dH', expires_at, #batch[1]) .. batch[1] .. payload
      end
      local n = 0
      if room(list, batch.capacity, now) > 0 then
        redis.call('RPUSH', list, entry)
        redis.call('EXPIRE', list, ttl)
        n = #batch
      end
      bump(stats, 'count', sec, n)
      bump(stats, 'full', sec, #batch - n)
      redis.call('EXPIRE', stats, ttl)
      sent = sent + n
      full = full + #batch - n
    end
  end
  bump(global, 'count', sec, sent)
  bump(global, 'full', sec, full)
  return skipped
end

return redis.error_reply('unknown operation ' .. tostring(op))
