-- ingest.lua: store one inbound message atomically, or recognise it as a repeat.
--
-- Dedupe on (channel instance, provider message id), upsert contact and conversation, take the
-- conversation's next sequence number, append the message and XADD it to the inbound stream:
-- all or nothing, so a crash can never leave a stored message that routing will not see.
-- Keys built inside the script all carry the partition's hash tag (ARGV[1]) and so live in the
-- same cluster slot as the declared KEYS. A new conversation enters its filter indexes
-- (idx:status:new, idx:channel:<type>, idx:channel:<instance>, recorded in its `_idx` field;
-- see conversations.lua) in this same step, and a resolved one the buyer reopens moves from
-- idx:status:resolved to idx:status:new. The buyer writing again also makes a pending or
-- snoozed conversation open (storage/workflow.py). A blocked contact's message (their contact
-- hash has blocked = 1, storage/workflow.py) is stored and flags its conversation blocked, but
-- reopens nothing: hub/router.py does not route it.
--
-- KEYS[1] seen key       ih:{pN}:seen:<instance>\0<provider id>  (string, TTL = dedupe window)
-- KEYS[2] threads        ih:{pN}:threads   hash  <instance>\0<thread>  -> conversation id
-- KEYS[3] contacts       ih:{pN}:contacts  hash  <instance>\0<handle>  -> contact id
-- KEYS[4] conversations  ih:{pN}:convs     zset  conversation id by last activity
-- KEYS[5] inbound stream ih:{pN}:inbound
-- ARGV[1]  key base "ih:{pN}:"
-- ARGV[2]  proposed message id        ARGV[3] proposed conversation id   ARGV[4] proposed contact id
-- ARGV[5]  thread field               ARGV[6] contact field
-- ARGV[7]  message payload (msgpack InboundMessage)
-- ARGV[8]  now (unix seconds)         ARGV[9] dedupe TTL (seconds)
-- ARGV[10] channel type               ARGV[11] channel instance
-- ARGV[12] thread id                  ARGV[13] sender handle            ARGV[14] sender name ("" = none)
-- ARGV[15] provider message id (kept on the conversation for reply threading)
-- ARGV[16] attachment file keys (sha256 hex), newline-separated ("" = none): the message joins
--          each file's reference set blob:<sha> (storage/attachments.py) in this same step
-- ARGV[17] the provider's time of the message (InboundMessage.sent_at; "" = unknown)
-- ARGV[18..] the message's search tokens (storage/search.py message_tokens): posted to
--          idx:term:<token> and the conversation's conv:<c>:terms in this same step, so a
--          stored message is always searchable (no crash window, no second command)
-- Returns {message id, conversation id, seq, duplicate 0|1, new conversation 0|1}

local base = ARGV[1]
local existing = redis.call('GET', KEYS[1])
if existing then
  local m = redis.call('HMGET', base .. 'msg:' .. existing, 'conversation_id', 'seq')
  return {existing, m[1], tonumber(m[2]), 1, 0}
end

local now = ARGV[8]
local contact_id = redis.call('HGET', KEYS[3], ARGV[6])
if not contact_id then
  contact_id = ARGV[4]
  redis.call('HSET', KEYS[3], ARGV[6], contact_id)
  redis.call('HSET', base .. 'contact:' .. contact_id,
    'id', contact_id, 'channel', ARGV[10], 'channel_instance', ARGV[11],
    'handle', ARGV[13], 'name', ARGV[14], 'created_at', now)
elseif ARGV[14] ~= '' then
  redis.call('HSET', base .. 'contact:' .. contact_id, 'name', ARGV[14])
end

local blocked = redis.call('HGET', base .. 'contact:' .. contact_id, 'blocked') == '1'
local conv_id = redis.call('HGET', KEYS[2], ARGV[5])
local new_conv = 0
local conv_key
if not conv_id then
  conv_id = ARGV[3]
  new_conv = 1
  conv_key = base .. 'conv:' .. conv_id
  redis.call('HSET', KEYS[2], ARGV[5], conv_id)
  local memberships = {'status:new', 'channel:' .. ARGV[10]}
  if ARGV[11] ~= ARGV[10] then memberships[#memberships + 1] = 'channel:' .. ARGV[11] end
  for _, suffix in ipairs(memberships) do redis.call('SADD', base .. 'idx:' .. suffix, conv_id) end
  redis.call('HSET', conv_key,
    'id', conv_id, 'channel', ARGV[10], 'channel_instance', ARGV[11], 'thread_id', ARGV[12],
    'contact_id', contact_id, 'status', 'new', 'created_at', now, 'seq', 0, 'message_count', 0,
    '_idx', table.concat(memberships, '\n'))
else
  conv_key = base .. 'conv:' .. conv_id
  -- The buyer wrote again: a channel that could not reach them (blocked bot) can now.
  redis.call('HDEL', conv_key, 'unreachable')
  local f = redis.call('HMGET', conv_key, 'status', '_idx')
  if not blocked then redis.call('HDEL', conv_key, 'work_status', 'snoozed_until') end
  if f[1] == 'resolved' and not blocked then
    redis.call('HSET', conv_key, 'status', 'new')
    -- The buyer wrote again: the record moves from the "resolved" to the "new" index.
    if f[2] then
      redis.call('SREM', base .. 'idx:status:resolved', conv_id)
      redis.call('SADD', base .. 'idx:status:new', conv_id)
      local moved = string.gsub(f[2], 'status:resolved', 'status:new', 1)
      redis.call('HSET', conv_key, '_idx', moved)
    end
  end
end

if blocked then redis.call('HSET', conv_key, 'blocked', '1') end
local seq = redis.call('HINCRBY', conv_key, 'seq', 1)
redis.call('HINCRBY', conv_key, 'message_count', 1)
-- The buyer's last message by the provider's clock (ARGV[17], never later than now): a reply
-- window (WhatsApp's 24 h) counts from when the buyer wrote, not from when a webhook Meta
-- retried for hours arrived. A late redelivery of an older message moves neither it back nor
-- the message a reply quotes.
local inbound_at = now
local sent = ARGV[17] and tonumber(ARGV[17])
if sent and sent < tonumber(now) then inbound_at = ARGV[17] end
local previous = redis.call('HGET', conv_key, 'last_inbound_at')
redis.call('HSET', conv_key, 'updated_at', now)
if not previous or tonumber(inbound_at) >= tonumber(previous) then
  redis.call('HSET', conv_key, 'last_inbound_at', inbound_at,
    'last_inbound_provider_id', ARGV[15])
end

local msg_id = ARGV[2]
redis.call('HSET', base .. 'msg:' .. msg_id,
  'conversation_id', conv_id, 'seq', seq, 'direction', 'in', 'status', 'received',
  'created_at', now, 'data', ARGV[7])
redis.call('ZADD', base .. 'conv:' .. conv_id .. ':msgs', seq, msg_id)
for sha in string.gmatch(ARGV[16] or '', '[^\n]+') do
  redis.call('SADD', base .. 'blob:' .. sha, msg_id)
end
redis.call('ZADD', KEYS[4], now, conv_id)
redis.call('SET', KEYS[1], msg_id, 'EX', tonumber(ARGV[9]))
local terms = base .. 'conv:' .. conv_id .. ':terms'
-- At most storage/search.py's MAX_TOKENS (256) tokens: one HSET of them all stays far below
-- Lua's stack limit for unpack, and saves a command per token.
local listed = {}
for i = 18, #ARGV do
  redis.call('SADD', base .. 'idx:term:' .. ARGV[i], conv_id)
  listed[#listed + 1] = ARGV[i]
  listed[#listed + 1] = ''
end
if #listed > 0 then redis.call('HSET', terms, unpack(listed)) end
redis.call('XADD', KEYS[5], '*', 'conv', conv_id, 'msg', msg_id, 'new', new_conv)
return {msg_id, conv_id, seq, 0, new_conv}
