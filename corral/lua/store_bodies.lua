-- store_bodies.lua: store the requests of lines about to be sent, while the batch exists in
-- Redis (a feeder must not bring back part of a batch Redis lost or that was deleted).
--
-- KEYS[1] bodies    hash   custom_id -> stored request (JSON) of a line in flight
-- KEYS[2] meta      hash   the batch's meta (only read: does it still have its id?)
-- ARGV    custom_id, request, custom_id, request, ...
--
-- Returns the number stored; false (nil in Python) and nothing written when the batch is gone.

local bodies, meta = KEYS[1], KEYS[2]
if redis.call('HEXISTS', meta, 'id') == 0 then
  return false
end
for i = 1, #ARGV, 2 do
  redis.call('HSET', bodies, ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
