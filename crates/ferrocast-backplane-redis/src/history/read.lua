-- Reads a topic's history (see history.rs for the layout).
--
-- KEYS[1]  the topic's meta hash: epoch, top
-- KEYS[2]  the topic's stream: fields o (offset) and p (envelope)
-- ARGV[1]  return the publications with an offset above this one
-- ARGV[2]  most entries kept (at least 1)
-- ARGV[3]  time-to-live in milliseconds (at least 1)
-- Returns {} when the topic has no history, else
-- {epoch, top, oldest, envelope…} with the envelopes oldest first.
--
-- The stream holds the offsets top-len+1 … top in order (entries are added
-- with the next offset and removed only from the front), so the entries
-- after an offset are the newest top-offset ones.

local meta = redis.call('HMGET', KEYS[1], 'epoch', 'top')
if not meta[1] then
  return {}
end
local top = tonumber(meta[2]) or 0
local after = tonumber(ARGV[1])

-- The oldest kept: among the newest `size` entries, and younger than the ttl.
local oldest = top - math.min(redis.call('XLEN', KEYS[2]), tonumber(ARGV[2])) + 1
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local min_id = string.format('%d', math.max(0, now_ms - tonumber(ARGV[3]) + 1))
local young = redis.call('XRANGE', KEYS[2], min_id, '+', 'COUNT', 1)
if #young == 0 then
  oldest = top + 1
else
  oldest = math.max(oldest, tonumber(young[1][2][2]))
end

local reply = {meta[1], top, oldest}
local count = top - math.max(after, oldest - 1)
if count > 0 then
  local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count)
  for i = #entries, 1, -1 do
    reply[#reply + 1] = entries[i][2][4]
  end
end
return reply
