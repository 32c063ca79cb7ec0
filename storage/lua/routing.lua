-- routing.lua: every assignment decision, one atomic step each (dispatch on ARGV[2]).
--
-- All keys live under the routing hash tag (ARGV[1] = "ih:{r}:"), so each command runs in one
-- cluster slot and no two hub processes can ever interleave inside a decision: a conversation
-- is never assigned twice and an agent never above capacity (invariant 4).
--
-- Data (names relative to ARGV[1]):
--   agent:<a>                hash  status, weight, kinds ("chat,email"), cap:<kind>, load:<kind>,
--                                  idle_since (time of last assignment: "longest idle" wins ties)
--   agent:<a>:pools          hash  pool id -> rank (0..40, higher = better match)
--   agent:<a>:convs          set   conversations assigned to the agent
--   pool:<p>:avail:<kind>    zset  online agents with free <kind> capacity; score lower = better
--                                  = (40 - rank) * 1e14 + load permille * 1e10 + idle_since
--   pool:<p>:online          set   online eligible agents (supervisors' view)
--   pool:<p>:serving:<kind>  set   online eligible agents with weight > 0 and <kind> capacity
--                                  > 0 (at capacity or not): a step with nobody serving is
--                                  skipped only when its skip_when_unstaffed flag is set
--   pool:<p>:wait:<kind>     zset  waiting conversations; score = -(priority + wp) * 1e10
--                                  + enqueued_at (wp: the agents' workflow priority offset)
--   rc:<c>                   hash  routing state of a conversation (queue, pools, delays,
--                                  skips = per-step skip_when_unstaffed flags, step, ...,
--                                  cls:<name> = its classification, mirrored to the record,
--                                  sla:<clock> = a clock's deadline, run:<clock> = the deadline
--                                  of a clock still running, wp = workflow priority offset)
--   rc:<c>:routed:<msg>      str   "this provider message was routed" (redelivery guard)
--   rc:<c>:log               list  explain records (JSON, newest first, bounded)
--   sticky:<contact>         str   last agent of a buyer, TTL = sticky window
--   sla:due                  zset  conversations with a running SLA clock; score = the soonest
--                                  run:<clock> deadline. Written only here, in the very step
--                                  that starts, stops or judges a clock (storage/sla.py reads it)
--   settings                 hash  sticky_seconds, noreply_seconds, sla_boost
--   timers                   zset  "<kind>|<conv>|<token>" by due time; timers:inflight leases
--   events                   stream assigned / waiting / escalated / requeued / sla_breach ...
--
-- KEYS[1] = <base>events (declared so the script is routed to the routing slot)
-- ARGV[1] base, ARGV[2] command, ARGV[3] now (unix seconds), ARGV[4..] per command (below).
-- Loops are bounded (pools per agent, capacity, batch sizes): no unbounded unpack.

local base = ARGV[1]
local cmd = ARGV[2]
local now = tonumber(ARGV[3])
local EVENTS = base .. 'events'
local TIMERS = base .. 'timers'
local INFLIGHT = base .. 'timers:inflight'
local LOG_KEEP = 50
local DRAIN_MAX = 50

local function agent_key(a) return base .. 'agent:' .. a end
local function agent_pools(a) return base .. 'agent:' .. a .. ':pools' end
local function agent_convs(a) return base .. 'agent:' .. a .. ':convs' end
local function avail(p, kind) return base .. 'pool:' .. p .. ':avail:' .. kind end
local function online(p) return base .. 'pool:' .. p .. ':online' end
local function waitset(p, kind) return base .. 'pool:' .. p .. ':wait:' .. kind end
local function serving(p, kind) return base .. 'pool:' .. p .. ':serving:' .. kind end
local function rc(c) return base .. 'rc:' .. c end

local function split(s, sep)
  local out = {}
  if s == nil or s == false or s == '' then return out end
  for part in string.gmatch(s, '([^' .. sep .. ']+)') do out[#out + 1] = part end
  return out
end

local function setting(name, default)
  local v = redis.call('HGET', base .. 'settings', name)
  if v then return tonumber(v) end
  return default
end

local function log(c, entry)
  entry['at'] = now
  redis.call('LPUSH', rc(c) .. ':log', cjson.encode(entry))
  redis.call('LTRIM', rc(c) .. ':log', 0, LOG_KEEP - 1)
end

local function event(kind, c, agent, extra)
  local args = {'XADD', EVENTS, 'MAXLEN', '~', 100000, '*', 'type', kind, 'conv', c,
                'agent', agent or '', 'at', tostring(now)}
  for key, value in pairs(extra or {}) do
    args[#args + 1] = key
    args[#args + 1] = tostring(value)
  end
  redis.call(unpack(args))
end

local function agent_score(rank, load, cap, idle)
  local permille = math.floor(load * 1000 / cap)
  return (40 - rank) * 1e14 + permille * 1e10 + idle
end

-- Re-place an agent in every pool's availability set for one capacity kind.
local function recompute(a, kind)
  local f = redis.call('HMGET', agent_key(a), 'status', 'weight', 'cap:' .. kind,
                       'load:' .. kind, 'idle_since')
  local cap = tonumber(f[3]) or 0
  local load = tonumber(f[4]) or 0
  local ok = f[1] == 'online' and (tonumber(f[2]) or 1) > 0 and load < cap
  local pools = redis.call('HGETALL', agent_pools(a))
  for i = 1, #pools, 2 do
    if ok then
      redis.call('ZADD', avail(pools[i], kind),
                 agent_score(tonumber(pools[i + 1]), load, cap, tonumber(f[5]) or 0), a)
    else
      redis.call('ZREM', avail(pools[i], kind), a)
    end
  end
end

local function recompute_all(a)
  for _, kind in ipairs(split(redis.call('HGET', agent_key(a), 'kinds'), ',')) do
    recompute(a, kind)
  end
end

local function schedule(kind, c, token, due)
  redis.call('ZADD', TIMERS, due, kind .. '|' .. c .. '|' .. token)
end

local SLA_DUE = base .. 'sla:due'
local CLOCKS = {'first', 'next', 'resolution'}

-- Re-place a conversation in sla:due from its running clocks (gone when none runs).
local function sla_reindex(c)
  local soonest = nil
  for _, clock in ipairs(CLOCKS) do
    local due = tonumber(redis.call('HGET', rc(c), 'run:' .. clock))
    if due and (soonest == nil or due < soonest) then soonest = due end
  end
  if soonest then redis.call('ZADD', SLA_DUE, soonest, c) else redis.call('ZREM', SLA_DUE, c) end
end

-- Stop clocks: the response clocks when an agent answers, every clock when it closes.
local function stop_clocks(c, clocks)
  for _, clock in ipairs(clocks) do redis.call('HDEL', rc(c), 'run:' .. clock) end
  sla_reindex(c)
end

-- Start SLA clocks given as ARGV pairs from index `from`: "<clock>:<started>", deadline.
local function start_clocks(c, from)
  for i = from, #ARGV - 1, 2 do
    local clock = split(ARGV[i], ':')[1]
    schedule('sla', c, ARGV[i], tonumber(ARGV[i + 1]))
    redis.call('HSET', rc(c), 'sla:' .. clock, ARGV[i + 1], 'run:' .. clock, ARGV[i + 1])
  end
  sla_reindex(c)
end

-- The waiting score: combined priority (routing's, with its boosts, plus the workflow
-- offset an agent set) dominates, then the time it entered the queue.
local function wait_score(c)
  local r = redis.call('HMGET', rc(c), 'priority', 'wp', 'enqueued_at')
  return -((tonumber(r[1]) or 0) + (tonumber(r[2]) or 0)) * 1e10 + tonumber(r[3])
end

local function claim(a, c, reason, candidates)
  local r = redis.call('HMGET', rc(c), 'kind', 'pool', 'contact', 'step')
  local kind, pool, contact = r[1], r[2], r[3]
  local at = tostring(now)
  redis.call('HINCRBY', agent_key(a), 'load:' .. kind, 1)
  redis.call('HSET', agent_key(a), 'idle_since', at)
  redis.call('SADD', agent_convs(a), c)
  if pool then redis.call('ZREM', waitset(pool, kind), c) end
  redis.call('HSET', rc(c), 'assignee', a, 'status', 'assigned', 'assigned_at', at)
  recompute(a, kind)
  local sticky = setting('sticky_seconds', 0)
  if contact and contact ~= '' and sticky > 0 then
    redis.call('SET', base .. 'sticky:' .. contact, a, 'EX', math.floor(sticky))
  end
  local noreply = setting('noreply_seconds', 0)
  if noreply > 0 then schedule('noreply', c, a .. '@' .. at, now + noreply) end
  log(c, {event = 'assigned', agent = a, reason = reason, pool = pool, step = r[4],
          candidates = candidates or {}})
  event('assigned', c, a, {reason = reason, pool = pool or ''})
end

local function top_candidates(p, kind, exclude)
  local rows = redis.call('ZRANGE', avail(p, kind), 0, 3, 'WITHSCORES')
  local out = {}
  for i = 1, #rows, 2 do
    if rows[i] ~= exclude then out[#out + 1] = {agent = rows[i], score = rows[i + 1]} end
  end
  return out
end

-- Try the current pool (and, for sticky, the buyer's last agent); else wait in the pool.
local function assign_or_wait(c, exclude, reason)
  local r = redis.call('HMGET', rc(c), 'kind', 'pool', 'priority', 'enqueued_at', 'contact',
                       'pools', 'step')
  local kind, pool = r[1], r[2]
  local contact = r[5]
  local candidates = top_candidates(pool, kind, exclude)
  if contact and contact ~= '' and #candidates > 0 then
    -- Sticky only among equals: the buyer's last agent must be available in this step and
    -- match at least as well as the best candidate, so stickiness never beats the language.
    local last = redis.call('GET', base .. 'sticky:' .. contact)
    if last and last ~= exclude and redis.call('ZSCORE', avail(pool, kind), last) then
      local mine = tonumber(redis.call('HGET', agent_pools(last), pool)) or -1
      local best = tonumber(redis.call('HGET', agent_pools(candidates[1].agent), pool)) or 0
      if mine >= best then
        claim(last, c, 'sticky', candidates)
        return {'assigned', last, 'sticky'}
      end
    end
  end
  if #candidates > 0 then
    claim(candidates[1].agent, c, reason, candidates)
    return {'assigned', candidates[1].agent, reason}
  end
  redis.call('ZADD', waitset(pool, kind), wait_score(c), c)
  redis.call('HSET', rc(c), 'status', 'waiting')
  log(c, {event = 'waiting', pool = pool, step = r[7], excluded = exclude or ''})
  event('waiting', c, nil, {pool = pool})
  return {'waiting', pool, reason}
end

-- Move to `step` and arm the next escalation timer. A step nobody online can serve (its
-- serving set is empty: away, offline and weight-0 agents do not count, agents at capacity do)
-- is skipped at once only when the operator opted in for that step (skip_when_unstaffed);
-- otherwise the conversation waits there until the next step's after_seconds, so agents being
-- away never hand a buyer to an agent without their language early (the language floor). The
-- last step, the overflow, is always taken: nothing is ever dropped.
local function enter_step(c, step, why)
  local r = redis.call('HMGET', rc(c), 'pools', 'delays', 'enqueued_at', 'pool', 'kind', 'skips')
  local pools = split(r[1], ',')
  local delays = split(r[2], ',')
  local skips = split(r[6], ',')
  while step < #pools and redis.call('SCARD', serving(pools[step], r[5])) == 0 do
    if skips[step] ~= '1' then
      log(c, {event = 'held', step = step, pool = pools[step], why = 'nobody online',
              next_after = tonumber(delays[step + 1])})
      break
    end
    log(c, {event = 'skipped', step = step, pool = pools[step], why = 'nobody online'})
    step = step + 1
  end
  if r[4] and r[4] ~= pools[step] then redis.call('ZREM', waitset(r[4], r[5]), c) end
  redis.call('HSET', rc(c), 'step', step, 'pool', pools[step])
  if why == 'timeout' then
    log(c, {event = 'escalated', step = step, pool = pools[step], why = why})
    event('escalated', c, nil, {step = step, pool = pools[step]})
  end
  if step < #pools then
    schedule('escalate', c, tostring(step + 1) .. '@' .. r[3],
             tonumber(r[3]) + tonumber(delays[step + 1]))
  end
  return step
end

-- Give a freed or newly online agent the most urgent waiting work it is eligible for.
local function drain(a, kind, assigned, reason)
  for _ = 1, DRAIN_MAX do
    local f = redis.call('HMGET', agent_key(a), 'status', 'weight', 'cap:' .. kind,
                         'load:' .. kind)
    if f[1] ~= 'online' or (tonumber(f[2]) or 1) <= 0
        or (tonumber(f[4]) or 0) >= (tonumber(f[3]) or 0) then
      return
    end
    local best, best_score = nil, nil
    local pools = redis.call('HGETALL', agent_pools(a))
    for i = 1, #pools, 2 do
      local head = redis.call('ZRANGE', waitset(pools[i], kind), 0, 0, 'WITHSCORES')
      if head[1] and (best_score == nil or tonumber(head[2]) < best_score) then
        best, best_score = head[1], tonumber(head[2])
      end
    end
    if best == nil then return end
    claim(a, best, reason or 'capacity freed', {})
    assigned[#assigned + 1] = best
    assigned[#assigned + 1] = a
  end
end

local function unassign(c)
  local r = redis.call('HMGET', rc(c), 'assignee', 'kind')
  local a, kind = r[1], r[2]
  if not a then return nil end
  redis.call('HDEL', rc(c), 'assignee')
  if redis.call('SREM', agent_convs(a), c) == 1 then
    local load = redis.call('HINCRBY', agent_key(a), 'load:' .. kind, -1)
    if load < 0 then redis.call('HSET', agent_key(a), 'load:' .. kind, 0) end
    recompute(a, kind)
  end
  return a
end

local function requeue(c, why, boost, exclude)
  local prior = unassign(c)
  local p = tonumber(redis.call('HGET', rc(c), 'priority')) + boost
  redis.call('HSET', rc(c), 'priority', p, 'status', 'waiting')
  log(c, {event = 'requeued', why = why, from = prior or ''})
  event('requeued', c, prior, {why = why})
  -- Re-enter the current step (skipped if nobody serves it any more and the step opts in),
  -- and re-arm the next escalation (timers that fired while it was assigned were discarded).
  enter_step(c, tonumber(redis.call('HGET', rc(c), 'step')) or 1, 'requeue')
  return assign_or_wait(c, exclude, why), prior
end

local function flat(list)
  local out = {}
  for _, v in ipairs(list) do out[#out + 1] = v end
  return out
end

-- ---------------------------------------------------------------------------------------------
-- enqueue: ARGV[4] conv, [5] queue, [6] pool ids "q#1,q#2", [7] step delays "0,120,600",
--          [8] capacity kind, [9] priority, [10] contact ("" none), [11] explain JSON,
--          [12] "1" = replace: take it from its agent or queue first (transfer to a queue,
--          language correction) in this same atomic step, so a crash cannot lose it;
--          error CLOSED for a resolved conversation,
--          [13] per-step skip_when_unstaffed flags "0,1,0" ("" = never skip),
--          [14] provider message id whose "routed" marker this step sets ("" none),
--          [15] marker TTL seconds, [16] classification JSON ({"language": ..., "market": ...,
--          "skill": ..., "queue": ...}, kept as cls:<name> for the conversation record's
--          mirror), [17] workflow priority offset of the record's level (the record is
--          the truth; "priority" below copies a change at once; "" = keep what is here),
--          [18..] SLA clocks to start: "<clock>:<started>", deadline, ...
-- Setting the marker here, not in "inbound", is what makes a crash between classification and
-- this step harmless: the redelivered entry is routed again instead of looking like a repeat.
-- Returns {"assigned", agent, reason} | {"waiting", pool, reason}
if cmd == 'enqueue' then
  local c, queue = ARGV[4], ARGV[5]
  local cur = redis.call('HMGET', rc(c), 'status', 'assignee', 'queue', 'pool', 'kind')
  if ARGV[12] == '1' and cur[1] == 'closed' then
    -- A transfer or a correction never reopens a resolved conversation (only the buyer's
    -- next message does), even when the resolve raced the caller's own check.
    return redis.error_reply('CLOSED')
  end
  if ARGV[14] and ARGV[14] ~= '' then
    local marker = rc(c) .. ':routed:' .. ARGV[14]
    if redis.call('SET', marker, 1, 'NX', 'EX', tonumber(ARGV[15])) == false then
      -- Another router finished this very message first (a reclaimed entry raced its owner).
      if cur[1] == 'assigned' then return {'assigned', cur[2], 'existing'} end
      return {'waiting', cur[4] or '', 'existing'}
    end
  end
  local prior = nil
  if ARGV[12] == '1' then
    prior = unassign(c)
    if prior then
      log(c, {event = 'released', agent = prior, status = 'rerouted'})
      event('released', c, prior, {})
    end
    cur = {false, false, false, cur[4], cur[5]}
  end
  if cur[1] == 'assigned' and cur[2]
      and redis.call('SISMEMBER', agent_convs(cur[2]), c) == 1 then
    return {'assigned', cur[2], 'existing'}
  end
  if cur[1] == 'waiting' and cur[3] == queue then
    return {'waiting', cur[4], 'existing'}
  end
  redis.call('HSET', rc(c), 'queue', queue, 'pools', ARGV[6], 'delays', ARGV[7],
             'skips', ARGV[13] or '', 'kind', ARGV[8], 'priority', ARGV[9], 'contact', ARGV[10],
             'enqueued_at', tostring(now), 'status', 'routing', 'awaiting', '1')
  redis.call('HDEL', rc(c), 'pool')
  if ARGV[16] and ARGV[16] ~= '' then
    for name, value in pairs(cjson.decode(ARGV[16])) do
      redis.call('HSET', rc(c), 'cls:' .. name, tostring(value))
    end
  end
  if cur[4] and cur[5] then redis.call('ZREM', waitset(cur[4], cur[5]), c) end
  if ARGV[17] and ARGV[17] ~= '' then redis.call('HSET', rc(c), 'wp', ARGV[17]) end
  redis.call('LPUSH', rc(c) .. ':log', ARGV[11])
  start_clocks(c, 18)
  enter_step(c, 1, 'enqueue')
  local result = assign_or_wait(c, nil, 'best match')
  if prior and prior ~= result[2] then
    drain(prior, cur[5] or ARGV[8], {})
  end
  return result

-- agent: ARGV[4] agent, [5] status online|away|offline, [6] caps "chat=5,email=20",
--        [7] pools "pool=rank,...", [8] weight, [9] optional: the agent's presence (as in
--        the presence hash, "" for none) the caller computed the status from. When it is
--        given and the presence changed since, nothing is done: a status change made in
--        between (an agent going online while a periodic check read "offline") wins.
-- Returns flat {conv, agent, ...} of assignments made (drain) and requeues.
elseif cmd == 'agent' then
  local a = ARGV[4]
  local status = ARGV[5]
  if ARGV[9] and (redis.call('HGET', base .. 'presence', a) or '') ~= ARGV[9] then
    return {}
  end
  local old_kinds = split(redis.call('HGET', agent_key(a), 'kinds'), ',')
  local old = redis.call('HGETALL', agent_pools(a))
  for i = 1, #old, 2 do
    redis.call('SREM', online(old[i]), a)
    for _, kind in ipairs(old_kinds) do
      redis.call('ZREM', avail(old[i], kind), a)
      redis.call('SREM', serving(old[i], kind), a)
    end
  end
  redis.call('DEL', agent_pools(a))
  local kinds = {}
  local serves = {}
  for _, pair in ipairs(split(ARGV[6], ',')) do
    local kind, cap = string.match(pair, '^([^=]+)=(%d+)$')
    kinds[#kinds + 1] = kind
    if tonumber(cap) > 0 and tonumber(ARGV[8]) > 0 then serves[#serves + 1] = kind end
    redis.call('HSET', agent_key(a), 'cap:' .. kind, cap)
    redis.call('HSETNX', agent_key(a), 'load:' .. kind, 0)
  end
  redis.call('HSET', agent_key(a), 'status', status, 'weight', ARGV[8],
             'kinds', table.concat(kinds, ','))
  redis.call('HSETNX', agent_key(a), 'idle_since', now)
  for _, pair in ipairs(split(ARGV[7], ',')) do
    local p, rank = string.match(pair, '^(.+)=(%d+)$')
    redis.call('HSET', agent_pools(a), p, rank)
    if status == 'online' then
      redis.call('SADD', online(p), a)
      for _, kind in ipairs(serves) do redis.call('SADD', serving(p, kind), a) end
    end
  end
  recompute_all(a)
  local out = {}
  if status == 'offline' then
    local convs = redis.call('SMEMBERS', agent_convs(a))
    table.sort(convs)
    for _, c in ipairs(convs) do
      local res = requeue(c, 'agent offline', setting('requeue_boost', 1), a)
      out[#out + 1] = c
      out[#out + 1] = res[1] == 'assigned' and res[2] or ''
    end
  elseif status == 'online' then
    for _, kind in ipairs(kinds) do drain(a, kind, out, 'agent online') end
  end
  return out

-- release: ARGV[4] conv, [5] status to record ("closed" on resolve; "" means "closed";
-- "erased"). Every SLA clock stops here: out of sla:due in this same step.
-- Returns flat {conv, agent, ...} assigned to the freed agent.
elseif cmd == 'release' then
  local c = ARGV[4]
  local kind = redis.call('HGET', rc(c), 'kind')
  local pool = redis.call('HGET', rc(c), 'pool')
  if pool and kind then redis.call('ZREM', waitset(pool, kind), c) end
  local a = unassign(c)
  redis.call('HSET', rc(c), 'status', ARGV[5] ~= '' and ARGV[5] or 'closed')
  stop_clocks(c, CLOCKS)
  log(c, {event = 'released', agent = a or '', status = ARGV[5]})
  event('released', c, a, {})
  local out = {}
  if a and kind then drain(a, kind, out) end
  return out

-- transfer_agent: ARGV[4] conv, [5] target agent, [6] required current assignee ("" = any,
-- a supervisor's transfer; an agent may hand over only what is still theirs).
-- Errors: NOCONV (never routed), CLOSED (resolved: a transfer never revives it), NOTYOURS,
-- OFFLINE, FULL. The target's weight is not checked: weight 0 means "transfers only".
elseif cmd == 'transfer_agent' then
  local c, target, owner = ARGV[4], ARGV[5], ARGV[6] or ''
  local cur = redis.call('HMGET', rc(c), 'kind', 'status', 'assignee')
  local kind = cur[1]
  if not kind then return redis.error_reply('NOCONV') end
  if cur[2] ~= 'assigned' and cur[2] ~= 'waiting' then return redis.error_reply('CLOSED') end
  if owner == '~waiting' then  -- "assign to me": only while nobody has it
    if cur[2] ~= 'waiting' then return redis.error_reply('NOTWAITING') end
  elseif owner ~= '' and (cur[2] ~= 'assigned' or cur[3] ~= owner) then
    return redis.error_reply('NOTYOURS')
  end
  local f = redis.call('HMGET', agent_key(target), 'status', 'cap:' .. kind, 'load:' .. kind)
  if f[1] ~= 'online' then return redis.error_reply('OFFLINE') end
  if cur[3] == target then return {'assigned', target} end
  if (tonumber(f[3]) or 0) >= (tonumber(f[2]) or 0) then return redis.error_reply('FULL') end
  local prior = unassign(c)
  local pool = redis.call('HGET', rc(c), 'pool')
  if pool then redis.call('ZREM', waitset(pool, kind), c) end
  claim(target, c, 'manual transfer', {})
  local out = {'assigned', target}
  if prior then drain(prior, kind, out) end
  return out

-- start: ARGV[4] conv, [5] agent, [6] queue, [7] pool ids, [8] step delays, [9] skip flags,
--        [10] capacity kind, [11] priority, [12] contact ("" none), [13] explain JSON.
-- A conversation an agent starts (hub/outbound_api.py) is theirs at once, whatever their
-- status or load (they chose to write): routing state as "enqueue" writes it, at step 1 of the
-- queue its rules chose (where it goes back if the agent goes offline), no escalation timer.
-- Returns {"assigned", agent}, or {"existing", status} when routing already knows it.
elseif cmd == 'start' then
  local c = ARGV[4]
  local known = redis.call('HGET', rc(c), 'status')
  if known then return {'existing', known} end
  redis.call('HSET', rc(c), 'queue', ARGV[6], 'pools', ARGV[7], 'delays', ARGV[8],
             'skips', ARGV[9], 'kind', ARGV[10], 'priority', ARGV[11], 'contact', ARGV[12],
             'enqueued_at', tostring(now), 'status', 'routing', 'awaiting', '0', 'step', 1,
             'pool', split(ARGV[7], ',')[1])
  redis.call('LPUSH', rc(c) .. ':log', ARGV[13])
  claim(ARGV[5], c, 'the agent started the conversation', {})
  return {'assigned', ARGV[5]}

-- timers: ARGV[4] batch size, [5] lease seconds. Pops due timers (and expired leases of a
-- process that died while handling them); returns the members; "ack" removes the lease.
elseif cmd == 'timers' then
  local limit = tonumber(ARGV[4])
  local due = redis.call('ZRANGEBYSCORE', INFLIGHT, '-inf', now, 'LIMIT', 0, limit)
  local fresh = redis.call('ZRANGEBYSCORE', TIMERS, '-inf', now, 'LIMIT', 0, limit)
  for _, m in ipairs(fresh) do
    redis.call('ZREM', TIMERS, m)
    due[#due + 1] = m
  end
  for _, m in ipairs(due) do redis.call('ZADD', INFLIGHT, now + tonumber(ARGV[5]), m) end
  return due

elseif cmd == 'ack' then
  return redis.call('ZREM', INFLIGHT, ARGV[4])

-- escalate: ARGV[4] conv, [5] "<target step>@<enqueued_at>". Stale timers (already assigned, already past
-- that step, or re-enqueued since) are ignored.
elseif cmd == 'escalate' then
  local c = ARGV[4]
  local target_s, since = string.match(ARGV[5], '^(%d+)@(.+)$')
  local target = tonumber(target_s)
  local r = redis.call('HMGET', rc(c), 'status', 'step', 'enqueued_at')
  if r[1] ~= 'waiting' or tonumber(r[2]) >= target or r[3] ~= since then
    return {'ignored'}
  end
  enter_step(c, target, 'timeout')
  return assign_or_wait(c, nil, 'escalated')

-- noreply: ARGV[4] conv, [5] token "<agent>@<assigned_at>". Requeue when the agent has not
-- answered since that assignment.
elseif cmd == 'noreply' then
  local c, token = ARGV[4], ARGV[5]
  local r = redis.call('HMGET', rc(c), 'status', 'assignee', 'assigned_at', 'awaiting')
  if r[1] ~= 'assigned' or (r[2] .. '@' .. r[3]) ~= token or r[4] ~= '1' then
    return {'ignored'}
  end
  local res, prior = requeue(c, 'no reply', setting('requeue_boost', 1), r[2])
  local out = flat(res)
  if prior then drain(prior, redis.call('HGET', rc(c), 'kind'), out) end
  return out

-- inbound: ARGV[4] conv, [5] provider message id, [6] marker TTL seconds, [7..] SLA clocks to
-- start for a follow-up ("next:<started>", deadline). The router's first question about a
-- message, in one round trip: "dup" (already routed: a redelivered stream entry), "followup"
-- (open conversation: the buyer is waiting for us again; the flag, the next-response clock and
-- the marker are set here, together), or "new" with who set the language ("agent" after a
-- correction). "new" sets nothing: the enqueue step sets the marker when it has routed.
elseif cmd == 'inbound' then
  local c = ARGV[4]
  local marker = rc(c) .. ':routed:' .. ARGV[5]
  if redis.call('EXISTS', marker) == 1 then
    return {'dup'}
  end
  local r = redis.call('HMGET', rc(c), 'status', 'language_by')
  if r[1] == 'assigned' or r[1] == 'waiting' then
    redis.call('SET', marker, 1, 'EX', tonumber(ARGV[6]))
    redis.call('HSET', rc(c), 'awaiting', '1')
    start_clocks(c, 7)
    return {'followup'}
  end
  return {'new', r[2] or ''}

-- awaiting: ARGV[4] conv, [5] "1" buyer waits for us / "0" an agent answered (the first-
-- and next-response clocks stop; resolution runs on).
elseif cmd == 'awaiting' then
  redis.call('HSET', rc(ARGV[4]), 'awaiting', ARGV[5])
  if ARGV[5] == '0' then
    redis.call('HSET', rc(ARGV[4]), 'answered_at', now)
    stop_clocks(ARGV[4], {'first', 'next'})
  end
  return 1

-- sla: ARGV[4] conv, [5] token (the clock's name and start), [6] deadline. Starts a clock.
-- Schedules the clock; the "sla_due" command judges it when it fires.
elseif cmd == 'sla' then
  start_clocks(ARGV[4], 5)
  return 1

-- sla_due: ARGV[4] conv, [5] token "<clock>:<started>". A breach raises the waiting
-- priority (so it is served sooner) and emits an event for supervisors.
elseif cmd == 'sla_due' then
  local c = ARGV[4]
  local clock = split(ARGV[5], ':')[1]
  local r = redis.call('HMGET', rc(c), 'status', 'awaiting', 'pool', 'kind', 'priority',
                       'enqueued_at', 'sla:' .. clock)
  if r[1] == 'closed' or r[1] == false then return {'ignored'} end
  if clock ~= 'resolution' and r[2] ~= '1' then return {'ignored'} end
  local boost = setting('sla_boost', 5)
  local p = (tonumber(r[5]) or 0) + boost
  redis.call('HSET', rc(c), 'priority', p, 'breached:' .. clock, now)
  if r[1] == 'waiting' then
    redis.call('ZADD', waitset(r[3], r[4]), wait_score(c), c)
  end
  log(c, {event = 'sla_breach', clock = clock, deadline = r[7] or ''})
  event('sla_breach', c, nil, {clock = clock})
  return {'breached', clock}

-- priority: ARGV[4] conv, [5] workflow priority offset (routing/priority.py), [6] level name
-- (for the log). Kept in rc:<c> for every later decision (requeue, escalation, breach); a
-- waiting conversation is re-placed in its wait set in this same step, so it is served
-- sooner (or later) from now on. Nothing is written for a conversation routing never saw (no
-- rc:<c>; an erased one must not come back): its first enqueue brings the record's level.
-- Returns its routing status ("" when not routed).
elseif cmd == 'priority' then
  local c = ARGV[4]
  local r = redis.call('HMGET', rc(c), 'status', 'pool', 'kind')
  if not r[1] then return '' end
  redis.call('HSET', rc(c), 'wp', ARGV[5])
  if r[1] == 'waiting' and r[2] and r[3] then
    redis.call('ZADD', waitset(r[2], r[3]), 'XX', wait_score(c), c)
  end
  log(c, {event = 'priority', level = ARGV[6], offset = tonumber(ARGV[5])})
  return r[1]

-- sla_adopt: ARGV[4] conv. Schema 5's upgrade (storage/sla.py): derive the running clocks of a
-- conversation routed by an older release, which kept deadlines (sla:<clock>) but not which
-- clocks still run. Open (assigned, waiting, routing): resolution runs; while the buyer waits
-- for an answer (awaiting = 1), next runs, and first too unless an agent ever answered
-- (answered_at). A conversation with any run:<clock> already is left as it is (idempotent,
-- and never undoes what this release recorded). Returns 1 when indexed, else 0.
elseif cmd == 'sla_adopt' then
  local c = ARGV[4]
  local r = redis.call('HMGET', rc(c), 'status', 'awaiting', 'answered_at', 'sla:first',
                       'sla:next', 'sla:resolution', 'run:first', 'run:next', 'run:resolution')
  if r[7] or r[8] or r[9] then return 0 end
  if r[1] ~= 'assigned' and r[1] ~= 'waiting' and r[1] ~= 'routing' then return 0 end
  if r[6] then redis.call('HSET', rc(c), 'run:resolution', r[6]) end
  if r[2] == '1' then
    if r[5] then redis.call('HSET', rc(c), 'run:next', r[5]) end
    if r[4] and not r[3] then redis.call('HSET', rc(c), 'run:first', r[4]) end
  end
  sla_reindex(c)
  return redis.call('ZSCORE', SLA_DUE, c) and 1 or 0
end

return redis.error_reply('unknown routing command ' .. tostring(cmd))
