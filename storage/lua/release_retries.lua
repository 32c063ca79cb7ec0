-- release_retries.lua: move replies whose backoff has elapsed back onto the outbox stream.
--
-- A retry waits in a sorted set (score = due time) rather than as a pending stream entry so a
-- long backoff never looks like a dead consumer; moving it is atomic so a crash cannot drop or
-- double it. A reply is re-queued only while it is still waiting for this retry
-- (status "queued" with retry_pending): one settled or being sent in the meantime (an operator's
-- retry, another process) is only taken out of the set, never queued a second time. Bounded per
-- call (ARGV[2]) to keep the script short (no unbounded unpack).
--
-- KEYS[1] retry zset      ih:{pN}:retry   member = message id, score = due time
-- KEYS[2] outbox stream   ih:{pN}:outbox
-- ARGV[1] now   ARGV[2] batch size   ARGV[3] key base "ih:{pN}:"
-- Returns the number of replies taken out of the retry set.

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, mid in ipairs(due) do
  local key = ARGV[3] .. 'msg:' .. mid
  local f = redis.call('HMGET', key, 'conversation_id', 'status', 'retry_pending')
  redis.call('ZREM', KEYS[1], mid)
  if f[1] and f[2] == 'queued' and f[3] == '1' then
    redis.call('HDEL', key, 'retry_pending')
    redis.call('XADD', KEYS[2], '*', 'msg', mid, 'conv', f[1])
  end
end
return #due
