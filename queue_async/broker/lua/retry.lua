-- retry.lua: requeue dead jobs, or jobs waiting out a retry's backoff, in place: same id,
-- history kept (attempts, last error); they run now or at a given time. Either the jobs
-- named, or those a walk of the dead set finds (bounded, see includes/listing.lua).
-- KEYS[1] dead  KEYS[2] scheduled  KEYS[3] retrying  KEYS[4] ready  KEYS[5] wake  KEYS[6] seq
-- KEYS[7] fresh
-- ARGV[1] key prefix of the queue   ARGV[2] when to run (epoch ms; 0 for now)
-- ARGV[3] cursor of the walk ("" for the start)   ARGV[4] jobs to retry at most
-- ARGV[5] index entries to look at, at most   ARGV[6] task name ("" for any)
-- ARGV[7] text to search for, lower case ("" for none)
-- ARGV[8..] job ids, one field per job: these jobs, and no walk (ARGV[3..7] unused)
-- Reply: the number of jobs requeued, the walk's cursor ("" at its end, or with ids), and the
--   number of entries looked at.
-- Minimum server: Redis 6.0.6 (LPOS, for the walk).
-- needs: clock, format, keys, listing, ready, scheduled
local prefix = ARGV[1]
local now = now_ms()
local at = tonumber(ARGV[2])
local woke = false

local function retry_one(id)
  local key = job_key(prefix, id)
  local f = redis.call('HMGET', key, 'state', 'ukey')
  if f[1] == 'dead' then
    redis.call('ZREM', KEYS[1], id)
  elseif f[1] == 'scheduled' and redis.call('ZREM', KEYS[3], id) == 1 then
    redis.call('ZREM', KEYS[2], id)
  else
    return false
  end
  redis.call('HDEL', key, 'finished', 'spent', 'token', 'worker', 'due', 'stalls', 'abort')
  if f[2] and not redis.call('GET', unique_key(prefix, f[2])) then
    redis.call('SET', unique_key(prefix, f[2]), id)
  end
  if at > now then
    redis.call('HSET', key, 'state', 'scheduled', 'due', fmt(at))
    redis.call('ZADD', KEYS[3], fmt(at), id)
    woke = add_scheduled(KEYS[2], id, at) or woke
  else
    push_ready(prefix, KEYS[4], KEYS[6], id, key)
    woke = true
  end
  return true
end

local retried, cursor, scanned = act_on_jobs(prefix, KEYS[7], KEYS[1], 'dead', ARGV, 8, ARGV[3],
  tonumber(ARGV[5]), tonumber(ARGV[4]), ARGV[6], ARGV[7], retry_one)
if not retried then
  return redis.error_reply('ERR queue_async: ' .. cursor)
end
if woke then
  wake(KEYS[5])
end
return {retried, cursor, scanned}
