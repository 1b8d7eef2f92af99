-- count_calls.lua: add a call that ends in no record (a retry, a fallback) to the live
-- counters of its batch and of the fleet, while the batch exists.
--
-- KEYS[1] meta   hash  the batch's meta (only read: does it still have its id?)
-- KEYS[2] stats  hash  the batch's live counters, `<model>|<counter>` (corral/stats.py)
-- KEYS[3] fleet  hash  the same counters for the whole fleet
-- ARGV[1] model        the configured model the call went to
-- ARGV[2] counts       JSON object counter -> amount (integers)
--
-- Returns 1 when counted, 0 when the batch is gone: then nothing is written, so a late call
-- never recreates a batch's counters (which would have no TTL).

local meta, stats, fleet = KEYS[1], KEYS[2], KEYS[3]
local model, counts = ARGV[1], cjson.decode(ARGV[2])

if redis.call('HEXISTS', meta, 'id') == 0 then
  return 0
end
for counter, amount in pairs(counts) do
  redis.call('HINCRBY', stats, model .. '|' .. counter, amount)
  redis.call('HINCRBY', fleet, model .. '|' .. counter, amount)
end
return 1
