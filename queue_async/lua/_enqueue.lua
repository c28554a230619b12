-- _enqueue.lua: adding jobs, shared by enqueue.lua and cron.lua (prepended after
-- _gates.lua). Fields and replies are described in enqueue.lua.
-- Minimum server: Redis 5.0.

-- The state one script call shares between the jobs it adds. keys: ready, scheduled, wake,
-- seq, idle, active (enqueue.lua's KEYS[1..6]).
local function new_batch(prefix, keys)
  local batch = {
    prefix = prefix, ready = keys[1], scheduled = keys[2], wake = keys[3], seq = keys[4],
    idle = keys[5], active = keys[6], now = now_ms(), woke = false,
    fresh = fresh_key(prefix), fifo = {},
    -- Hand-off skips the gates (_gates.lua): only while none is configured.
    handing = ready_count(prefix, keys[1]) == 0
      and redis.call('EXISTS', prefix .. 'gates') == 0,
  }
  batch.stamp = pack({fmt(batch.now)})
  return batch
end

-- The job holding a unique key, if it still waits (or runs, when it asked to hold then).
local function unique_holder(prefix, ukey)
  local holder = redis.call('GET', prefix .. 'unique:' .. ukey)
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
  local fields = {'task', task, 'payload', payload, 'priority', fmt(tonumber(opts[1]) or 0),
    'enqueued', fmt(batch.now), 'attempts', '0'}
  for i, name in ipairs(OPTIONAL) do
    local value = opts[3 + i]
    if value and value ~= '' then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  local ckey = opts[7]
  if ckey and ckey ~= '' then
    fields[#fields + 1] = 'ckey'
    fields[#fields + 1] = ckey
    fields[#fields + 1] = 'climit'
    fields[#fields + 1] = opts[8]
  else
    ckey = nil
  end
  local ukey = opts[9]
  if ukey and ukey ~= '' then
    fields[#fields + 1] = 'ukey'
    fields[#fields + 1] = ukey
    if opts[11] == '1' then
      fields[#fields + 1] = 'urun'
      fields[#fields + 1] = '1'
    end
  else
    ukey = nil
  end
  return fields, ckey, ukey
end

-- A job joins the ready jobs: fifo (at the end of the batch, in order) or ready.
local function queue_ready(batch, id, priority)
  if priority == 0 then
    batch.fifo[#batch.fifo + 1] = id
  else
    redis.call('ZADD', batch.ready, ready_score(priority, redis.call('INCR', batch.seq)), id)
  end
  batch.woke = true
end

-- Add the job at bounds[at + 1 .. at + 8] of a parsed batch; returns 1 (added), 0 (its id
-- exists) or the id holding its unique key. Fields are cut out of the batch only when
-- needed: a plain ready job stores its record (options, task, payload) as the run of the
-- batch it came in, behind the batch's enqueue time.
local function add_job(batch, jobs, bounds, at)
  local sub = string.sub
  local prefix = batch.prefix
  local id = sub(jobs, bounds[at + 1], bounds[at + 2])
  local key = job_key(prefix, id)
  if redis.call('EXISTS', key) == 1 then
    return 0
  end
  local opts = {}
  if bounds[at + 4] >= bounds[at + 3] then
    opts = unpack_fields(sub(jobs, bounds[at + 3], bounds[at + 4]))
  end
  local now = batch.now
  local priority = tonumber(opts[1]) or 0
  local due = tonumber(opts[3]) or 0
  if due <= 0 and (tonumber(opts[2]) or 0) > 0 then
    due = now + tonumber(opts[2])
  end
  local plain = (opts[7] or '') == '' and (opts[9] or '') == ''
  local function record()
    return batch.stamp .. sub(jobs, bounds[at + 2] + 1, bounds[at + 8])
  end
  if plain and due <= now and not batch.handing then
    if redis.call('HSETNX', batch.fresh, id, record()) == 0 then
      return 0
    end
    queue_ready(batch, id, priority)
    return 1
  end
  if redis.call('HEXISTS', batch.fresh, id) == 1 then
    return 0
  end
  local task, payload = sub(jobs, bounds[at + 5], bounds[at + 6]), sub(jobs, bounds[at + 7],
    bounds[at + 8])
  local fields, ckey, ukey = job_fields(batch, id, task, payload, opts)
  if ukey then
    local holder = unique_holder(prefix, ukey)
    if holder then
      return holder
    end
    local window = tonumber(opts[10])
    if window then
      redis.call('SET', prefix .. 'unique:' .. ukey, id, 'PX', window)
    else
      redis.call('SET', prefix .. 'unique:' .. ukey, id)
    end
  end
  if due > now then
    fields[#fields + 1] = 'state'
    fields[#fields + 1] = 'scheduled'
    fields[#fields + 1] = 'due'
    fields[#fields + 1] = fmt(due)
    redis.call('HSET', key, unpack(fields))
    local first = redis.call('ZRANGE', batch.scheduled, 0, 0, 'WITHSCORES')
    redis.call('ZADD', batch.scheduled, fmt(due), id)
    -- An idle worker blocks until the earliest due time it knew: wake it to look again.
    if #first == 0 or due < tonumber(first[2]) then
      batch.woke = true
    end
    return 1
  end
  local worker, lease_ms = nil, nil
  if batch.handing and not ckey then
    worker, lease_ms = next_idle_worker(prefix, batch.idle)
  end
  if worker then
    hand_off(prefix, batch.active, worker, lease_ms, id, key, fields, opts, now,
      redis.call('INCR', batch.seq))
    return 1
  end
  batch.handing = false
  if plain then
    redis.call('HSET', batch.fresh, id, record())
  else
    fields[#fields + 1] = 'state'
    fields[#fields + 1] = 'ready'
    redis.call('HSET', key, unpack(fields))
  end
  queue_ready(batch, id, priority)
  return 1
end

local function finish_batch(batch)
  local fifo = batch.fifo
  for first = 1, #fifo, 1000 do
    redis.call('RPUSH', fifo_key(batch.prefix), unpack(fifo, first, math.min(first + 999, #fifo)))
  end
  if batch.woke then
    wake(batch.wake)
  end
end
