-- csat_link_answer.lua: record the answer given on the survey page (hub/survey_page.py) once.
--
-- KEYS[1] = the conversation's record hash (its partition's slot)
-- ARGV[1] the survey round the signed link names (the resolution's event id)
-- ARGV[2] the score (1..5), [3] now (unix seconds), [4] the marker the answer is recorded
--         under in csat_message ("link:<round>")
-- Answers {"answered", score}: recorded now; {"already", score}: this round's answer was
-- recorded before (the score stays the first one); {"closed", ""}: the record is gone, or
-- this round's survey is no longer awaiting its link answer (a later survey, expired,
-- answered otherwise).

local conv = KEYS[1]
local round, score, now, marker = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local f = redis.call('HMGET', conv, 'csat_state', 'csat_round', 'csat_via', 'csat_until',
                     'csat_message', 'csat_score')
local state, stored_round, via, open_until, answered_by, stored_score =
  f[1], f[2], f[3], f[4], f[5], f[6]
if state == 'answered' and answered_by == marker then
  return {'already', stored_score or ''}
end
if state ~= 'sent' or via ~= 'link' or stored_round ~= round then
  return {'closed', ''}
end
if tonumber(open_until or '0') < tonumber(now) then
  return {'closed', ''}
end
redis.call('HSET', conv, 'csat_state', 'answered', 'csat_score', score,
           'csat_answered_at', now, 'csat_message', marker)
return {'answered', score}
