-- includes/format.lua: numbers as command arguments.
-- needs:
-- provides: fmt

-- Scores and times are integers up to 2^53; tostring() would print them in exponent form.
local function fmt(n)
  return string.format('%.0f', n)
end
