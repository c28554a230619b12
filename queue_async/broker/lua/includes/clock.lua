-- includes/clock.lua: the server's clock, so that workers with skewed clocks agree.
-- needs:
-- provides: now_ms
-- Minimum server: Redis 5.0.

-- Server time (TIME) in integer milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
