-- reopen_line.lua: take back a failed line's terminal record so the line can run again
-- (`corral retry`), keeping the old record in the history, and reopen the batch.
--
-- KEYS[1] outcomes  hash   custom_id -> terminal record
-- KEYS[2] meta      hash   status, end_status, failed
-- KEYS[3] history   list   replaced records (JSON), oldest first
-- KEYS[4] attempts  hash   custom_id -> calls started, ever
-- KEYS[5] reruns    hash   custom_id -> calls started before this rerun: its attempts count
--                          from 1 again, while call numbers (ledger rows) go on
-- KEYS[6..] every long-lived key of the batch, whose retention TTL is removed
-- ARGV[1] custom_id
-- ARGV[2] expected  the record as the caller read it (compare-and-take: a record that
--                   changed meanwhile is left alone)
--
-- Returns 1 when the line was reopened, 0 when its record was not the expected one.

local outcomes, meta, history, attempts, reruns = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local custom_id, expected = ARGV[1], ARGV[2]

if redis.call('HGET', outcomes, custom_id) ~= expected then
  return 0
end
redis.call('RPUSH', history, expected)
redis.call('HDEL', outcomes, custom_id)
redis.call('HSET', reruns, custom_id, redis.call('HGET', attempts, custom_id) or 0)
redis.call('HINCRBY', meta, 'failed', -1)
redis.call('HSET', meta, 'status', 'in_progress', 'end_status', 'completed')
redis.call('HDEL', meta, 'finalizing_at', 'completed_at', 'failed_at', 'expired_at',
           'cancelled_at')
for i = 6, #KEYS do
  redis.call('PERSIST', KEYS[i])
end
return 1
