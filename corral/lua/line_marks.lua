-- line_marks.lua: the marks a line still has in flight (calls not yet settled), read just
-- before its record is written, so the calls nobody saw finish go into the store with it.
--
-- KEYS[1] meta      hash   call_offset: where this Redis's call numbers start (a rebuild)
-- KEYS[2] attempts  hash   custom_id -> calls started in this Redis
-- KEYS[3] inflight  hash   custom_id#call -> call mark (JSON)
-- ARGV[1] custom_id
--
-- Returns {call, mark, call, mark, ...} (call numbers as the ledger's `attempt`).

local meta, attempts, inflight = KEYS[1], KEYS[2], KEYS[3]
local custom_id = ARGV[1]
local offset = tonumber(redis.call('HGET', meta, 'call_offset')) or 0
local calls = tonumber(redis.call('HGET', attempts, custom_id)) or 0
local found = {}
for call = offset + 1, offset + calls do
  local mark = redis.call('HGET', inflight, custom_id .. '#' .. call)
  if mark then
    found[#found + 1] = call
    found[#found + 1] = mark
  end
end
return found
