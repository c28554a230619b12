-- gate.lua: pause or resume the queue or one task, or set a task's limits (see _gates.lua).
-- KEYS[1] ready  KEYS[2] wake
-- ARGV[1] key prefix of the queue
-- ARGV[2] action: "pause", "resume" or "limits"
-- ARGV[3] task name; "" for the whole queue (pause and resume only)
-- ARGV[4] max concurrency of the task ("" for none; limits only)
-- ARGV[5] rate limit of the task, "<jobs>:<period ms>" ("" for none; limits only)
-- Reply: how many held jobs went back to ready. A task's resume moves at most 1,000 per call,
--   newest first, so that no call holds the server for long: the caller repeats it until
--   fewer come back (each batch goes in front of the one before: the order is kept).
-- Minimum server: Redis 5.0.
local prefix = ARGV[1]
local action = ARGV[2]
local task = ARGV[3]
local gates = prefix .. 'gates'
local moved = 0
if action == 'pause' then
  if task == '' then
    redis.call('HSET', gates, 'paused', '1')
  else
    redis.call('HSET', gates, 'pause:' .. task, '1')
  end
elseif action == 'resume' then
  if task == '' then
    if redis.call('HDEL', gates, 'paused') == 1 then
      moved = 1 -- nothing was held, but idle workers must look again
    end
  else
    redis.call('HDEL', gates, 'pause:' .. task)
    moved = unhold(prefix, KEYS[1], 'p:' .. task, 1000, true)
  end
elseif action == 'limits' then
  local limit = tonumber(ARGV[4])
  local gate = 't:' .. task
  if limit then
    redis.call('HSET', gates, 'limit:' .. task, limit)
    local running = tonumber(redis.call('HGET', prefix .. 'running', gate)) or 0
    if limit > running then
      moved = moved + unhold(prefix, KEYS[1], gate, limit - running)
    end
  else
    redis.call('HDEL', gates, 'limit:' .. task)
    moved = moved + unhold_all(prefix, KEYS[1], gate)
  end
  gate = 'r:' .. task
  if ARGV[5] ~= '' then
    if redis.call('HGET', gates, 'rate:' .. task) ~= ARGV[5] then
      redis.call('HSET', gates, 'rate:' .. task, ARGV[5])
      redis.call('HDEL', prefix .. 'bucket', gate)
      redis.call('ZREM', prefix .. 'throttled', gate)
      moved = moved + unhold_all(prefix, KEYS[1], gate)
    end
  else
    redis.call('HDEL', gates, 'rate:' .. task)
    redis.call('HDEL', prefix .. 'bucket', gate)
    redis.call('ZREM', prefix .. 'throttled', gate)
    moved = moved + unhold_all(prefix, KEYS[1], gate)
  end
else
  return redis.error_reply('gate.lua: unknown action ' .. action)
end
if moved > 0 then
  wake(KEYS[2])
end
return moved
