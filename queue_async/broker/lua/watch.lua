-- watch.lua: flag a job as awaited, so the script that finishes it publishes its id on the
-- queue's "done" channel. Not a state change; atomic so a missing job is never re-created.
-- KEYS[1] the job's hash (named in KEYS so a cluster client routes the call to its slot)
-- ARGV[1] key prefix of the queue   ARGV[2] job id
-- Reply: the job's state, or nil if there is no such job.
-- Minimum server: Redis 5.0.
-- needs: records
local state = redis.call('HGET', KEYS[1], 'state')
if not state and materialize(ARGV[1], ARGV[2], KEYS[1]) then
  state = 'ready'
end
if state then
  redis.call('HSET', KEYS[1], 'waiters', '1')
end
return state
