-- includes/handoff.lua: leasing a new job straight to an idle worker. A worker with free
-- slots that finds nothing to take registers as idle (lease.lua): its id joins the idle
-- list (in KEYS) and its idle hash (idle_key) says how many jobs it takes and its lease.
-- A job handed to it is written active at once and packed into its inbox (inbox_key),
-- which the worker blocks on.
-- needs: format, keys, packed, wire
-- provides: next_idle_worker hand_off
-- Minimum server: Redis 5.0.

-- Take the next idle worker in rotation that still has a free slot; nil if none.
-- Returns its id, lease length (ms) and lease grace (ms, see recover_expired).
local function next_idle_worker(prefix, idle)
  while true do
    local worker = redis.call('LPOP', idle)
    if not worker then
      return nil
    end
    local key = idle_key(prefix, worker)
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

-- Lease a new job to an idle worker: its hash (fields: as job_fields in includes/batch.lua
-- builds them) is written active, and its packed fields (as lease.lua returns them) go to
-- the worker's inbox. opts: the job's options, unpacked (see enqueue.lua).
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
  local inbox = inbox_key(prefix, worker)
  local entry = {}
  entry[LEASED.id], entry[LEASED.task], entry[LEASED.payload] = id, fields[2], fields[4]
  entry[LEASED.attempts], entry[LEASED.enqueued], entry[LEASED.token] = '1', started, token
  entry[LEASED.retries] = opts[OPT.retries] or ''
  entry[LEASED.timeout] = opts[OPT.timeout] or ''
  entry[LEASED.keep] = opts[OPT.keep] or ''
  entry[LEASED.headers] = opts[OPT.headers] or ''
  entry[LEASED.ready] = started
  redis.call('RPUSH', inbox, pack(entry))
  -- Entries outlive their use only if the worker died; by then the lease has expired.
  redis.call('PEXPIRE', inbox, lease_ms)
end
