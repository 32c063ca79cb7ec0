-- events.lua: append one entry to the live event log (storage/events.py), atomically with a
-- snapshot of the conversation's routing state, so every entry says who could see it then.
--
-- Every key is under the routing hash tag "{r}" (one Cluster slot with the routing state).
-- KEYS[1] = ih:{r}:eventlog              stream, trimmed MAXLEN ~ ARGV[1]
-- KEYS[2] = ih:{r}:rc:<conversation>     routing state hash (read only: status, assignee, pool)
-- KEYS[3] = dedupe marker or ih:{r}:eventlog again (no marker): an entry derived from a
--           routing event is written once even when the mirror's entry is processed twice
-- KEYS[4] = ih:{r}:eventlog:holders     hash conversation -> agent it was last assigned to in
--           this log: a transfer's entry names the agent it was taken from ("from"), whom
--           routing's own event does not name; the field goes when the conversation is
--           requeued or released
-- ARGV[1] retention (approximate MAXLEN), [2] now (unix seconds), [3] kind, [4] conversation,
-- [5] snapshot: "rc" = read it from KEYS[2]; "given" = the fields below carry it (s_status,
--     s_assignee, s_pool); "released" = routing's "released": a kind "status" / action
--     "resolved" entry when the conversation is now closed, else kind "assignment" / action
--     "released"
-- [6] marker TTL seconds (0 = no marker), [7..] field, value pairs (small, no message text)
-- A "new_message" on a closed conversation appends a "status" / "reopened" entry after it.
-- Returns the id of the (last) entry written, or false when the marker was already set.

local log, state, marker, holders = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local retention, now, kind, conv = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local snapshot, marker_ttl = ARGV[5], tonumber(ARGV[6])

if marker_ttl > 0 then
  if redis.call('SET', marker, '1', 'NX', 'EX', marker_ttl) == false then return false end
end

local fields = {}
for i = 7, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end

local function field(name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

local current = redis.call('HMGET', state, 'status', 'assignee', 'pool')
local function add(k, extra, with_state)
  local args = {'XADD', log, 'MAXLEN', '~', retention, '*', 'kind', k, 'conv', conv, 'at', now}
  for _, v in ipairs(extra) do args[#args + 1] = v end
  if with_state then
    args[#args + 1] = 's_status'
    args[#args + 1] = current[1] or ''
    args[#args + 1] = 's_assignee'
    args[#args + 1] = current[2] or ''
    args[#args + 1] = 's_pool'
    args[#args + 1] = (current[1] == 'waiting' and current[3]) or ''
  end
  return redis.call(unpack(args))
end

local action = field('action')
if kind == 'assignment' and (action == 'assigned' or action == 'transferred') then
  local agent = field('agent')
  local prior = redis.call('HGET', holders, conv)
  if prior and prior ~= agent then
    fields[#fields + 1] = 'from'
    fields[#fields + 1] = prior
  end
  if agent then redis.call('HSET', holders, conv, agent) end
elseif snapshot == 'released' or action == 'requeued' then
  redis.call('HDEL', holders, conv)
end

if snapshot == 'released' then
  if current[1] == 'closed' then
    fields[#fields + 1] = 'action'
    fields[#fields + 1] = 'resolved'
    return add('status', fields, true)
  end
  fields[#fields + 1] = 'action'
  fields[#fields + 1] = 'released'
  return add('assignment', fields, true)
end

local id = add(kind, fields, snapshot == 'rc')
if kind == 'new_message' and current[1] == 'closed' then
  id = add('status', {'action', 'reopened'}, true)
end
return id
