-- record_outcome.lua: write a line's terminal record once, move the counters once, and log the
-- call's cost either way.
--
-- KEYS[1] outcomes  hash   custom_id -> terminal record (JSON)
-- KEYS[2] done      list   custom_ids in completion order
-- KEYS[3] meta      hash   batch status, request counts ("total", "completed", "failed")
-- KEYS[4] ledger    list   cost records (JSON), one per billed provider call
-- ARGV[1] custom_id
-- ARGV[2] record           the terminal record (JSON)
-- ARGV[3] counter          "completed" (a result) or "failed" (an error record)
-- ARGV[4] ledger_entry     a cost record (JSON object) or "" when the call was not billed
--
-- Returns 1 when this call wrote the record, 0 when one existed (a duplicate delivery).
-- The ledger entry is stored with "productive" = whether it bought the line's result, so a
-- duplicate's spend is counted as unproductive, never dropped.
-- When the last line of an in_progress batch lands, status becomes "completed" and
-- completed_at is set from the Redis server clock (seconds). No TTLs are set here.

local outcomes, done, meta, ledger = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local custom_id, record, counter, ledger_entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local first = redis.call('HSETNX', outcomes, custom_id, record)

if ledger_entry ~= '' then
  local entry = cjson.decode(ledger_entry)
  entry['productive'] = (first == 1 and counter == 'completed')
  redis.call('RPUSH', ledger, cjson.encode(entry))
end

if first == 0 then
  return 0
end

redis.call('RPUSH', done, custom_id)
redis.call('HINCRBY', meta, counter, 1)

local counts = redis.call('HMGET', meta, 'status', 'total', 'completed', 'failed')
local finished = (tonumber(counts[3]) or 0) + (tonumber(counts[4]) or 0)
if counts[1] == 'in_progress' and finished >= (tonumber(counts[2]) or math.huge) then
  local now = redis.call('TIME')
  redis.call('HSET', meta, 'status', 'completed', 'completed_at', now[1])
end
return 1
