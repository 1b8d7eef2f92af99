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
--
-- Returns {verdict, attempt, request, budgeted}; budgeted is 1 when the batch has a spending
-- cap (max_cost_nusd); verdict is
--   "done"      the line has its record: skip (a redelivery or duplicate)
--   "leased"    another worker is running it now: try this message again after the lease's
--               remaining time (attempt = that time in ms), never drop it
--   "cancelled" the batch is being cancelled: end the line as batch_cancelled
--   "expired"   the batch's completion window has passed: end it as batch_expired
--   "missing"   no stored request (the batch was deleted): skip
--   "run"       lease taken, attempt counted and marked in flight: call the provider
-- The lease key expires after lease_ms; record_outcome.lua deletes it when the line ends.

local outcomes, meta, bodies, attempts, lease, inflight =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local custom_id, lease_ms, holder = ARGV[1], ARGV[2], ARGV[3]

if redis.call('HEXISTS', outcomes, custom_id) == 1 then
  return {'done', 0, false}
end
local state = redis.call('HMGET', meta, 'status', 'expires_at')
if state[1] == false then
  return {'missing', 0, false}
end
if state[1] == 'cancelling' or state[1] == 'cancelled' then
  return {'cancelled', 0, false}
end
local now = tonumber(redis.call('TIME')[1])
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
return {'run', attempt, request, redis.call('HEXISTS', meta, 'max_cost_nusd')}
