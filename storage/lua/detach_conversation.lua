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
-- ARGV[4] cutoff (unix seconds)   ARGV[5] partition key base "ih:{pN}:" (filter index names)
-- The record leaves its filter indexes (idx:<field>:<value>, listed in its `_idx` field; see
-- conversations.lua) in the same step, so no index names it once it is gone.
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
local f = redis.call('HMGET', KEYS[1], 'contact_id', '_idx')
if f[1] then redis.call('HSET', KEYS[3], ARGV[2], f[1]) end
if f[2] then
  for suffix in string.gmatch(f[2], '[^\n]+') do
    redis.call('SREM', ARGV[5] .. 'idx:' .. suffix, ARGV[2])
  end
end
redis.call('DEL', KEYS[1])
return 1
