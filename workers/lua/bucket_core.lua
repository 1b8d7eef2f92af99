-- bucket_core.lua: one scope's RPM and TPM buckets, for the scripts that include it
-- (bucket.lua, start_job.lua); bucket.lua documents the hash and the rules.

-- The given time in ms, or the Redis server clock's when it is "".
local function bucket_now(now_arg)
  local now = tonumber(now_arg)
  if not now then
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  end
  return now
end

-- The scope's levels at `now`, refilled for the time since they were computed (ts may lie in
-- the future while a cooldown runs).
local function bucket_load(key, rpm, tpm, period_ms, now)
  local state = redis.call('HMGET', key, 'r', 't', 'ts', 'cool', 'nr', 'nt')
  local b = {key = key, rpm = rpm, tpm = tpm, period_ms = period_ms, now = now,
             r = tonumber(state[1]) or rpm, t = tonumber(state[2]) or tpm,
             ts = tonumber(state[3]) or now, cool = tonumber(state[4]) or 0,
             nr = tonumber(state[5]) or 0, nt = tonumber(state[6]) or 0}
  local elapsed = now - b.ts
  if elapsed > 0 then
    b.r = math.min(rpm, b.r + elapsed * rpm / period_ms)
    b.t = math.min(tpm, b.t + elapsed * tpm / period_ms)
    b.ts = now
  end
  return b
end

-- Write the levels back; the key expires 2 periods after ttl_from (by then it would be full).
local function bucket_save(b, ttl_from)
  redis.call('HSET', b.key, 'r', b.r, 't', b.t, 'ts', b.ts, 'cool', b.cool, 'nr', b.nr,
             'nt', b.nt)
  redis.call('PEXPIRE', b.key, math.max(ttl_from - b.now, 0) + 2 * b.period_ms)
end

-- Take one request and `tokens` tokens, both or neither:
-- {allowed, wait_ms, nr, nt, now_ms, requests_left, tokens_left} (see bucket.lua's acquire).
local function bucket_acquire(b, tokens)
  if tokens > b.tpm then
    return {-1, 0, 0, 0, b.now}
  end
  if b.cool > b.now then
    return {0, b.cool - b.now, 0, 0, b.now}
  end
  if b.r >= 1 and b.t >= tokens then
    b.r, b.t = b.r - 1, b.t - tokens
    b.nr, b.nt = b.nr + 1, b.nt + tokens
    bucket_save(b, b.now)
    return {1, 0, b.nr, b.nt, b.now, math.floor(b.r), math.floor(b.t)}
  end
  local wait_r = (1 - b.r) * b.period_ms / b.rpm
  local wait_t = (tokens - b.t) * b.period_ms / b.tpm
  return {0, math.ceil(math.max(wait_r, wait_t, 1)), 0, 0, b.now}
end
