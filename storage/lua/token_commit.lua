-- token_commit.lua: store the tokens a refresh returned, and release the refresh lock.
--
-- Applied only if the generation is still the one the refresh started from: tokens an
-- operator loaded meanwhile win. The lock is deleted only if it is still the caller's.
--
-- KEYS[1] record hash      ih:{tok:<instance>}:tokens
-- KEYS[2] refresh lock     ih:{tok:<instance>}:lock
-- ARGV[1] expected generation    ARGV[2] the caller's lock id    ARGV[3] sealed tokens
-- ARGV[4] key id    ARGV[5] expires_at ('' = none)    ARGV[6] scope ('' = none)
-- ARGV[7] refreshable (1/0)    ARGV[8] now (UNIX seconds)
-- Returns the new generation, or 0 when the generation had moved (nothing written).

local result = 0
if (redis.call('HGET', KEYS[1], 'gen') or '0') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'blob', ARGV[3], 'kid', ARGV[4], 'expires_at', ARGV[5],
             'scope', ARGV[6], 'refreshable', ARGV[7], 'refreshed_at', ARGV[8])
  redis.call('HDEL', KEYS[1], 'error', 'reauth')
  result = redis.call('HINCRBY', KEYS[1], 'gen', 1)
end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return result
