-- stats.lua: a queue's counts, latency and lifetime counters, as of one moment. Reads only:
-- it changes nothing (expired heartbeats are dropped by the next extend.lua, as ever).
-- KEYS[1] ready  KEYS[2] scheduled  KEYS[3] retrying  KEYS[4] active  KEYS[5] dead
-- KEYS[6] meta  KEYS[7] workers  KEYS[8] gates  KEYS[9] gated  KEYS[10] fresh
-- ARGV[1] key prefix of the queue
-- Reply: {ready, scheduled, retrying, leased, dead, processed, failed, retried, died,
--   paused (0/1), ready_since (ms: when the next job to be leased became ready; -1 if none),
--   now (ms), workers, running, prefetched, held gates {gate, count, ...}, paused tasks {...}}
--   ready: ready jobs, tombstones left by cancels not counted; leased: jobs in active;
--   died: jobs gone to dead since the queue was created; workers, running, prefetched: the
--   live heartbeats, and the jobs they say they run and hold prefetched (as of each one's
--   last heartbeat).
-- Minimum server: Redis 5.0.
-- needs: clock, keys, ready, records
local prefix = ARGV[1]
local now = now_ms()
local counters = redis.call('HMGET', KEYS[6], 'processed', 'failed', 'retried', 'dead')
for i = 1, 4 do
  counters[i] = tonumber(counters[i]) or 0
end

-- When a ready job became ready: the due time of a promoted job or the time it went back to
-- ready ('readied', see push_ready), else its enqueue time. False for a tombstone.
local function ready_since(id)
  local record = redis.call('HGET', KEYS[10], id)
  if record then
    return tonumber((record_parts(record)))
  end
  local f = redis.call('HMGET', job_key(prefix, id), 'state', 'readied', 'enqueued')
  if f[1] ~= 'ready' then
    return false
  end
  return tonumber(f[2]) or tonumber(f[3]) or now
end

-- The next job a lease takes: priorities below 0, then fifo (past its tombstones, of which
-- there are meta's count at most: a bounded walk), then the other priorities.
local function next_ready_since()
  local first = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(0', 'LIMIT', 0, 1)
  if #first == 1 then
    return ready_since(first[1])
  end
  local fifo = fifo_key(prefix)
  local bound = math.min(tombstones(prefix) + 1, 1000)
  for start = 0, bound - 1, 100 do
    local ids = redis.call('LRANGE', fifo, start, math.min(start + 99, bound - 1))
    for _, id in ipairs(ids) do
      local since = ready_since(id)
      if since then
        return since
      end
    end
    if #ids < 100 then
      break
    end
  end
  first = redis.call('ZRANGE', KEYS[1], 0, 0)
  if #first == 1 then
    return ready_since(first[1])
  end
  return -1
end

local workers, running, prefetched = 0, 0, 0
for _, worker in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
  -- A heartbeat's key expires with it: a worker without one is gone.
  local beat = redis.call('GET', worker_key(prefix, worker))
  if beat then
    workers = workers + 1
    -- Fields the heartbeat writes before its list of jobs: found without decoding it all.
    running = running + (tonumber(string.match(beat, '"active":%s*(%d+)')) or 0)
    prefetched = prefetched + (tonumber(string.match(beat, '"prefetched":%s*(%d+)')) or 0)
  end
end

local held = {}
for _, gate in ipairs(redis.call('SMEMBERS', KEYS[9])) do
  held[#held + 1] = gate
  held[#held + 1] = redis.call('ZCARD', held_key(prefix, gate))
end
local paused_tasks = {}
local queue_paused = 0
for _, name in ipairs(redis.call('HKEYS', KEYS[8])) do
  if name == 'paused' then
    queue_paused = 1
  elseif string.sub(name, 1, 6) == 'pause:' then
    paused_tasks[#paused_tasks + 1] = string.sub(name, 7)
  end
end

return {
  math.max(0, ready_count(prefix, KEYS[1])),
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]),
  redis.call('ZCARD', KEYS[5]),
  counters[1], counters[2], counters[3], counters[4],
  queue_paused,
  next_ready_since(),
  now,
  workers, running, prefetched,
  held,
  paused_tasks,
}
