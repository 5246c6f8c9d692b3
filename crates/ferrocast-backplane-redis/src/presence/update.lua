-- Writes one node's presence changes to one topic, by the server's clock
-- (see presence.rs for the layout).
--
-- KEYS[1]  the topic's hash: client -> entry (JSON)
-- KEYS[2]  the topic's sorted set: client -> expiry (ms, server time)
-- ARGV[1]  time-to-live of the added entries, in milliseconds (at least 1)
-- ARGV[2]  how many entries are added (n)
-- ARGV[3 .. 2 + 2n]  client, entry, client, entry, ...
-- ARGV[3 + 2n ..]    clients to remove
-- Returns the number of entries the topic keeps.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expires = now + tonumber(ARGV[1])
local added = tonumber(ARGV[2])
local i = 3
for _ = 1, added do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], expires, ARGV[i])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  i = i + 1
end

-- Entries nobody refreshed (their node died) go.
for _, client in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('HDEL', KEYS[1], client)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)

-- Both keys live as long as the longest-lived entry.
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 0
end
local remaining = math.max(1, tonumber(last[2]) - now)
redis.call('PEXPIRE', KEYS[1], remaining)
redis.call('PEXPIRE', KEYS[2], remaining)
return redis.call('ZCARD', KEYS[2])
