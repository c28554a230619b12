-- includes/leases.lua: leased jobs going back to ready without being finished: recovered
-- after their lease expired, or handed back by their worker. Either way the job leaves its
-- gates first (this is why these live here and not in includes/ready.lua).
-- needs: final, format, gates, keys, ready
-- provides: recover_expired release_job
-- Minimum server: Redis 5.0.

-- Expired leases (their worker died or stalled) go back to ready, or to dead after
-- more than max_stalls expiries; at most `limit` per call. Returns how many moved.
-- A lease past its deadline is first only suspected: the job gets one grace period (its
-- 'grace' field, written at lease time from the holder's heartbeat) for its holder to show it
-- is alive, and is recovered only if the deadline passes again without a heartbeat. A step
-- of the server clock makes every lease look expired at once; without this, jobs whose
-- workers are alive and running them would run a second time at once elsewhere. Jobs leased
-- with no grace (0, or before the field existed) are recovered at the first sight.
local function recover_expired(prefix, active, ready, seq_key, dead, now, max_stalls, limit)
  local ids = redis.call('ZRANGEBYSCORE', active, '-inf', fmt(now), 'LIMIT', 0, limit)
  local recovered = 0
  for _, id in ipairs(ids) do
    local key = job_key(prefix, id)
    local f = redis.call('HMGET', key, 'state', 'suspect', 'grace')
    if f[1] and not f[2] and f[3] and f[3] ~= '0' then
      redis.call('HSET', key, 'suspect', fmt(now))
      redis.call('ZADD', active, 'XX', fmt(now + tonumber(f[3])), id)
    else
      redis.call('ZREM', active, id)
      if f[1] then
        recovered = recovered + 1
        leave_gates(prefix, ready, key)
        local stalls = redis.call('HINCRBY', key, 'stalls', 1)
        redis.call('HDEL', key, 'token', 'worker', 'suspect')
        if stalls > max_stalls then
          to_dead(prefix, dead, id, key, now,
            'lease expired ' .. stalls .. ' times: the worker running it died or stalled')
          redis.call('HINCRBY', meta_key(prefix), 'failed', 1)
        else
          push_ready(prefix, ready, seq_key, id, key, now)
        end
      end
    end
  end
  return recovered
end

-- Hand a job back to ready (worker shutdown): the interrupted try is not counted.
local function release_job(prefix, active, ready, seq_key, id, key)
  redis.call('ZREM', active, id)
  leave_gates(prefix, ready, key)
  redis.call('HDEL', key, 'token', 'worker', 'suspect')
  redis.call('HINCRBY', key, 'attempts', -1)
  push_ready(prefix, ready, seq_key, id, key)
end
