-- budget.lua: a batch's spending caps, enforced across the fleet by reserving each call's
-- worst-case cost before it and settling the actual cost after.
--
-- KEYS[1] meta       hash: max_cost_nusd (batch cap, optional), spent_nusd, reserved_nusd and
--                    the same per model as spent_nusd:<model>, reserved_nusd:<model>
-- ARGV[1] op         "reserve" or "settle"
-- ARGV[2] model      the configured model name
-- ARGV[3] amount     nano-dollars (10^-9 $): reserve — the call's worst case; settle — the
--                    reservation to release
-- ARGV[4] model_cap  the model's cap in nano-dollars, or "" for none
-- ARGV[5] spent      settle only: what the call actually cost, in nano-dollars
--
-- reserve returns 1 (reserved) or 0 (a cap would be exceeded: nothing reserved);
-- settle returns 1. Both return -1 and write nothing when the batch is gone (its meta has no
-- id), so a late call never recreates part of it. Since every call reserves its worst case first, spend never passes a cap.
-- No TTLs here: the keys are fields of the batch's meta hash.

local meta, op, model = KEYS[1], ARGV[1], ARGV[2]
local amount = tonumber(ARGV[3])
local spent_m, reserved_m = 'spent_nusd:' .. model, 'reserved_nusd:' .. model

if redis.call('HEXISTS', meta, 'id') == 0 then
  return -1
end

if op == 'settle' then
  redis.call('HINCRBY', meta, 'reserved_nusd', -amount)
  redis.call('HINCRBY', meta, reserved_m, -amount)
  redis.call('HINCRBY', meta, 'spent_nusd', tonumber(ARGV[5]))
  redis.call('HINCRBY', meta, spent_m, tonumber(ARGV[5]))
  return 1
end

local v = redis.call('HMGET', meta, 'max_cost_nusd', 'spent_nusd', 'reserved_nusd', spent_m,
                     reserved_m)
local batch_cap, model_cap = tonumber(v[1]), tonumber(ARGV[4])
if batch_cap and (tonumber(v[2]) or 0) + (tonumber(v[3]) or 0) + amount > batch_cap then
  return 0
end
if model_cap and (tonumber(v[4]) or 0) + (tonumber(v[5]) or 0) + amount > model_cap then
  return 0
end
redis.call('HINCRBY', meta, 'reserved_nusd', amount)
redis.call('HINCRBY', meta, reserved_m, amount)
return 1
