-- people.lua: the person layer above per-channel contacts (storage/people.py), dispatch on
-- ARGV[2]. Every key lives under the one hash tag {pp} (ARGV[1] = "ih:{pp}:"), so each command
-- is one atomic single-slot step on Redis Cluster too, whichever hub process runs it.
--
-- Layout (identifiers: storage/identifiers.py; ids of people: "pe.<hex>"):
--   KEYS[1] ih:{pp}:ident          hash identifier -> person id
--   KEYS[2] ih:{pp}:cp             hash contact id -> person id
--   c:<contact>:ids                set  the contact's identifiers (as linked)
--   c:<contact>:convs              zset conversation id -> last activity (the contact's)
--   p:<person>                     hash id, created_at, updated_at; split_from/split_by/
--                                  split_at (made by an unmerge); merged_into/merged_by/
--                                  merged_at (a tombstone: merged into another person)
--   p:<person>:contacts            set  contact ids
--   p:<person>:convs               zset conversation id -> last activity (all its contacts)
--   p:<person>:log                 list JSON {action, by, at, person}: merges and unmerges
--   p:<person>:absorbed            set  the tombstones that name this person (deleted with it)
--
-- Automatic linking only ever *joins* an unlinked contact to a person, or makes a new one; it
-- never merges two people nor moves a linked contact. Only a supervisor merges (merge) and
-- splits (unmerge), so an unmerge is never undone by the next message.
--
-- link:    ARGV[3] now, ARGV[4] proposed person id, ARGV[5] contact id, ARGV[6] conversation
--          id ("" = none), ARGV[7] its activity, ARGV[8..] identifiers, most specific first.
--          Returns the person id.
-- merge:   ARGV[3] now, ARGV[4] into, ARGV[5] other, ARGV[6] by. Errors NOPERSON, SAME.
--          Returns the surviving person id.
-- unmerge: ARGV[3] now, ARGV[4] contact id, ARGV[5] proposed person id, ARGV[6] by. The
--          contact leaves with every contact of the person sharing its sender identifier
--          (the same sender in another partition). Errors NOCONTACT, ALONE. Returns the new id.
-- forget:  ARGV[3] contact id (erased or retired). Returns the person id ("" = none).
-- drop:    ARGV[3] contact id, ARGV[4..] its conversations being deleted (retention).
--          Returns 1.
-- prune:   ARGV[3] person id, ARGV[4..] conversation ids that no longer exist. Returns 1.

local base = ARGV[1]
local cmd = ARGV[2]
local MAX_HOPS = 32
local LOG_KEEP = 200

local function pkey(p, suffix) return base .. 'p:' .. p .. (suffix or '') end
local function ckey(c, suffix) return base .. 'c:' .. c .. suffix end

-- A person id as it stands now: a merged one names its survivor; nil = no such person.
local function resolve(p)
  for _ = 1, MAX_HOPS do
    if not p then return nil end
    local f = redis.call('HMGET', pkey(p), 'id', 'merged_into')
    if not f[1] then return nil end
    if not f[2] then return p end
    p = f[2]
  end
  return nil
end

local function add_activity(key, conv, score)
  local old = redis.call('ZSCORE', key, conv)
  if not old or tonumber(old) < tonumber(score) then redis.call('ZADD', key, score, conv) end
end

local function log(p, entry)
  redis.call('RPUSH', pkey(p, ':log'), cjson.encode(entry))
  redis.call('LTRIM', pkey(p, ':log'), -LOG_KEEP, -1)
end

-- Does any of `contacts` carry identifier `id`?
local function carried(contacts, id)
  for _, c in ipairs(contacts) do
    if redis.call('SISMEMBER', ckey(c, ':ids'), id) == 1 then return true end
  end
  return false
end

if cmd == 'link' then
  local now, contact, conv, score = ARGV[3], ARGV[5], ARGV[6], ARGV[7]
  local person = resolve(redis.call('HGET', KEYS[2], contact))
  if not person then
    for i = 8, #ARGV do
      person = resolve(redis.call('HGET', KEYS[1], ARGV[i]))
      if person then break end
    end
    if not person then
      person = ARGV[4]
      redis.call('HSET', pkey(person), 'id', person, 'created_at', now)
    end
    redis.call('HSET', KEYS[2], contact, person)
    redis.call('SADD', pkey(person, ':contacts'), contact)
    for i = 8, #ARGV do
      redis.call('SADD', ckey(contact, ':ids'), ARGV[i])
      if not resolve(redis.call('HGET', KEYS[1], ARGV[i])) then
        redis.call('HSET', KEYS[1], ARGV[i], person)
      end
    end
    redis.call('HSET', pkey(person), 'updated_at', now)
  end
  if conv ~= '' then
    add_activity(ckey(contact, ':convs'), conv, score)
    add_activity(pkey(person, ':convs'), conv, score)
  end
  return person

elseif cmd == 'merge' then
  local now, by = ARGV[3], ARGV[6]
  local into, other = resolve(ARGV[4]), resolve(ARGV[5])
  if not into or not other then return redis.error_reply('NOPERSON') end
  if into == other then return redis.error_reply('SAME') end
  for _, c in ipairs(redis.call('SMEMBERS', pkey(other, ':contacts'))) do
    redis.call('HSET', KEYS[2], c, into)
    redis.call('SADD', pkey(into, ':contacts'), c)
    for _, id in ipairs(redis.call('SMEMBERS', ckey(c, ':ids'))) do
      if redis.call('HGET', KEYS[1], id) == other then redis.call('HSET', KEYS[1], id, into) end
    end
  end
  redis.call('ZUNIONSTORE', pkey(into, ':convs'), 2, pkey(into, ':convs'),
             pkey(other, ':convs'), 'AGGREGATE', 'MAX')
  redis.call('SADD', pkey(into, ':absorbed'), other)
  for _, t in ipairs(redis.call('SMEMBERS', pkey(other, ':absorbed'))) do
    redis.call('SADD', pkey(into, ':absorbed'), t)
  end
  redis.call('DEL', pkey(other, ':contacts'), pkey(other, ':convs'), pkey(other, ':absorbed'))
  redis.call('HSET', pkey(other), 'merged_into', into, 'merged_by', by, 'merged_at', now,
             'updated_at', now)
  redis.call('HSET', pkey(into), 'updated_at', now)
  log(into, {action = 'merge', by = by, at = tonumber(now), person = other})
  log(other, {action = 'merged_into', by = by, at = tonumber(now), person = into})
  return into

elseif cmd == 'unmerge' then
  local now, contact, fresh, by = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local person = resolve(redis.call('HGET', KEYS[2], contact))
  if not person then return redis.error_reply('NOCONTACT') end
  local sender
  for _, id in ipairs(redis.call('SMEMBERS', ckey(contact, ':ids'))) do
    if string.sub(id, 1, 7) == 'sender:' then sender = id end
  end
  local group, rest = {}, {}
  for _, c in ipairs(redis.call('SMEMBERS', pkey(person, ':contacts'))) do
    if c == contact or (sender and
        redis.call('SISMEMBER', ckey(c, ':ids'), sender) == 1) then
      group[#group + 1] = c
    else
      rest[#rest + 1] = c
    end
  end
  if #rest == 0 then return redis.error_reply('ALONE') end
  redis.call('HSET', pkey(fresh), 'id', fresh, 'created_at', now, 'updated_at', now,
             'split_from', person, 'split_by', by, 'split_at', now)
  for _, c in ipairs(group) do
    redis.call('HSET', KEYS[2], c, fresh)
    redis.call('SREM', pkey(person, ':contacts'), c)
    redis.call('SADD', pkey(fresh, ':contacts'), c)
    local convs = redis.call('ZRANGE', ckey(c, ':convs'), 0, -1, 'WITHSCORES')
    for i = 1, #convs, 2 do
      redis.call('ZREM', pkey(person, ':convs'), convs[i])
      redis.call('ZADD', pkey(fresh, ':convs'), convs[i + 1], convs[i])
    end
  end
  -- An identifier goes with the split contacts unless a contact that stays also carries it.
  for _, c in ipairs(group) do
    for _, id in ipairs(redis.call('SMEMBERS', ckey(c, ':ids'))) do
      if resolve(redis.call('HGET', KEYS[1], id)) == person and not carried(rest, id) then
        redis.call('HSET', KEYS[1], id, fresh)
      end
    end
  end
  redis.call('HSET', pkey(person), 'updated_at', now)
  log(person, {action = 'unmerge', by = by, at = tonumber(now), person = fresh})
  log(fresh, {action = 'split_from', by = by, at = tonumber(now), person = person})
  return fresh

elseif cmd == 'forget' then
  local contact = ARGV[3]
  local person = resolve(redis.call('HGET', KEYS[2], contact))
  local ids = redis.call('SMEMBERS', ckey(contact, ':ids'))
  if person then
    redis.call('SREM', pkey(person, ':contacts'), contact)
    local rest = redis.call('SMEMBERS', pkey(person, ':contacts'))
    for _, id in ipairs(ids) do
      if resolve(redis.call('HGET', KEYS[1], id)) == person and not carried(rest, id) then
        redis.call('HDEL', KEYS[1], id)
      end
    end
    for _, conv in ipairs(redis.call('ZRANGE', ckey(contact, ':convs'), 0, -1)) do
      redis.call('ZREM', pkey(person, ':convs'), conv)
    end
    if #rest == 0 then
      for _, t in ipairs(redis.call('SMEMBERS', pkey(person, ':absorbed'))) do
        redis.call('DEL', pkey(t), pkey(t, ':log'))
      end
      redis.call('DEL', pkey(person), pkey(person, ':contacts'), pkey(person, ':convs'),
                 pkey(person, ':log'), pkey(person, ':absorbed'))
    end
  end
  -- Identifiers naming no live person any more (a person erased through another contact).
  for _, id in ipairs(ids) do
    if not resolve(redis.call('HGET', KEYS[1], id)) then redis.call('HDEL', KEYS[1], id) end
  end
  redis.call('HDEL', KEYS[2], contact)
  redis.call('DEL', ckey(contact, ':ids'), ckey(contact, ':convs'))
  return person or ''

elseif cmd == 'drop' then
  local person = resolve(redis.call('HGET', KEYS[2], ARGV[3]))
  for i = 4, #ARGV do
    redis.call('ZREM', ckey(ARGV[3], ':convs'), ARGV[i])
    if person then redis.call('ZREM', pkey(person, ':convs'), ARGV[i]) end
  end
  return 1

elseif cmd == 'prune' then
  local person = ARGV[3]
  local contacts = redis.call('SMEMBERS', pkey(person, ':contacts'))
  for i = 4, #ARGV do
    redis.call('ZREM', pkey(person, ':convs'), ARGV[i])
    for _, c in ipairs(contacts) do redis.call('ZREM', ckey(c, ':convs'), ARGV[i]) end
  end
  return 1
end
return redis.error_reply('unknown command ' .. tostring(cmd))
