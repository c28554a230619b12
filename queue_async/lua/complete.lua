-- complete.lua: record jobs as done, each only if its lease token is still current.
-- KEYS[1] active  KEYS[2] meta  KEYS[3] ready  KEYS[4] wake
-- ARGV[1] key prefix of the queue
-- ARGV[2..] four fields per job: id, token, result (codec bytes), keep (result TTL ms;
--   0 deletes the job hash at once)
-- Reply: one integer per job: 1 recorded, 0 lease lost (recovered elsewhere, or cancelled).
-- Minimum server: Redis 5.0.
local prefix = ARGV[1]
local now = fmt(now_ms())
local reply = {}
local done = 0
local let_go = 0
for b = 2, #ARGV, 4 do
  local id = ARGV[b]
  local key = job_key(prefix, id)
  local f = redis.call('HMGET', key, 'token', 'gates', 'ukey')
  if f[1] == ARGV[b + 1] then
    redis.call('ZREM', KEYS[1], id)
    if f[2] then
      let_go = let_go + leave_gates(prefix, KEYS[3], key)
    end
    if f[3] then
      drop_unique(prefix, key, id, f[3])
    end
    announce(prefix, key, id, 'done')
    local keep = tonumber(ARGV[b + 3])
    if keep > 0 then
      redis.call('HSET', key, 'state', 'done', 'result', ARGV[b + 2], 'finished', now)
      redis.call('HDEL', key, 'token')
      redis.call('PEXPIRE', key, keep)
    else
      redis.call('DEL', key)
    end
    done = done + 1
    reply[#reply + 1] = 1
  else
    reply[#reply + 1] = 0
  end
end
if done > 0 then
  redis.call('HINCRBY', KEYS[2], 'processed', done)
end
if let_go > 0 then
  wake(KEYS[4])
end
return reply
