-- A bucket's clock as stored: to the microsecond. `tostring` keeps 14 digits (0.1 ms of a Unix
-- time in ms), and a stored time rounded down lets the next run count again time already
-- counted: with runs out of order (several clients), a few tokens a second more than the rate.
local function bucket_ms(ms)
  return string.format('%.3f', ms)
end

-- The token bucket of one quota as of `now`: tokens, the effective rate and the rest of its
-- state. The effective rate is reset to the configured one whenever the configuration changes.
local function load_bucket(key, configured, burst, floor, now)
  local h = redis.call('HMGET', key, 'tokens', 'updated_ms', 'rate_rpm', 'configured_rpm',
                       'last_decrease_ms', 'throttles_total')
  local rate = tonumber(h[3]) or configured
  if tonumber(h[4]) ~= configured then rate = configured end
  rate = math.max(floor, math.min(configured, rate))
  local tokens = tonumber(h[1]) or burst
  local updated = tonumber(h[2]) or now
  if now > updated then
    tokens = math.min(burst, tokens + (now - updated) * rate / 60000)
    updated = now
  end
  return tokens, rate, {updated = updated, last_decrease = tonumber(h[5]) or 0,
                        throttles_total = tonumber(h[6]) or 0}
end

-- A tenant's own rate cap (rpm > 0): its tokens now, its bucket's key and its clock (never
-- earlier than the one stored).
local function tenant_tokens(tenant, rpm)
  if rpm <= 0 or tenant == K.NO_TENANT then return math.huge, nil, NOW end
  local key = K.TENANT_PREFIX .. tenant .. ':bucket'
  local h = redis.call('HMGET', key, 'tokens', 'updated_ms')
  local capacity = math.max(1, rpm / 60)
  local t = tonumber(h[1] or '') or capacity
  local updated = tonumber(h[2] or '') or NOW
  if NOW > updated then
    t = math.min(capacity, t + (NOW - updated) * rpm / 60000)
    updated = NOW
  end
  return t, key, updated
end
