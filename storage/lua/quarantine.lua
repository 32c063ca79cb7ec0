-- quarantine.lua: the quarantine stream, bounded by entry count and by bytes (dispatch on ARGV[1]).
--
-- Every entry carries a 'size' field (raw + headers + error bytes) and KEYS[2] holds the sum of
-- the sizes of the entries present, so the bound is kept without reading the stream. Entries
-- written before sizes existed count as #raw + #error when they are removed.
--
-- KEYS[1] quarantine stream   ih:{g}:quarantine
-- KEYS[2] byte counter        ih:{g}:quarantine:bytes   (string, integer)
--
-- add:     ARGV[2] max entries, ARGV[3] max bytes, ARGV[4] size, ARGV[5..] field/value pairs
--          (the 'size' field is added here).
--          Evicts the oldest entries (never the new one, at most 1000 per call) until both
--          bounds hold. Returns {new entry id, evicted count}.
-- remove:  ARGV[2] entry id. Returns 1 if it was there, else 0.
-- replace: ARGV[2] entry id, ARGV[3] new error, ARGV[4] new size, ARGV[5] max entries,
--          ARGV[6] max bytes. A retry that failed again: the entry is re-added with the new
--          error and retries + 1 (stream entries are immutable), then the old one removed.
--          Returns {new entry id, evicted count}, or an error "NOENTRY".

local cmd = ARGV[1]
local MAX_EVICT = 1000

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

local function entry_size(fields)
  local size = tonumber(field(fields, 'size'))
  if size then return size end
  return string.len(field(fields, 'raw') or '') + string.len(field(fields, 'error') or '')
end

local function take(id)
  local rows = redis.call('XRANGE', KEYS[1], id, id)
  if #rows == 0 then return nil end
  redis.call('XDEL', KEYS[1], id)
  local total = redis.call('DECRBY', KEYS[2], entry_size(rows[1][2]))
  if total < 0 then redis.call('SET', KEYS[2], 0) end
  return rows[1][2]
end

local function add(max_entries, max_bytes, size, pairs)
  local args = {'XADD', KEYS[1], '*'}
  for _, v in ipairs(pairs) do args[#args + 1] = v end
  args[#args + 1] = 'size'
  args[#args + 1] = tostring(size)
  local id = redis.call(unpack(args))
  local total = redis.call('INCRBY', KEYS[2], size)
  local evicted = 0
  while evicted < MAX_EVICT
      and (redis.call('XLEN', KEYS[1]) > max_entries or total > max_bytes) do
    local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
    if #oldest == 0 or oldest[1][1] == id then break end
    take(oldest[1][1])
    total = tonumber(redis.call('GET', KEYS[2])) or 0
    evicted = evicted + 1
  end
  return {id, evicted}
end

if cmd == 'add' then
  local pairs = {}
  for i = 5, #ARGV do pairs[#pairs + 1] = ARGV[i] end
  return add(tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), pairs)

elseif cmd == 'remove' then
  if take(ARGV[2]) then return 1 end
  return 0

elseif cmd == 'replace' then
  local old = take(ARGV[2])
  if not old then return redis.error_reply('NOENTRY') end
  local pairs = {}
  local retries = 0
  for i = 1, #old, 2 do
    local name = old[i]
    if name == 'retries' then
      retries = tonumber(old[i + 1]) or 0
    elseif name ~= 'error' and name ~= 'size' then
      pairs[#pairs + 1] = name
      pairs[#pairs + 1] = old[i + 1]
    end
  end
  for _, v in ipairs({'error', ARGV[3], 'retries', tostring(retries + 1)}) do
    pairs[#pairs + 1] = v
  end
  return add(tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[4]), pairs)
end

return redis.error_reply('unknown quarantine command ' .. tostring(cmd))
