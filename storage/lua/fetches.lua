-- fetches.lua: the fetch-after-notify queue of one channel instance, one atomic step per
-- transition (storage/fetches.py; states in channels/services/fetches.py).
--
-- Every key of an instance shares the hash tag {fetch:<instance>} (one slot). A job is a hash;
-- the zsets "queued", "retrying" and "failed" hold its id by state, all with score 0 so that
-- they sort by id, and ids start with the notification time in fixed-width hex: lexicographic
-- order is arrival order (keyset paging with ZREVRANGEBYLEX, the oldest with ZRANGE 0 0). The
-- zset "due" holds retrying ids by the time of their next attempt. A job that is queued has
-- exactly one entry in the stream (the consumer group "fetcher" reads it); the worker
-- acknowledges that entry after settling the job, and a settlement of a job that is no longer
-- queued (another worker reclaimed and settled it) changes nothing.
--
-- Job hash fields: instance, resource, state, attempts, notified_at, next_attempt_at,
-- failed_at, last_error, runs (every start by a worker, never reset), settled_run (runs when
-- the last attempt settled or an operator retried). Only the latest start may settle: a
-- worker that lost its claim (paused past the claim idle time) and finishes late changes
-- nothing. A failed job's hash expires after the failed-job retention.
--
-- Command "notify": store a notification unless its dedupe key was seen.
--   KEYS[1] seen marker  <base>seen:<digest of the dedupe key>  (EX: the dedupe TTL)
--   KEYS[2] job hash     <base>job:<id>
--   KEYS[3] queued zset  <base>queued
--   KEYS[4] stream       <base>stream
--   ARGV[1] "notify"  ARGV[2] job id  ARGV[3] instance  ARGV[4] resource
--   ARGV[5] dedupe TTL seconds  ARGV[6] now
--   Returns 1 when queued, 0 for a repeat.
--
-- Command "begin": a worker starts the job. KEYS[1] job hash. ARGV[1] "begin"
--   Returns {run, starts of the current attempt without an outcome (this one included)},
--   or {-1, 0} when the job is not queued.
--
-- Command "done": fetched and stored.
--   KEYS[1] job hash  KEYS[2] queued zset
--   ARGV[1] "done"  ARGV[2] job id  ARGV[3] run ('' = any)
--
-- Command "later": an attempt failed; try again at ARGV[3].
--   KEYS[1] job hash  KEYS[2] queued zset  KEYS[3] retrying zset  KEYS[4] due zset
--   ARGV[1] "later"  ARGV[2] job id  ARGV[3] next attempt at  ARGV[4] error  ARGV[5] run
--
-- Command "fail": an attempt failed for good.
--   KEYS[1] job hash  KEYS[2] queued zset  KEYS[3] failed zset
--   ARGV[1] "fail"  ARGV[2] job id  ARGV[3] error  ARGV[4] now  ARGV[5] run
--   ARGV[6] seconds a failed job is kept (0: forever)
--
--   "done", "later" and "fail" return 1, or 0 when the job is not queued or a later start
--   owns it (nothing written).
--
-- Command "release": queue the given retrying jobs whose time has come.
--   KEYS[1] due zset  KEYS[2] retrying zset  KEYS[3] queued zset  KEYS[4] stream
--   KEYS[5..] the job hashes of ARGV[3..]
--   ARGV[1] "release"  ARGV[2] now  ARGV[3..] job ids (read from the due zset by the caller)
--   Returns how many were queued.
--
-- Command "forget": drop failed-set members whose job hash has expired.
--   KEYS[1] failed zset  KEYS[2..] the job hashes of ARGV[2..]
--   ARGV[1] "forget"  ARGV[2..] job ids.  Returns how many were dropped.
--
-- Command "retry": an operator queues a failed job again, attempts reset.
--   KEYS[1] job hash  KEYS[2] failed zset  KEYS[3] queued zset  KEYS[4] stream
--   ARGV[1] "retry"  ARGV[2] job id
--   Returns 1, or an error: "NOFETCH" (no such job), "NOTFAILED" (queued or retrying).
--
-- Command "retry_failed": "retry" for the given failed jobs of the instance.
--   KEYS[1] failed zset  KEYS[2] queued zset  KEYS[3] stream  KEYS[4..] the job hashes
--   ARGV[1] "retry_failed"  ARGV[2..] job ids (read from the failed zset by the caller)
--   Returns how many were queued.

local cmd = ARGV[1]

local function requeue(jobkey, id, queued, stream)
  redis.call('HSET', jobkey, 'state', 'queued')
  redis.call('ZADD', queued, 0, id)
  redis.call('XADD', stream, '*', 'job', id)
end

-- Whether the caller's start may settle the job: it is queued and no later start took it.
local function owns(jobkey, run)
  if redis.call('HGET', jobkey, 'state') ~= 'queued' then return false end
  return run == nil or run == '' or (redis.call('HGET', jobkey, 'runs') or '0') == run
end

local function settled(jobkey)
  redis.call('HSET', jobkey, 'settled_run', redis.call('HGET', jobkey, 'runs') or '0')
end

if cmd == 'notify' then
  if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', tonumber(ARGV[5])) then
    return 0
  end
  redis.call('HSET', KEYS[2], 'instance', ARGV[3], 'resource', ARGV[4], 'attempts', 0,
             'notified_at', ARGV[6])
  requeue(KEYS[2], ARGV[2], KEYS[3], KEYS[4])
  return 1
end

if cmd == 'done' then
  if not owns(KEYS[1], ARGV[3]) then return 0 end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end

if cmd == 'begin' then
  if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return {-1, 0} end
  local run = redis.call('HINCRBY', KEYS[1], 'runs', 1)
  return {run, run - tonumber(redis.call('HGET', KEYS[1], 'settled_run') or '0')}
end

if cmd == 'later' then
  if not owns(KEYS[1], ARGV[5]) then return 0 end
  settled(KEYS[1])
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'state', 'retrying', 'next_attempt_at', ARGV[3],
             'last_error', ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], 0, ARGV[2])
  redis.call('ZADD', KEYS[4], tonumber(ARGV[3]), ARGV[2])
  return 1
end

if cmd == 'fail' then
  if not owns(KEYS[1], ARGV[5]) then return 0 end
  settled(KEYS[1])
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'state', 'failed', 'failed_at', ARGV[4], 'last_error', ARGV[3])
  redis.call('HDEL', KEYS[1], 'next_attempt_at')
  local keep = tonumber(ARGV[6] or '')
  if keep and keep > 0 then redis.call('EXPIRE', KEYS[1], math.floor(keep)) end
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], 0, ARGV[2])
  return 1
end

if cmd == 'release' then
  local now = tonumber(ARGV[2])
  local queued = 0
  for n = 3, #ARGV do
    local id, jobkey = ARGV[n], KEYS[n + 2]
    local at = redis.call('ZSCORE', KEYS[1], id)
    if at and tonumber(at) <= now then
      redis.call('ZREM', KEYS[1], id)
      if redis.call('HGET', jobkey, 'state') == 'retrying' then
        redis.call('HDEL', jobkey, 'next_attempt_at')
        redis.call('ZREM', KEYS[2], id)
        requeue(jobkey, id, KEYS[3], KEYS[4])
        queued = queued + 1
      end
    end
  end
  return queued
end

if cmd == 'forget' then
  local dropped = 0
  for n = 2, #ARGV do
    if redis.call('EXISTS', KEYS[n]) == 0 then
      redis.call('ZREM', KEYS[1], ARGV[n])
      dropped = dropped + 1
    end
  end
  return dropped
end

local function retry_one(jobkey, id, failed, queued, stream)
  redis.call('HSET', jobkey, 'attempts', 0)
  redis.call('HDEL', jobkey, 'failed_at', 'next_attempt_at')
  redis.call('PERSIST', jobkey)
  settled(jobkey)
  redis.call('ZREM', failed, id)
  requeue(jobkey, id, queued, stream)
end

if cmd == 'retry' then
  local state = redis.call('HGET', KEYS[1], 'state')
  if not state then return redis.error_reply('NOFETCH') end
  if state ~= 'failed' then return redis.error_reply('NOTFAILED') end
  retry_one(KEYS[1], ARGV[2], KEYS[2], KEYS[3], KEYS[4])
  return 1
end

if cmd == 'retry_failed' then
  local queued = 0
  for n = 2, #ARGV do
    local id, jobkey = ARGV[n], KEYS[n + 2]
    if redis.call('HGET', jobkey, 'state') == 'failed' then
      retry_one(jobkey, id, KEYS[1], KEYS[2], KEYS[3])
      queued = queued + 1
    else
      redis.call('ZREM', KEYS[1], id)  -- a stale member: its job is gone or moved on
    end
  end
  return queued
end

return redis.error_reply('unknown command ' .. tostring(cmd))
