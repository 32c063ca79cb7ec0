-- One message's tokens into the search index (storage/search.py), in one command: a pipeline
-- of one SADD per token cost the hub more Python time per webhook than the ingest itself.
-- Every key is in the conversation's partition slot ({pN}), the slot of KEYS[1].
--
-- KEYS[1] the conversation's token list   ih:{pN}:conv:<c>:terms  (hash token -> "")
-- ARGV[1] posting key prefix              ih:{pN}:idx:term:
-- ARGV[2] conversation id
-- ARGV[3..] tokens
local prefix, conv = ARGV[1], ARGV[2]
local listed = {}
for i = 3, #ARGV do
  redis.call('SADD', prefix .. ARGV[i], conv)
  listed[#listed + 1] = ARGV[i]
  listed[#listed + 1] = ''
end
if #listed > 0 then redis.call('HSET', KEYS[1], unpack(listed)) end
return #ARGV - 2
