-- kpis_once.lua: add one sample set to an hour bucket at most once per key (storage/kpis.py):
-- the agents-online minute that whichever process holds the aggregator's lease records.
-- KEYS[1] ih:{kpi}:once:<what>:<when>   marker (TTL ARGV[1]): set means already counted
-- KEYS[2] ih:{kpi}:h:<hour>             the bucket (TTL refreshed to ARGV[2])
-- ARGV[3..] field, amount pairs (HINCRBYFLOAT)
-- Returns 1 when added, 0 when the marker was already set (nothing written).
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) == false then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return 1
