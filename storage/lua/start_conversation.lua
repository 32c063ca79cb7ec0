-- start_conversation.lua: the record of a conversation the seller starts (no buyer message yet).
--
-- The same contact, thread and conversation records ingest.lua makes for a new thread, in the
-- same partition (the thread's), so the buyer's answer lands in this conversation; plus the
-- start key (the request's idempotency key) that lets a retried request resume instead of
-- being refused. The first message is queued afterwards by enqueue_reply.lua under that key,
-- so a crash between the two steps is finished by the retry, and never sends twice.
--
-- KEYS[1] threads        ih:{pN}:threads   hash  <instance>\0<thread>  -> conversation id
-- KEYS[2] contacts       ih:{pN}:contacts  hash  <instance>\0<handle>  -> contact id
-- KEYS[3] conversations  ih:{pN}:convs     zset  conversation id by last activity
-- ARGV[1] key base "ih:{pN}:"   ARGV[2] proposed conversation id   ARGV[3] proposed contact id
-- ARGV[4] thread field   ARGV[5] contact field   ARGV[6] now
-- ARGV[7] channel type   ARGV[8] channel instance   ARGV[9] thread id   ARGV[10] handle
-- ARGV[11] buyer name ("" = none)   ARGV[12] start key   ARGV[13] the agent who starts it
-- Returns {conversation id, new 0|1, same start key 0|1}: an existing thread is left as it is.

local base = ARGV[1]
local existing = redis.call('HGET', KEYS[1], ARGV[4])
if existing then
  local key = redis.call('HGET', base .. 'conv:' .. existing, 'start_key')
  return {existing, 0, key == ARGV[12] and 1 or 0}
end

local now = ARGV[6]
local contact_id = redis.call('HGET', KEYS[2], ARGV[5])
if not contact_id then
  contact_id = ARGV[3]
  redis.call('HSET', KEYS[2], ARGV[5], contact_id)
  redis.call('HSET', base .. 'contact:' .. contact_id,
    'id', contact_id, 'channel', ARGV[7], 'channel_instance', ARGV[8],
    'handle', ARGV[10], 'name', ARGV[11], 'created_at', now)
elseif ARGV[11] ~= '' then
  redis.call('HSET', base .. 'contact:' .. contact_id, 'name', ARGV[11])
end

local conv_id = ARGV[2]
local conv_key = base .. 'conv:' .. conv_id
redis.call('HSET', KEYS[1], ARGV[4], conv_id)
local memberships = {'status:new', 'channel:' .. ARGV[7]}
if ARGV[8] ~= ARGV[7] then memberships[#memberships + 1] = 'channel:' .. ARGV[8] end
for _, suffix in ipairs(memberships) do redis.call('SADD', base .. 'idx:' .. suffix, conv_id) end
redis.call('HSET', conv_key,
  'id', conv_id, 'channel', ARGV[7], 'channel_instance', ARGV[8], 'thread_id', ARGV[9],
  'contact_id', contact_id, 'status', 'new', 'created_at', now, 'updated_at', now, 'seq', 0,
  'message_count', 0, '_idx', table.concat(memberships, '\n'),
  'start_key', ARGV[12], 'started_by', ARGV[13])
if redis.call('HGET', base .. 'contact:' .. contact_id, 'blocked') == '1' then
  redis.call('HSET', conv_key, 'blocked', '1')
end
redis.call('ZADD', KEYS[3], now, conv_id)
return {conv_id, 1, 1}
