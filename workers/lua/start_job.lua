-- start_job.lua: decide whether this delivery of a line may call the provider, and if so
-- take the line's lease, count the attempt, mark the call in flight and hand back the stored
-- request. One round trip.
--
-- KEYS[1] meta      hash   status, expires_at (s), call_offset
-- KEYS[2] bodies    hash   custom_id -> stored request (JSON, corral/stored_job.py) of a line
--                          in flight: a line that has its record has none
-- KEYS[3] attempts  hash   custom_id -> calls started in this Redis (numbers go on across
--                          reruns; they start past `call_offset`, set when Redis's part of
--                          the batch was rebuilt from the store)
-- KEYS[4] lease     string the line's lease
-- KEYS[5] inflight  hash   custom_id#call -> call mark (JSON): set here, removed when settled
-- KEYS[6] reruns    hash   custom_id -> calls started before its latest `corral retry`
-- ARGV[1] custom_id
-- ARGV[2] lease_ms  how long the lease holds (ms): one attempt's longest run
-- ARGV[3] holder    who takes the lease (worker host and pid, for debugging)
-- ARGV[4] client_request_id  the X-Client-Request-Id the call will carry
-- ARGV[5] price_version      the worker's price table version
-- Optionally, to take the call's rate-limit capacity in the same round trip:
-- KEYS[7] bucket    the scope's bucket hash (see bucket.lua)
-- ARGV[6] model     the model whose queue delivered the line
-- ARGV[7] rpm       the scope's request capacity per period
-- ARGV[8] tpm       the scope's token capacity per period
-- ARGV[9] period_ms the scope's refill period (ms)
-- ARGV[10] max_attempts
-- The capacity is taken only when the stored request starts {"tokens":N,"model":"<model>"
-- (the charge its intake computed, for that same model), the batch has no spending cap (its
-- budget is reserved before capacity), this attempt may call, and the buckets hold it now;
-- otherwise nothing is taken and the worker waits for capacity on its own.
--
-- The call mark is what prices the call if no response ever settles it (its worker is
-- killed, it times out): {"model", "price_version", "input_tokens_max", "output_tokens_max",
-- "started_ms", "client_request_id"}, the bounds read from the stored request.
--
-- Returns {verdict, attempt, request, budgeted, call, others[, tokens, nr, nt, now_ms,
-- requests_left, tokens_left]}: attempt counts this run's attempts (from 1 again after a
-- `corral retry`), call numbers the line's calls for good (its inflight field and ledger
-- rows); budgeted is 1 when the batch has a spending cap (max_cost_nusd); others is 1 when
-- an earlier call of the line is still marked in flight (so its end must collect it); the rest
-- is there
-- when the capacity was taken (bucket.lua's admission, to settle the call with, and the
-- levels it left). The verdict is
--   "leased"    another worker is running it now: try this message again after the lease's
--               remaining time (attempt = that time in ms), never drop it
--   "cancelled" the batch is being cancelled: end the line as batch_cancelled
--   "expired"   the batch's completion window has passed: end it as batch_expired
--   "missing"   no stored request: the line has its record (a redelivery or duplicate), or
--               the batch is gone: skip
--   "run"       lease taken, attempt counted and marked in flight: call the provider
-- The lease key expires after lease_ms; end_line.lua deletes it when the line ends.

-- include: bucket_core

local meta, bodies, attempts, lease, inflight, reruns =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local custom_id, lease_ms, holder = ARGV[1], ARGV[2], ARGV[3]
local client_request_id, price_version = ARGV[4], ARGV[5]

local state = redis.call('HMGET', meta, 'status', 'expires_at', 'max_cost_nusd', 'call_offset')
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
local started = redis.call('HINCRBY', attempts, custom_id, 1)
local attempt = started - (tonumber(redis.call('HGET', reruns, custom_id)) or 0)
local call = started + (tonumber(state[4]) or 0)
local now_ms = now * 1000 + math.floor(tonumber(time[2]) / 1000)
-- The stored request's prefix holds what a mark needs; decode it whole only if it does not.
local tokens, model, input_max, output_max = string.match(request,
  '^{"tokens":(%d+),"model":"([^"\\]*)","input_max":(%d+),"output_max":(%d+),')
if not tokens then
  local job = cjson.decode(request)
  model, input_max, output_max = job.model, job.input_max or 0, job.output_max or 0
end
redis.call('HSET', inflight, custom_id .. '#' .. call, cjson.encode({
  model = model, price_version = price_version, input_tokens_max = tonumber(input_max),
  output_tokens_max = tonumber(output_max), started_ms = now_ms,
  client_request_id = client_request_id}))
local offset = tonumber(state[4]) or 0
local others = 0
for earlier = offset + 1, call - 1 do
  if redis.call('HEXISTS', inflight, custom_id .. '#' .. earlier) == 1 then
    others = 1
    break
  end
end
local budgeted = state[3] and 1 or 0
if KEYS[7] and tokens and budgeted == 0 and attempt <= tonumber(ARGV[10])
    and model == ARGV[6] then
  local bucket = bucket_load(KEYS[7], tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]),
                             now_ms)
  local taken = bucket_acquire(bucket, tonumber(tokens))
  if taken[1] == 1 then
    return {'run', attempt, request, budgeted, call, others, tonumber(tokens), taken[3],
            taken[4], taken[5], taken[6], taken[7]}
  end
end
return {'run', attempt, request, budgeted, call, others}
