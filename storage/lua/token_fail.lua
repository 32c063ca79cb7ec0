-- token_fail.lua: record a failed refresh, and release the refresh lock.
--
-- The tokens stay as they are (the old refresh token is kept until a rotation succeeds).
-- The failure counter tells the processes that waited for this refresh that it ended
-- without new tokens, so they report its error instead of trying again at once. A refusal
-- (reauth = 1) marks the instance needs_reauth. Nothing is recorded if the generation moved
-- (an operator loaded new tokens meanwhile).
--
-- KEYS[1] record hash      ih:{tok:<instance>}:tokens
-- KEYS[2] refresh lock     ih:{tok:<instance>}:lock
-- ARGV[1] expected generation    ARGV[2] the caller's lock id    ARGV[3] error (no secrets)
-- ARGV[4] reauth (1/0)
-- Returns 1 when recorded, 0 when the generation had moved.

local result = 0
if (redis.call('HGET', KEYS[1], 'gen') or '0') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'error', ARGV[3])
  if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'reauth', '1') end
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
  result = 1
end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return result
