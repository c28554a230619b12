-- retire.lua: a stopping worker leaves the idle rotation and hands back every job that was
-- handed to its inbox and not yet taken, so none waits for its lease to expire.
-- KEYS[1] idle  KEYS[2] active  KEYS[3] ready  KEYS[4] wake  KEYS[5] seq
-- ARGV[1] key prefix of the queue   ARGV[2] worker id
-- Reply: how many jobs were handed back.
-- Minimum server: Redis 5.0.
-- needs: keys, leases, packed, ready, wire
local prefix = ARGV[1]
local worker = ARGV[2]
redis.call('LREM', KEYS[1], 0, worker)
redis.call('DEL', idle_key(prefix, worker))
local inbox = inbox_key(prefix, worker)
local handed = redis.call('LRANGE', inbox, 0, -1)
redis.call('DEL', inbox)
local released = 0
for _, item in ipairs(handed) do
  local id = unpack_fields(item)[LEASED.id]
  local key = job_key(prefix, id)
  local f = redis.call('HMGET', key, 'worker', 'state')
  if f[1] == worker and f[2] == 'active' then
    release_job(prefix, KEYS[2], KEYS[3], KEYS[5], id, key)
    released = released + 1
  end
end
if released > 0 then
  wake(KEYS[4])
end
return released
