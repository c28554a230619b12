-- browse.lua: one page of the jobs of a state, oldest or newest first, from a cursor, with
-- filters; bounded work: at most ARGV[6] index entries are looked at (see includes/listing.lua).
-- KEYS[1] the state's index: ready, scheduled, active, dead or done   KEYS[2] fresh
-- ARGV[1] key prefix of the queue   ARGV[2] state: ready, scheduled, active, dead, done
-- ARGV[3] "oldest" or "newest"   ARGV[4] cursor ("" for the start)
-- ARGV[5] jobs per page at most   ARGV[6] index entries to look at, at most
-- ARGV[7] task name ("" for any)   ARGV[8] text to search for, lower case ("" for none)
-- Reply: the cursor after the last entry looked at ("" at the end of the index), the number
--   of entries looked at, then per job listed its id and either its hash's fields (flat) or
--   its fresh record. Entries of done whose job expired are dropped from it on the way.
-- Minimum server: Redis 6.0.6 (LPOS).
-- needs: listing
local prefix, state = ARGV[1], ARGV[2]
local limit, budget = tonumber(ARGV[5]), tonumber(ARGV[6])
local ids, cursors, last = walk(prefix, KEYS[1], state, ARGV[3] == 'oldest', ARGV[4], budget)
if not ids then
  return redis.error_reply('ERR queue_async: ' .. cursors)
end
local reply = {last, 0}
local listed, gone = 0, {}
for i, id in ipairs(ids) do
  local job = job_text(prefix, KEYS[2], id)
  if not job and state == 'done' then
    gone[#gone + 1] = id
  elseif job and job_matches(id, job, state, ARGV[7], ARGV[8]) then
    reply[#reply + 1] = id
    reply[#reply + 1] = job
    listed = listed + 1
    if listed == limit then
      reply[1] = i < #ids and cursors[i] or last
      reply[2] = i
      break
    end
  end
  reply[2] = i
end
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
end
return reply
