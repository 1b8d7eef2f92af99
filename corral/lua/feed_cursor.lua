-- feed_cursor.lua: move a model's feed cursor past a chunk of lines just sent, and count
-- them as enqueued, in one step, while the batch exists.
--
-- KEYS[1] meta   hash  the batch's meta: fed:<model>, fed_line:<model>, enqueued
-- KEYS[2] stats  hash  the batch's live counters, `<model>|enqueued` (corral/stats.py)
-- ARGV[1] model      the configured model whose lines the chunk holds
-- ARGV[2] fed        lines of that model fed, this chunk included
-- ARGV[3] last_line  the input line number of the chunk's last line
-- ARGV[4] lines      lines in the chunk
--
-- Returns 1, or 0 and nothing written when the batch is gone (its meta has no id).

local meta, stats = KEYS[1], KEYS[2]
local model, fed, last_line, lines = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('HEXISTS', meta, 'id') == 0 then
  return 0
end
redis.call('HSET', meta, 'fed:' .. model, fed, 'fed_line:' .. model, last_line)
redis.call('HINCRBY', meta, 'enqueued', lines)
redis.call('HINCRBY', stats, model .. '|enqueued', lines)
return 1
