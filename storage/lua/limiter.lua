-- limiter.lua: one decision of the shared rate limiter, for every limit a send is under, all or
-- nothing (channels/services/limits.py says what the limits mean).
--
-- Each bucket is a token bucket kept as one number, its "theoretical arrival time" tat (GCRA):
-- with rate r and burst b, a send of cost c may go at time s when s >= tat + (c - b) / r, and
-- going moves tat to max(tat, s) + c / r (tokens left at time t: b - (tat - t) * r). A missing
-- key is a full bucket; each key expires when its bucket is full again.
--
-- A recipient-scoped limit has two buckets: "turn" hands out places in line (a send that has to
-- wait reserves its turn, so N replies to one chat wake one by one, in order, instead of all
-- retrying at once), "sent" records the sends actually granted, so a turn the account limit
-- delayed pushes the next turns back too. Account-scoped buckets are charged for the instant
-- the send will go, first come, first served.
--
-- A ticket (one per reply) carries a reservation across calls: "w:<slot>" waits for its turn
-- at <slot>, "c:<slot>" is charged and goes at <slot>. Presented before its slot, a ticket gets
-- the time left and nothing is charged; at or after it, the send is granted and the ticket
-- forgotten. A ticket never presented again (its reply was erased) is dropped <grace> seconds
-- after its slot. Without a ticket nothing is reserved: granted now, or the wait is returned.
--
-- The clock is Redis's (TIME), not the caller's: hub processes on different hosts may disagree
-- by seconds, while a bucket and its clock live on one server. Every key shares the instance's
-- hash tag, so the step runs on one Redis Cluster slot.
--
-- KEYS[1] tickets          ih:{lim:<inst>}:tickets      hash   ticket -> "w:<slot>" | "c:<slot>"
-- KEYS[2] ticket expiry    ih:{lim:<inst>}:tickets:gc   zset   ticket -> forget at
-- KEYS[3 ..]  per recipient-scoped limit: its turn bucket, then its sent bucket;
--             then per account-scoped limit: its bucket   (strings: tat)
-- ARGV[1] ticket ("" = none)   ARGV[2] cost   ARGV[3] grace seconds
-- ARGV[4] number of recipient-scoped limits   ARGV[5] number of account-scoped limits
-- ARGV[6] clock override ("" = Redis TIME; tests pin the clock with it)
-- ARGV[7 ..] rate and burst of each limit, recipient-scoped ones first, in KEYS order
-- Returns the seconds to wait, as a string: "0" means granted, the send may go now.

local ticket = ARGV[1]
local cost = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
local nrec = tonumber(ARGV[4])
local nacc = tonumber(ARGV[5])
local now
if ARGV[6] ~= '' then
  now = tonumber(ARGV[6])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local EPS = 0.000001

local function fmt(x) return string.format('%.6f', x) end

-- Forget a few abandoned tickets per call (bounded: the step stays short).
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', fmt(now), 'LIMIT', 0, 16)
for _, t in ipairs(stale) do
  redis.call('HDEL', KEYS[1], t)
  redis.call('ZREM', KEYS[2], t)
end

local function bucket(key, i)
  local rate = tonumber(ARGV[5 + 2 * i])
  local burst = tonumber(ARGV[6 + 2 * i])
  local tat = tonumber(redis.call('GET', key) or '') or now
  -- a cost above the burst could never go: it takes the whole burst instead
  local c = math.min(cost, burst)
  return {key = key, rate = rate, tat = tat, c = c, earliest = tat + (c - burst) / rate}
end

local turns, sents, accounts = {}, {}, {}
for i = 1, nrec do
  turns[i] = bucket(KEYS[1 + 2 * i], i)
  sents[i] = bucket(KEYS[2 + 2 * i], i)
end
for j = 1, nacc do
  accounts[j] = bucket(KEYS[2 + 2 * nrec + j], nrec + j)
end

local function store(b, tat)
  b.tat = tat
  redis.call('SET', b.key, fmt(tat), 'PX', math.max(1, math.ceil((tat - now) * 1000)))
end

local function charge(b, at) store(b, math.max(b.tat, at) + b.c / b.rate) end

local function latest(list, from)
  local t = from
  for _, b in ipairs(list) do t = math.max(t, b.earliest) end
  return t
end

local phase, slot = nil, nil
if ticket ~= '' then
  local v = redis.call('HGET', KEYS[1], ticket)
  if v then
    phase = string.sub(v, 1, 1)
    slot = tonumber(string.sub(v, 3))
  end
end

local function keep(p, at)
  redis.call('HSET', KEYS[1], ticket, p .. ':' .. fmt(at))
  redis.call('ZADD', KEYS[2], fmt(at + grace), ticket)
  local ttl = math.ceil((at + grace - now) * 1000)
  for k = 1, 2 do
    if redis.call('PTTL', KEYS[k]) < ttl then redis.call('PEXPIRE', KEYS[k], ttl) end
  end
  return fmt(at - now)
end

local function granted()
  if phase then
    redis.call('HDEL', KEYS[1], ticket)
    redis.call('ZREM', KEYS[2], ticket)
  end
  return '0'
end

-- A ticket presented before its slot: the time left, nothing charged.
if slot and slot > now + EPS then return fmt(slot - now) end
if phase == 'c' then return granted() end

-- 1. A new send takes its turn in line for each recipient it is limited by.
if phase == nil then
  local turn = latest(turns, now)
  if turn > now + EPS then
    if ticket == '' then return fmt(turn - now) end
    for _, b in ipairs(turns) do charge(b, turn) end
    return keep('w', turn)
  end
end

-- 2. Its turn has come; the recipient's previous send may still have gone out late.
local ready = latest(sents, now)
if ready > now + EPS then
  if ticket == '' then return fmt(ready - now) end
  if phase == nil then
    for _, b in ipairs(turns) do charge(b, ready) end
  end
  return keep('w', ready)
end

-- 3. The account's buckets: granted now, or (with a ticket) charged for when it can go.
local go = latest(accounts, now)
if go > now + EPS and ticket == '' then return fmt(go - now) end
if phase == nil then
  for _, b in ipairs(turns) do charge(b, go) end
end
for i, b in ipairs(sents) do
  charge(b, go)
  -- later arrivals queue behind what was really sent, not behind an earlier plan
  if turns[i].tat < b.tat then store(turns[i], b.tat) end
end
for _, b in ipairs(accounts) do charge(b, go) end
if go > now + EPS then return keep('c', go) end
return granted()
