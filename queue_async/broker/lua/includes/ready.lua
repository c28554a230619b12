-- includes/ready.lua: the ready jobs, and the wake list idle workers block on.
-- Ready jobs: ids of priority 0 wait in the list fifo (oldest first), the others in the
--   sorted set ready (see ready_score); jobs of a priority below 0 go first, then fifo.
-- Cancelled jobs of priority 0 stay in fifo as tombstones (taking one out of a long list is
--   O(n)); meta's "tombstones" counts them, and take_ready's callers drop them as they meet
--   them.
-- needs: clock, format, keys, slices
-- provides: PRIORITY_SHIFT ready_score wake tombstones ready_count take_ready push_ready
--   return_ready remove_ready
-- Minimum server: Redis 5.0 (ZPOPMIN).

-- Ready score: strict priority (lower first), FIFO within a priority by sequence number.
local PRIORITY_SHIFT = 4294967296
local function ready_score(priority, seq)
  return fmt(priority * PRIORITY_SHIFT + (seq % PRIORITY_SHIFT))
end

-- Idle workers block on the wake list; one marker at most, so it never grows.
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end

local function tombstones(prefix)
  return tonumber(redis.call('HGET', meta_key(prefix), 'tombstones')) or 0
end

-- How many jobs are ready (fifo and ready together, less the tombstones in fifo).
local function ready_count(prefix, ready)
  return redis.call('LLEN', fifo_key(prefix)) + redis.call('ZCARD', ready) - tombstones(prefix)
end

-- Take up to count ready jobs in order: priorities below 0, fifo, the rest. Returns their
-- ids and their ready scores (false for jobs from fifo, which have none).
local function take_ready(prefix, ready, count)
  local ids, scores = {}, {}
  local function add(popped)
    for i = 1, #popped, 2 do
      ids[#ids + 1] = popped[i]
      scores[#ids] = popped[i + 1]
    end
  end
  if redis.call('EXISTS', ready) == 1 then
    add(redis.call('ZRANGEBYSCORE', ready, '-inf', '(0', 'WITHSCORES', 'LIMIT', 0, count))
    call_in_slices('ZREM', ready, ids)
  end
  if #ids < count then
    local fifo = fifo_key(prefix)
    local n = count - #ids
    for _, id in ipairs(redis.call('LRANGE', fifo, 0, n - 1)) do
      ids[#ids + 1] = id
      scores[#ids] = false
    end
    redis.call('LTRIM', fifo, n, -1)
  end
  if #ids < count then
    add(redis.call('ZPOPMIN', ready, count - #ids))
  end
  return ids, scores
end

-- Put an existing job hash back among the ready jobs, behind those of its priority.
-- since: when it became ready (ms; its due time for a promoted job), default now; kept in
-- the job's 'readied' field, which the queue's latency is measured from (see stats.lua).
local function push_ready(prefix, ready, seq_key, id, key, since)
  local priority = tonumber(redis.call('HGET', key, 'priority')) or 0
  if priority == 0 then
    redis.call('RPUSH', fifo_key(prefix), id)
  else
    redis.call('ZADD', ready, ready_score(priority, redis.call('INCR', seq_key)), id)
  end
  redis.call('HSET', key, 'state', 'ready', 'readied', fmt(since or now_ms()))
end

-- Put a held job back in front of the ready jobs of its priority, with the ready score it
-- was held under.
local function return_ready(prefix, ready, id, score)
  if math.floor(tonumber(score) / PRIORITY_SHIFT) == 0 then
    redis.call('LPUSH', fifo_key(prefix), id)
  else
    redis.call('ZADD', ready, score, id)
  end
end

-- Take a ready job out of ready, or leave it in fifo as a tombstone (it was cancelled; the
-- caller sets its state, which is what tells a tombstone).
local function remove_ready(prefix, ready, id)
  if redis.call('ZREM', ready, id) == 0 then
    redis.call('HINCRBY', meta_key(prefix), 'tombstones', 1)
  end
end
