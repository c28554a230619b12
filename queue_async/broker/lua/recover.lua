-- recover.lua: move jobs with expired leases back to ready (or to dead after too many stalls)
-- and promote due scheduled jobs. lease.lua does the same on every call; this script lets an
-- operator or a test do it without leasing.
-- KEYS[1] ready  KEYS[2] scheduled  KEYS[3] active  KEYS[4] seq  KEYS[5] dead  KEYS[6] wake
-- ARGV[1] key prefix of the queue   ARGV[2] max stalls
-- ARGV[3] dead max age (ms)   ARGV[4] dead max length
-- Reply: {recovered, promoted}
-- Minimum server: Redis 5.0.
-- needs: clock, final, gates, leases, ready, scheduled
local prefix = ARGV[1]
local now = now_ms()
local recovered = recover_expired(prefix, KEYS[3], KEYS[1], KEYS[4], KEYS[5], now,
  tonumber(ARGV[2]), 1000)
if recovered > 0 then
  trim_dead(prefix, KEYS[5], now, tonumber(ARGV[3]), tonumber(ARGV[4]))
end
local promoted = promote_due(prefix, KEYS[2], KEYS[1], KEYS[4], now, 1000)
release_throttled(prefix, KEYS[1], now)
if ready_count(prefix, KEYS[1]) > 0 then
  wake(KEYS[6])
end
return {recovered, promoted}
