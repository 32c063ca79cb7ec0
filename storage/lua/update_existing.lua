-- update_existing.lua: set fields on a conversation only if it still exists.
--
-- A late routing event (the mirror) or router decision must not re-create the record of a
-- conversation that retention or an erasure has just deleted.
--
-- KEYS[1] conversation hash  ih:{pN}:conv:<id>
-- ARGV    field, value, field, value, ... (a handful: bounded)
-- Returns 1 when updated, 0 when the conversation is gone.

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
