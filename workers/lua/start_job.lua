-- start_job.lua: decide whether this delivery of a line may call the provider, and if so
-- take the line's lease, count the attempt and hand back the stored request. One round trip.
--
-- KEYS[1] outcomes  hash   custom_id -> terminal record
-- KEYS[2] meta      hash   status, expires_at (s)
-- KEYS[3] bodies    hash   custom_id -> stored request (JSON)
-- KEYS[4] attempts  hash   custom_id -> attempts started
-- KEYS[5] lease     string the line's lease
-- KEYS[6] inflight  hash   custom_id#attempt -> start (s): set here, removed when settled
-- ARGV[1] custom_id
-- ARGV[2] lease_ms  how long the lease holds (ms): one attempt's longest run
-- ARGV[3] holder    who takes the lease (worker host and pid, for debugging)
-- Optionally, to take the call's rate-limit capacity in the same round trip:
-- KEYS[7] bucket    the scope's bucket hash (see bucket.lua)
-- ARGV[4] model     the model whose queue delivered the line
-- ARGV[5] rpm       the scope's request capacity per period
-- ARGV[6] tpm       the scope's token capacity per period
-- ARGV[7] period_ms the scope's refill period (ms)
-- ARGV[8] max_attempts
-- The capacity is taken only when the stored request starts {"tokens":N,"model":"<model>"
-- (the charge its intake computed, for that same model), the batch has no spending cap (its
-- budget is reserved before capacity), this attempt may call, and the buckets hold it now;
-- otherwise nothing is taken and the worker waits for capacity on its own.
--
-- Returns {verdict, attempt, request, budgeted[, tokens, nr, nt, now_ms, requests_left,
-- tokens_left]}; budgeted is 1 when the batch has a spending cap (max_cost_nusd); the rest is
-- there when the capacity was taken (bucket.lua's admission, to settle the call with, and the
-- levels it left). The verdict is
--   "done"      the line has its record: skip (a redelivery or duplicate)
--   "leased"    another worker is running it now: try this message again after the lease's
--               remaining time (attempt = that time in ms), never drop it
--   "cancelled" the batch is being cancelled: end the line as batch_cancelled
--   "expired"   the batch's completion window has passed: end it as batch_expired
--   "missing"   no stored request (the batch was deleted): skip
--   "run"       lease taken, attempt counted and marked in flight: call the provider
-- The lease key expires after lease_ms; record_outcome.lua deletes it when the line ends.

-- include: bucket_core

local outcomes, meta, bodies, attempts, lease, inflight =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local custom_id, lease_ms, holder = ARGV[1], ARGV[2], ARGV[3]

if redis.call('HEXISTS', outcomes, custom_id) == 1 then
  return {'done', 0, false}
end
local state = redis.call('HMGET', meta, 'status', 'expires_at', 'max_cost_nusd')
if state[1] == false then
  return {'missing', 0, false}
end
if state[1] == 'cancelling' or state[1] == 'cancelled' then
  return {'cancelled', 0, false}
end
local time = redis.call('TIME')
local now = tonumber(time[1])
local expires_at = tonumber(state[2])
if expires_at and now >= expires_at then
  return {'expired', 0, false}
end
local request = redis.call('HGET', bodies, custom_id)
if not request then
  return {'missing', 0, false}
end
if not redis.call('SET', lease, holder, 'NX', 'PX', lease_ms) then
  return {'leased', math.max(redis.call('PTTL', lease), 1), false}
end
local attempt = redis.call('HINCRBY', attempts, custom_id, 1)
redis.call('HSET', inflight, custom_id .. '#' .. attempt, now)
local budgeted = state[3] and 1 or 0
if KEYS[7] and budgeted == 0 and attempt <= tonumber(ARGV[8]) then
  local tokens, model = string.match(request, '^{"tokens":(%d+),"model":"([^"\\]*)"')
  if tokens and model == ARGV[4] then
    local bucket = bucket_load(KEYS[7], tonumber(ARGV[5]), tonumber(ARGV[6]),
                               tonumber(ARGV[7]),
                               now * 1000 + math.floor(tonumber(time[2]) / 1000))
    local taken = bucket_acquire(bucket, tonumber(tokens))
    if taken[1] == 1 then
      return {'run', attempt, request, budgeted, tonumber(tokens), taken[3], taken[4], taken[5],
              taken[6], taken[7]}
    end
  end
end
return {'run', attempt, request, budgeted}
