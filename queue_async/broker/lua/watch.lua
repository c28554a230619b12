-- watch.lua: flag jobs as awaited, so the script that finishes each publishes its id on the
-- queue's "done" channel. Not a state change; atomic so that a missing job is never flagged.
-- The flag is an entry of the hash watched (see watched_key in includes/keys.lua), so a fresh
-- job stays a fresh record, which leasing reads more cheaply than a job hash. A job in a
-- final state is not flagged: nothing more will be announced for it.
-- One call serves the result waits of many callers at once (see producer/coalesce.py).
-- KEYS[1..] job hashes, one per job of ARGV (named in KEYS so a cluster client routes the
--   call to their slot)
-- ARGV[1] key prefix of the queue   ARGV[2..] the job ids, one field per job
-- Reply: per job, its state, or nil if there is no such job.
-- Minimum server: Redis 5.0.
-- needs: final, keys, slices
local prefix = ARGV[1]
local fresh, watched = fresh_key(prefix), watched_key(prefix)
local ids = {}
for i = 2, #ARGV do
  ids[i - 1] = ARGV[i]
end
-- Most jobs awaited are still fresh: one HMGET tells them all, and only the others need
-- their hash read.
local records = hmget_many(fresh, ids)
local states = {}
local flags, n = {}, 0
for i, key in ipairs(KEYS) do
  local id = ids[i]
  local state = records[i] and 'ready' or redis.call('HGET', key, 'state')
  if state and not FINAL_STATES[state] then
    flags[n + 1] = id
    flags[n + 2] = '1'
    n = n + 2
  end
  states[i] = state or false
end
call_in_slices('HSET', watched, flags)
return states
