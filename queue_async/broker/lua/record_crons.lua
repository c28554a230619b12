-- record_crons.lua: a starting worker records the cron schedules it runs, and forgets
-- schedules that no worker has recorded for a long time and no live worker runs.
-- KEYS[1] crons (hash: name -> JSON {spec, task, timezone, recorded})  KEYS[2] workers
-- ARGV[1] key prefix of the queue
-- ARGV[2] forget after (ms): a schedule last recorded longer ago than this, and listed in no
--   live worker's heartbeat ("crons"), is dropped
-- ARGV[3..] two fields per job: a schedule's name, its JSON {spec, task, timezone}
-- Reply: how many schedules were dropped.
-- Minimum server: Redis 5.0.
-- needs: clock, keys
local prefix = ARGV[1]
local now = now_ms()
local mine = {}
for b = 3, #ARGV, 2 do
  local ok, entry = pcall(cjson.decode, ARGV[b + 1])
  if not ok or type(entry) ~= 'table' then
    entry = {}
  end
  entry.recorded = now
  redis.call('HSET', KEYS[1], ARGV[b], cjson.encode(entry))
  mine[ARGV[b]] = true
end

-- The schedules live workers run, from their heartbeats' "crons" list.
local running
local function runs(name)
  if not running then
    running = {}
    for _, worker in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
      local beat = redis.call('GET', worker_key(prefix, worker))
      local list = beat and string.match(beat, '"crons":%s*(%b[])')
      if list then
        for _, each in ipairs(cjson.decode(list)) do
          running[each] = true
        end
      end
    end
  end
  return running[name] == true
end

local forget = tonumber(ARGV[2])
local dropped = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local name = all[i]
  if not mine[name] then
    local ok, entry = pcall(cjson.decode, all[i + 1])
    local recorded = ok and type(entry) == 'table' and tonumber(entry.recorded) or 0
    if now - recorded > forget and not runs(name) then
      redis.call('HDEL', KEYS[1], name)
      dropped = dropped + 1
    end
  end
end
return dropped
