-- lease_renew.lua: extend a lease the caller still holds.
--
-- Held means the lease hash carries the caller's fence. A lease that expired but was granted
-- to nobody since (the fence counter still equals the caller's fence) is taken back with the
-- same fence: no other holder can have written anything in between.
--
-- KEYS[1] lease hash      ih:{<name>}:lease
-- KEYS[2] fence counter   ih:{<name>}:fence
-- ARGV[1] the caller's fence   ARGV[2] TTL in milliseconds   ARGV[3] owner
-- Returns 1 when the caller holds the lease for another TTL, 0 when it was lost.

local current = redis.call('HGET', KEYS[1], 'fence')
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current == false and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'owner', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
