-- token_unlock.lua: release a refresh lock, only if the caller still holds it.
--
-- A lock that expired and was taken by another process is not the caller's to delete.
--
-- KEYS[1] refresh lock     ih:{tok:<instance>}:lock
-- ARGV[1] the caller's lock id
-- Returns 1 when released, 0 otherwise.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
