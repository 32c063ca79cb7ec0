-- detach_conversation.lua: the first, atomic step of deleting a conversation (retention,
-- erasure). Its thread stops pointing at it, so a message arriving from now on starts a new
-- conversation instead of writing into one being deleted; the rest is then deleted at leisure
-- (storage/lifecycle.py), and a crash half way is finished by the next pass.
--
-- KEYS[1] conversation hash  ih:{pN}:conv:<id>
-- KEYS[2] threads hash       ih:{pN}:threads
-- KEYS[3] detached hash      ih:{pN}:detached  conversation id -> contact id, until the rest
--                            is deleted (a pass finishing a crashed one still knows the contact)
-- ARGV[1] thread field "<instance>\0<thread id>"   ARGV[2] conversation id
-- ARGV[3] "resolved" = only if resolved and last active before ARGV[4]; "" = unconditionally
-- ARGV[4] cutoff (unix seconds)
-- Returns 1 when detached (or already gone), 0 when the conversation must be kept.

if ARGV[3] == 'resolved' then
  local f = redis.call('HMGET', KEYS[1], 'status', 'updated_at')
  if f[1] ~= 'resolved' or (tonumber(f[2]) or 0) >= tonumber(ARGV[4]) then
    return 0
  end
end
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
end
local contact = redis.call('HGET', KEYS[1], 'contact_id')
if contact then redis.call('HSET', KEYS[3], ARGV[2], contact) end
redis.call('DEL', KEYS[1])
return 1
