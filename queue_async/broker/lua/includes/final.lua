-- includes/final.lua: what every job reaching a final state (done, dead, cancelled, aborted)
-- goes through, and the dead set.
-- needs: format, keys, slices
-- provides: FINAL_STATES publish_ended announce announce_many drop_unique to_dead trim_dead
-- Minimum server: Redis 5.0.

-- The final states (models.FINAL_STATES in Python): a job in one never changes again.
local FINAL_STATES = {done = true, dead = true, cancelled = true, aborted = true}

-- Tell result() waiters that jobs reached a final state (or are gone). Each watched job's id
-- goes on the "done" channel, one message per job, as the wire format documents it, while a
-- client of this server listens there; and one message per call goes on the "ended" channel,
-- which queue_async's waiters listen on: the ended jobs packed, three fields each (ENDED in
-- includes/wire.lua), so that a waiting process parses one message per finishing call, and
-- most waiters need no read for their result.
local function publish_ended(prefix, ids, tasks, results)
  local done = done_channel(prefix)
  local heard = redis.call('PUBSUB', 'NUMSUB', done)[2] > 0
  local parts, n = {}, 0
  -- Packed task names, made once per name (most jobs of a call share a few).
  local packed_tasks = {['']= '0:'}
  for i, id in ipairs(ids) do
    if heard then
      redis.call('PUBLISH', done, id)
    end
    local result = results and results[i]
    local task = result and tasks[i] or ''
    local packed_task = packed_tasks[task]
    if not packed_task then
      packed_task = #task .. ':' .. task
      packed_tasks[task] = packed_task
    end
    result = result or ''
    parts[n + 1] = #id .. ':' .. id
    parts[n + 2] = packed_task
    parts[n + 3] = #result .. ':' .. result
    n = n + 3
  end
  if n > 0 then
    redis.call('PUBLISH', ended_channel(prefix), table.concat(parts))
  end
end

-- Tell result() waiters that the job reached a final state (or is gone), if it is watched
-- (see watch.lua; the job hash field 'waiters' is how versions before the watched hash
-- flagged it). They read the job.
local function announce(prefix, key, id)
  if redis.call('HDEL', watched_key(prefix), id) == 1
      or redis.call('HEXISTS', key, 'waiters') == 1 then
    publish_ended(prefix, {id})
  end
end

-- announce for many jobs at once (complete.lua's batch): one look at the watched hash for all
-- of them, none at all while no job is watched. legacy: the ids among them to announce
-- whatever the hash says (flagged by the job hash field waiters), as a set. tasks[i] and
-- results[i]: job i's task and its result to carry (false: its waiters read the job).
local function announce_many(prefix, ids, legacy, tasks, results)
  local watched = watched_key(prefix)
  local flags = {}
  if redis.call('EXISTS', watched) == 1 then
    flags = hmget_many(watched, ids)
  elseif not next(legacy) then
    return
  end
  local ended, ended_tasks, ended_results, gone = {}, {}, {}, {}
  for i, id in ipairs(ids) do
    if flags[i] or legacy[id] then
      local n = #ended + 1
      ended[n], ended_tasks[n], ended_results[n] = id, tasks[i], results[i]
      if flags[i] then
        gone[#gone + 1] = id
      end
    end
  end
  call_in_slices('HDEL', watched, gone)
  publish_ended(prefix, ended, ended_tasks, ended_results)
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
