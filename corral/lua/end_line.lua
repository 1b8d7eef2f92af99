-- end_line.lua: a line's record is committed to the record store: drop what Redis held for
-- it while it was in flight, move the live counters, and end the batch when its last line
-- lands. Redis keeps only hot state: the record itself is in the store.
--
-- KEYS[1] meta      hash   status, end_status, total, completed, failed, timestamps (s)
-- KEYS[2] attempts  hash   custom_id -> calls started in this Redis
-- KEYS[3] reruns    hash   custom_id -> calls started before its latest `corral retry`
-- KEYS[4] lease     string the line's lease
-- KEYS[5] inflight  hash   custom_id#call -> mark of a provider call not yet settled
-- KEYS[6] bodies    hash   custom_id -> stored request of a line in flight
-- KEYS[7] stats     hash   the batch's live counters per model (corral/stats.py)
-- KEYS[8] fleet     hash   the same counters for the whole fleet
-- KEYS[9..] every long-lived key of the batch, to start the retention TTL when it ends
-- ARGV[1] custom_id
-- ARGV[2] first        "1": the store took this record as the line's first; "0": a duplicate
-- ARGV[3] counter      "completed" (a result) or "failed" (an error record)
-- ARGV[4] retention_s  seconds the batch's keys live after it ends
-- ARGV[5] marks        JSON array of inflight fields settled by this record (its own call,
--                      and the marks the store took as unsettled rows), or ""
-- ARGV[6] model        the model the counters go under, or "" for none
-- ARGV[7] call_counts  JSON object counter -> amount of the call behind this record (moved
--                      even for a duplicate, as its cost is real), or ""
-- ARGV[8] error_code   the record's error code, or "" for a result
-- ARGV[9] meta_fields  JSON object field -> value to set on the batch's meta (its
--                      end_status, its last_error), or ""
-- ARGV[10] fed         "1": the line ran in the live lane, where its stored request marks it
--                      in flight until its first end; "0": a provider batch's answer (the
--                      line may have no request in Redis)
--
-- Returns {1} (first) or {0} (duplicate), or {-2} when the batch is gone from Redis (its meta
-- has no id: deleted, or lost with Redis's data): then nothing is written, so a late writer
-- never recreates part of a batch (the store has the record; a rebuild recounts from it).
-- A first record's reply goes on with {call, mark, ...} of any other mark the line still has
-- (a call started after its end began, by a worker whose lease had run out): those stay in
-- `inflight` until the caller has written them to the store as unsettled rows.
-- When the last line lands, an in_progress or cancelling batch takes its end_status
-- ("completed" by default; "failed" if no line succeeded), timestamps come from the Redis
-- server clock, and every key in KEYS[9..] gets the retention TTL.

local meta, attempts, reruns, lease, inflight, bodies, stats, fleet =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local custom_id, first, counter, retention_s = ARGV[1], ARGV[2] == '1', ARGV[3],
  tonumber(ARGV[4])
local marks, model, call_counts, error_code, meta_fields =
  ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local fed = ARGV[10] == '1'

if redis.call('HEXISTS', meta, 'id') == 0 then
  return {-2}
end
if meta_fields ~= '' then
  for field, value in pairs(cjson.decode(meta_fields)) do
    redis.call('HSET', meta, field, value)
  end
end

local function count(name, amount)
  if model ~= '' then
    redis.call('HINCRBY', stats, model .. '|' .. name, amount)
    redis.call('HINCRBY', fleet, model .. '|' .. name, amount)
  end
end

-- Marks of the line's calls this end does not settle: only a first record collects them.
local settled, strays = {}, {}
if marks ~= '' then
  for _, field in ipairs(cjson.decode(marks)) do
    settled[field] = true
    redis.call('HDEL', inflight, field)
  end
end
if first then
  local offset = tonumber(redis.call('HGET', meta, 'call_offset')) or 0
  local calls = tonumber(redis.call('HGET', attempts, custom_id)) or 0
  for call = offset + 1, offset + calls do
    local field = custom_id .. '#' .. call
    local mark = not settled[field] and redis.call('HGET', inflight, field)
    if mark then
      strays[#strays + 1] = call
      strays[#strays + 1] = mark
    end
  end
end

-- The line has its record (this one or an earlier one): nothing of it stays in flight. A
-- provider batch's duplicate leaves the request to the live copy still running the line,
-- whose own end drops it.
redis.call('DEL', lease)
local dropped = 0
if fed or first then
  dropped = redis.call('HDEL', bodies, custom_id)
end
redis.call('HDEL', attempts, custom_id)
redis.call('HDEL', reruns, custom_id)
if call_counts ~= '' then
  for name, amount in pairs(cjson.decode(call_counts)) do
    count(name, amount)
  end
end
if not first then
  return {0}
end
-- A live line counts as its request leaves, so this call run twice (its reply lost to a
-- Redis restart, and sent again) counts the line once.
if fed and dropped == 0 then
  table.insert(strays, 1, 1)
  return strays
end

redis.call('HINCRBY', meta, counter, 1)
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
  for i = 9, #KEYS do
    redis.call('EXPIRE', KEYS[i], retention_s)
  end
end
table.insert(strays, 1, 1)
return strays
