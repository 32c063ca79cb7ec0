-- deliveries.lua: delivery receipts on outbound messages, moved forward only.
--
-- States rank sent < failed < delivered < read; an update applies only when it ranks above the
-- message's state (channels/services/receipts.py says why failed ranks where it does). A failed
-- message gets the provider's reason as its error and a dead-letter entry (an operator can send
-- it again); a delivered or read that comes after a failure clears both.
--
-- Both commands write the status's time as "status_at" (the provider's, when it gave one) and
-- stamp it with "status_stamp" = "updated_at": a later step of another script (a retry, a dead
-- letter) moves "updated_at" only, and the stamp no longer matching says "status_at" is stale.
--
-- The index (provider id -> our message id) lives in the message's partition, so recording a
-- send and writing its index entry are one step. A receipt does not know that partition: the
-- caller (storage/deliveries.py) asks every partition's index, and when none knows the id yet,
-- parks the receipt in each; the partition where the send lands applies it in "sent", and the
-- other copies expire. Receipts for an earlier attempt of a reply that was sent again (its
-- provider id is no longer the message's) are ignored.
--
-- Command "sent" (Store.mark_sent): the send returned the provider's id.
--   KEYS[1] message hash            ih:{pN}:msg:<id>
--   KEYS[2] index entry             ih:{pN}:dlv:<instance>\0<provider id>
--   KEYS[3] parked, by provider id  ih:{pN}:early:<instance>\0<provider id>
--   KEYS[4] parked, by our id       ih:{pN}:early:<instance>\0<message id>
--   KEYS[5] dlq stream              ih:{pN}:dlq
--   ARGV[1] "sent"  ARGV[2] message id  ARGV[3] provider id  ARGV[4] now
--   ARGV[5] index TTL seconds  ARGV[6] channel instance
--   Returns how many parked receipts it applied, or -1 when the message is gone (erased while
--   it was being sent: nothing is written).
--
-- Command "apply": one receipt, in one partition.
--   KEYS[1] index entry             ih:{pN}:dlv:<instance>\0<id>
--   KEYS[2] parked                  ih:{pN}:early:<instance>\0<id>
--   KEYS[3] dlq stream              ih:{pN}:dlq
--   ARGV[1] "apply"  ARGV[2] key base "ih:{pN}:"  ARGV[3] channel instance  ARGV[4] id
--   ARGV[5] state  ARGV[6] provider's time ("" = none)  ARGV[7] provider's error ("" = none)
--   ARGV[8] now  ARGV[9] "1" = park it when unknown here  ARGV[10] "1" = the id may be our
--   message id (it parses as one of this partition's)  ARGV[11] parked TTL seconds
--   ARGV[12] most receipts kept parked per id
--   The message hash (base .. "msg:" .. <message id>) and its conversation hash are computed
--   keys of the same partition (one slot).
--   Returns {verdict, message id or ""}; verdict is one of
--     "applied"    the state moved forward
--     "unchanged"  stale or repeated state
--     "stale"      about an earlier attempt, or a message that is gone
--     "pending"    our reply, not handed to the provider yet (not parked: ARGV[9] ~= "1")
--     "parked"     kept until the send that returns the id is recorded
--     "unknown"    not known here (not parked)

local RANK = {sent = 1, failed = 2, delivered = 3, read = 4}
local function rank(state) return RANK[state] or 0 end

local function advance(msgkey, mid, id, state, at, err, now, dlq, instance)
  local f = redis.call('HMGET', msgkey, 'direction', 'status', 'provider_message_id',
                       'attempts', 'conversation_id', 'dlq_entry')
  if f[1] ~= 'out' then return 'stale' end
  local current = f[2] or ''
  if rank(current) == 0 then return 'pending' end
  if id ~= f[3] and id ~= mid then return 'stale' end
  if rank(state) <= rank(current) then return 'unchanged' end
  local when = now
  if at ~= '' then when = at end
  redis.call('HSET', msgkey, 'status', state, 'status_at', when, 'status_stamp', now,
             'updated_at', now)
  if state == 'failed' then
    local reason = err
    if reason == '' then reason = 'the provider reported the message as not delivered' end
    if f[6] then redis.call('XDEL', dlq, f[6]) end
    local entry = redis.call('XADD', dlq, '*', 'msg', mid, 'conv', f[5] or '',
                             'instance', instance, 'error', reason, 'attempts', f[4] or '0',
                             'failed_at', now)
    redis.call('HSET', msgkey, 'error', reason, 'dlq_entry', entry)
  else
    redis.call('HDEL', msgkey, 'error', 'dlq_entry')
    if f[6] then redis.call('XDEL', dlq, f[6]) end
  end
  return 'applied'
end

if ARGV[1] == 'sent' then
  local mid, pid, now = ARGV[2], ARGV[3], ARGV[4]
  if redis.call('HGET', KEYS[1], 'direction') ~= 'out' then return -1 end
  redis.call('HSET', KEYS[1], 'status', 'sent', 'provider_message_id', pid,
             'updated_at', now, 'status_at', now, 'status_stamp', now)
  redis.call('HDEL', KEYS[1], 'error', 'lease_until', 'lease_owner')
  redis.call('SET', KEYS[2], mid, 'EX', tonumber(ARGV[5]))
  local applied = 0
  for k = 3, 4 do
    if k == 3 or KEYS[4] ~= KEYS[3] then
      local items = redis.call('LRANGE', KEYS[k], 0, -1)
      if #items > 0 then redis.call('DEL', KEYS[k]) end
      for _, item in ipairs(items) do
        local u = cjson.decode(item)
        if advance(KEYS[1], mid, u[1], u[2], u[3], u[4], now, KEYS[5], ARGV[6]) == 'applied' then
          applied = applied + 1
        end
      end
    end
  end
  return applied
end

-- "apply"
local base, instance, id, state = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local at, err, now = ARGV[6], ARGV[7], ARGV[8]

local function park()
  redis.call('RPUSH', KEYS[2], cjson.encode({id, state, at, err}))
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[12]), -1)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[11]))
end

local mid = redis.call('GET', KEYS[1])
if mid then
  local verdict = advance(base .. 'msg:' .. mid, mid, id, state, at, err, now, KEYS[3], instance)
  -- indexed but queued or sending: it is being sent again, the receipt is about the last try
  if verdict == 'pending' then verdict = 'stale' end
  return {verdict, mid}
end
if ARGV[10] == '1' then
  local key = base .. 'msg:' .. id
  local f = redis.call('HMGET', key, 'direction', 'conversation_id')
  if f[1] == 'out' and
      redis.call('HGET', base .. 'conv:' .. (f[2] or ''), 'channel_instance') == instance then
    local verdict = advance(key, id, id, state, at, err, now, KEYS[3], instance)
    if verdict ~= 'pending' then return {verdict, id} end
    if ARGV[9] == '1' then
      park()
      return {'parked', id}
    end
    return {'pending', id}
  end
end
if ARGV[9] == '1' then
  park()
  return {'parked', ''}
end
return {'unknown', ''}
