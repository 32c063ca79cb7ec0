-- lease_acquire.lua: grant a lease to the caller unless someone holds it.
--
-- A grant takes the next fence from a counter that never expires, so fences of one lease name
-- are strictly increasing across holders, crashes and expiries.
--
-- KEYS[1] lease hash      ih:{<name>}:lease   (fence, owner; PX = the TTL)
-- KEYS[2] fence counter   ih:{<name>}:fence
-- ARGV[1] TTL in milliseconds   ARGV[2] owner (host-pid-random, for operators)
-- Returns the new fence, or 0 when the lease is held.

if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'fence', fence, 'owner', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return fence
