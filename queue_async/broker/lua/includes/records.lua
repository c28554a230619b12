-- includes/records.lua: how a job is stored, and its fresh record.
-- Fresh jobs: a queued backlog is most of a queue's memory, so a job enqueued ready (without
--   unique or concurrency key) is one field of the hash fresh, id -> record, instead of a job
--   hash of its own. The record is packed fields: enqueued (ms), options (packed as in
--   enqueue.lua, "" for defaults), task, payload. The job gets its hash when it leaves that
--   form: leased, held by a gate or cancelled (see materialize).
-- Job hash fields: task payload state priority enqueued due attempts token worker started
--   finished error result retries timeout keep stalls (waiters: versions before
--   watched_key flagged an awaited job with it). A finished job's token is
--   "" (no lease token is empty).
-- States: scheduled ready active done dead cancelled aborted.
-- needs: format, keys, packed, wire
-- provides: record_parts read_record add_optional record_hash materialize
-- Minimum server: Redis 5.0 (multi-field HSET).

-- A fresh job's record as its four parts: enqueued, packed options ("" for defaults), task,
-- payload. No table: this runs for every job leased.
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

-- Append to a job hash's fields those OPTIONAL options that are set.
local function add_optional(fields, opts)
  for _, name in ipairs(OPTIONAL) do
    local value = opts[OPT[name]]
    if value and value ~= '' then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
end

-- The job hash fields of a fresh job's record, but for state and attempts.
local function record_hash(enqueued, opts, task, payload)
  local fields = {'task', task, 'payload', payload, 'enqueued', enqueued}
  local priority = tonumber(opts[OPT.priority]) or 0
  if priority ~= 0 then
    fields[#fields + 1] = 'priority'
    fields[#fields + 1] = fmt(priority)
  end
  add_optional(fields, opts)
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
