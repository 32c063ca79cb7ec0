-- channel_alerts.lua: record what an evaluator decided about a channel's alerts, and say which
-- changed, so that of several hub processes evaluating the same figures exactly one logs each
-- start and each end of a condition.
--
-- An evaluation older than the one stored (a process that read the figures before another
-- process's newer evaluation was written) changes nothing: states only follow newer readings.
--
-- KEYS[1] alerts hash   ih:{ch:<inst>}:health:alerts   as_of, <name>, <name>:since
-- ARGV[1] as_of (UNIX s, when the figures were read)   ARGV[2..] name, value pairs
-- Returns a flat list name, previous value ("" if none) of the states that changed.

local stored = tonumber(redis.call('HGET', KEYS[1], 'as_of'))
local as_of = tonumber(ARGV[1])
if stored ~= nil and as_of < stored then
    return {}
end
redis.call('HSET', KEYS[1], 'as_of', ARGV[1])
local changed = {}
for i = 2, #ARGV, 2 do
    local name, value = ARGV[i], ARGV[i + 1]
    local previous = redis.call('HGET', KEYS[1], name)
    if previous ~= value then
        redis.call('HSET', KEYS[1], name, value, name .. ':since', ARGV[1])
        table.insert(changed, name)
        table.insert(changed, previous or '')
    end
end
return changed
