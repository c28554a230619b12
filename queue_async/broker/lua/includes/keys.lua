-- includes/keys.lua: the one place a script builds a key name; queue_async/broker/keys.py is
-- the one place in Python, and tests/lua/test_units.py holds the names both build equal.
-- prefix is the queue's "<prefix>:{<queue>}:", so every key stays in the queue's hash slot.
-- Keys that come in through KEYS (ready, scheduled, active, wake, the idle list, ...) are
-- named in keys.py only.
-- needs:
-- provides: job_key fifo_key fresh_key meta_key gates_key gated_key held_key running_key
--   throttled_key bucket_key unique_key worker_key idle_key inbox_key done_channel retrying_key
--   dead_key done_key watched_key ended_channel

-- A job's hash (see includes/records.lua).
local function job_key(prefix, id)
  return prefix .. 'job:' .. id
end

-- Ready jobs of priority 0, oldest first (list; see includes/ready.lua).
local function fifo_key(prefix)
  return prefix .. 'fifo'
end

-- Fresh jobs' records (hash: id -> record; see includes/records.lua).
local function fresh_key(prefix)
  return prefix .. 'fresh'
end

-- Counters (hash): processed, failed, retried, tombstones.
local function meta_key(prefix)
  return prefix .. 'meta'
end

-- Flow control (see includes/gates.lua): the settings (hash), the gates holding jobs now
-- (set), the jobs one gate holds (sorted set), jobs running per gate (hash), when each rate
-- gate's next token is due (sorted set), each rate gate's token bucket (hash).
local function gates_key(prefix)
  return prefix .. 'gates'
end

local function gated_key(prefix)
  return prefix .. 'gated'
end

local function held_key(prefix, gate)
  return prefix .. 'held:' .. gate
end

local function running_key(prefix)
  return prefix .. 'running'
end

local function throttled_key(prefix)
  return prefix .. 'throttled'
end

local function bucket_key(prefix)
  return prefix .. 'bucket'
end

-- The id of the job holding a unique key (string; see enqueue.lua).
local function unique_key(prefix, ukey)
  return prefix .. 'unique:' .. ukey
end

-- A worker's last heartbeat (string with a TTL; see extend.lua).
local function worker_key(prefix, worker)
  return prefix .. 'worker:' .. worker
end

-- One idle worker (hash {free, lease, grace}, with a TTL while the worker blocks idle; see
-- lease.lua). Not the list of idle workers, which comes in KEYS.
local function idle_key(prefix, worker)
  return prefix .. 'idle:' .. worker
end

-- Jobs handed straight to an idle worker (list; see includes/handoff.lua).
local function inbox_key(prefix, worker)
  return prefix .. 'inbox:' .. worker
end

-- The pub/sub channel on which the id of an awaited job is announced when it finishes.
local function done_channel(prefix)
  return prefix .. 'done'
end

-- The pub/sub channel result() waiters listen on: one message per finishing call, with the
-- ids of the awaited jobs it finished, and the results it can carry (see includes/final.lua).
local function ended_channel(prefix)
  return prefix .. 'ended'
end

-- Jobs someone awaits (hash: id -> "1"; see watch.lua): each is announced on done_channel
-- and ended_channel when it reaches a final state, and leaves the hash then. A hash of its own, not a field of
-- the job's, so that watching a fresh job leaves it fresh (see includes/records.lua).
local function watched_key(prefix)
  return prefix .. 'watched'
end

-- Scheduled jobs waiting out a retry's backoff (sorted set, a subset of scheduled with the
-- same scores; see fail.lua and includes/scheduled.lua).
local function retrying_key(prefix)
  return prefix .. 'retrying'
end

-- Dead jobs, and finished jobs whose results are kept, by finish time (sorted sets): named
-- here for enqueue.lua's replace, whose KEYS are fixed by the wire format.
local function dead_key(prefix)
  return prefix .. 'dead'
end

local function done_key(prefix)
  return prefix .. 'done'
end
