-- bucket.lua: a scope's RPM and TPM token buckets, shared by every worker of the fleet.
--
-- Both buckets refill continuously (capacity per period, starting full, like the providers'
-- limiters) and are taken together or not at all. A cooldown (after a provider 429) holds the
-- scope shut until it ends and then reopens it empty, so waiting workers are released at the
-- refill rate instead of all at once. The provider's x-ratelimit-remaining-* headers keep the
-- levels honest both ways. A header describes the provider right after it admitted that call;
-- since then we admitted more (counted exactly by the running totals nr/nt, whatever order
-- calls finish in) and, for a refilling provider, it refilled. So a report lowers a level to
-- remaining - admitted since + refill since, and raises it to remaining - admitted since
-- (no refill credit): a token-bucket provider never raises us, a sliding-window provider
-- does when its window moves past a burst and frees capacity at once.
--
-- KEYS[1] bucket      hash: r = request level, t = token level, ts = when the levels were
--                     computed (ms), cool = cooldown end (ms), nr / nt = requests / tokens
--                     admitted since the key was created (running totals)
-- ARGV[1] op          "acquire" or "settle"
-- ARGV[2] rpm         request capacity per period (requests)
-- ARGV[3] tpm         token capacity per period (tokens)
-- ARGV[4] period_ms   refill period (ms); 60000 for per-minute limits
-- ARGV[5] now_ms      current time (ms), or "" to use the Redis server clock
-- acquire:
--   ARGV[6] tokens    tokens to take with one request
--   returns {allowed, wait_ms, nr, nt, now_ms[, requests_left, tokens_left]}; allowed is 1
--   (taken; nr/nt/now_ms are this call's admission, to pass back to settle, and the levels
--   left after it are appended), 0 (nothing taken: try again after wait_ms) or -1
--   (tokens > tpm: can never fit)
-- settle (every argument may be "" for "no change"):
--   ARGV[6] refund_tokens       tokens to give back (a 429'd call that the server did not charge)
--   ARGV[7] cooldown_ms         shut the scope for this long from now (extends, never shortens)
--   ARGV[8] remaining_requests  provider's x-ratelimit-remaining-requests after the call
--   ARGV[9] remaining_tokens    provider's x-ratelimit-remaining-tokens after the call
--   ARGV[10] admitted_nr        the call's nr, from its acquire
--   ARGV[11] admitted_nt        the call's nt, from its acquire
--   ARGV[12] admitted_ms        the call's now_ms, from its acquire
--   returns {requests_left, tokens_left}
-- TTL: the key expires 2 periods after its last write (by then it would be full again, which
-- is also how a missing key reads), or when a cooldown ends plus 2 periods.

-- include: bucket_core

local op = ARGV[1]
local b = bucket_load(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
                      bucket_now(ARGV[5]))

if op == 'acquire' then
  return bucket_acquire(b, tonumber(ARGV[6]))
end

-- settle
local now, rpm, tpm, period_ms = b.now, b.rpm, b.tpm, b.period_ms
local refund = tonumber(ARGV[6])
if refund then
  b.t = math.min(tpm, b.t + refund)
end
local admitted_nr, admitted_nt, admitted_ms = tonumber(ARGV[10]), tonumber(ARGV[11]),
  tonumber(ARGV[12])
local function sync(level, remaining, admitted_since, capacity)
  -- admitted_since < 0: the key was recreated since the call's acquire; nothing to compare.
  if not remaining or not admitted_since or admitted_since < 0 then return level end
  local without_refill = remaining - admitted_since
  local elapsed = math.max(now - (admitted_ms or now), 0)
  local with_refill = without_refill + elapsed * capacity / period_ms
  if with_refill < level then return math.max(with_refill, 0) end
  if without_refill > level then return math.min(without_refill, capacity) end
  return level
end
b.r = sync(b.r, tonumber(ARGV[8]), admitted_nr and b.nr - admitted_nr, rpm)
b.t = sync(b.t, tonumber(ARGV[9]), admitted_nt and b.nt - admitted_nt, tpm)
local cooldown_ms = tonumber(ARGV[7])
if cooldown_ms and now + cooldown_ms > b.cool then
  b.cool = now + cooldown_ms
  -- The server's buckets are empty now; ours reopen empty when the cooldown ends.
  b.r, b.t, b.ts = 0, 0, b.cool
end
bucket_save(b, math.max(b.cool, now))
return {math.floor(b.r), math.floor(b.t)}
