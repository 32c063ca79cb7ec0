-- retry_dead.lua: send a failed reply again (operator's "dlq retry").
--
-- Removes the dead-letter entry, resets the attempt count and queues the reply, atomically, so
-- two operators retrying at once send it once.
--
-- KEYS[1] message hash   ih:{pN}:msg:<id>
-- KEYS[2] dlq stream     ih:{pN}:dlq
-- KEYS[3] outbox stream  ih:{pN}:outbox
-- ARGV[1] message id     ARGV[2] now
-- Returns 1 when queued, or an error: "NOMSG" (unknown id), "NOTFAILED" (not in failed state).

local fields = redis.call('HMGET', KEYS[1], 'status', 'conversation_id', 'dlq_entry', 'direction')
if not fields[2] then
  return redis.error_reply('NOMSG')
end
if fields[1] ~= 'failed' or fields[4] ~= 'out' then
  return redis.error_reply('NOTFAILED')
end
if fields[3] then
  redis.call('XDEL', KEYS[2], fields[3])
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', 0, 'updated_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'error', 'dlq_entry', 'retry_pending', 'lease_until', 'lease_owner')
redis.call('XADD', KEYS[3], '*', 'msg', ARGV[1], 'conv', fields[2])
return 1
