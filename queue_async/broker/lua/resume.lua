-- resume.lua: resume the queue or one task (see includes/gates.lua), letting the task's
-- held jobs go back to ready.
-- KEYS[1] ready  KEYS[2] wake
-- ARGV[1] key prefix of the queue   ARGV[2] task name; "" for the whole queue
-- Reply: how many held jobs went back to ready (the whole queue holds none: 1 if it was
--   paused, so that idle workers look again, else 0). A task's jobs go back at most 1,000
--   per call, newest first, so that no call holds the server for long: the caller repeats
--   it until fewer come back (each batch goes in front of the one before: the order is kept).
-- Minimum server: Redis 5.0.
-- needs: gates, keys, ready
local prefix = ARGV[1]
local task = ARGV[2]
local gates = gates_key(prefix)
local moved = 0
if task == '' then
  if redis.call('HDEL', gates, 'paused') == 1 then
    moved = 1
  end
else
  redis.call('HDEL', gates, 'pause:' .. task)
  moved = unhold(prefix, KEYS[1], 'p:' .. task, 1000, true)
end
if moved > 0 then
  wake(KEYS[2])
end
return moved
