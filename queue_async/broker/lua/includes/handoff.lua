-- includes/handoff.lua: leasing a new job straight to an idle worker. A worker with free
-- slots that finds nothing to take registers as idle (lease.lua): its id joins the idle
-- list (in KEYS) and its idle hash (idle_key) says how many jobs it takes and its lease.
-- A job handed to it is written active at once and packed into its inbox (inbox_key),
-- which the worker blocks on.
-- One script call hands off any number of jobs but touches each idle worker's keys once:
-- the rotation is kept in the batch (see new_batch in includes/batch.lua) while jobs are
-- handed, and written back by deliver_handed, with the same order and free counts that
-- handing the jobs one by one would leave.
-- needs: format, keys, packed, slices, wire
-- provides: register_idle idle_rotation has_idle_worker next_idle_worker handed_token hand_off
--   hand_off_plain deliver_handed
-- Minimum server: Redis 5.0.

-- Register a worker as idle, with `free` slots for hand-offs, its lease and lease grace
-- (ms), for `wait` ms (how long it blocks on its inbox) plus a margin for the round trip.
-- idle: the list of idle workers, which it joins at the tail; the caller has taken it off
-- the list already (lease.lua does as it starts), so that it is there once.
local function register_idle(prefix, idle, worker, free, lease_ms, grace, wait)
  local key = idle_key(prefix, worker)
  redis.call('HSET', key, 'free', free, 'lease', lease_ms, 'grace', grace)
  redis.call('PEXPIRE', key, wait + 500)
  redis.call('RPUSH', idle, worker)
end

-- The batch's idle rotation, made on first use: workers taken from the head of the idle
-- list so far (by id), and those of them with slots left, in the order they rejoin its tail;
-- drained once the list had none left.
local function idle_rotation(batch)
  local r = batch.rotation
  if not r then
    r = {workers = {}, order = {}, tail = {}, head = 1, n = 0, active = {}, active_n = 0}
    batch.rotation = r
  end
  return r
end

-- Whether an idle worker may be left to hand jobs to: the idle list is not empty, or the
-- batch's rotation has one.
local function has_idle_worker(batch)
  local r = batch.rotation
  if r then
    return r.head <= #r.tail or (not r.drained and redis.call('LLEN', batch.idle) > 0)
  end
  return redis.call('LLEN', batch.idle) > 0
end

-- Take the next idle worker in rotation that still has a free slot, and count the slot
-- taken; nil if none. The worker is a table: id, free, lease (ms), grace (ms, see
-- recover_expired), entries (its inbox entries so far), n (how many) and deadline (their
-- lease deadline, once made).
local function next_idle_worker(batch)
  local r = idle_rotation(batch)
  while true do
    local worker = nil
    local id = not r.drained and redis.call('LPOP', batch.idle)
    if not id then
      r.drained = true
    end
    if id then
      worker = r.workers[id]
      if not worker then
        local f = redis.call('HMGET', idle_key(batch.prefix, id), 'free', 'lease', 'grace')
        worker = {id = id, free = tonumber(f[1]) or 0, lease = tonumber(f[2]), grace = f[3],
          entries = {}, n = 0}
        r.workers[id] = worker
        r.order[#r.order + 1] = worker
      end
    elseif r.head <= #r.tail then
      worker = r.tail[r.head]
      r.head = r.head + 1
    else
      return nil
    end
    if worker.free > 0 then
      worker.free = worker.free - 1
      if worker.free > 0 then
        r.tail[#r.tail + 1] = worker
      end
      return worker
    end
  end
end

-- The lease token of the next job handed to `worker` (as next_idle_worker returned it), whose
-- deadline joins the batch's active jobs; one INCR of seq per call makes tokens unique.
local function handed_token(batch, worker, id)
  local r = batch.rotation
  if not r.seq then
    r.seq = redis.call('INCR', batch.seq)
    r.started = fmt(batch.now)
    r.started_packed = #r.started .. ':' .. r.started
  end
  worker.n = worker.n + 1
  if not worker.deadline then
    worker.deadline = fmt(batch.now + worker.lease)
  end
  r.active[r.active_n + 1] = worker.deadline
  r.active[r.active_n + 2] = id
  r.active_n = r.active_n + 2
  return worker.id .. ':h' .. r.seq .. '.' .. worker.n
end

-- Lease a new job to an idle worker (as next_idle_worker returned it): its hash (fields: as
-- job_fields in includes/batch.lua builds them) is written active, and its packed fields
-- (as lease.lua returns them) are kept for the worker's inbox. opts: the job's options,
-- unpacked (see enqueue.lua).
local function hand_off(batch, worker, id, key, fields, opts)
  local token = handed_token(batch, worker, id)
  local now = batch.now
  local started = fmt(now)
  -- After job_fields' 'attempts' '0': HSET applies pairs in order, so these win.
  local n = #fields
  fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = 'state', 'active', 'attempts', '1'
  fields[n + 5], fields[n + 6], fields[n + 7], fields[n + 8] = 'token', token, 'worker',
    worker.id
  fields[n + 9], fields[n + 10], fields[n + 11], fields[n + 12] = 'started', started, 'grace',
    worker.grace or '0'
  redis.call('HSET', key, unpack(fields))
  local entry = {}
  entry[LEASED.id], entry[LEASED.task], entry[LEASED.payload] = id, fields[2], fields[4]
  entry[LEASED.attempts], entry[LEASED.enqueued], entry[LEASED.token] = '1', started, token
  entry[LEASED.retries] = opts[OPT.retries] or ''
  entry[LEASED.timeout] = opts[OPT.timeout] or ''
  entry[LEASED.keep] = opts[OPT.keep] or ''
  entry[LEASED.headers] = opts[OPT.headers] or ''
  entry[LEASED.ready] = started
  worker.entries[worker.n] = pack(entry)
end

-- hand_off for a job of priority 0 without options, whose inbox entry is made from its own
-- packed fields as the batch carried them: id (id_packed), task and payload (body_packed).
-- The entry's fields are in LEASED order: id, task, payload, attempts, enqueued, retries,
-- timeout, keep, token, headers, ready.
local function hand_off_plain(batch, worker, id, key, task, payload, id_packed, body_packed)
  local token = handed_token(batch, worker, id)
  local r = batch.rotation
  local started = r.started
  redis.call('HSET', key, 'state', 'active', 'attempts', '1', 'token', token, 'worker',
    worker.id, 'started', started, 'grace', worker.grace or '0', 'task', task,
    'payload', payload, 'enqueued', started)
  worker.entries[worker.n] = id_packed .. body_packed .. '1:1' .. r.started_packed
    .. '0:0:0:' .. #token .. ':' .. token .. '0:' .. r.started_packed
end

-- Write back what the batch's hand-offs did: the handed jobs' lease deadlines, each
-- worker's inbox and free count (its idle hash goes once it has none), and the workers
-- with slots left at the tail of the idle list, in rotation order.
local function deliver_handed(batch)
  local r = batch.rotation
  if not r then
    return
  end
  call_in_slices('ZADD', batch.active, r.active)
  for _, worker in ipairs(r.order) do
    -- A worker taken off the list without a free slot (its registration expired) was only
    -- dropped from the rotation.
    if worker.n > 0 then
      local inbox = inbox_key(batch.prefix, worker.id)
      call_in_slices('RPUSH', inbox, worker.entries)
      -- Entries outlive their use only if the worker died; by then the lease has expired.
      redis.call('PEXPIRE', inbox, worker.lease)
      local key = idle_key(batch.prefix, worker.id)
      if worker.free > 0 then
        redis.call('HSET', key, 'free', worker.free)
      else
        redis.call('DEL', key)
      end
    end
  end
  local back = {}
  for i = r.head, #r.tail do
    back[#back + 1] = r.tail[i].id
  end
  call_in_slices('RPUSH', batch.idle, back)
end
