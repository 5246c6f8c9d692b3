-- Reads the entries of one topic that have not expired, by the server's
-- clock (see presence.rs for the layout).
--
-- KEYS[1]  the topic's hash: client -> entry (JSON)
-- KEYS[2]  the topic's sorted set: client -> expiry (ms, server time)
-- Returns the entries.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')
local entries = {}
for _, client in ipairs(live) do
  local entry = redis.call('HGET', KEYS[1], client)
  if entry then
    entries[#entries + 1] = entry
  end
end
return entries
