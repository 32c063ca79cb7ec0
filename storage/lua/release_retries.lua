-- release_retries.lua: move replies whose backoff has elapsed back onto the outbox stream.
--
-- A retry waits in a sorted set (score = due time) rather than as a pending stream entry so a
-- long backoff never looks like a dead consumer; moving it is atomic so a crash cannot drop or
-- double it. Bounded per call (ARGV[2]) to keep the script short (no unbounded unpack).
--
-- KEYS[1] retry zset      ih:{pN}:retry   member = message id, score = due time
-- KEYS[2] outbox stream   ih:{pN}:outbox
-- ARGV[1] now   ARGV[2] batch size   ARGV[3] key base "ih:{pN}:"
-- Returns the number of replies released.

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, mid in ipairs(due) do
  local conv = redis.call('HGET', ARGV[3] .. 'msg:' .. mid, 'conversation_id')
  redis.call('ZREM', KEYS[1], mid)
  if conv then
    redis.call('HSET', ARGV[3] .. 'msg:' .. mid, 'status', 'queued')
    redis.call('XADD', KEYS[2], '*', 'msg', mid, 'conv', conv)
  end
end
return #due
