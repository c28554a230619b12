-- delete.lua: delete jobs that are not running: their records, results and index entries go.
-- Either the jobs named, or those a walk of one state's index finds (bounded, see
-- includes/listing.lua): what a purge is made of.
-- KEYS[1] ready  KEYS[2] scheduled  KEYS[3] retrying  KEYS[4] dead  KEYS[5] done  KEYS[6] fresh
-- ARGV[1] key prefix of the queue   ARGV[2] the state to walk: ready, scheduled, dead, done
-- ARGV[3] cursor of the walk ("" for the start)   ARGV[4] jobs to delete at most
-- ARGV[5] index entries to look at, at most   ARGV[6] task name ("" for any)
-- ARGV[7] text to search for, lower case ("" for none)
-- ARGV[8..] job ids, one field per job: these jobs, and no walk (ARGV[2..7] unused)
-- A deleted ready job of priority 0 stays in fifo as a tombstone (see includes/ready.lua),
--   except that a walk from fifo's head that leaves nothing alive there trims it off.
-- Reply: the number of jobs deleted, the walk's cursor ("" at its end, or with ids), and the
--   number of entries looked at.
-- Minimum server: Redis 6.0.6 (LPOS, for the walk).
-- needs: final, gates, keys, listing, ready
local prefix = ARGV[1]
local fresh = KEYS[6]

-- Delete one job: false if it is running or does not exist.
local function delete_one(id)
  local key = job_key(prefix, id)
  local state = redis.call('HGET', key, 'state')
  if not state then
    if redis.call('HDEL', fresh, id) == 0 then
      return false
    end
    remove_ready(prefix, KEYS[1], id)
    announce(prefix, key, id)
    return true
  end
  if state == 'active' then
    return false
  elseif state == 'ready' then
    if not unhold_one(prefix, id, key) then
      remove_ready(prefix, KEYS[1], id)
    end
  elseif state == 'scheduled' then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  elseif state == 'dead' then
    redis.call('ZREM', KEYS[4], id)
  elseif state == 'done' then
    redis.call('ZREM', KEYS[5], id)
  end
  drop_unique(prefix, key, id)
  -- A result() waiting on it wakes, reads again, and finds no job.
  announce(prefix, key, id)
  redis.call('DEL', key)
  return true
end

local state = ARGV[2]
local index = ({ready = KEYS[1], scheduled = KEYS[2], dead = KEYS[4], done = KEYS[5]})[state]
if not index and #ARGV < 8 then
  return redis.error_reply('ERR queue_async: cannot delete the jobs of state ' .. state)
end
-- fifo entries of the walk from its head (index 0 on), and whether all of them are dead now
-- (deleted here, or tombstones already).
local head, head_clear = 0, true

local function visit(_, id, job, deleted, entry)
  if not job and state == 'done' then
    redis.call('ZREM', index, id) -- its result expired
  end
  if string.sub(entry, 1, 2) == 'f ' and (head > 0 or string.sub(entry, 1, 4) == 'f 0 ') then
    head = head + 1
    head_clear = head_clear and (deleted or not (job and job_matches(id, job, state, '', '')))
  end
end

local deleted, cursor, scanned = act_on_jobs(prefix, fresh, index, state, ARGV, 8, ARGV[3],
  tonumber(ARGV[5]), tonumber(ARGV[4]), ARGV[6], ARGV[7], delete_one, visit)
if not deleted then
  return redis.error_reply('ERR queue_async: ' .. cursor)
end
if state == 'ready' and head > 0 and head_clear then
  redis.call('LTRIM', fifo_key(prefix), head, -1)
  local stones = tombstones(prefix)
  if stones > 0 then
    redis.call('HINCRBY', meta_key(prefix), 'tombstones', -math.min(stones, head))
  end
end
return {deleted, cursor, scanned}
