-- record_outcome.lua: write a line's terminal record once, move the counters once, log the
-- call's cost either way, and end the batch when its last line lands.
--
-- KEYS[1] outcomes  hash   custom_id -> terminal record (JSON)
-- KEYS[2] done      list   custom_ids in completion order
-- KEYS[3] meta      hash   status, end_status, total, completed, failed, timestamps (s)
-- KEYS[4] ledger    list   cost records (JSON), one per billed provider call
-- KEYS[5] seq       hash   custom_id -> its position in done
-- KEYS[6] attempts  hash   custom_id -> calls started (numbered 1..n in inflight)
-- KEYS[7] lease     string the line's lease, released here
-- KEYS[8] inflight  hash   custom_id#call -> mark (JSON) of a provider call not yet settled
-- KEYS[9] stats     hash   the batch's live counters per model (corral/stats.py)
-- KEYS[10] fleet    hash   the same counters for the whole fleet
-- KEYS[11] bodies    hash   custom_id -> stored request: a completed line's is dropped (Redis
--                          holds what is in flight; a failed line's stays for `retry`)
-- KEYS[12..] every long-lived key of the batch, to start the retention TTL when it ends
-- ARGV[1] custom_id
-- ARGV[2] record           the terminal record (JSON)
-- ARGV[3] counter          "completed" (a result) or "failed" (an error record)
-- ARGV[4] ledger_entry     a cost record (JSON object), or "" when the call was not billed
-- ARGV[5] retention_s      seconds the batch's keys live after it ends
-- ARGV[6] only_unstarted   "1": write only if no attempt was ever started (cancel, expiry)
-- ARGV[7] settled_call     the inflight field this call settles, or ""
-- ARGV[8] model            the model the counters go under, or "" for none
-- ARGV[9] call_counts      JSON object counter -> amount of the call behind this record
--                          (moved even for a duplicate, as its cost is real), or ""
-- ARGV[10] error_code      the record's error code, or "" for a result
-- ARGV[11] meta_fields     JSON object field -> value to set on the batch's meta first (its
--                          end_status, its last_error), or ""
--
-- Returns 1 when this call wrote the record, 0 when one existed (a duplicate), -1 when
-- only_unstarted and the line has started, -2 when the batch is gone (its meta has no id:
-- deleted, past retention, or lost with Redis's data): then nothing is written, so a late
-- writer never recreates part of a batch. The ledger entry is stored with "productive" =
-- whether it bought the line's result, so a duplicate's spend is counted, never dropped.
-- When the record is the line's first, every mark the line still has in inflight (a call
-- whose worker died, or that timed out: the provider may have served and billed it) moves
-- into the ledger as an unsettled row: the mark's fields + custom_id, attempt (its call
-- number), "unsettled": true, "productive": false. The cost report prices it between 0 and
-- its bounds, and drops it if the same call later settles (a late duplicate).
-- When the last line lands, an in_progress or cancelling batch takes its end_status
-- ("completed" by default; "failed" if no line succeeded), timestamps come from the Redis
-- server clock, and every key in KEYS[12..] gets the retention TTL.

local outcomes, done, meta, ledger, seq, attempts, lease, inflight =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local custom_id, record, counter, ledger_entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local retention_s, only_unstarted, settled_call = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local model, call_counts, error_code, meta_fields = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local stats, fleet, bodies = KEYS[9], KEYS[10], KEYS[11]

if redis.call('HEXISTS', meta, 'id') == 0 then
  return -2
end
if meta_fields ~= '' then
  for field, value in pairs(cjson.decode(meta_fields)) do
    redis.call('HSET', meta, field, value)
  end
end

local function count(counter, amount)
  if model ~= '' then
    redis.call('HINCRBY', stats, model .. '|' .. counter, amount)
    redis.call('HINCRBY', fleet, model .. '|' .. counter, amount)
  end
end

if only_unstarted == '1' and redis.call('HEXISTS', attempts, custom_id) == 1 then
  return -1
end

local first = redis.call('HSETNX', outcomes, custom_id, record)
redis.call('DEL', lease)
if settled_call ~= '' then
  redis.call('HDEL', inflight, settled_call)
end

if call_counts ~= '' then
  for counter, amount in pairs(cjson.decode(call_counts)) do
    count(counter, amount)
  end
end

if ledger_entry ~= '' then
  -- The entry is a JSON object: "productive" goes in before its closing brace.
  local productive = (first == 1 and counter == 'completed') and 'true' or 'false'
  redis.call('RPUSH', ledger, string.sub(ledger_entry, 1, -2) .. ',"productive":' .. productive
             .. '}')
end

if first == 0 then
  return 0
end

local calls = tonumber(redis.call('HGET', attempts, custom_id)) or 0
for call = 1, calls do
  local field = custom_id .. '#' .. call
  local mark = redis.call('HGET', inflight, field)
  if mark then
    local row = cjson.decode(mark)
    if type(row) ~= 'table' then  -- a mark from before marks carried their bounds
      row = {started_s = row}
    end
    row.custom_id, row.attempt, row.unsettled, row.productive = custom_id, call, true, false
    redis.call('RPUSH', ledger, cjson.encode(row))
    redis.call('HDEL', inflight, field)
  end
end

redis.call('HSET', seq, custom_id, redis.call('RPUSH', done, custom_id))
redis.call('HINCRBY', meta, counter, 1)
if counter == 'completed' then
  redis.call('HDEL', bodies, custom_id)
end
count(counter, 1)
if error_code ~= '' then
  count('failed:' .. error_code, 1)
end

local m = redis.call('HMGET', meta, 'status', 'total', 'completed', 'failed', 'end_status')
local status, total = m[1], tonumber(m[2]) or math.huge
local completed, failed = tonumber(m[3]) or 0, tonumber(m[4]) or 0
if (status == 'in_progress' or status == 'cancelling') and completed + failed >= total then
  local ending = m[5] or 'completed'
  if ending == 'completed' and completed == 0 then
    ending = 'failed'
  end
  local now = redis.call('TIME')[1]
  redis.call('HSET', meta, 'status', ending, 'finalizing_at', now, ending .. '_at', now)
  for i = 12, #KEYS do
    redis.call('EXPIRE', KEYS[i], retention_s)
  end
end
return 1
