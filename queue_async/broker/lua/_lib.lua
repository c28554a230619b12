-- _lib.lua: helpers shared by every script. _scripts.py puts this file first in the function
-- library (each script a function of it) and, for servers without functions, in front of
-- each script loaded for EVALSHA: either way a script is still one atomic call.
-- Uses no KEYS or ARGV of its own: callers pass key names in.
-- Per-worker keys (built here, same slot): idle:<worker> hash {free, lease} with a TTL while
--   the worker blocks idle; inbox:<worker> list of jobs handed straight to it.
-- Ready jobs: ids of priority 0 wait in the list fifo (oldest first), the others in the
--   sorted set ready (see ready_score); jobs of a priority below 0 go first, then fifo.
-- Fresh jobs: a queued backlog is most of a queue's memory, so a job enqueued ready (without
--   unique or concurrency key) is one field of the hash fresh, id -> record, instead of a job
--   hash of its own. The record is packed fields: enqueued (ms), options (packed as in
--   enqueue.lua, "" for defaults), task, payload. The job gets its hash when it leaves that
--   form: leased, held by a gate, cancelled or watched (see materialize).
-- Job hash fields: task payload state priority enqueued due attempts token worker started
--   finished error result retries timeout keep stalls waiters. A finished job's token is
--   "" (no lease token is empty).
-- States: scheduled ready active done dead cancelled.
-- Minimum server: Redis 5.0 / any Valkey (ZPOPMIN, multi-field HSET).

-- Defined in _gates.lua (appended after this file); declared here so that the helpers
-- below can call it.
local leave_gates

-- Wire formats, each named once; queue_async/broker/wire.py has the same names, and
-- tests/lua/test_wire.py holds the two equal.
-- Places in a job's packed options (see enqueue.lua); "" or absent where the default applies.
local OPT = {priority = 1, delay = 2, at = 3, retries = 4, timeout = 5, keep = 6, ckey = 7,
  climit = 8, ukey = 9, uwindow = 10, urunning = 11, headers = 12}
-- Options stored as job hash fields of the same name when set.
local OPTIONAL = {'retries', 'timeout', 'keep', 'headers'}
-- Places of one leased job's fields, in lease.lua's reply and in a worker's inbox.
local LEASED = {id = 1, task = 2, payload = 3, attempts = 4, enqueued = 5, retries = 6,
  timeout = 7, keep = 8, token = 9, headers = 10}
local LEASED_FIELDS = 10
-- One job in enqueue.lua's batch, and one in complete.lua's.
local ENQUEUED = {id = 1, options = 2, task = 3, payload = 4}
local ENQUEUED_FIELDS = 4
local COMPLETED = {id = 1, token = 2, result = 3, keep = 4}
local COMPLETED_FIELDS = 4
-- fail.lua's retry delays that mean "no next try".
local FAIL_DEAD, FAIL_ABORTED = -1, -2

-- The server's clock in integer milliseconds, so workers with skewed clocks agree.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- ZADD of {score, member, ...} in slices: unpack() of thousands of values overflows Lua's C stack.
local function zadd_pairs(key, pairs)
  for first = 1, #pairs, 1000 do
    redis.call('ZADD', key, unpack(pairs, first, math.min(first + 999, #pairs)))
  end
end

-- HMGET of many fields in slices (as zadd_pairs); false for each one missing.
local function hmget_many(key, fields)
  local values = {}
  for first = 1, #fields, 1000 do
    local part = redis.call('HMGET', key, unpack(fields, first, math.min(first + 999, #fields)))
    for _, value in ipairs(part) do
      values[#values + 1] = value
    end
  end
  return values
end

-- Scores are integers up to 2^53; tostring() would print them in exponent form.
local function fmt(n)
  return string.format('%.0f', n)
end

-- Ready score: strict priority (lower first), FIFO within a priority by sequence number.
local PRIORITY_SHIFT = 4294967296
local function ready_score(priority, seq)
  return fmt(priority * PRIORITY_SHIFT + (seq % PRIORITY_SHIFT))
end

-- Idle workers block on the wake list; one marker at most, so it never grows.
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end

-- Add a job to the scheduled set at ``due`` (ms). True if it is now the first due: idle workers
-- block until the earliest due time they knew, so the caller must wake one to look again.
local function add_scheduled(scheduled, id, due)
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  redis.call('ZADD', scheduled, fmt(due), id)
  return #first == 0 or due < tonumber(first[2])
end

local function job_key(prefix, id)
  return prefix .. 'job:' .. id
end

local function fifo_key(prefix)
  return prefix .. 'fifo'
end

local function fresh_key(prefix)
  return prefix .. 'fresh'
end

-- Cancelled jobs of priority 0 stay in fifo as tombstones (taking one out of a long list is
-- O(n)); meta's "tombstones" counts them, and take_ready drops them as it meets them.
local function tombstones(prefix)
  return tonumber(redis.call('HGET', prefix .. 'meta', 'tombstones')) or 0
end

-- How many jobs are ready (fifo and ready together, less the tombstones in fifo).
local function ready_count(prefix, ready)
  return redis.call('LLEN', fifo_key(prefix)) + redis.call('ZCARD', ready) - tombstones(prefix)
end

-- Take up to count ready jobs in order: priorities below 0, fifo, the rest. Returns their
-- ids and their ready scores (false for jobs from fifo, which have none).
local function take_ready(prefix, ready, count)
  local ids, scores = {}, {}
  local function add(popped)
    for i = 1, #popped, 2 do
      ids[#ids + 1] = popped[i]
      scores[#ids] = popped[i + 1]
    end
  end
  if redis.call('EXISTS', ready) == 1 then
    add(redis.call('ZRANGEBYSCORE', ready, '-inf', '(0', 'WITHSCORES', 'LIMIT', 0, count))
    for first = 1, #ids, 1000 do
      redis.call('ZREM', ready, unpack(ids, first, math.min(first + 999, #ids)))
    end
  end
  if #ids < count then
    local fifo = fifo_key(prefix)
    local n = count - #ids
    for _, id in ipairs(redis.call('LRANGE', fifo, 0, n - 1)) do
      ids[#ids + 1] = id
      scores[#ids] = false
    end
    redis.call('LTRIM', fifo, n, -1)
  end
  if #ids < count then
    add(redis.call('ZPOPMIN', ready, count - #ids))
  end
  return ids, scores
end

-- Tell result() waiters that the job reached a final state: its id on the queue's one
-- "done" channel, which every waiting process subscribes to once (see _waiters.py).
local function announce(prefix, key, id)
  if redis.call('HEXISTS', key, 'waiters') == 1 then
    redis.call('PUBLISH', prefix .. 'done', id)
  end
end

-- Put an existing job hash back among the ready jobs, behind those of its priority.
local function push_ready(prefix, ready, seq_key, id, key)
  local priority = tonumber(redis.call('HGET', key, 'priority')) or 0
  if priority == 0 then
    redis.call('RPUSH', fifo_key(prefix), id)
  else
    redis.call('ZADD', ready, ready_score(priority, redis.call('INCR', seq_key)), id)
  end
  redis.call('HSET', key, 'state', 'ready')
end

-- Put a held job back in front of the ready jobs of its priority, with the ready score it
-- was held under.
local function return_ready(prefix, ready, id, score)
  if math.floor(tonumber(score) / PRIORITY_SHIFT) == 0 then
    redis.call('LPUSH', fifo_key(prefix), id)
  else
    redis.call('ZADD', ready, score, id)
  end
end

-- Take a ready job out of ready, or leave it in fifo as a tombstone (it was cancelled; the
-- caller sets its state, which is what tells a tombstone).
local function remove_ready(prefix, ready, id)
  if redis.call('ZREM', ready, id) == 0 then
    redis.call('HINCRBY', prefix .. 'meta', 'tombstones', 1)
  end
end

-- A job reached a final state: its unique key (see enqueue.lua) no longer points at it.
-- ukey: the job's unique key if the caller read it already, else nil.
local function drop_unique(prefix, key, id, ukey)
  ukey = ukey or redis.call('HGET', key, 'ukey')
  if ukey then
    local lock = prefix .. 'unique:' .. ukey
    if redis.call('GET', lock) == id then
      redis.call('DEL', lock)
    end
  end
end

-- Move a job to the dead set with its reason; the hash is kept until the dead set is trimmed.
local function to_dead(prefix, dead, id, key, now, reason)
  redis.call('ZADD', dead, fmt(now), id)
  redis.call('HSET', key, 'state', 'dead', 'error', reason, 'finished', fmt(now))
  redis.call('HDEL', key, 'token', 'due')
  drop_unique(prefix, key, id)
  announce(prefix, key, id)
end

-- Drop dead jobs older than max_age_ms and beyond max_len, oldest first, with their hashes.
local function trim_dead(prefix, dead, now, max_age_ms, max_len)
  local old = redis.call('ZRANGEBYSCORE', dead, '-inf', fmt(now - max_age_ms), 'LIMIT', 0, 1000)
  for _, id in ipairs(old) do
    redis.call('DEL', job_key(prefix, id))
    redis.call('ZREM', dead, id)
  end
  local excess = redis.call('ZCARD', dead) - max_len
  if excess > 0 then
    local ids = redis.call('ZRANGE', dead, 0, math.min(excess, 1000) - 1)
    for _, id in ipairs(ids) do
      redis.call('DEL', job_key(prefix, id))
      redis.call('ZREM', dead, id)
    end
  end
end

-- Move due scheduled jobs (delayed jobs and retries) to ready; at most `limit` per call.
local function promote_due(prefix, scheduled, ready, seq_key, now, limit)
  local ids = redis.call('ZRANGEBYSCORE', scheduled, '-inf', fmt(now), 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local key = job_key(prefix, id)
    redis.call('ZREM', scheduled, id)
    if redis.call('EXISTS', key) == 1 then
      push_ready(prefix, ready, seq_key, id, key)
      redis.call('HDEL', key, 'due')
    end
  end
  return #ids
end

-- Expired leases (their worker died or stalled) go back to ready, or to dead after
-- more than max_stalls expiries; at most `limit` per call. Returns how many moved.
-- A lease past its deadline is first only suspected: the job gets one grace period (its
-- 'grace' field, written at lease time from the holder's heartbeat) for its holder to show it
-- is alive, and is recovered only if the deadline passes again without a heartbeat. A step
-- of the server clock makes every lease look expired at once; without this, jobs whose
-- workers are alive and running them would run a second time at once elsewhere. Jobs leased
-- with no grace (0, or before the field existed) are recovered at the first sight.
local function recover_expired(prefix, active, ready, seq_key, dead, now, max_stalls, limit)
  local ids = redis.call('ZRANGEBYSCORE', active, '-inf', fmt(now), 'LIMIT', 0, limit)
  local recovered = 0
  for _, id in ipairs(ids) do
    local key = job_key(prefix, id)
    local f = redis.call('HMGET', key, 'state', 'suspect', 'grace')
    if f[1] and not f[2] and f[3] and f[3] ~= '0' then
      redis.call('HSET', key, 'suspect', fmt(now))
      redis.call('ZADD', active, 'XX', fmt(now + tonumber(f[3])), id)
    else
      redis.call('ZREM', active, id)
      if f[1] then
        recovered = recovered + 1
        leave_gates(prefix, ready, key)
        local stalls = redis.call('HINCRBY', key, 'stalls', 1)
        redis.call('HDEL', key, 'token', 'worker', 'suspect')
        if stalls > max_stalls then
          to_dead(prefix, dead, id, key, now,
            'lease expired ' .. stalls .. ' times: the worker running it died or stalled')
          redis.call('HINCRBY', prefix .. 'meta', 'failed', 1)
        else
          push_ready(prefix, ready, seq_key, id, key)
        end
      end
    end
  end
  return recovered
end

-- Milliseconds until the next scheduled job is due or the next lease expires; -1 if none.
local function next_due_in(scheduled, active, now)
  local best = -1
  for _, zset in ipairs({scheduled, active}) do
    local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
    if #first == 2 then
      local wait = math.max(0, tonumber(first[2]) - now)
      if best < 0 or wait < best then
        best = wait
      end
    end
  end
  return best
end

-- Hand a job back to ready (worker shutdown): the interrupted try is not counted.
local function release_job(prefix, active, ready, seq_key, id, key)
  redis.call('ZREM', active, id)
  leave_gates(prefix, ready, key)
  redis.call('HDEL', key, 'token', 'worker', 'suspect')
  redis.call('HINCRBY', key, 'attempts', -1)
  push_ready(prefix, ready, seq_key, id, key)
end

-- Fields joined as "<length>:<bytes>" each, binary-safe (queue_async/_wire.py is the same
-- format in Python). unpack_fields stops at anything malformed.
local function unpack_fields(s)
  local fields, pos = {}, 1
  while pos <= #s do
    local colon = string.find(s, ':', pos, true)
    local length = colon and tonumber(string.sub(s, pos, colon - 1))
    if not length then
      break
    end
    fields[#fields + 1] = string.sub(s, colon + 1, colon + length)
    pos = colon + length + 1
  end
  return fields
end

local function pack(fields)
  local parts = {}
  for i, field in ipairs(fields) do
    parts[i] = #field .. ':' .. field
  end
  return table.concat(parts)
end

-- Split packed items of `per_item` fields each (pack's format, one item after another) into
-- the bounds of their fields: first and last byte of each field, all in one flat table (a
-- table per item costs more than the rest). Everything is read before the caller changes
-- anything, so that malformed input changes nothing: returns nil and the byte where it went
-- wrong.
local function parse_packed(s, per_item)
  local bounds = {}
  local n = 0
  local pos = 1
  local size = #s
  local find, sub = string.find, string.sub
  while pos <= size do
    for _ = 1, per_item do
      local colon = find(s, ':', pos, true)
      local length = colon and tonumber(sub(s, pos, colon - 1))
      if not length or colon + length > size then
        return nil, pos
      end
      bounds[n + 1] = colon + 1
      bounds[n + 2] = colon + length
      n = n + 2
      pos = colon + length + 1
    end
  end
  return bounds
end

-- Field `place` (e.g. ENQUEUED.task) of the item whose bounds start after `at` in a
-- parse_packed result.
local function packed_field(s, bounds, at, place)
  return string.sub(s, bounds[at + 2 * place - 1], bounds[at + 2 * place])
end

-- The field of packed fields (see pack) that starts at pos, and where the next one starts.
local function field_at(s, pos)
  local colon = string.find(s, ':', pos, true)
  local length = tonumber(string.sub(s, pos, colon - 1))
  return string.sub(s, colon + 1, colon + length), colon + length + 1
end

-- A fresh job's record (see the top of this file) as its four parts: enqueued, packed
-- options ("" for defaults), task, payload. No table: this runs for every job leased.
local function record_parts(record)
  local enqueued, packed, task, pos
  enqueued, pos = field_at(record, 1)
  packed, pos = field_at(record, pos)
  task, pos = field_at(record, pos)
  return enqueued, packed, task, (field_at(record, pos))
end

-- The same, with the options unpacked (a table, empty for defaults).
local function read_record(record)
  local enqueued, packed, task, payload = record_parts(record)
  local opts = {}
  if packed ~= '' then
    opts = unpack_fields(packed)
  end
  return enqueued, opts, task, payload
end

-- The job hash fields of a fresh job's record, but for state and attempts.
local function record_hash(enqueued, opts, task, payload)
  local fields = {'task', task, 'payload', payload, 'enqueued', enqueued}
  local priority = tonumber(opts[OPT.priority]) or 0
  if priority ~= 0 then
    fields[#fields + 1] = 'priority'
    fields[#fields + 1] = fmt(priority)
  end
  for _, name in ipairs(OPTIONAL) do
    local value = opts[OPT[name]]
    if value and value ~= '' then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  return fields
end

-- Give a fresh job its job hash (state ready), so that it can change like any other job.
-- Returns false if the job is not fresh.
local function materialize(prefix, id, key)
  local fresh = fresh_key(prefix)
  local record = redis.call('HGET', fresh, id)
  if not record then
    return false
  end
  redis.call('HDEL', fresh, id)
  redis.call('HSET', key, 'state', 'ready', 'attempts', '0', unpack(record_hash(read_record(record))))
  return true
end

-- Take the next idle worker in rotation that still has a free slot; nil if none.
-- Returns its id, lease length (ms) and lease grace (ms, see recover_expired).
local function next_idle_worker(prefix, idle)
  while true do
    local worker = redis.call('LPOP', idle)
    if not worker then
      return nil
    end
    local key = prefix .. 'idle:' .. worker
    local f = redis.call('HMGET', key, 'free', 'lease', 'grace')
    local free = tonumber(f[1])
    if free and free > 0 then
      if free > 1 then
        redis.call('HSET', key, 'free', free - 1)
        redis.call('RPUSH', idle, worker)
      else
        redis.call('DEL', key)
      end
      return worker, tonumber(f[2]), f[3]
    end
  end
end

-- Lease a new job straight to an idle worker: its hash (fields: as job_fields in
-- _enqueue.lua builds them) is written active at once, and its packed fields (as lease.lua
-- returns them) go to the worker's inbox, which the worker blocks on. opts: the job's
-- options, unpacked (see enqueue.lua).
local function hand_off(prefix, active, worker, lease_ms, grace, id, key, fields, opts, now,
    seq)
  local token = worker .. ':h' .. seq
  local started = fmt(now)
  -- After job_fields' 'attempts' '0': HSET applies pairs in order, so these win.
  local n = #fields
  fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = 'state', 'active', 'attempts', '1'
  fields[n + 5], fields[n + 6], fields[n + 7], fields[n + 8] = 'token', token, 'worker', worker
  fields[n + 9], fields[n + 10], fields[n + 11], fields[n + 12] = 'started', started, 'grace',
    grace or '0'
  redis.call('HSET', key, unpack(fields))
  redis.call('ZADD', active, fmt(now + lease_ms), id)
  local inbox = prefix .. 'inbox:' .. worker
  local entry = {}
  entry[LEASED.id], entry[LEASED.task], entry[LEASED.payload] = id, fields[2], fields[4]
  entry[LEASED.attempts], entry[LEASED.enqueued], entry[LEASED.token] = '1', started, token
  entry[LEASED.retries] = opts[OPT.retries] or ''
  entry[LEASED.timeout] = opts[OPT.timeout] or ''
  entry[LEASED.keep] = opts[OPT.keep] or ''
  entry[LEASED.headers] = opts[OPT.headers] or ''
  redis.call('RPUSH', inbox, pack(entry))
  -- Entries outlive their use only if the worker died; by then the lease has expired.
  redis.call('PEXPIRE', inbox, lease_ms)
end
