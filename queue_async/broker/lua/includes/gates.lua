-- includes/gates.lua: flow control. A gate holds back ready jobs that may not start now,
-- without blocking other jobs:
--   p:<task>  the task is paused (let go by resume.lua)
--   t:<task>  the task's max_concurrency is reached (let go when one of its jobs ends)
--   k:<key>   a concurrency key's limit is reached (let go when one of its jobs ends)
--   r:<task>  the task's rate limit has no token left (let go as tokens come back)
-- Keys, all in the queue's slot (named in includes/keys.lua):
--   gates        hash: paused (the whole queue), pause:<task>, limit:<task>,
--                rate:<task> = "<jobs>:<period ms>"; absent when nothing is configured
--   running      hash: gate -> jobs of that gate running now
--   held:<gate>  sorted set: jobs the gate holds, by their ready score (order is kept; jobs
--                from fifo get a score of priority 0 when held)
--   gated        set: gates holding jobs now
--   throttled    sorted set: rate gate -> when its next token is due (ms)
--   bucket       hash: rate gate -> "<tokens>:<ms>", a token bucket
-- Job hash fields: ckey and climit (its concurrency key and limit, from enqueue), gates (the
--   gates it counts against while running, packed), held (the gate holding it).
-- needs: format, keys, packed, ready
-- provides: task_gates hold forget_if_empty unhold unhold_all bucket save_bucket take_token
--   pass_gates leave_gates release_throttled next_token_in unhold_one
-- Minimum server: Redis 5.0.

-- The gate settings of a task, read once per script call (with the name of the running
-- hash, built once rather than for every job).
local function task_gates(prefix, cache, task)
  local c = cache[task]
  if not c then
    local f = redis.call('HMGET', gates_key(prefix), 'pause:' .. task, 'limit:' .. task,
      'rate:' .. task)
    c = {paused = f[1] ~= false, limit = tonumber(f[2]), rate = f[3],
      running = running_key(prefix)}
    cache[task] = c
  end
  return c
end

local function hold(prefix, gate, id, key, score)
  redis.call('ZADD', held_key(prefix, gate), score, id)
  redis.call('SADD', gated_key(prefix), gate)
  redis.call('HSET', key, 'held', gate)
end

-- A gate that holds no job any more leaves the gated set.
local function forget_if_empty(prefix, gate)
  if redis.call('EXISTS', held_key(prefix, gate)) == 0 then
    redis.call('SREM', gated_key(prefix), gate)
  end
end

-- Move up to n held jobs of a gate back in front of the ready jobs, in their order.
-- Returns how many. With newest, the n jobs held last: called again and again, each batch
-- goes in front of the one before, so that the whole keeps its order (see resume.lua).
local function unhold(prefix, ready, gate, n, newest)
  local popped = redis.call(newest and 'ZPOPMAX' or 'ZPOPMIN', held_key(prefix, gate), n)
  if newest then
    -- ZPOPMAX gives the newest first: reverse, so the loop below pushes the newest first.
    local ordered = {}
    for i = #popped - 1, 1, -2 do
      ordered[#ordered + 1] = popped[i]
      ordered[#ordered + 1] = popped[i + 1]
    end
    popped = ordered
  end
  for i = #popped - 1, 1, -2 do
    return_ready(prefix, ready, popped[i], popped[i + 1])
    redis.call('HDEL', job_key(prefix, popped[i]), 'held')
  end
  forget_if_empty(prefix, gate)
  return #popped / 2
end

local function unhold_all(prefix, ready, gate)
  local moved = 0
  repeat
    local n = unhold(prefix, ready, gate, 1000)
    moved = moved + n
  until n < 1000
  return moved
end

-- A rate gate's tokens now (refilled since last time), its size and period.
local function bucket(prefix, gate, rate, now)
  local sep = string.find(rate, ':', 1, true)
  local size = tonumber(string.sub(rate, 1, sep - 1))
  local period = tonumber(string.sub(rate, sep + 1))
  local tokens = size
  local state = redis.call('HGET', bucket_key(prefix), gate)
  if state then
    local s = string.find(state, ':', 1, true)
    local before = tonumber(string.sub(state, 1, s - 1))
    local at = tonumber(string.sub(state, s + 1))
    tokens = math.min(size, before + math.max(0, now - at) * size / period)
  end
  return tokens, size, period
end

local function save_bucket(prefix, gate, tokens, now)
  redis.call('HSET', bucket_key(prefix), gate, string.format('%.6f:%.0f', tokens, now))
end

-- Take one token; if there is none, note when the next one is due and return false.
local function take_token(prefix, gate, rate, now)
  local tokens, size, period = bucket(prefix, gate, rate, now)
  if tokens >= 1 then
    save_bucket(prefix, gate, tokens - 1, now)
    return true
  end
  save_bucket(prefix, gate, tokens, now)
  local due = now + math.ceil((1 - tokens) * period / size)
  redis.call('ZADD', throttled_key(prefix), fmt(due), gate)
  return false
end

-- The gates a job must pass to start. Returns nil and the gates it now counts against, or
-- the gate that holds it back (it has taken nothing then).
local function pass_gates(prefix, cache, task, ckey, climit, now)
  local c = task_gates(prefix, cache, task)
  if c.paused then
    return 'p:' .. task
  end
  local running = c.running
  local counted = {}
  if c.limit then
    local gate = 't:' .. task
    if (tonumber(redis.call('HGET', running, gate)) or 0) >= c.limit then
      return gate
    end
    counted[#counted + 1] = gate
  end
  if ckey then
    local gate = 'k:' .. ckey
    if (tonumber(redis.call('HGET', running, gate)) or 0) >= (tonumber(climit) or 1) then
      return gate
    end
    counted[#counted + 1] = gate
  end
  if c.rate and not take_token(prefix, 'r:' .. task, c.rate, now) then
    return 'r:' .. task
  end
  for _, gate in ipairs(counted) do
    redis.call('HINCRBY', running, gate, 1)
  end
  return nil, counted
end

-- A job stopped running (done, failed, handed back, recovered): it no longer counts against
-- its gates, and each lets one held job go. Returns how many jobs went back to ready.
local function leave_gates(prefix, ready, key)
  local counted = redis.call('HGET', key, 'gates')
  if not counted then
    return 0
  end
  redis.call('HDEL', key, 'gates')
  local running = running_key(prefix)
  local moved = 0
  for _, gate in ipairs(unpack_fields(counted)) do
    if redis.call('HINCRBY', running, gate, -1) <= 0 then
      redis.call('HDEL', running, gate)
    end
    moved = moved + unhold(prefix, ready, gate, 1)
  end
  return moved
end

-- Rate gates whose next token is due let as many held jobs go as they have tokens (the jobs
-- take the tokens when leased). Returns how many jobs went back to ready.
local function release_throttled(prefix, ready, now)
  local throttled = throttled_key(prefix)
  local due = redis.call('ZRANGEBYSCORE', throttled, '-inf', fmt(now), 'LIMIT', 0, 100)
  local moved = 0
  for _, gate in ipairs(due) do
    redis.call('ZREM', throttled, gate)
    local rate = redis.call('HGET', gates_key(prefix), 'rate:' .. string.sub(gate, 3))
    if rate then
      local tokens, size, period = bucket(prefix, gate, rate, now)
      moved = moved + unhold(prefix, ready, gate, math.max(1, math.floor(tokens)))
      if redis.call('EXISTS', held_key(prefix, gate)) == 1 then
        redis.call('ZADD', throttled, fmt(now + math.ceil(period / size)), gate)
      end
    else
      moved = moved + unhold_all(prefix, ready, gate)
    end
  end
  return moved
end

-- When the next rate gate has a token due (ms from now); -1 if none.
local function next_token_in(prefix, now)
  local first = redis.call('ZRANGE', throttled_key(prefix), 0, 0, 'WITHSCORES')
  if #first == 2 then
    return math.max(0, tonumber(first[2]) - now)
  end
  return -1
end

-- A held job leaves its gate's set (cancelled). Returns whether it was held.
local function unhold_one(prefix, id, key)
  local gate = redis.call('HGET', key, 'held')
  if gate then
    redis.call('ZREM', held_key(prefix, gate), id)
    redis.call('HDEL', key, 'held')
    forget_if_empty(prefix, gate)
  end
  return gate ~= false
end
