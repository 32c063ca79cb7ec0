-- token_put.lua: store tokens an operator loaded (a new authorization).
--
-- Clears needs_reauth and the last error; the generation grows, so a refresh that was under
-- way when the operator loaded them cannot overwrite them (token_commit.lua checks it).
--
-- KEYS[1] record hash      ih:{tok:<instance>}:tokens
-- ARGV[1] sealed tokens    ARGV[2] key id    ARGV[3] expires_at ('' = none)
-- ARGV[4] scope ('' = none)    ARGV[5] refreshable (1/0)    ARGV[6] now (UNIX seconds)
-- Returns the new generation.

redis.call('HSET', KEYS[1], 'blob', ARGV[1], 'kid', ARGV[2], 'expires_at', ARGV[3],
           'scope', ARGV[4], 'refreshable', ARGV[5], 'loaded_at', ARGV[6])
redis.call('HDEL', KEYS[1], 'error', 'reauth')
return redis.call('HINCRBY', KEYS[1], 'gen', 1)
