-- lease.lua: take jobs for a worker. In order: take back the jobs handed to this worker's
-- inbox (it is no longer idle), recover expired leases, promote due scheduled jobs, let
-- rate-limited jobs go as tokens come back, take up to N ready jobs (holding back those a
-- gate stops: see includes/gates.lua), and if nothing is left in ready, register the worker
-- as idle so that enqueue.lua hands it new jobs directly. A paused queue hands out nothing.
-- KEYS[1] ready  KEYS[2] scheduled  KEYS[3] active  KEYS[4] wake  KEYS[5] seq  KEYS[6] dead
-- KEYS[7] idle (list of idle workers, in rotation)
-- ARGV[1] key prefix of the queue
-- ARGV[2] how many jobs to take at most (the worker's free slots)
-- ARGV[3] lease length (ms): the deadline is server now + this
-- ARGV[4] lease id: each job's token is "<lease id>:<n>"
-- ARGV[5] worker id, recorded on each job
-- ARGV[6] max stalls: a job whose lease expired more often than this goes to dead
-- ARGV[7] dead max age (ms)   ARGV[8] dead max length
-- ARGV[9] the worker's longest idle wait (ms); 0: do not register as idle
-- ARGV[10] lease grace (ms): how long an expired lease of this worker is only suspected
--   before it is recovered (see recover_expired in includes/leases.lua)
-- ARGV[11] optional: the worker's free slots before this lease: the idle registration
--   offers those it leaves, up to ARGV[2], even after a lease that took ARGV[2] jobs (a
--   worker whose completions register it, see complete.lua, goes on taking hand-offs)
-- Reply: {wait_ms, scheduled, inbox_count, then inbox_count packed jobs (see
--   includes/handoff.lua), then eleven fields per leased job (LEASED in includes/wire.lua):
--   id, task, payload, attempts, enqueued (ms), retries, timeout, keep (each "" when unset),
--   token, headers (packed), ready since (ms: enqueue, due time or requeue)}
--   wait_ms: 0 if ready jobs remain, else ms until the next scheduled job is due, the next
--   lease expires or a rate limit's next token is due, -1 if nothing is pending.
--   scheduled: how many jobs wait for their time.
-- Minimum server: Redis 5.0.
-- needs: clock, final, format, gates, handoff, keys, leases, packed, ready, records, scheduled,
--   slices, wire
local prefix = ARGV[1]
local count = tonumber(ARGV[2])
local worker = ARGV[5]
local now = now_ms()
local deadline = fmt(now + tonumber(ARGV[3]))
local grace = ARGV[10]
local gates = gates_key(prefix)
local configured = redis.call('EXISTS', gates) == 1
local paused = configured and redis.call('HEXISTS', gates, 'paused') == 1

local idle = idle_key(prefix, worker)
local inbox = inbox_key(prefix, worker)
redis.call('LREM', KEYS[7], 0, worker)
redis.call('DEL', idle)
local handed = redis.call('LRANGE', inbox, 0, -1)
redis.call('DEL', inbox)
count = count - #handed

if recover_expired(prefix, KEYS[3], KEYS[1], KEYS[5], KEYS[6], now, tonumber(ARGV[6]), 100) > 0 then
  trim_dead(prefix, KEYS[6], now, tonumber(ARGV[7]), tonumber(ARGV[8]))
end
promote_due(prefix, KEYS[2], KEYS[1], KEYS[5], now, 1000)
release_throttled(prefix, KEYS[1], now)

local reply = {0, 0, #handed}
for _, item in ipairs(handed) do
  reply[#reply + 1] = item
end
-- Reply entries before the fields of the leased jobs (the handed jobs come first).
local first_job = #reply
local ids, scores = {}, {}
if count > 0 and not paused then
  ids, scores = take_ready(prefix, KEYS[1], count)
end
local fresh = fresh_key(prefix)
local records = hmget_many(fresh, ids)
local active = {}
local taken = 0
local cache = {}
local started = {}
local now_text = fmt(now)
-- The places of a leased job's fields, as plain numbers: looked up once, not per job.
local L_ID, L_TASK, L_PAYLOAD, L_ATTEMPTS = LEASED.id, LEASED.task, LEASED.payload,
  LEASED.attempts
local L_ENQUEUED, L_RETRIES, L_TIMEOUT = LEASED.enqueued, LEASED.retries, LEASED.timeout
local L_KEEP, L_TOKEN, L_HEADERS, L_READY = LEASED.keep, LEASED.token, LEASED.headers,
  LEASED.ready
for i, id in ipairs(ids) do
  local key = job_key(prefix, id)
  local record = records[i]
  local task, payload, enqueued, retries, timeout, keep, headers, ckey, climit, readied
  local packed, opts
  if record then
    enqueued, packed, task, payload = record_parts(record)
    if packed ~= '' then
      opts = unpack_fields(packed)
      retries, timeout, keep = opts[OPT.retries], opts[OPT.timeout], opts[OPT.keep]
      headers = opts[OPT.headers]
    end
  else
    local f = redis.call('HMGET', key, 'task', 'payload', 'enqueued', 'retries', 'timeout',
      'keep', 'headers', 'ckey', 'climit', 'state', 'readied')
    task, payload, enqueued, retries, timeout, keep, headers, ckey, climit = f[1], f[2], f[3],
      f[4], f[5], f[6], f[7], f[8], f[9]
    readied = f[11]
    if f[10] ~= 'ready' then
      -- A tombstone (see remove_ready): cancelled while in fifo, or gone since.
      task = nil
      if not scores[i] and tombstones(prefix) > 0 then
        redis.call('HINCRBY', meta_key(prefix), 'tombstones', -1)
      end
    end
  end
  local gate, counted = nil, nil
  if task and (configured or ckey) then
    gate, counted = pass_gates(prefix, cache, task, ckey or nil, climit, now)
  end
  if gate then
    if record then
      materialize(prefix, id, key)
    end
    hold(prefix, gate, id, key, scores[i] or ready_score(0, redis.call('INCR', KEYS[5])))
  elseif task then
    taken = taken + 1
    local token = ARGV[4] .. ':' .. taken
    local attempts = 1
    if not record then
      attempts = redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('HSET', key, 'state', 'active', 'token', token, 'worker', worker,
        'started', now_text, 'grace', grace)
    elseif opts then
      started[#started + 1] = id
      redis.call('HSET', key, 'state', 'active', 'attempts', '1', 'token', token,
        'worker', worker, 'started', now_text, 'grace', grace,
        unpack(record_hash(enqueued, opts, task, payload)))
    else
      started[#started + 1] = id
      redis.call('HSET', key, 'state', 'active', 'attempts', '1', 'token', token,
        'worker', worker, 'started', now_text, 'grace', grace, 'task', task,
        'payload', payload, 'enqueued', enqueued)
    end
    if counted and #counted > 0 then
      redis.call('HSET', key, 'gates', pack(counted))
    end
    active[2 * taken - 1] = deadline
    active[2 * taken] = id
    local n = first_job + (taken - 1) * LEASED_FIELDS
    reply[n + L_ID] = id
    reply[n + L_TASK] = task
    reply[n + L_PAYLOAD] = payload or ''
    reply[n + L_ATTEMPTS] = attempts
    reply[n + L_ENQUEUED] = enqueued or '0'
    reply[n + L_RETRIES] = retries or ''
    reply[n + L_TIMEOUT] = timeout or ''
    reply[n + L_KEEP] = keep or ''
    reply[n + L_TOKEN] = token
    reply[n + L_HEADERS] = headers or ''
    reply[n + L_READY] = readied or enqueued or '0'
  end
end
call_in_slices('HDEL', fresh, started)
call_in_slices('ZADD', KEYS[3], active)

local function next_wait()
  local wait = next_due_in(KEYS[2], KEYS[3], now)
  local token = next_token_in(prefix, now)
  if token >= 0 and (wait < 0 or token < wait) then
    wait = token
  end
  return wait
end

if not paused and ready_count(prefix, KEYS[1]) > 0 then
  wake(KEYS[4])
else
  reply[1] = next_wait()
  local max_idle = tonumber(ARGV[9])
  local free = count - taken
  local slots = tonumber(ARGV[11])
  if slots then
    free = math.max(free, math.min(slots - #handed - taken, tonumber(ARGV[2])))
  end
  if max_idle > 0 and free > 0 and not paused then
    -- Registered for as long as the worker will block, plus a margin for the round trip.
    local wait = max_idle
    if reply[1] >= 0 and reply[1] < wait then
      wait = reply[1]
    end
    register_idle(prefix, KEYS[7], worker, free, ARGV[3], grace, wait)
  end
end
reply[2] = redis.call('ZCARD', KEYS[2])
return reply
