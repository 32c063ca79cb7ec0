-- dead_letter.lua: give up on a reply: mark it failed with the provider's error and record it in
-- the dead-letter stream, atomically, so the visible status and the DLQ always agree.
--
-- KEYS[1] message hash   ih:{pN}:msg:<id>
-- KEYS[2] dlq stream     ih:{pN}:dlq
-- ARGV[1] message id   ARGV[2] conversation id   ARGV[3] channel instance
-- ARGV[4] error text   ARGV[5] attempts          ARGV[6] now
-- Returns the dead-letter stream entry id.

local entry = redis.call('XADD', KEYS[2], '*',
  'msg', ARGV[1], 'conv', ARGV[2], 'instance', ARGV[3], 'error', ARGV[4],
  'attempts', ARGV[5], 'failed_at', ARGV[6])
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[4], 'attempts', ARGV[5],
  'updated_at', ARGV[6], 'dlq_entry', entry)
redis.call('HDEL', KEYS[1], 'lease_until', 'lease_owner', 'retry_pending')
return entry
