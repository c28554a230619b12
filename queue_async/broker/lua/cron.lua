-- cron.lua: enqueue the job of one cron tick, once however many workers try (every worker
-- tries every tick, so that none is lost while one of them runs).
-- KEYS[1] ready  KEYS[2] scheduled  KEYS[3] wake  KEYS[4] seq  KEYS[5] idle  KEYS[6] active
-- KEYS[7] cron (hash: cron name -> last tick enqueued, epoch ms)
-- ARGV[1] key prefix of the queue   ARGV[2] cron name   ARGV[3] tick (epoch ms)
-- ARGV[4] the job, packed as in enqueue.lua's ARGV[2]
-- Reply: 1 if this call enqueued the tick's job, 0 if this tick or a later one was already.
-- Minimum server: Redis 5.0.
-- needs: batch, packed, wire
local tick = tonumber(ARGV[3])
local last = tonumber(redis.call('HGET', KEYS[7], ARGV[2]))
if last and last >= tick then
  return 0
end
local bounds = parse_packed(ARGV[4], ENQUEUED_FIELDS)
if not bounds or #bounds ~= 2 * ENQUEUED_FIELDS then
  return redis.error_reply('ERR queue_async: malformed cron job')
end
redis.call('HSET', KEYS[7], ARGV[2], ARGV[3])
local batch = new_batch(ARGV[1], KEYS)
local reply = {add_job(batch, ARGV[4], bounds, 0, 1)}
finish_batch(batch, reply)
if reply[1] == 1 then
  return 1
end
return 0
