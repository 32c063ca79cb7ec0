-- edit_message.lua: apply a buyer's edit to a stored inbound message (storage/edits.py).
--
-- The frozen payload stays as received; the edit is kept next to it, and an older edit never
-- replaces a newer one (providers redeliver out of order). Telegram stamps edits in whole
-- seconds: of two in the same second, the later arrival wins.
--
-- KEYS[1] seen key   ih:{pN}:seen:<instance>\0<provider id>   -> message id
-- ARGV[1] key base "ih:{pN}:"   ARGV[2] edited text   ARGV[3] edited at (unix seconds)
-- Returns 0 when no such message is stored, 1 when applied, 2 when an edit as new was shown.

local msg_id = redis.call('GET', KEYS[1])
if not msg_id then return 0 end
local key = ARGV[1] .. 'msg:' .. msg_id
if redis.call('HGET', key, 'direction') ~= 'in' then return 0 end
local shown = redis.call('HGET', key, 'edited_at')
if shown and tonumber(shown) > tonumber(ARGV[3]) then return 2 end
redis.call('HSET', key, 'edited_text', ARGV[2], 'edited_at', ARGV[3])
return 1
