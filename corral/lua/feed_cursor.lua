-- feed_cursor.lua: move a model's feed cursor past a chunk of lines just sent, and count
-- them as enqueued, in one step, while the batch exists.
--
-- KEYS[1] meta   hash  the batch's meta: fed:<model>, fed_offset:<model>, enqueued
-- KEYS[2] stats  hash  the batch's live counters, `<model>|enqueued` (corral/stats.py)
-- ARGV[1] model      the configured model whose spool file the chunk came from
-- ARGV[2] fed        lines of that model fed, this chunk included
-- ARGV[3] offset     the byte offset in the spool file after the chunk
-- ARGV[4] lines      lines in the chunk
--
-- Returns 1, or 0 and nothing written when the batch is gone (its meta has no id).

local meta, stats = KEYS[1], KEYS[2]
local model, fed, offset, lines = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('HEXISTS', meta, 'id') == 0 then
  return 0
end
redis.call('HSET', meta, 'fed:' .. model, fed, 'fed_offset:' .. model, offset)
redis.call('HINCRBY', meta, 'enqueued', lines)
redis.call('HINCRBY', stats, model .. '|enqueued', lines)
return 1
