-- fail.lua: a try failed; schedule the next try or move the job to dead.
-- KEYS[1] active  KEYS[2] scheduled  KEYS[3] ready  KEYS[4] dead  KEYS[5] wake  KEYS[6] seq
-- KEYS[7] meta
-- ARGV[1] key prefix of the queue
-- ARGV[2] job id   ARGV[3] lease token   ARGV[4] error text (with traceback)
-- ARGV[5] retry delay (ms); -1 sends the job to dead; -2 ends it as aborted (see cancel.lua)
-- ARGV[6] dead max age (ms)   ARGV[7] dead max length
-- ARGV[8] how long an aborted job's record is kept (ms)
-- A try scheduled again also joins the retrying set (what tells a retry from a delayed job).
-- Reply: "retry", "dead", "aborted", or "lost" when the token is not current (nothing changed).
--   A repeat of a call that took effect (its reply lost to a dropped connection, sent again)
--   answers as the first did: the job's 'spent' field holds the token of the failed try.
-- Minimum server: Redis 5.0.
-- needs: clock, final, format, gates, keys, ready, scheduled, wire
local prefix = ARGV[1]
local id = ARGV[2]
local key = job_key(prefix, id)
local f = redis.call('HMGET', key, 'token', 'spent', 'state')
if f[1] ~= ARGV[3] then
  if f[2] == ARGV[3] then
    if f[3] == 'dead' or f[3] == 'aborted' then
      return f[3]
    end
    return 'retry'
  end
  return 'lost'
end
local now = now_ms()
local delay = tonumber(ARGV[5])
redis.call('ZREM', KEYS[1], id)
if leave_gates(prefix, KEYS[3], key) > 0 then
  wake(KEYS[5])
end
if delay == FAIL_ABORTED then
  redis.call('HSET', key, 'state', 'aborted', 'error', ARGV[4], 'finished', fmt(now),
    'spent', ARGV[3])
  redis.call('HDEL', key, 'token', 'abort')
  drop_unique(prefix, key, id)
  announce(prefix, key, id)
  redis.call('PEXPIRE', key, tonumber(ARGV[8]))
  return 'aborted'
end
if delay < 0 then -- FAIL_DEAD
  to_dead(prefix, KEYS[4], id, key, now, ARGV[4])
  redis.call('HSET', key, 'spent', ARGV[3])
  redis.call('HINCRBY', KEYS[7], 'failed', 1)
  trim_dead(prefix, KEYS[4], now, tonumber(ARGV[6]), tonumber(ARGV[7]))
  return 'dead'
end
redis.call('HSET', key, 'error', ARGV[4], 'spent', ARGV[3])
redis.call('HDEL', key, 'token', 'worker')
redis.call('HINCRBY', KEYS[7], 'retried', 1)
if delay == 0 then
  push_ready(prefix, KEYS[3], KEYS[6], id, key, now)
  wake(KEYS[5])
else
  local due = now + delay
  redis.call('HSET', key, 'state', 'scheduled', 'due', fmt(due))
  redis.call('ZADD', retrying_key(prefix), fmt(due), id)
  if add_scheduled(KEYS[2], id, due) then
    wake(KEYS[5])
  end
end
return 'retry'
