-- Appends one publication to its topic's history, gives it its position and
-- publishes it, all in one atomic step (see history.rs for the layout).
--
-- KEYS[1]  the topic's meta hash: epoch, top (newest offset), rid (the
--          replication id of the master that appended it)
-- KEYS[2]  the topic's stream: one entry per kept publication, fields
--          o (its offset) and p (its envelope, position included)
-- ARGV[1]  the encoded envelope, without a position
-- ARGV[2]  the epoch to start if the topic has no history
-- ARGV[3]  most entries kept (at least 1)
-- ARGV[4]  time-to-live in milliseconds (at least 1)
-- ARGV[5]  the topic's channel
-- ARGV[6]  PUBLISH or SPUBLISH
-- Returns {epoch, offset}.
--
-- Redis does not roll a script back, so the order matters: reads come
-- first; XADD is the first write that can fail (out of
-- memory, a key of another type), and nothing after it can (Redis lets a
-- script that has written go on writing). So either the offset, its entry
-- and its publication all happen, or none does (DEL only removes what a
-- missing meta left behind).

-- The replication id of this master. A replica promoted to master takes a
-- new one, and so does a master restarted without its data. A history last
-- appended under another id was written by a master that may have given
-- offsets this one never received (replication is asynchronous): they would
-- be given again, to other publications, and a client holding one would
-- silently miss its replacement. Such a history starts a new epoch, so
-- clients resuming from the old one are told they were not recovered.
local rid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'top', 'rid')
local epoch = meta[1]
if epoch and meta[3] and meta[3] ~= rid then
  epoch = nil
end
local offset = 1
if epoch then
  offset = (tonumber(meta[2]) or 0) + 1
else
  -- A new history: nothing of an earlier one may remain.
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
end

-- Protobuf varint of a non-negative integer below 2^53.
local function varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end

-- Envelope field 8 (position), a Position message of field 1 (epoch, bytes)
-- and field 2 (offset, varint). Appending a field to an encoded message sets
-- it (protobuf merge semantics).
local position = '\10' .. varint(#epoch) .. epoch .. '\16' .. varint(offset)
local envelope = ARGV[1] .. '\66' .. varint(#position) .. position
local offset_text = string.format('%d', offset)

local id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'o', offset_text, 'p', envelope)
-- Entries whose id (the time they were added, in ms) is older than the ttl go.
local added_ms = tonumber(string.match(id, '^(%d+)'))
local min_id = string.format('%d', math.max(0, added_ms - tonumber(ARGV[4]) + 1))
redis.call('XTRIM', KEYS[2], 'MINID', min_id)
redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', offset_text, 'rid', rid)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call(ARGV[6], ARGV[5], envelope)
return {epoch, offset}
