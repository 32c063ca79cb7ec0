-- claim_send.lua: take a queued reply for sending, under a lease, or say why not.
--
-- One atomic step decides who sends a reply, whatever the number of hub processes: a reply is
-- sent only from "queued", moved to "sending" with a lease here, and skipped while another
-- process holds a live lease, once it is settled, or while it waits in the retry set (the retry
-- set, not a stale outbox entry, owns it then). A lease that expired means its holder died mid
-- send: the reply is sent again (at-least-once where the provider offers no idempotency).
--
-- KEYS[1] message hash   ih:{pN}:msg:<id>
-- ARGV[1] now   ARGV[2] lease seconds   ARGV[3] lease owner (consumer name)
-- Returns {verdict, attempts}; verdict is one of
--   "send"       the caller holds the lease for attempt number <attempts>
--   "busy"       another process is sending it now (leave the outbox entry pending)
--   "done"       sent, delivered, read or failed for good
--   "scheduled"  waiting for its retry time in the retry set
--   "missing"    no such outbound message

local f = redis.call('HMGET', KEYS[1], 'direction', 'status', 'attempts', 'lease_until',
                     'retry_pending')
local attempts = tonumber(f[3]) or 0
if f[1] ~= 'out' then return {'missing', attempts} end
local status = f[2]
if status == 'sent' or status == 'delivered' or status == 'read' or status == 'failed' then
  return {'done', attempts}
end
if f[5] == '1' then return {'scheduled', attempts} end
local now = tonumber(ARGV[1])
if status == 'sending' and (tonumber(f[4]) or 0) > now then return {'busy', attempts} end
attempts = attempts + 1
redis.call('HSET', KEYS[1], 'status', 'sending', 'attempts', attempts,
           'lease_until', now + tonumber(ARGV[2]), 'lease_owner', ARGV[3], 'updated_at', ARGV[1])
return {'send', attempts}
