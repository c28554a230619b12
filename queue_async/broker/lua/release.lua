-- release.lua: hand leased jobs straight back to ready (worker shutdown), without waiting
-- for their leases to expire. The interrupted try does not count as an attempt.
-- KEYS[1] active  KEYS[2] ready  KEYS[3] wake  KEYS[4] seq
-- ARGV[1] key prefix of the queue
-- ARGV[2..] two fields per job: id, token
-- Reply: how many jobs were handed back (a job whose token is not current is skipped).
-- Minimum server: Redis 5.0.
-- needs: keys, leases, ready
local prefix = ARGV[1]
local released = 0
for b = 2, #ARGV, 2 do
  local id = ARGV[b]
  local key = job_key(prefix, id)
  if redis.call('HGET', key, 'token') == ARGV[b + 1] then
    release_job(prefix, KEYS[1], KEYS[2], KEYS[4], id, key)
    released = released + 1
  end
end
if released > 0 then
  wake(KEYS[3])
end
return released
