-- count_once.lua: add to a counter of a hash once per token, however often the call is sent
-- (redis-py sends a command again when a reconnect lost its reply, and a MULTI block with it).
--
-- KEYS[1] hash     the batch's meta
-- ARGV[1] token    a field naming this addition (a new one for every addition)
-- ARGV[2] counter  the field to add to
-- ARGV[3] amount
--
-- Returns the counter's new value, or false when this token was counted already.

local hash, token, counter, amount = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if redis.call('HSETNX', hash, token, amount) == 0 then
  return false
end
return redis.call('HINCRBY', hash, counter, amount)
