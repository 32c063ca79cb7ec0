-- enqueue_reply.lua: append an agent's reply to its conversation and queue it for sending.
--
-- The message and its outbox entry appear together or not at all; a client-supplied
-- idempotency key makes a retried API call return the first reply instead of sending twice.
--
-- KEYS[1] conversation hash   ih:{pN}:conv:<id>
-- KEYS[2] conversation msgs   ih:{pN}:conv:<id>:msgs  (zset by seq)
-- KEYS[3] message hash        ih:{pN}:msg:<message id>
-- KEYS[4] outbox stream       ih:{pN}:outbox
-- KEYS[5] reply key           ih:{pN}:replykey:<conv>\0<client key>  (ignored when ARGV[5] == "")
-- KEYS[6] conversations zset  ih:{pN}:convs
-- ARGV[1] message id   ARGV[2] payload (msgpack OutboundReply)   ARGV[3] now
-- ARGV[4] conversation id   ARGV[5] client key ("" = none)   ARGV[6] reply-key TTL seconds
-- ARGV[7] key base "ih:{pN}:"   ARGV[8] attachment file keys (sha256 hex), newline-separated:
--         the reply joins each file's reference set blob:<sha> (storage/attachments.py)
-- Returns {message id, seq, duplicate 0|1} or an error "NOCONV" when the conversation is unknown.

if ARGV[5] ~= '' then
  local prior = redis.call('GET', KEYS[5])
  if prior then
    return {prior, 0, 1}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('NOCONV')
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HINCRBY', KEYS[1], 'message_count', 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
redis.call('HSET', KEYS[3],
  'conversation_id', ARGV[4], 'seq', seq, 'direction', 'out', 'status', 'queued',
  'created_at', ARGV[3], 'attempts', 0, 'data', ARGV[2])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
for sha in string.gmatch(ARGV[8] or '', '[^\n]+') do
  redis.call('SADD', ARGV[7] .. 'blob:' .. sha, ARGV[1])
end
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[4])
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[5], ARGV[1], 'EX', tonumber(ARGV[6]))
end
redis.call('XADD', KEYS[4], '*', 'msg', ARGV[1], 'conv', ARGV[4])
return {ARGV[1], seq, 0}
