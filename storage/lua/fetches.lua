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
-- failed_at, last_error.
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
-- Command "done": fetched and stored.
--   KEYS[1] job hash  KEYS[2] queued zset
--   ARGV[1] "done"  ARGV[2] job id
--
-- Command "later": an attempt failed; try again at ARGV[3].
--   KEYS[1] job hash  KEYS[2] queued zset  KEYS[3] retrying zset  KEYS[4] due zset
--   ARGV[1] "later"  ARGV[2] job id  ARGV[3] next attempt at  ARGV[4] error
--
-- Command "fail": an attempt failed for good.
--   KEYS[1] job hash  KEYS[2] queued zset  KEYS[3] failed zset
--   ARGV[1] "fail"  ARGV[2] job id  ARGV[3] error  ARGV[4] now
--
--   "done", "later" and "fail" return 1, or 0 when the job is not queued (nothing written).
--
-- Command "release": queue retrying jobs whose time has come, at most ARGV[4] of them.
--   KEYS[1] due zset  KEYS[2] retrying zset  KEYS[3] queued zset  KEYS[4] stream
--   ARGV[1] "release"  ARGV[2] key base "ih:{fetch:<instance>}:"  ARGV[3] now
--   ARGV[4] batch size
--   Job hashes are computed keys of the same slot. Returns how many ids left the due set.
--
-- Command "retry": an operator queues a failed job again, attempts reset.
--   KEYS[1] job hash  KEYS[2] failed zset  KEYS[3] queued zset  KEYS[4] stream
--   ARGV[1] "retry"  ARGV[2] job id
--   Returns 1, or an error: "NOFETCH" (no such job), "NOTFAILED" (queued or retrying).
--
-- Command "retry_failed": "retry" for the oldest ARGV[3] failed jobs of the instance.
--   KEYS[1] failed zset  KEYS[2] queued zset  KEYS[3] stream
--   ARGV[1] "retry_failed"  ARGV[2] key base  ARGV[3] batch size
--   Returns {ids looked at (0: none left), how many were queued}.

local cmd = ARGV[1]

local function requeue(jobkey, id, queued, stream)
  redis.call('HSET', jobkey, 'state', 'queued')
  redis.call('ZADD', queued, 0, id)
  redis.call('XADD', stream, '*', 'job', id)
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
  if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 0 end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end

-- Command "begin": a worker starts the job's current attempt; returns how many times that
-- attempt has started without an outcome (a process that dies mid-fetch leaves it counted),
-- or -1 when the job is not queued. Settling an attempt clears the count.
if cmd == 'begin' then
  if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return -1 end
  return redis.call('HINCRBY', KEYS[1], 'starts', 1)
end

if cmd == 'later' then
  if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 0 end
  redis.call('HDEL', KEYS[1], 'starts')
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'state', 'retrying', 'next_attempt_at', ARGV[3],
             'last_error', ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], 0, ARGV[2])
  redis.call('ZADD', KEYS[4], tonumber(ARGV[3]), ARGV[2])
  return 1
end

if cmd == 'fail' then
  if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 0 end
  redis.call('HDEL', KEYS[1], 'starts')
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'state', 'failed', 'failed_at', ARGV[4], 'last_error', ARGV[3])
  redis.call('HDEL', KEYS[1], 'next_attempt_at')
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], 0, ARGV[2])
  return 1
end

if cmd == 'release' then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0,
                         tonumber(ARGV[4]))
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[1], id)
    local jobkey = ARGV[2] .. 'job:' .. id
    if redis.call('HGET', jobkey, 'state') == 'retrying' then
      redis.call('HDEL', jobkey, 'next_attempt_at')
      redis.call('ZREM', KEYS[2], id)
      requeue(jobkey, id, KEYS[3], KEYS[4])
    end
  end
  return #due
end

local function retry_one(jobkey, id, failed, queued, stream)
  redis.call('HSET', jobkey, 'attempts', 0)
  redis.call('HDEL', jobkey, 'failed_at', 'next_attempt_at', 'starts')
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
  local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
  local queued = 0
  for _, id in ipairs(ids) do
    local jobkey = ARGV[2] .. 'job:' .. id
    if redis.call('HGET', jobkey, 'state') == 'failed' then
      retry_one(jobkey, id, KEYS[1], KEYS[2], KEYS[3])
      queued = queued + 1
    else
      redis.call('ZREM', KEYS[1], id)  -- a stale member: its job is gone or moved on
    end
  end
  return {#ids, queued}
end

return redis.error_reply('unknown command ' .. tostring(cmd))
