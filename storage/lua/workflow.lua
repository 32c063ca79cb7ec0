-- workflow.lua: what agents write on a conversation beside routing (dispatch on ARGV[2]):
-- private notes, the work status (open / pending / snoozed) and the wake-up of snoozed ones.
--
-- Every command checks that the conversation record exists first and writes nothing when it
-- does not (error NOCONV): a late call must not bring back a conversation that was erased.
-- The work status lives in the record's hash (fields `work_status`, `snoozed_until`; absent =
-- open); ingest.lua clears both when the buyer writes again. Neither is a filter index of
-- conversations.lua, so the record's `_idx` is not touched here.
--
-- KEYS[1] conversation record  ih:{pN}:conv:<c>          (note, status; any record for wake)
-- KEYS[2] notes or snoozed     ih:{pN}:conv:<c>:notes    (note: list of JSON, oldest first)
--                              ih:{pN}:snoozed           (status, wake: zset c by wake time)
-- ARGV[1] key base "ih:{pN}:"  ARGV[2] command, then per command:
--
-- note:   ARGV[3] note JSON, ARGV[4] most notes a conversation keeps.
--         Returns the note count, or -1 when the conversation is full (nothing written).
-- status: ARGV[3] conversation id, ARGV[4] "open" | "pending" | "snoozed",
--         ARGV[5] wake time (snoozed only). Error RESOLVED for a resolved record
--         (only the buyer's next message reopens it, as with transfers). Returns 1.
-- wake:   ARGV[3] now, ARGV[4] batch size. Wakes due snoozed conversations (still snoozed,
--         with that very wake time: a member left behind by a buyer's message or a re-snooze
--         is dropped). Returns the ids woken.

local base = ARGV[1]
local cmd = ARGV[2]

if cmd == 'note' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOCONV') end
  if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
  return redis.call('RPUSH', KEYS[2], ARGV[3])

elseif cmd == 'status' then
  local c, status = ARGV[3], ARGV[4]
  local current = redis.call('HGET', KEYS[1], 'status')
  if not current then return redis.error_reply('NOCONV') end
  if current == 'resolved' then return redis.error_reply('RESOLVED') end
  if status == 'open' then
    redis.call('HDEL', KEYS[1], 'work_status', 'snoozed_until')
    redis.call('ZREM', KEYS[2], c)
  elseif status == 'pending' then
    redis.call('HSET', KEYS[1], 'work_status', 'pending')
    redis.call('HDEL', KEYS[1], 'snoozed_until')
    redis.call('ZREM', KEYS[2], c)
  else
    redis.call('HSET', KEYS[1], 'work_status', 'snoozed', 'snoozed_until', ARGV[5])
    redis.call('ZADD', KEYS[2], ARGV[5], c)
  end
  return 1

elseif cmd == 'wake' then
  local now = tonumber(ARGV[3])
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
  local woken = {}
  for _, c in ipairs(due) do
    redis.call('ZREM', KEYS[2], c)
    local key = base .. 'conv:' .. c
    local f = redis.call('HMGET', key, 'work_status', 'snoozed_until')
    if f[1] == 'snoozed' and f[2] and tonumber(f[2]) <= now then
      redis.call('HDEL', key, 'work_status', 'snoozed_until')
      woken[#woken + 1] = c
    end
  end
  return woken
end

return redis.error_reply('unknown workflow command ' .. tostring(cmd))
