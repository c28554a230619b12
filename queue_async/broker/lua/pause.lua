-- pause.lua: pause the queue or one task (see includes/gates.lua): a paused queue hands out
-- no job; a paused task's jobs are held back as lease.lua meets them, until resume.lua.
-- KEYS[1] gates  (hash of flow control settings)
-- ARGV[1] task name; "" for the whole queue
-- Reply: 1 if this call paused it, 0 if it was paused already.
-- Minimum server: Redis 5.0.
-- needs:
if ARGV[1] == '' then
  return redis.call('HSET', KEYS[1], 'paused', '1')
end
return redis.call('HSET', KEYS[1], 'pause:' .. ARGV[1], '1')
