-- includes/batch.lua: adding jobs, for enqueue.lua and cron.lua: one batch per script call.
-- Fields and replies are described in enqueue.lua.
-- needs: clock, final, format, handoff, keys, packed, ready, records, scheduled, slices, wire
-- provides: new_batch unique_holder job_fields push_fifo queue_ready NO_OPTIONS fresh_record
--   note_plain existing_ids job_exists add_job finish_batch bad_options INTEGER_OPTIONS
--   ID_FIRST ID_LAST OPTIONS_FIRST OPTIONS_LAST O_PRIORITY O_DELAY O_AT O_CKEY O_UKEY
--   replace_finished
-- Minimum server: Redis 5.0.

-- Where a job's id and options start and end among its parse_packed bounds (as packed_field
-- finds them, without a call: add_job runs for every job).
local ID_FIRST, ID_LAST = 2 * ENQUEUED.id - 1, 2 * ENQUEUED.id
local OPTIONS_FIRST, OPTIONS_LAST = 2 * ENQUEUED.options - 1, 2 * ENQUEUED.options
-- The option places add_job reads for every job, as plain numbers (no table lookup per job).
local O_PRIORITY, O_DELAY, O_AT, O_CKEY, O_UKEY = OPT.priority, OPT.delay, OPT.at, OPT.ckey,
  OPT.ukey

-- Integer options and their bounds (what the Python producer checks before sending).
local INTEGER_OPTIONS = {
  {'priority', -1048576, 1048576}, {'delay', 0, nil}, {'at', 0, nil}, {'retries', 0, nil},
  {'timeout', 1, nil}, {'keep', 0, nil}, {'climit', 1, nil}, {'uwindow', 1, nil},
}

-- Why a job's packed options break the wire format (docs/wire-format.md), or nil. Checked for
-- every job of a batch before anything is written, so that a bad job changes nothing.
local function bad_options(packed)
  local opts = unpack_fields(packed)
  for _, spec in ipairs(INTEGER_OPTIONS) do
    local value = opts[OPT[spec[1]]]
    if value and value ~= '' then
      local n = string.find(value, '^%-?%d+$') and tonumber(value)
      if not n or n < spec[2] or (spec[3] and n > spec[3]) then
        return 'option ' .. spec[1] .. ' must be an integer'
          .. (spec[3] and (' from ' .. spec[2] .. ' to ' .. spec[3]) or (' >= ' .. spec[2]))
          .. ', not ' .. string.format('%q', string.sub(value, 1, 40))
      end
    end
  end
  if (opts[OPT.ckey] or '') ~= '' and (opts[OPT.climit] or '') == '' then
    return 'option ckey needs climit'
  end
  for _, name in ipairs({'urunning', 'replace'}) do
    local flag = opts[OPT[name]]
    if flag and flag ~= '' and flag ~= '1' then
      return 'option ' .. name .. ' must be "" or "1"'
    end
  end
  local headers = opts[OPT.headers]
  if headers and headers ~= '' and not parse_packed(headers, 2) then
    return 'option headers must be packed name, value pairs'
  end
  return nil
end

-- The state one script call shares between the jobs it adds. keys: ready, scheduled, wake,
-- seq, idle, active (enqueue.lua's KEYS[1..6]).
local function new_batch(prefix, keys)
  local batch = {
    prefix = prefix, ready = keys[1], scheduled = keys[2], wake = keys[3], seq = keys[4],
    idle = keys[5], active = keys[6], now = now_ms(), woke = false,
    fresh = fresh_key(prefix), fifo = {}, fifo_n = 0, plain_n = 0,
    -- Plain jobs of priority 0 (see add_job), written together by finish_batch: ids,
    -- records, reply slots, and every id of the batch so far (id -> true).
    -- (Counters instead of #t: the length operator is a search.)
    plain_ids = {}, plain_records = {}, plain_slots = {}, seen = {},
    -- Hand-off skips the gates (includes/gates.lua): only while none is configured. The
    -- idle rotation it hands jobs from is batch.rotation (see includes/handoff.lua).
    handing = ready_count(prefix, keys[1]) == 0
      and redis.call('EXISTS', gates_key(prefix)) == 0,
  }
  batch.stamp = pack({fmt(batch.now)})
  return batch
end

-- The job holding a unique key, if it still waits (or runs, when it asked to hold then).
local function unique_holder(prefix, ukey)
  local holder = redis.call('GET', unique_key(prefix, ukey))
  if holder then
    local h = redis.call('HMGET', job_key(prefix, holder), 'state', 'urun')
    if h[1] == 'ready' or h[1] == 'scheduled' or (h[1] == 'active' and h[2]) then
      return holder
    end
  end
  return nil
end

-- The job hash fields of a new job, from its packed options; also returns its concurrency
-- key and unique key (nil when unset).
local function job_fields(batch, id, task, payload, opts)
  local fields = {'task', task, 'payload', payload, 'priority',
    fmt(tonumber(opts[OPT.priority]) or 0), 'enqueued', fmt(batch.now), 'attempts', '0'}
  add_optional(fields, opts)
  local ckey = opts[OPT.ckey]
  if ckey and ckey ~= '' then
    fields[#fields + 1] = 'ckey'
    fields[#fields + 1] = ckey
    fields[#fields + 1] = 'climit'
    fields[#fields + 1] = opts[OPT.climit]
  else
    ckey = nil
  end
  local ukey = opts[OPT.ukey]
  if ukey and ukey ~= '' then
    fields[#fields + 1] = 'ukey'
    fields[#fields + 1] = ukey
    if opts[OPT.urunning] == '1' then
      fields[#fields + 1] = 'urun'
      fields[#fields + 1] = '1'
    end
  else
    ukey = nil
  end
  return fields, ckey, ukey
end

-- A job of priority 0 joins fifo, at the end of the batch, in order.
local function push_fifo(batch, id)
  batch.fifo_n = batch.fifo_n + 1
  batch.fifo[batch.fifo_n] = id
end

-- A job joins the ready jobs: fifo or ready.
local function queue_ready(batch, id, priority)
  if priority == 0 then
    push_fifo(batch, id)
  else
    redis.call('ZADD', batch.ready, ready_score(priority, redis.call('INCR', batch.seq)), id)
  end
  batch.woke = true
end

-- Options of a job that takes every default; read, never written.
local NO_OPTIONS = {}

-- A plain job's fresh record: the batch's enqueue time, then the job's run of the batch
-- from its options to its payload (ENQUEUED puts them last, in the record's order).
local function fresh_record(batch, jobs, bounds, at)
  return batch.stamp .. string.sub(jobs, bounds[at + 2 * ENQUEUED.id] + 1,
    bounds[at + 2 * ENQUEUED.payload])
end

-- Note a plain job of priority 0, with its fresh record, for finish_batch to write.
local function note_plain(batch, id, slot, record)
  local n = batch.plain_n + 1
  batch.plain_n = n
  batch.plain_ids[n] = id
  batch.plain_records[n] = record
  batch.plain_slots[n] = slot
  push_fifo(batch, id)
end

-- Of n ids, those that exist already (as a job hash or a fresh record), as a set: in the
-- usual case, one EXISTS and one HMGET per 1,000 jobs tell that none does.
local function existing_ids(batch, ids, n)
  local prefix, found = batch.prefix, {}
  -- One EXISTS of many keys per slice (EXISTS takes keys only: no call_in_slices).
  for first = 1, n, SLICE do
    local last = math.min(first + SLICE - 1, n)
    local keys = {}
    for i = first, last do
      keys[i - first + 1] = job_key(prefix, ids[i])
    end
    if redis.call('EXISTS', unpack(keys)) > 0 then
      for i = first, last do
        if redis.call('EXISTS', keys[i - first + 1]) == 1 then
          found[ids[i]] = true
        end
      end
    end
  end
  local records = hmget_many(batch.fresh, ids)
  for i = 1, n do
    if records[i] then
      found[ids[i]] = true
    end
  end
  return found
end

-- Whether a job of this id exists (a job hash or a fresh record). While jobs are handed off,
-- every id of the batch is looked up at the first ask, with existing_ids: a few calls for the
-- batch instead of two per job. (An id that comes twice is caught by batch.seen; one that
-- replace frees is forgotten there.)
local function job_exists(batch, jobs, bounds, id, key)
  if batch.handing then
    local known = batch.known
    if not known then
      local ids, n = {}, 0
      for at = 0, #bounds - 1, 2 * ENQUEUED_FIELDS do
        n = n + 1
        ids[n] = string.sub(jobs, bounds[at + ID_FIRST], bounds[at + ID_LAST])
      end
      known = existing_ids(batch, ids, n)
      batch.known = known
    end
    return known[id] == true
  end
  return redis.call('EXISTS', key) == 1 or redis.call('HEXISTS', batch.fresh, id) == 1
end

-- With the option replace: a finished job of this id (done, dead, cancelled or aborted) is
-- deleted, so that the new one takes its id. A job that waits or runs is kept.
local function replace_finished(prefix, id)
  local key = job_key(prefix, id)
  if FINAL_STATES[redis.call('HGET', key, 'state')] then
    redis.call('ZREM', dead_key(prefix), id)
    redis.call('ZREM', done_key(prefix), id)
    redis.call('DEL', key)
  end
end

-- Add the job whose bounds follow `at` in a parsed batch; returns 1 (added), 0 (its id
-- exists) or the id holding its unique key. Fields are cut out of the batch only when
-- needed: a plain ready job stores its record (options, task, payload) as the run of the
-- batch it came in, behind the batch's enqueue time. A plain job of priority 0 (most jobs)
-- is only noted here, with 1 for its reply; finish_batch writes all of them with a few
-- calls, and turns the reply of one whose id exists into 0 (slot: its place in the reply).
local function add_job(batch, jobs, bounds, at, slot)
  local sub = string.sub
  local prefix = batch.prefix
  local id = sub(jobs, bounds[at + ID_FIRST], bounds[at + ID_LAST])
  if batch.seen[id] then
    return 0
  end
  batch.seen[id] = true
  local opts = NO_OPTIONS
  if bounds[at + OPTIONS_LAST] >= bounds[at + OPTIONS_FIRST] then
    opts = unpack_fields(sub(jobs, bounds[at + OPTIONS_FIRST], bounds[at + OPTIONS_LAST]))
    if opts[OPT.replace] == '1' then
      replace_finished(prefix, id)
      if batch.known then
        batch.known[id] = nil
      end
    end
  end
  local now = batch.now
  local priority = tonumber(opts[O_PRIORITY]) or 0
  local due = tonumber(opts[O_AT]) or 0
  if due <= 0 and (tonumber(opts[O_DELAY]) or 0) > 0 then
    due = now + tonumber(opts[O_DELAY])
  end
  local plain = (opts[O_CKEY] or '') == '' and (opts[O_UKEY] or '') == ''
  if batch.handing and not has_idle_worker(batch) then
    batch.handing = false
  end
  -- Stored as a fresh record, ready now (see includes/records.lua).
  local fresh = plain and due <= now and not batch.handing
  if fresh and priority == 0 then
    note_plain(batch, id, slot, fresh_record(batch, jobs, bounds, at))
    return 1
  end
  local key = job_key(prefix, id)
  if job_exists(batch, jobs, bounds, id, key) then
    return 0
  end
  -- A job with no options at all, handed off with its inbox entry cut from the batch's own
  -- packing: its id field, then its task and payload fields (ENQUEUED puts them last,
  -- LEASED first).
  if batch.handing and opts == NO_OPTIONS then
    local worker = next_idle_worker(batch)
    if worker then
      hand_off_plain(batch, worker, id, key,
        sub(jobs, bounds[at + 2 * ENQUEUED.task - 1], bounds[at + 2 * ENQUEUED.task]),
        sub(jobs, bounds[at + 2 * ENQUEUED.payload - 1], bounds[at + 2 * ENQUEUED.payload]),
        sub(jobs, at == 0 and 1 or bounds[at] + 1, bounds[at + ID_LAST]),
        sub(jobs, bounds[at + 2 * ENQUEUED.options] + 1, bounds[at + 2 * ENQUEUED.payload]))
      return 1
    end
    batch.handing = false
    note_plain(batch, id, slot, fresh_record(batch, jobs, bounds, at))
    return 1
  end
  if fresh then
    if redis.call('HSETNX', batch.fresh, id, fresh_record(batch, jobs, bounds, at)) == 0 then
      return 0
    end
    queue_ready(batch, id, priority)
    return 1
  end
  local task = packed_field(jobs, bounds, at, ENQUEUED.task)
  local payload = packed_field(jobs, bounds, at, ENQUEUED.payload)
  local fields, ckey, ukey = job_fields(batch, id, task, payload, opts)
  if ukey then
    local holder = unique_holder(prefix, ukey)
    if holder then
      return holder
    end
    local window = tonumber(opts[OPT.uwindow])
    if window then
      redis.call('SET', unique_key(prefix, ukey), id, 'PX', window)
    else
      redis.call('SET', unique_key(prefix, ukey), id)
    end
  end
  if due > now then
    fields[#fields + 1] = 'state'
    fields[#fields + 1] = 'scheduled'
    fields[#fields + 1] = 'due'
    fields[#fields + 1] = fmt(due)
    redis.call('HSET', key, unpack(fields))
    if add_scheduled(batch.scheduled, id, due) then
      batch.woke = true
    end
    return 1
  end
  local worker = nil
  if batch.handing and not ckey then
    worker = next_idle_worker(batch)
  end
  if worker then
    hand_off(batch, worker, id, key, fields, opts)
    return 1
  end
  batch.handing = false
  if plain then
    redis.call('HSET', batch.fresh, id, fresh_record(batch, jobs, bounds, at))
  else
    fields[#fields + 1] = 'state'
    fields[#fields + 1] = 'ready'
    redis.call('HSET', key, unpack(fields))
  end
  queue_ready(batch, id, priority)
  return 1
end

-- Write the plain jobs noted by add_job (setting the reply of those whose id exists to 0),
-- push the batch's ready ids of priority 0 in order, and wake idle workers if jobs came.
local function finish_batch(batch, reply)
  local ids, fifo = batch.plain_ids, batch.fifo
  if batch.plain_n > 0 then
    local existing = existing_ids(batch, ids, batch.plain_n)
    local pairs_, n = {}, 0
    local records = batch.plain_records
    for i = 1, batch.plain_n do
      local id = ids[i]
      if existing[id] then
        reply[batch.plain_slots[i]] = 0
      else
        pairs_[n + 1] = id
        pairs_[n + 2] = records[i]
        n = n + 2
      end
    end
    call_in_slices('HSET', batch.fresh, pairs_)
    if next(existing) then
      local kept = {}
      for _, id in ipairs(fifo) do
        -- An id of this batch that exists is in fifo only as a plain job that was not added.
        if not existing[id] then
          kept[#kept + 1] = id
        end
      end
      fifo = kept
    end
    if n > 0 then
      batch.woke = true
    end
  end
  deliver_handed(batch)
  if #fifo > 0 then
    call_in_slices('RPUSH', fifo_key(batch.prefix), fifo)
  end
  if batch.woke then
    wake(batch.wake)
  end
end
