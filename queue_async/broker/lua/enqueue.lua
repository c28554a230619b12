-- enqueue.lua: add one or more jobs. A job whose id already exists is left untouched.
-- KEYS[1] ready      sorted set of ready jobs of a priority other than 0, score
--                    priority*2^32 + seq (priority 0: the list fifo, see includes/ready.lua)
-- KEYS[2] scheduled  sorted set, score due time (ms)
-- KEYS[3] wake       list idle workers block on
-- KEYS[4] seq        counter for FIFO order
-- KEYS[5] idle       list of workers blocked idle (see lease.lua), in rotation
-- KEYS[6] active     sorted set, score lease deadline (ms)
-- A ready job is handed straight to an idle worker (leased to it, packed into its inbox)
-- while no other job is ready: the worker then starts it without a lease round trip.
-- Otherwise a plain job (no delay, unique or concurrency key) is stored as a fresh record
-- (see includes/records.lua), the rest as job hashes.
-- ARGV[1] key prefix of the queue, "<prefix>:{<queue>}:"
-- ARGV[2] the jobs, packed (see includes/packed.lua): four fields per job: id, options, task,
--   payload (codec bytes), one job after another
--   options: "" for all defaults, else packed fields, in order:
--   priority (integer), delay (ms from now, "" = none), at (epoch ms, "" = none; wins over
--   delay), retries, timeout (ms), keep (result TTL ms), concurrency key, concurrency
--   limit, unique key, unique window (ms), "1" if the unique key also holds while the job
--   runs, headers (packed name, value, ...), "1" to replace a finished job of the same id
--   (done, dead, cancelled or aborted; one that waits or runs is kept): each "" (or absent at
--   the end) when the default applies; OPT in includes/wire.lua names each place
-- ARGV[3] optional, internal: "1" flags every job this call adds as awaited (an entry of the
--   hash watched, as watch.lua makes it), for a process whose result() waiters already hear
--   of ends: their waits then need no watch call
-- Unique keys: unique:<key> names the job holding the key. A job whose key is held by a job
--   that is ready or scheduled (or running, if that job asked so) is not enqueued: the reply
--   names the holder instead. The key lasts at most the window, and is dropped when its job
--   reaches a final state.
-- A batch with a job whose id is empty or whose options break the format (see bad_options
--   in includes/batch.lua) is refused whole, before anything is written.
-- Reply: one per job: 1 enqueued (ready, scheduled or handed off), 0 an existing job has that
--   id, or the id of the job that holds its unique key.
-- Minimum server: Redis 5.0.
-- needs: batch, keys, packed, slices, wire
local jobs = ARGV[2]
local bounds, bad = parse_packed(jobs, ENQUEUED_FIELDS)
if not bounds then
  return redis.error_reply('ERR queue_async: malformed job batch at byte ' .. bad)
end
local step = 2 * ENQUEUED_FIELDS
for at = 0, #bounds - 1, step do
  local why = nil
  if bounds[at + ID_FIRST] > bounds[at + ID_LAST] then
    why = 'its id is empty'
  elseif bounds[at + OPTIONS_FIRST] <= bounds[at + OPTIONS_LAST] then
    why = bad_options(string.sub(jobs, bounds[at + OPTIONS_FIRST], bounds[at + OPTIONS_LAST]))
  end
  if why then
    return redis.error_reply('ERR queue_async: job ' .. (at / step + 1) .. ' of the batch: '
      .. why .. '; nothing was enqueued')
  end
end
local batch = new_batch(ARGV[1], KEYS)
local reply = {}
for at = 0, #bounds - 1, step do
  local slot = at / step + 1
  reply[slot] = add_job(batch, jobs, bounds, at, slot)
end
finish_batch(batch, reply)
if ARGV[3] == '1' then
  local flags, n = {}, 0
  for at = 0, #bounds - 1, step do
    if reply[at / step + 1] == 1 then
      flags[n + 1] = string.sub(jobs, bounds[at + ID_FIRST], bounds[at + ID_LAST])
      flags[n + 2] = '1'
      n = n + 2
    end
  end
  call_in_slices('HSET', watched_key(ARGV[1]), flags)
end
return reply
