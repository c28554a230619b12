-- includes/final.lua: what every job reaching a final state (done, dead, cancelled, aborted)
-- goes through, and the dead set.
-- needs: format, keys, slices
-- provides: FINAL_STATES announce announce_many drop_unique to_dead trim_dead
-- Minimum server: Redis 5.0.

-- The final states (models.FINAL_STATES in Python): a job in one never changes again.
local FINAL_STATES = {done = true, dead = true, cancelled = true, aborted = true}

-- Tell result() waiters that the job reached a final state (or is gone): its id on the
-- queue's one "done" channel, which every waiting process subscribes to once, if the job is
-- watched (see watch.lua; the job hash field 'waiters' is how versions before the watched
-- hash flagged it).
local function announce(prefix, key, id)
  if redis.call('HDEL', watched_key(prefix), id) == 1
      or redis.call('HEXISTS', key, 'waiters') == 1 then
    redis.call('PUBLISH', done_channel(prefix), id)
  end
end

-- announce for many jobs at once (complete.lua's batch): one look at the watched hash for all
-- of them, none at all while no job is watched. also: ids to announce whatever the hash says
-- (flagged by the job hash field waiters).
local function announce_many(prefix, ids, also)
  local watched = watched_key(prefix)
  local channel = done_channel(prefix)
  local seen = {}
  if redis.call('EXISTS', watched) == 1 then
    local flags = hmget_many(watched, ids)
    local gone = {}
    for i, id in ipairs(ids) do
      if flags[i] then
        gone[#gone + 1] = id
        seen[id] = true
        redis.call('PUBLISH', channel, id)
      end
    end
    call_in_slices('HDEL', watched, gone)
  end
  for _, id in ipairs(also) do
    if not seen[id] then
      redis.call('PUBLISH', channel, id)
    end
  end
end

-- The job's unique key (see enqueue.lua) no longer points at it.
-- ukey: the job's unique key if the caller read it already, else nil.
local function drop_unique(prefix, key, id, ukey)
  ukey = ukey or redis.call('HGET', key, 'ukey')
  if ukey then
    local lock = unique_key(prefix, ukey)
    if redis.call('GET', lock) == id then
      redis.call('DEL', lock)
    end
  end
end

-- Move a job to the dead set with its reason; the hash is kept until the dead set is trimmed.
-- Counts it in meta's "dead" (jobs gone to dead since the queue was created, any cause).
local function to_dead(prefix, dead, id, key, now, reason)
  redis.call('ZADD', dead, fmt(now), id)
  redis.call('HINCRBY', meta_key(prefix), 'dead', 1)
  redis.call('HSET', key, 'state', 'dead', 'error', reason, 'finished', fmt(now))
  redis.call('HDEL', key, 'token', 'due')
  drop_unique(prefix, key, id)
  announce(prefix, key, id)
end

-- Drop dead jobs older than max_age_ms and beyond max_len, oldest first, with their hashes.
local function trim_dead(prefix, dead, now, max_age_ms, max_len)
  local old = redis.call('ZRANGEBYSCORE', dead, '-inf', fmt(now - max_age_ms), 'LIMIT', 0, 1000)
  for _, id in ipairs(old) do
    redis.call('DEL', job_key(prefix, id))
    redis.call('ZREM', dead, id)
  end
  local excess = redis.call('ZCARD', dead) - max_len
  if excess > 0 then
    local ids = redis.call('ZRANGE', dead, 0, math.min(excess, 1000) - 1)
    for _, id in ipairs(ids) do
      redis.call('DEL', job_key(prefix, id))
      redis.call('ZREM', dead, id)
    end
  end
end
