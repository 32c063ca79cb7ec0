-- channel_health.lua: add one hub process's health figures for one channel instance.
--
-- Every process counts in memory and flushes its deltas here every few seconds, so counts of
-- several processes add up (HINCRBY) and timestamps keep the latest (a max, compared as
-- numbers). A "latest" record (the last send error with its time) is replaced only by a newer
-- one. Per-minute webhook outcomes go to the window hash, which loses minutes older than the
-- rule window (trimmed when the caller's minute changed) and expires when nothing is written.
--
-- KEYS[1] counters hash   ih:{ch:<inst>}:health          (fields: see storage/health.py)
-- KEYS[2] window hash     ih:{ch:<inst>}:health:window   <minute>:ok, <minute>:failed
-- ARGV[1] JSON {"incr": {field: n}, "max": {field: "<UNIX s>"},
--               "latest": [[at_field, "<UNIX s>", value_field, value], ...],
--               "once": {field: "<UNIX s>"},          -- set only if missing (known_since)
--               "window": {field: n}, "trim_before": <minute, 0 = none>, "window_ttl": s}
-- Returns the number of window fields trimmed.

local batch = cjson.decode(ARGV[1])

for field, n in pairs(batch.incr or {}) do
    redis.call('HINCRBY', KEYS[1], field, n)
end
for field, at in pairs(batch.max or {}) do
    local current = tonumber(redis.call('HGET', KEYS[1], field))
    if current == nil or tonumber(at) > current then
        redis.call('HSET', KEYS[1], field, at)
    end
end
for _, record in ipairs(batch.latest or {}) do
    local current = tonumber(redis.call('HGET', KEYS[1], record[1]))
    if current == nil or tonumber(record[2]) > current then
        redis.call('HSET', KEYS[1], record[1], record[2], record[3], record[4])
    end
end
for field, at in pairs(batch.once or {}) do
    redis.call('HSETNX', KEYS[1], field, at)
end

local wrote = false
for field, n in pairs(batch.window or {}) do
    redis.call('HINCRBY', KEYS[2], field, n)
    wrote = true
end
local trimmed = 0
local before = tonumber(batch.trim_before or 0)
if before > 0 then
    for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
        local minute = tonumber(string.match(field, '^(%d+):'))
        if minute == nil or minute < before then
            redis.call('HDEL', KEYS[2], field)
            trimmed = trimmed + 1
        end
    end
end
if wrote then
    redis.call('EXPIRE', KEYS[2], tonumber(batch.window_ttl))
end
return trimmed
