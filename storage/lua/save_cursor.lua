-- save_cursor.lua: checkpoint a poller's cursor, fenced by the lease that guards it.
--
-- The check and the write are one step: a poller whose lease was granted to another process
-- since it read its fence (it was paused past the TTL, or partitioned) cannot move the cursor,
-- not even by a write racing the new holder's.
--
-- KEYS[1] cursor hash     ih:{<lease name>}:cursor   (value, fence, at)
-- KEYS[2] fence counter   ih:{<lease name>}:fence
-- ARGV[1] the writer's fence   ARGV[2] cursor value (opaque bytes)   ARGV[3] now (UNIX s)
-- Returns 1 when written, 0 when refused (a newer fence was granted, or none ever was).

if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'fence', ARGV[1], 'at', ARGV[3])
return 1
