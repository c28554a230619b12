-- cancel.lua: cancel a job that has not started; with ARGV[4] = "1" (abort), also flag a
-- running job, which its worker then cancels at its next heartbeat (see extend.lua).
-- KEYS[1] ready  KEYS[2] scheduled
-- ARGV[1] key prefix of the queue   ARGV[2] job id   ARGV[3] keep (ms) for the cancelled record
-- ARGV[4] "1" to abort a running job, "" to leave it running
-- Reply: the job's state before the call ("ready", "scheduled", "active", "done", "dead",
--   "cancelled"), or "missing". Only "ready" and "scheduled" were cancelled by this call.
-- Minimum server: Redis 5.0.
-- needs: clock, final, format, gates, keys, ready, records
local prefix = ARGV[1]
local id = ARGV[2]
local key = job_key(prefix, id)
local state = redis.call('HGET', key, 'state')
if not state then
  if not materialize(prefix, id, key) then
    return 'missing'
  end
  state = 'ready'
end
if state == 'ready' or state == 'scheduled' then
  if state == 'scheduled' then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', retrying_key(prefix), id)
  elseif not unhold_one(prefix, id, key) then
    remove_ready(prefix, KEYS[1], id)
  end
  redis.call('HSET', key, 'state', 'cancelled', 'finished', fmt(now_ms()))
  redis.call('HDEL', key, 'due')
  drop_unique(prefix, key, id)
  announce(prefix, key, id)
  redis.call('PEXPIRE', key, tonumber(ARGV[3]))
elseif state == 'active' and ARGV[4] == '1' then
  redis.call('HSET', key, 'abort', '1')
end
return state
