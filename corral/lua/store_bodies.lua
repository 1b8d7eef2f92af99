-- store_bodies.lua: store the requests of lines about to be sent, except lines that already
-- have their terminal record (a chunk fed again after its feeder died must not bring back
-- the stored request of a line that has ended, nor send it again).
--
-- KEYS[1] bodies    hash   custom_id -> stored request (JSON)
-- KEYS[2] outcomes  hash   custom_id -> terminal record
-- KEYS[3] meta      hash   the batch's meta (only read: does it still have its id?)
-- ARGV    custom_id, request, custom_id, request, ...
--
-- Returns the custom_ids stored (the ones to send jobs for), in the order given; false (nil
-- in Python) and nothing written when the batch is gone (deleted, or lost with Redis's data).

local bodies, outcomes, meta = KEYS[1], KEYS[2], KEYS[3]
if redis.call('HEXISTS', meta, 'id') == 0 then
  return false
end
local stored = {}
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', outcomes, ARGV[i]) == 0 then
    redis.call('HSET', bodies, ARGV[i], ARGV[i + 1])
    stored[#stored + 1] = ARGV[i]
  end
end
return stored
