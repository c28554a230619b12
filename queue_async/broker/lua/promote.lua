-- promote.lua: run scheduled jobs early (a test moving the clock forward; an operator's "run
-- now"): the scheduled jobs (delayed jobs and retries) due within the next ARGV[2] ms are made
-- due now and moved to ready, as if that time had passed. They leave the retrying set with
-- the scheduled set (see includes/scheduled.lua), and an idle worker is woken.
-- KEYS[1] scheduled  KEYS[2] ready  KEYS[3] seq  KEYS[4] wake
-- ARGV[1] key prefix of the queue   ARGV[2] how far ahead to look (ms; 0: only jobs due now)
-- ARGV[3] jobs to promote at most
-- Reply: the number of jobs made ready.
-- Minimum server: Redis 5.0.
-- needs: clock, format, keys, ready, scheduled
local prefix = ARGV[1]
local now = now_ms()
local limit = tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(now + tonumber(ARGV[2])), 'LIMIT',
  0, limit)
if #due == 0 then
  return 0
end
-- Due now, in the retrying set too (it keeps the scheduled set's scores), so that the jobs
-- count as ready since now, not since a due time still ahead.
local retrying = retrying_key(prefix)
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', fmt(now), id)
  if redis.call('ZSCORE', retrying, id) then
    redis.call('ZADD', retrying, fmt(now), id)
  end
end
local moved = promote_due(prefix, KEYS[1], KEYS[2], KEYS[3], now, limit)
if moved > 0 then
  wake(KEYS[4])
end
return moved
