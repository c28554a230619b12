-- includes/packed.lua: packed fields, joined as "<length>:<bytes>" each, binary-safe
-- (queue_async/broker/wire.py is the same format in Python).
-- needs:
-- provides: unpack_fields pack parse_packed packed_field field_at

-- The fields of a packed string; stops at anything malformed.
local function unpack_fields(s)
  local fields, pos = {}, 1
  while pos <= #s do
    local colon = string.find(s, ':', pos, true)
    local length = colon and tonumber(string.sub(s, pos, colon - 1))
    if not length then
      break
    end
    fields[#fields + 1] = string.sub(s, colon + 1, colon + length)
    pos = colon + length + 1
  end
  return fields
end

local function pack(fields)
  local parts = {}
  for i, field in ipairs(fields) do
    parts[i] = #field .. ':' .. field
  end
  return table.concat(parts)
end

-- Split packed items of `per_item` fields each (pack's format, one item after another) into
-- the bounds of their fields: first and last byte of each field, all in one flat table (a
-- table per item costs more than the rest). Everything is read before the caller changes
-- anything, so that malformed input changes nothing: returns nil and the byte where it went
-- wrong.
local function parse_packed(s, per_item)
  local bounds = {}
  local n = 0
  local pos = 1
  local size = #s
  local find, sub = string.find, string.sub
  while pos <= size do
    for _ = 1, per_item do
      local colon = find(s, ':', pos, true)
      local length = colon and tonumber(sub(s, pos, colon - 1))
      if not length or colon + length > size then
        return nil, pos
      end
      bounds[n + 1] = colon + 1
      bounds[n + 2] = colon + length
      n = n + 2
      pos = colon + length + 1
    end
  end
  return bounds
end

-- Field `place` (e.g. ENQUEUED.task) of the item whose bounds start after `at` in a
-- parse_packed result.
local function packed_field(s, bounds, at, place)
  return string.sub(s, bounds[at + 2 * place - 1], bounds[at + 2 * place])
end

-- The field of packed fields that starts at pos, and where the next one starts.
local function field_at(s, pos)
  local colon = string.find(s, ':', pos, true)
  local length = tonumber(string.sub(s, pos, colon - 1))
  return string.sub(s, colon + 1, colon + length), colon + length + 1
end
