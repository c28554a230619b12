-- read.lua: read many jobs in one call (job reads and result reads of concurrent callers; see
-- producer/coalesce.py). Reads only: it changes nothing.
-- KEYS[1] fresh   KEYS[2..] job hashes, one per job of ARGV
-- ARGV[1] "" to read every field, or the names of the fields to read, space-separated
-- ARGV[2..] the job ids, one field per job
-- Reply: per job, nil if there is no such job; its fresh record (a string: see
--   includes/records.lua) if it is still one; otherwise its hash's fields, as HGETALL's flat
--   name, value list or, with names, as HMGET's values in their order.
-- Minimum server: Redis 5.0.
-- needs:
local names = {}
for name in string.gmatch(ARGV[1], '%S+') do
  names[#names + 1] = name
end
local jobs = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  -- A fresh job only ever becomes a job hash (atomically), and this runs atomically too.
  local job = false
  if redis.call('HEXISTS', key, 'state') == 1 then
    if #names == 0 then
      job = redis.call('HGETALL', key)
    else
      job = redis.call('HMGET', key, unpack(names))
    end
  else
    job = redis.call('HGET', KEYS[1], ARGV[i]) or false
  end
  jobs[i - 1] = job
end
return jobs
