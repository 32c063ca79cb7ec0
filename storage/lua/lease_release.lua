-- lease_release.lua: give a lease up, only if the caller still holds it.
--
-- A stale holder (its lease expired and was granted again) must not delete the new holder's.
--
-- KEYS[1] lease hash      ih:{<name>}:lease
-- ARGV[1] the caller's fence
-- Returns 1 when released, 0 when the caller no longer held it.

if redis.call('HGET', KEYS[1], 'fence') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
