-- conversations.lua: a partition's conversation records, their filter indexes and the
-- keyset-paged list (dispatch on ARGV[2]).
--
-- Indexes are sets under the partition's hash tag (names relative to ARGV[1] = "ih:{pN}:"):
--   idx:status:<s>        new | queued | assigned | resolved
--   idx:channel:<name>    both the channel type and the channel instance (a filter value
--                         matches either)
--   idx:language:<l>  idx:market:<m>  idx:assignee:<agent>  idx:queue:<q>
--   idx:pool:<pool>       waiting (status queued) in that routing pool ("queue#step")
--   idx:tag:<tag>         the record's field `tags` (newline-separated, normalised by
--                         storage/tags.py) names it
--   idx:term:<token>      search postings (storage/search.py, written after ingest); the
--                         index itself is the truth for a "term" predicate
-- A conversation's memberships are recorded in its hash field `_idx` ("status:new\n..."), so a
-- reindex removes exactly what it added before, whoever changed the hash since (ingest.lua
-- resets a resolved conversation to "new"): the indexes heal at the next write.
-- The page command never trusts an index alone: every candidate is checked against the hash,
-- so an index can only make a conversation missing for a moment, never wrongly listed.
--
-- KEYS[1] ih:{pN}:convs  zset  conversation id by last activity (declares the slot)
-- ARGV[1] base "ih:{pN}:"   ARGV[2] command, then per command:
--
-- update: ARGV[3] conversation id, ARGV[4..] field, value pairs. HSET + reindex in one step.
--         Error NOCONV when the record does not exist (nothing is written).
-- reindex: ARGV[3] conversation id. Returns 1, or 0 when the record does not exist.
-- tags: ARGV[3] conversation id, ARGV[4] most tags kept, ARGV[5] tags to add, ARGV[6] tags to
--       remove (newline-separated, normalised). Read-modify-write of `tags` + reindex in one
--       step (no lost update between two agents). Returns the tags, or error NOCONV / TOOMANY
--       (nothing written).
-- page: ARGV[3] cursor score ("" = from the top), ARGV[4] cursor id ("" = every id at that
--       score is past), ARGV[5] limit, ARGV[6] groups JSON, ARGV[7] small (a driver group of at
--       most this many members is read whole), ARGV[8] minimum scan budget.
--       groups = [[[field, value], ...], ...]: AND of groups, OR inside a group; field "pool"
--       means waiting in that pool, field "channel" matches type or instance.
--       Order: activity descending, then id descending (byte order, like Redis's own), so a
--       page boundary is exact even when many conversations share a timestamp.
--       Returns {plan, id, score, record (HGETALL), contact handle, contact name, ...} for at
--       most `limit` rows after the cursor: a page is one round trip.
-- pick: ARGV[3] JSON [[id, score], ...] candidates of this partition in the caller's order
--       (a list ordered by something else than activity: storage/sla.py), ARGV[4] "",
--       ARGV[5] how many, ARGV[6] groups JSON as for page. Returns the rows of the candidates
--       that exist and match, in the order given, as page does (plan "pick").
--
-- Plans (all exact, all read-only): "all" walks the activity zset; "driver" takes the
-- smallest group (at most `small` members) intersected with the activity zset by ZINTER, in
-- order; "scan" walks the activity zset checking each entry, for at most max(min budget,
-- size of the smallest group / 8) entries, then "scan+intersect" finishes from ZINTER where
-- the scan stopped. Work is bounded by the smallest group, never by the partition's size.

local base = ARGV[1]
local cmd = ARGV[2]
local CONVS = KEYS[1]
local CHUNK = 200
local FIELDS = {'status', 'channel', 'channel_instance', 'language', 'market', 'assignee',
                'queue', 'pool', 'tags'}

local function conv_key(c) return base .. 'conv:' .. c end
local function index_key(suffix) return base .. 'idx:' .. suffix end

local function split_lines(s)
  local out = {}
  if not s then return out end
  for part in string.gmatch(s, '[^\n]+') do out[#out + 1] = part end
  return out
end

local function read_fields(c)
  local r = redis.call('HMGET', conv_key(c), unpack(FIELDS))
  local f = {}
  for i, name in ipairs(FIELDS) do f[name] = r[i] or '' end
  if f.status == '' then f.status = 'new' end
  return f
end

-- The index suffixes a record with these fields belongs to.
local function memberships(f)
  local out = {'status:' .. f.status}
  if f.channel ~= '' then out[#out + 1] = 'channel:' .. f.channel end
  if f.channel_instance ~= '' and f.channel_instance ~= f.channel then
    out[#out + 1] = 'channel:' .. f.channel_instance
  end
  for _, name in ipairs({'language', 'market', 'assignee', 'queue'}) do
    if f[name] ~= '' then out[#out + 1] = name .. ':' .. f[name] end
  end
  if f.status == 'queued' and f.pool ~= '' then out[#out + 1] = 'pool:' .. f.pool end
  for t in string.gmatch(f.tags, '[^\n]+') do out[#out + 1] = 'tag:' .. t end
  return out
end

local function reindex(c)
  local key = conv_key(c)
  local fresh = memberships(read_fields(c))
  local keep = {}
  for _, s in ipairs(fresh) do keep[s] = true end
  for _, s in ipairs(split_lines(redis.call('HGET', key, '_idx'))) do
    if not keep[s] then redis.call('SREM', index_key(s), c) end
  end
  for _, s in ipairs(fresh) do redis.call('SADD', index_key(s), c) end
  redis.call('HSET', key, '_idx', table.concat(fresh, '\n'))
  return 1
end

if cmd == 'update' then
  local c = ARGV[3]
  if redis.call('EXISTS', conv_key(c)) == 0 then return redis.error_reply('NOCONV') end
  local args = {'HSET', conv_key(c)}
  for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
  if #args > 2 then redis.call(unpack(args)) end
  return reindex(c)

elseif cmd == 'reindex' then
  if redis.call('EXISTS', conv_key(ARGV[3])) == 0 then return 0 end
  return reindex(ARGV[3])

elseif cmd == 'tags' then
  local c = ARGV[3]
  if redis.call('EXISTS', conv_key(c)) == 0 then return redis.error_reply('NOCONV') end
  local drop, have, list = {}, {}, {}
  for _, t in ipairs(split_lines(ARGV[6])) do drop[t] = true end
  for _, t in ipairs(split_lines(redis.call('HGET', conv_key(c), 'tags'))) do
    if not drop[t] and not have[t] then have[t] = true list[#list + 1] = t end
  end
  for _, t in ipairs(split_lines(ARGV[5])) do
    if not drop[t] and not have[t] then have[t] = true list[#list + 1] = t end
  end
  if #list > tonumber(ARGV[4]) then return redis.error_reply('TOOMANY') end
  redis.call('HSET', conv_key(c), 'tags', table.concat(list, '\n'))
  reindex(c)
  return list

elseif cmd ~= 'page' and cmd ~= 'pick' then
  return redis.error_reply('unknown conversations command ' .. tostring(cmd))
end

-- page ------------------------------------------------------------------------------------

local cursor_text = ARGV[3]
local cursor_score = nil
if cursor_text ~= '' then cursor_score = tonumber(cursor_text) end
local cursor_id = ARGV[4]
local limit = tonumber(ARGV[5])
local groups = cjson.decode(ARGV[6])
local small = tonumber(ARGV[7])
local min_budget = tonumber(ARGV[8])

-- Byte order, as Redis orders members of equal score (Lua's own < follows the locale).
local function bytes_lt(a, b)
  if a == b then return false end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- Does (score, id) come after (s, i) in the list's order (score desc, id desc)?
local function comes_after(score, id, s, i)
  if s == nil then return true end
  if score ~= s then return score < s end
  return bytes_lt(id, i)
end

-- Each predicate's index key and the record fields that verify it, computed once.
local needed, seen_field = {}, {}
local function need(name)
  if not seen_field[name] then seen_field[name] = true needed[#needed + 1] = name end
end
for _, group in ipairs(groups) do
  for _, pred in ipairs(group) do
    pred.key = index_key(pred[1] .. ':' .. pred[2])
    if pred[1] == 'channel' then need('channel') need('channel_instance')
    elseif pred[1] == 'pool' then need('status') need('pool')
    elseif pred[1] == 'tag' then need('tags')
    elseif pred[1] ~= 'term' then need(pred[1]) end
  end
end

local function holds(f, field, value)
  if field == 'channel' then return f.channel == value or f.channel_instance == value end
  if field == 'pool' then return f.status == 'queued' and f.pool == value end
  if field == 'tag' then return string.find('\n' .. f.tags .. '\n', '\n' .. value .. '\n', 1, true) ~= nil end
  if field == 'term' then return true end  -- its index is the truth (checked just before)
  return f[field] == value
end

-- In every group's index, then confirmed by the record itself (an index may lag a write
-- that bypassed it; the record never does).
local function matches(c)
  if #groups == 0 then return true end
  for _, group in ipairs(groups) do
    local any = false
    for _, pred in ipairs(group) do
      if redis.call('SISMEMBER', pred.key, c) == 1 then any = true break end
    end
    if not any then return false end
  end
  if #needed == 0 then return true end  -- only index-true predicates (search terms)
  local r = redis.call('HMGET', conv_key(c), unpack(needed))
  local f = {}
  for i, name in ipairs(needed) do f[name] = r[i] or '' end
  if f.status == '' then f.status = 'new' end
  for _, group in ipairs(groups) do
    local any = false
    for _, pred in ipairs(group) do
      if holds(f, pred[1], pred[2]) then any = true break end
    end
    if not any then return false end
  end
  return true
end

local found = {}
-- The reply carries each row's record and contact, so a page is one round trip.
local function finish(plan)
  local out = {plan}
  for j = 1, #found, 2 do
    local c = found[j]
    local raw = redis.call('HGETALL', conv_key(c))
    local contact_id = ''
    for k = 1, #raw, 2 do
      if raw[k] == 'contact_id' then contact_id = raw[k + 1] break end
    end
    local contact = redis.call('HMGET', base .. 'contact:' .. contact_id, 'handle', 'name')
    out[#out + 1] = c
    out[#out + 1] = found[j + 1]
    out[#out + 1] = raw
    out[#out + 1] = contact[1]
    out[#out + 1] = contact[2]
  end
  return out
end

local function take(id, score_text)
  found[#found + 1] = id
  found[#found + 1] = score_text
  return #found / 2 < limit
end

-- Walk `key` in list order from just after (s_text, id); calls visit(id, score_text) until it
-- returns false or `budget` entries were examined. Returns 'done' | 'end' | 'budget' and the
-- last examined position.
local function walk(key, s_text, id, budget, visit)
  local s = nil
  if s_text ~= '' then s = tonumber(s_text) end
  local rank = 0
  if s ~= nil then
    local here = id ~= '' and redis.call('ZSCORE', key, id)
    if here and tonumber(here) == s then
      rank = redis.call('ZREVRANK', key, id) + 1
    else
      rank = redis.call('ZCOUNT', key, '(' .. s_text, '+inf')
    end
  end
  local examined = 0
  local last_s, last_id = s_text, id
  while true do
    local rows = redis.call('ZREVRANGE', key, rank, rank + CHUNK - 1, 'WITHSCORES')
    if #rows == 0 then return 'end', last_s, last_id end
    for j = 1, #rows, 2 do
      local member, score_text = rows[j], rows[j + 1]
      if comes_after(tonumber(score_text), member, s, id) then
        if budget and examined >= budget then return 'budget', last_s, last_id end
        examined = examined + 1
        last_s, last_id = score_text, member
        if matches(member) and not visit(member, score_text) then
          return 'done', last_s, last_id
        end
      end
    end
    rank = rank + CHUNK
  end
end

if cmd == 'pick' then
  for _, row in ipairs(cjson.decode(ARGV[3])) do
    if redis.call('EXISTS', conv_key(row[1])) == 1 and matches(row[1]) then
      take(row[1], row[2])
    end
  end
  return finish('pick')
end

if #groups == 0 then
  walk(CONVS, cursor_text, cursor_id, nil, take)
  return finish('all')
end

-- The smallest group drives: the fewest candidates to look at.
local driver, driver_size = nil, nil
for _, group in ipairs(groups) do
  local size = 0
  for _, pred in ipairs(group) do size = size + redis.call('SCARD', pred.key) end
  if driver_size == nil or size < driver_size then driver, driver_size = group, size end
end

-- The driver group's members with their activity, in list order, from just after (s, i):
-- ZINTER does the intersection and the ordering in C, read-only.
local function intersect_from(s_text, id)
  local rows, seen = {}, {}
  for _, pred in ipairs(driver) do
    local got = redis.call('ZINTER', 2, CONVS, pred.key, 'WEIGHTS', 1, 0, 'WITHSCORES')
    for j = 1, #got, 2 do
      if not seen[got[j]] then
        seen[got[j]] = true
        rows[#rows + 1] = {got[j], tonumber(got[j + 1]), got[j + 1]}
      end
    end
  end
  table.sort(rows, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return bytes_lt(b[1], a[1])
  end)
  local s = nil
  if s_text ~= '' then s = tonumber(s_text) end
  for _, row in ipairs(rows) do
    if comes_after(row[2], row[1], s, id) and matches(row[1]) and not take(row[1], row[3]) then
      return
    end
  end
end

if driver_size <= small then
  intersect_from(cursor_text, cursor_id)
  return finish('driver')
end

local budget = math.max(min_budget, math.floor(driver_size / 8))
local outcome, last_s, last_id = walk(CONVS, cursor_text, cursor_id, budget, take)
if outcome ~= 'budget' then return finish('scan') end
-- Sparse among many: finish from the intersection, from where the scan stopped.
intersect_from(last_s, last_id)
return finish('scan+intersect')
