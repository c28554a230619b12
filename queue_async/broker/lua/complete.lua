-- complete.lua: record jobs as done, each only if its lease token is still current.
-- KEYS[1] active  KEYS[2] meta  KEYS[3] ready  KEYS[4] wake
-- KEYS[5] done    finished jobs whose results are kept, by finish time: the DONE_LISTED
--                 most recent (what Admin.jobs("done") lists); it expires with the longest
--                 kept result among them
-- KEYS[6] idle optional: the list of idle workers (see lease.lua), given with ARGV[3] to [7]
-- ARGV[1] key prefix of the queue
-- ARGV[2] the jobs, packed (see includes/packed.lua): four fields per job: id, token, result
--   (codec bytes), keep (result TTL ms; 0 deletes the job hash at once)
-- ARGV[3] optional: the finishing worker's id, to register it as idle (as lease.lua does when
--   it finds nothing): a worker with free slots blocks on its inbox, so the next enqueue hands
--   it jobs without a lease call; not while jobs are ready or a gate is configured
-- ARGV[4] optional: its free slots (those its inbox holds jobs for are not offered)
-- ARGV[5] optional: its lease (ms)
-- ARGV[6] optional: its lease grace (ms)   ARGV[7] optional: its longest idle wait (ms)
-- Reply: one integer per job: 1 recorded (now, or by an earlier send of the same call whose
--   reply was lost: the job's 'spent' field holds the token of the try that finished it),
--   0 lease lost (recovered elsewhere), 2 the job is gone (deleted, or recorded with keep 0).
-- Minimum server: Redis 5.0.
-- needs: clock, final, format, gates, handoff, keys, packed, ready, slices, wire
local prefix = ARGV[1]
local done_jobs = ARGV[2]
local bounds, bad = parse_packed(done_jobs, COMPLETED_FIELDS)
if not bounds then
  return redis.error_reply('ERR queue_async: malformed completions at byte ' .. bad)
end
local now = fmt(now_ms())
-- Where each field of a completion starts and ends among its bounds (see packed_field),
-- worked out once per call rather than once per job.
local ID, TOKEN = 2 * COMPLETED.id, 2 * COMPLETED.token
local RESULT, KEEP = 2 * COMPLETED.result, 2 * COMPLETED.keep
local sub = string.sub
local reply = {}
local let_go = 0
local finished = {}
local kept, longest = {}, 0
-- Jobs flagged as awaited by a version before the watched hash (the job hash field
-- waiters), as a set; and per finished job its task and the result its waiters may be sent
-- (false when not kept or too long: they read the job).
local legacy = {}
local tasks, carried = {}, {}
local DONE_LISTED = 10000
for at = 0, #bounds - 1, 2 * COMPLETED_FIELDS do
  local id = sub(done_jobs, bounds[at + ID - 1], bounds[at + ID])
  local key = job_key(prefix, id)
  local f = redis.call('HMGET', key, 'token', 'gates', 'ukey', 'waiters', 'spent', 'task')
  local token = sub(done_jobs, bounds[at + TOKEN - 1], bounds[at + TOKEN])
  if f[1] == token then
    local n = #finished + 1
    finished[n] = id
    tasks[n] = f[6]
    carried[n] = false
    if f[2] then
      let_go = let_go + leave_gates(prefix, KEYS[3], key)
    end
    if f[3] then
      drop_unique(prefix, key, id, f[3])
    end
    if f[4] then
      legacy[id] = true
    end
    local keep = tonumber(sub(done_jobs, bounds[at + KEEP - 1], bounds[at + KEEP]))
    if keep > 0 then
      local result = sub(done_jobs, bounds[at + RESULT - 1], bounds[at + RESULT])
      if #result <= CARRIED_RESULT_MAX then
        carried[n] = result
      end
      -- The token is blanked rather than deleted (one call less): no token is empty.
      redis.call('HSET', key, 'state', 'done', 'result', result, 'finished', now,
        'token', '', 'spent', token)
      redis.call('PEXPIRE', key, keep)
      kept[#kept + 1] = now
      kept[#kept + 1] = id
      if keep > longest then
        longest = keep
      end
    else
      redis.call('DEL', key)
    end
    reply[#reply + 1] = 1
  elseif f[5] == token then
    reply[#reply + 1] = 1
  elseif not f[1] and redis.call('EXISTS', key) == 0 then
    reply[#reply + 1] = 2
  else
    reply[#reply + 1] = 0
  end
end
local done = #finished
if done > 0 then
  call_in_slices('ZREM', KEYS[1], finished)
  redis.call('HINCRBY', KEYS[2], 'processed', done)
  announce_many(prefix, finished, legacy, tasks, carried)
end
if #kept > 0 then
  call_in_slices('ZADD', KEYS[5], kept)
  local excess = redis.call('ZCARD', KEYS[5]) - DONE_LISTED
  if excess > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[5], 0, excess - 1)
  end
  -- The index outlives none of its jobs by long: it expires with the longest kept result.
  if redis.call('PTTL', KEYS[5]) < longest then
    redis.call('PEXPIRE', KEYS[5], longest)
  end
end
if let_go > 0 then
  wake(KEYS[4])
end
local worker, free = ARGV[3], tonumber(ARGV[4])
if worker and free and KEYS[6] then
  -- Jobs handed to it and not yet taken fill slots too.
  free = free - redis.call('LLEN', inbox_key(prefix, worker))
  if free > 0 and ready_count(prefix, KEYS[3]) == 0
      and redis.call('EXISTS', gates_key(prefix)) == 0 then
    redis.call('LREM', KEYS[6], 0, worker)
    register_idle(prefix, KEYS[6], worker, free, ARGV[5], ARGV[6], tonumber(ARGV[7]))
  end
end
return reply
