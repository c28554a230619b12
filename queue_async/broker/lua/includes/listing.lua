-- includes/listing.lua: walking the jobs of one state a bounded step at a time, for listings
-- (browse.lua) and bulk repairs (retry.lua, delete.lua).
-- A walk goes through the state's index in order (oldest first, or newest first) from a
-- cursor, and looks at `budget` entries at most per call. The cursor names the last entry
-- looked at, so it stays valid while jobs move: an entry found where it was continues from
-- its place (ZRANK, LPOS), one that left continues from its score, or, in fifo (which only
-- loses entries at its head), from the head.
-- Indexes: scheduled (by due time), active (by lease deadline), dead and done (by finish
--   time) are sorted sets; ready is three parts in lease order: the sorted set ready's
--   scores below 0 ('a'), the list fifo ('f'), ready's scores above 0 ('c').
-- Cursor text: "<part> <score or fifo index> <id>" (part 'z' for a whole sorted set); ""
--   for the start.
-- needs: format, keys, records
-- provides: zset_after fifo_after parts_of walk job_text job_matches listed_task act_on_jobs
-- Minimum server: Redis 6.0.6 (LPOS).

-- A sorted set's entries after (score, id) in the walk's direction, score within (lo, hi)
-- (exclusive bounds as ZRANGEBYSCORE takes them), at most n: flat member, score pairs.
local function zset_after(key, asc, score, id, lo, hi, n)
  if id then
    local rank = redis.call(asc and 'ZRANK' or 'ZREVRANK', key, id)
    if rank then
      local found = redis.call(asc and 'ZRANGE' or 'ZREVRANGE', key, rank + 1, rank + n,
        'WITHSCORES')
      -- Cut at the part's end (the ready set holds two parts).
      local kept = {}
      for i = 1, #found, 2 do
        local s = tonumber(found[i + 1])
        if (asc and hi ~= '+inf' and s >= tonumber(string.sub(hi, 2)))
          or (not asc and lo ~= '-inf' and s <= tonumber(string.sub(lo, 2))) then
          break
        end
        kept[#kept + 1] = found[i]
        kept[#kept + 1] = found[i + 1]
      end
      return kept
    end
  end
  local from = score and fmt(score) or (asc and lo or hi)
  local found
  if asc then
    found = redis.call('ZRANGEBYSCORE', key, from, hi, 'WITHSCORES', 'LIMIT', 0, n)
  else
    found = redis.call('ZREVRANGEBYSCORE', key, from, lo, 'WITHSCORES', 'LIMIT', 0, n)
  end
  if not id then
    return found
  end
  -- The cursor's entry left: skip what sorts before it at its own score (ties sort by
  -- member, bytewise, as Lua compares strings here).
  local kept = {}
  for i = 1, #found, 2 do
    local s = tonumber(found[i + 1])
    local past = s ~= score or (asc and found[i] > id) or (not asc and found[i] < id)
    if past or #kept > 0 then
      kept[#kept + 1] = found[i]
      kept[#kept + 1] = found[i + 1]
    end
  end
  return kept
end

-- fifo's entries after the cursor's (index hint, id), at most n: ids, and the index of the
-- first. Oldest first walks from the head; newest first from the tail.
local function fifo_after(prefix, asc, hint, id, n)
  local fifo = fifo_key(prefix)
  local len = redis.call('LLEN', fifo)
  local start
  if asc then
    start = 0
    if id then
      -- Entries only leave at the head (and held jobs come back there), so the id is at its
      -- hint or nearer the head; gone means every entry before it is gone too.
      local at = redis.call('LPOS', fifo, id, 'MAXLEN', math.min(len, hint + 1001))
      if at then
        start = at + 1
      end
    end
    return redis.call('LRANGE', fifo, start, start + n - 1), start
  end
  local stop = len - 1
  if id then
    local at = redis.call('LPOS', fifo, id, 'MAXLEN', math.min(len, hint + 1001))
    if not at then
      return {}, 0 -- it left at the head, and so did everything older: the part ends
    end
    stop = at - 1
  end
  if stop < 0 then
    return {}, 0
  end
  local first = math.max(0, stop - n + 1)
  local ids = redis.call('LRANGE', fifo, first, stop)
  local reversed = {}
  for i = #ids, 1, -1 do
    reversed[#reversed + 1] = ids[i]
  end
  return reversed, stop
end

-- The parts of a state's index in walk order: {part, lo, hi} (sorted set score bounds).
local function parts_of(state, asc)
  if state ~= 'ready' then
    return {{'z', '-inf', '+inf'}}
  end
  local a, f, c = {'a', '-inf', '(0'}, {'f'}, {'c', '(0', '+inf'}
  if asc then
    return {a, f, c}
  end
  return {c, f, a}
end

-- Walk the index of `state` from `cursor`: up to `budget` entries, in order. Returns the ids,
-- the cursor after each, and the cursor after the last one ("" when the walk reached the end
-- of the index); nil and the reason for a malformed cursor.
-- zset: the state's sorted set (for ready, the ready set).
local function walk(prefix, zset, state, asc, cursor, budget)
  local part, place, last = nil, nil, nil
  if cursor ~= '' then
    local p, s, id = string.match(cursor, '^(%a) (%-?%d+) (.+)$')
    if not p then
      return nil, 'malformed listing cursor'
    end
    part, place, last = p, tonumber(s), id
  end
  local ids, cursors, next_cursor = {}, {}, ''
  local started = part == nil
  for _, spec in ipairs(parts_of(state, asc)) do
    local name = spec[1]
    if not started and name == part then
      started = true
    elseif started and name ~= part then
      place, last = nil, nil -- a part after the cursor's: from its start
    end
    if started then
      local room = budget - #ids
      if room <= 0 then
        break
      end
      if name == 'f' then
        local found, index = fifo_after(prefix, asc, place or 0, last, room)
        for i, id in ipairs(found) do
          ids[#ids + 1] = id
          local at = asc and (index + i - 1) or (index - i + 1)
          next_cursor = 'f ' .. fmt(at) .. ' ' .. id
          cursors[#ids] = next_cursor
        end
      else
        local found = zset_after(zset, asc, place, last, spec[2], spec[3], room)
        for i = 1, #found, 2 do
          ids[#ids + 1] = found[i]
          next_cursor = name .. ' ' .. found[i + 1] .. ' ' .. found[i]
          cursors[#ids] = next_cursor
        end
      end
      if budget - #ids <= 0 then
        return ids, cursors, next_cursor
      end
    end
  end
  return ids, cursors, ''
end

-- A job as read for a listing: its hash's fields (flat) or its fresh record; false if gone.
local function job_text(prefix, fresh, id)
  local key = job_key(prefix, id)
  if redis.call('EXISTS', key) == 1 then
    return redis.call('HGETALL', key)
  end
  return redis.call('HGET', fresh, id) or false
end

-- The task of a job as job_text read it.
local function listed_task(job)
  if type(job) == 'table' then
    for i = 1, #job, 2 do
      if job[i] == 'task' then
        return job[i + 1]
      end
    end
    return nil
  end
  local _, _, task = record_parts(job)
  return task
end

-- Whether a job (as job_text read it) is in `state` and matches the filters: task ("" any)
-- and search ("" any: else plain, case-insensitive text in the id, the payload or the error).
local function job_matches(id, job, state, task, search)
  local fields = nil
  if type(job) == 'table' then
    fields = {}
    for i = 1, #job, 2 do
      fields[job[i]] = job[i + 1]
    end
    if fields.state ~= state then
      return false
    end
  elseif state ~= 'ready' then
    return false
  end
  if task ~= '' and listed_task(job) ~= task then
    return false
  end
  if search == '' then
    return true
  end
  if string.find(string.lower(id), search, 1, true) then
    return true
  end
  if fields then
    return (fields.payload and string.find(string.lower(fields.payload), search, 1, true))
      or (fields.error and string.find(string.lower(fields.error), search, 1, true)) or false
  end
  local _, _, _, payload = record_parts(job)
  return string.find(string.lower(payload), search, 1, true) ~= nil
end

-- What retry.lua and delete.lua share: act on the jobs named in `argv` (the script's ARGV,
-- which a unit cannot see) from place `named_from` on, or, when there are none, on those a walk of `state`'s index (`index`) finds from
-- `cursor` that match `task` and `search`: at most `budget` entries looked at, at most `limit`
-- acted on. act(id) is true if it acted; visit(i, id, job, acted, entry_cursor), if given,
-- sees every entry the walk looked at. Returns how many it acted on, the walk's cursor ("" at
-- its end, or with ids) and the entries looked at; nil and the reason for a bad cursor.
local function act_on_jobs(prefix, fresh, index, state, argv, named_from, cursor, budget,
    limit, task, search, act, visit)
  local acted = 0
  if #argv >= named_from then
    for i = named_from, #argv do
      if act(argv[i]) then
        acted = acted + 1
      end
    end
    return acted, '', 0
  end
  local ids, cursors, last = walk(prefix, index, state, true, cursor, budget)
  if not ids then
    return nil, cursors
  end
  local scanned, next_cursor = 0, last
  for i, id in ipairs(ids) do
    scanned = i
    local job = job_text(prefix, fresh, id)
    local did = job and job_matches(id, job, state, task, search) and act(id) or false
    if did then
      acted = acted + 1
    end
    if visit then
      visit(i, id, job, did, cursors[i])
    end
    if did and acted == limit then
      next_cursor = i < #ids and cursors[i] or last
      break
    end
  end
  return acted, next_cursor, scanned
end
