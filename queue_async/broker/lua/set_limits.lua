-- set_limits.lua: set or clear a task's max concurrency and rate limit (see
-- includes/gates.lua), letting go the held jobs the new limits allow.
-- KEYS[1] ready  KEYS[2] wake
-- ARGV[1] key prefix of the queue   ARGV[2] task name
-- ARGV[3] max concurrency of the task ("" for none)
-- ARGV[4] rate limit of the task, "<jobs>:<period ms>" ("" for none)
-- Reply: how many held jobs went back to ready.
-- Minimum server: Redis 5.0.
-- needs: gates, keys, ready
local prefix = ARGV[1]
local task = ARGV[2]
local gates = gates_key(prefix)
local moved = 0
local limit = tonumber(ARGV[3])
local gate = 't:' .. task
if limit then
  redis.call('HSET', gates, 'limit:' .. task, limit)
  local running = tonumber(redis.call('HGET', running_key(prefix), gate)) or 0
  if limit > running then
    moved = moved + unhold(prefix, KEYS[1], gate, limit - running)
  end
else
  redis.call('HDEL', gates, 'limit:' .. task)
  moved = moved + unhold_all(prefix, KEYS[1], gate)
end
gate = 'r:' .. task
if ARGV[4] ~= '' then
  if redis.call('HGET', gates, 'rate:' .. task) ~= ARGV[4] then
    redis.call('HSET', gates, 'rate:' .. task, ARGV[4])
    redis.call('HDEL', bucket_key(prefix), gate)
    redis.call('ZREM', throttled_key(prefix), gate)
    moved = moved + unhold_all(prefix, KEYS[1], gate)
  end
else
  redis.call('HDEL', gates, 'rate:' .. task)
  redis.call('HDEL', bucket_key(prefix), gate)
  redis.call('ZREM', throttled_key(prefix), gate)
  moved = moved + unhold_all(prefix, KEYS[1], gate)
end
if moved > 0 then
  wake(KEYS[2])
end
return moved
