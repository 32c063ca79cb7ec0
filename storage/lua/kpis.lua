-- kpis.lua: apply one batch of the KPI aggregator's increments (storage/kpis.py), atomically
-- with the advance of its cursor over the event log, so that a batch counts exactly once:
-- a process that read the same events concurrently, or replays them after a crash, finds the
-- cursor moved and writes nothing.
--
-- Every key is under the KPI hash tag "{kpi}" (one Cluster slot).
-- KEYS[1]      ih:{kpi}:cursor       the id of the last event-log entry counted
-- KEYS[2..]    hour buckets (ih:{kpi}:h:<hour>) and per-conversation states (ih:{kpi}:c:<id>)
-- ARGV[1] the cursor the batch was computed from ("" = never counted), [2] the new cursor,
-- [3] bucket TTL seconds, [4] conversation-state TTL seconds,
-- [5] JSON {"i": [[key index, field, amount], ...], "s": [[key index, field, value], ...],
--           "d": [key index, ...]}: increments, state fields to set ("" deletes the field),
--           states to delete; key indexes are 1-based into KEYS.
-- Returns 1 when applied, 0 when the cursor had moved (nothing written).

local cursor = redis.call('GET', KEYS[1]) or ''
if cursor ~= ARGV[1] then return 0 end

local batch = cjson.decode(ARGV[5])
local bucket_ttl, state_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local touched = {}

for _, op in ipairs(batch['i']) do
  -- HINCRBYFLOAT for counts too: a field that ever held a fraction refuses HINCRBY
  redis.call('HINCRBYFLOAT', KEYS[op[1]], op[2], op[3])
  touched[op[1]] = bucket_ttl
end
for _, op in ipairs(batch['s']) do
  local key = KEYS[op[1]]
  if op[3] == '' then
    redis.call('HDEL', key, op[2])
  else
    redis.call('HSET', key, op[2], op[3])
  end
  touched[op[1]] = state_ttl
end
for _, index in ipairs(batch['d']) do
  redis.call('DEL', KEYS[index])
  touched[index] = nil
end
for index, ttl in pairs(touched) do
  if redis.call('EXISTS', KEYS[index]) == 1 then redis.call('EXPIRE', KEYS[index], ttl) end
end

redis.call('SET', KEYS[1], ARGV[2])
return 1
