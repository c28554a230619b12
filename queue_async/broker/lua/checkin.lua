-- checkin.lua: a running job reports what it is doing (a message, a progress fraction).
-- KEYS[1] the job's hash
-- ARGV[1] lease token
-- ARGV[2] message ("" keeps the last one)   ARGV[3] progress ("" keeps the last one)
-- Reply: 1 if recorded, 0 if the token is not current (the lease was lost).
-- Minimum server: Redis 5.0.
-- needs: clock, format
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'checkin_at', fmt(now_ms()))
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'checkin', ARGV[2])
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'progress', ARGV[3])
end
return 1
