-- enqueue.lua: add one or more jobs. A job whose id already exists is left untouched.
-- KEYS[1] ready      sorted set, score priority*2^32 + seq
-- KEYS[2] scheduled  sorted set, score due time (ms)
-- KEYS[3] wake       list idle workers block on
-- KEYS[4] seq        counter for FIFO order
-- KEYS[5] idle       list of workers blocked idle (see lease.lua), in rotation
-- KEYS[6] active     sorted set, score lease deadline (ms)
-- A ready job is handed straight to an idle worker (leased to it, packed into its inbox)
-- while no other job waits in ready: the worker then starts it without a lease round trip.
-- ARGV[1] key prefix of the queue, "<prefix>:{<queue>}:"
-- ARGV[2..] four fields per job: id, task, payload (codec bytes), options
--   options: "" for all defaults, else packed fields (see pack in _lib.lua), in order:
--   priority (integer), delay (ms from now, "" = none), at (epoch ms, "" = none; wins over
--   delay), retries, timeout (ms), keep (result TTL ms), concurrency key, concurrency
--   limit, unique key, unique window (ms), "1" if the unique key also holds while the job
--   runs: each "" when the default applies
-- Unique keys: unique:<key> names the job holding the key. A job whose key is held by a job
--   that is ready or scheduled (or running, if that job asked so) is not enqueued: the reply
--   names the holder instead. The key lasts at most the window, and is dropped when its job
--   reaches a final state.
-- Reply: one per job: 1 enqueued (ready, scheduled or handed off), 0 an existing job has that
--   id, or the id of the job that holds its unique key.
-- Minimum server: Redis 5.0.
local prefix = ARGV[1]
local now = now_ms()
local reply = {}
local woke = false
-- Hand-off skips the gates (_gates.lua): only while none is configured.
local handing = redis.call('ZCARD', KEYS[1]) == 0
  and redis.call('EXISTS', prefix .. 'gates') == 0
local optional = {'retries', 'timeout', 'keep'}
for b = 2, #ARGV, 4 do
  local id = ARGV[b]
  local key = job_key(prefix, id)
  local opts = {}
  if ARGV[b + 3] ~= '' then
    opts = unpack_fields(ARGV[b + 3])
  end
  local ukey = opts[9]
  local holder = nil
  if ukey and ukey ~= '' then
    holder = redis.call('GET', prefix .. 'unique:' .. ukey)
    if holder then
      local h = redis.call('HMGET', job_key(prefix, holder), 'state', 'urun')
      if not (h[1] == 'ready' or h[1] == 'scheduled' or (h[1] == 'active' and h[2])) then
        holder = nil
      end
    end
  else
    ukey = nil
  end
  if redis.call('EXISTS', key) == 1 then
    reply[#reply + 1] = 0
  elseif holder then
    reply[#reply + 1] = holder
  else
    local priority = tonumber(opts[1]) or 0
    local delay = tonumber(opts[2]) or 0
    local at = tonumber(opts[3]) or 0
    local due = 0
    if at > 0 then
      due = at
    elseif delay > 0 then
      due = now + delay
    end
    local fields = {'task', ARGV[b + 1], 'payload', ARGV[b + 2], 'priority', fmt(priority),
      'enqueued', fmt(now), 'attempts', '0'}
    local ckey = opts[7]
    if ckey and ckey ~= '' then
      fields[#fields + 1] = 'ckey'
      fields[#fields + 1] = ckey
      fields[#fields + 1] = 'climit'
      fields[#fields + 1] = opts[8]
    else
      ckey = nil
    end
    if ukey then
      local lock = prefix .. 'unique:' .. ukey
      local window = tonumber(opts[10])
      if window then
        redis.call('SET', lock, id, 'PX', window)
      else
        redis.call('SET', lock, id)
      end
      fields[#fields + 1] = 'ukey'
      fields[#fields + 1] = ukey
      if opts[11] == '1' then
        fields[#fields + 1] = 'urun'
        fields[#fields + 1] = '1'
      end
    end
    for i, name in ipairs(optional) do
      local value = opts[3 + i]
      if value and value ~= '' then
        fields[#fields + 1] = name
        fields[#fields + 1] = value
      end
    end
    if due > now then
      fields[#fields + 1] = 'state'
      fields[#fields + 1] = 'scheduled'
      fields[#fields + 1] = 'due'
      fields[#fields + 1] = fmt(due)
      redis.call('HSET', key, unpack(fields))
      local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      redis.call('ZADD', KEYS[2], fmt(due), id)
      -- An idle worker blocks until the earliest due time it knew: wake it to look again.
      if #first == 0 or due < tonumber(first[2]) then
        woke = true
      end
    else
      redis.call('HSET', key, unpack(fields))
      local seq = redis.call('INCR', KEYS[4])
      local worker, lease_ms = nil, nil
      if handing and not ckey then
        worker, lease_ms = next_idle_worker(prefix, KEYS[5])
      end
      if worker then
        hand_off(prefix, KEYS[6], worker, lease_ms, id, key, now, seq)
      else
        handing = false
        redis.call('HSET', key, 'state', 'ready')
        redis.call('ZADD', KEYS[1], ready_score(priority, seq), id)
        woke = true
      end
    end
    reply[#reply + 1] = 1
  end
end
if woke then
  wake(KEYS[3])
end
return reply
