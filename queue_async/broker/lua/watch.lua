-- watch.lua: flag jobs as awaited, so the script that finishes each publishes its id on the
-- queue's "done" channel. Not a state change; atomic so a missing job is never re-created.
-- One call serves the result waits of many callers at once (see producer/coalesce.py).
-- KEYS[1..] job hashes, one per job of ARGV (named in KEYS so a cluster client routes the
--   call to their slot)
-- ARGV[1] key prefix of the queue   ARGV[2..] the job ids, one field per job
-- Reply: per job, its state, or nil if there is no such job.
-- Minimum server: Redis 5.0.
-- needs: records
local prefix = ARGV[1]
local states = {}
for i, key in ipairs(KEYS) do
  local state = redis.call('HGET', key, 'state')
  if not state and materialize(prefix, ARGV[i + 1], key) then
    state = 'ready'
  end
  if state then
    redis.call('HSET', key, 'waiters', '1')
  end
  states[i] = state or false
end
return states
