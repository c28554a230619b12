-- includes/slices.lua: one command over a list of any length. unpack() of thousands of values
-- overflows Lua's C stack, so the list goes SLICE values per call; SLICE is even, so that
-- pairs (ZADD's score and member, HSET's field and value) never straddle two calls.
-- needs:
-- provides: SLICE call_in_slices hmget_many
-- Minimum server: Redis 5.0.

local SLICE = 1000

-- redis.call(command, key, list...) in slices. Returns the replies of the slices joined, for
-- a command that replies with an array (nil for one that does not).
local function call_in_slices(command, key, list)
  local n = #list
  local joined
  for first = 1, n, SLICE do
    local reply = redis.call(command, key, unpack(list, first, math.min(first + SLICE - 1, n)))
    if type(reply) == 'table' then
      if joined then
        for _, value in ipairs(reply) do
          joined[#joined + 1] = value
        end
      else
        joined = reply
      end
    end
  end
  return joined
end

-- HMGET of any number of fields: their values, false for each one missing.
local function hmget_many(key, fields)
  return call_in_slices('HMGET', key, fields) or {}
end
