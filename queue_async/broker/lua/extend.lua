-- extend.lua: a worker's heartbeat: extend all of its leases and record what it is doing.
-- KEYS[1] active  KEYS[2] workers (sorted set, score = last heartbeat ms)
-- ARGV[1] key prefix of the queue
-- ARGV[2] lease length (ms): each current lease's deadline becomes server now + this
-- ARGV[3] worker id   ARGV[4] heartbeat (JSON)   ARGV[5] heartbeat TTL (ms)
-- ARGV[6..] two fields per job: id, token
-- Reply: {lost, aborting}: the ids whose token is no longer current (lease lost: recovered
--   elsewhere or gone), and the ids flagged for abort (cancel.lua), which the worker cancels.
-- Minimum server: Redis 5.0.
-- needs: clock, format, keys
local prefix = ARGV[1]
local now = now_ms()
local deadline = fmt(now + tonumber(ARGV[2]))
local lost = {}
local aborting = {}
for b = 6, #ARGV, 2 do
  local id = ARGV[b]
  local key = job_key(prefix, id)
  local f = redis.call('HMGET', key, 'token', 'abort', 'suspect')
  if f[1] == ARGV[b + 1] then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
    if f[3] then
      -- Suspected after a clock step or a late heartbeat (see recover_expired): alive.
      redis.call('HDEL', key, 'suspect')
    end
    if f[2] then
      aborting[#aborting + 1] = id
    end
  else
    lost[#lost + 1] = id
  end
end
local ttl = tonumber(ARGV[5])
redis.call('SET', worker_key(prefix, ARGV[3]), ARGV[4], 'PX', ttl)
redis.call('ZADD', KEYS[2], fmt(now), ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now - ttl))
return {lost, aborting}
