-- bucket.lua: a scope's RPM and TPM token buckets, shared by every worker of the fleet.
--
-- Both buckets refill continuously (capacity per period, starting full, like the providers'
-- limiters) and are taken together or not at all. A cooldown (after a provider 429) holds the
-- scope shut until it ends and then reopens it empty, so waiting workers are released at the
-- refill rate instead of all at once.
--
-- KEYS[1] bucket      hash: r = request level, t = token level, ts = when the levels were
--                     computed (ms), cool = cooldown end (ms)
-- ARGV[1] op          "acquire" or "settle"
-- ARGV[2] rpm         request capacity per period (requests)
-- ARGV[3] tpm         token capacity per period (tokens)
-- ARGV[4] period_ms   refill period (ms); 60000 for per-minute limits
-- ARGV[5] now_ms      current time (ms), or "" to use the Redis server clock
-- acquire:
--   ARGV[6] tokens    tokens to take with one request
--   returns {allowed, wait_ms, requests_left, tokens_left}; allowed is 1 (taken),
--   0 (nothing taken: try again after wait_ms) or -1 (tokens > tpm: can never fit)
-- settle (every argument may be "" for "no change"):
--   ARGV[6] refund_tokens       tokens to give back (a 429'd call that the server did not charge)
--   ARGV[7] cooldown_ms         shut the scope for this long from now (extends, never shortens)
--   ARGV[8] remaining_requests  provider's x-ratelimit-remaining-requests: lowers r, never raises
--   ARGV[9] remaining_tokens    provider's x-ratelimit-remaining-tokens: lowers t, never raises
--   returns {requests_left, tokens_left}
-- TTL: the key expires 2 periods after its last write (by then it would be full again, which
-- is also how a missing key reads), or when a cooldown ends plus 2 periods.

local key = KEYS[1]
local op = ARGV[1]
local rpm, tpm, period_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local state = redis.call('HMGET', key, 'r', 't', 'ts', 'cool')
local r, t = tonumber(state[1]) or rpm, tonumber(state[2]) or tpm
local ts, cool = tonumber(state[3]) or now, tonumber(state[4]) or 0

-- Refill for the time elapsed since ts (ts may lie in the future while a cooldown runs).
local elapsed = now - ts
if elapsed > 0 then
  r = math.min(rpm, r + elapsed * rpm / period_ms)
  t = math.min(tpm, t + elapsed * tpm / period_ms)
  ts = now
end

local function save(ttl_from)
  redis.call('HSET', key, 'r', r, 't', t, 'ts', ts, 'cool', cool)
  redis.call('PEXPIRE', key, math.max(ttl_from - now, 0) + 2 * period_ms)
end

if op == 'acquire' then
  local tokens = tonumber(ARGV[6])
  if tokens > tpm then
    return {-1, 0, math.floor(r), math.floor(t)}
  end
  if cool > now then
    return {0, cool - now, 0, 0}
  end
  if r >= 1 and t >= tokens then
    r, t = r - 1, t - tokens
    save(now)
    return {1, 0, math.floor(r), math.floor(t)}
  end
  local wait_r = (1 - r) * period_ms / rpm
  local wait_t = (tokens - t) * period_ms / tpm
  return {0, math.ceil(math.max(wait_r, wait_t, 1)), math.floor(r), math.floor(t)}
end

-- settle
local refund = tonumber(ARGV[6])
if refund then
  t = math.min(tpm, t + refund)
end
local remaining_r, remaining_t = tonumber(ARGV[8]), tonumber(ARGV[9])
if remaining_r then r = math.min(r, remaining_r) end
if remaining_t then t = math.min(t, remaining_t) end
local cooldown_ms = tonumber(ARGV[7])
if cooldown_ms and now + cooldown_ms > cool then
  cool = now + cooldown_ms
  -- The server's buckets are empty now; ours reopen empty when the cooldown ends.
  r, t, ts = 0, 0, cool
end
save(math.max(cool, now))
return {math.floor(r), math.floor(t)}
