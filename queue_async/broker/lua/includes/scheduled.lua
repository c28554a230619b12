-- includes/scheduled.lua: jobs waiting for their time (delayed jobs and retries), in the
-- sorted set scheduled by due time (ms).
-- needs: format, keys, ready, slices
-- provides: add_scheduled promote_due next_due_in
-- Minimum server: Redis 5.0.

-- Add a job to the scheduled set at ``due`` (ms). True if it is now the first due: idle workers
-- block until the earliest due time they knew, so the caller must wake one to look again.
local function add_scheduled(scheduled, id, due)
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  redis.call('ZADD', scheduled, fmt(due), id)
  return #first == 0 or due < tonumber(first[2])
end

-- Move due scheduled jobs to ready (ready since their due time); at most `limit` per call.
-- They leave the retrying set too (the retries among them).
local function promote_due(prefix, scheduled, ready, seq_key, now, limit)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', fmt(now), 'WITHSCORES', 'LIMIT',
    0, limit)
  local ids = {}
  for i = 1, #due, 2 do
    local id = due[i]
    local key = job_key(prefix, id)
    ids[#ids + 1] = id
    redis.call('ZREM', scheduled, id)
    if redis.call('EXISTS', key) == 1 then
      push_ready(prefix, ready, seq_key, id, key, tonumber(due[i + 1]))
      redis.call('HDEL', key, 'due')
    end
  end
  if #ids > 0 then
    local retrying = retrying_key(prefix)
    if redis.call('EXISTS', retrying) == 1 then
      call_in_slices('ZREM', retrying, ids)
    end
  end
  return #ids
end

-- Milliseconds until the next scheduled job is due or the next lease expires; -1 if none.
local function next_due_in(scheduled, active, now)
  local best = -1
  for _, zset in ipairs({scheduled, active}) do
    local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
    if #first == 2 then
      local wait = math.max(0, tonumber(first[2]) - now)
      if best < 0 or wait < best then
        best = wait
      end
    end
  end
  return best
end
