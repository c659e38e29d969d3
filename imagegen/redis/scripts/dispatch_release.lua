-- Releases the model's next jobs into their Celery queues: as many as its token bucket has
-- tokens, as workers can start now (released and not yet claimed stays below the lookahead)
-- and as its concurrency cap allows. Any process may run it at any time, several at once.
--
-- Which job goes next: weighted fair queuing by start tags (SFQ) between the tenants with jobs
-- waiting. The tenant with the smallest tag is served; its tag then moves on by the job's cost
-- over its weight, and the virtual time becomes the tag just served. Within a tenant,
-- interactive before batch, but after `batch_every` interactive jobs in a row while batch jobs
-- waited, one batch job goes; within a class, earliest deadline first, then first submitted. A
-- tenant over its own rate or concurrency cap is passed over (it keeps its tag).
--
-- A released job reserves its model's price in its tenant's spend ledgers (the day's and the
-- month's); a tenant whose hard budget has no room for it is passed over until the next period,
-- or, when its budgets say `fail`, its job ends `budget_exceeded`, never called. A job that holds
-- a reservation already (a retry) keeps it. The first reservation past a soft budget in a period
-- is counted, and sends `tenant.budget_warning` to the tenant's webhook (or the job's).
--
-- On the way, due retries move from the delayed set to their waiting sets; a popped job that
-- was canceled or whose deadline passed ends without a token.
-- KEYS: 1 the quota's bucket, 2 its calls (last minute).
-- ARGV: 1 model id, 2 configured rpm (0 = no limit), 3 burst, 4 floor rpm, 5 most releases in
--       this run, 6 lookahead (released, unclaimed jobs allowed), 7 the model's concurrency cap
--       (0 = none), 8 now ('' = server clock), 9 key ttl ms, 10 batch_every, 11 generate
--       template for 'interactive', 12 for 'batch', 13 tenant weights (JSON object), 14 a
--       tenant's rpm cap (0 = none), 15 a tenant's concurrency cap (0 = none), 16 retention_s,
--       17 webhook grace ms, 18 delivery message template, 19 the model's price (micro-
--       dollars), 20 today (d:YYYY-MM-DD), 21 this month (m:YYYY-MM), 22 ledger ttl s.
-- Returns {released, next_ms, tenants waiting}: next_ms is when a release can next succeed
-- (ms from now; '0' now), '-1' when nothing waits, '-2' when only a claim or a finished job
-- can make room (the caps are full).
local model = ARGV[1]
local base = dispatch_base(model)
local tenants_key, delayed_key = base .. ':tenants', base .. ':delayed'
local released_key, active_key, state_key = base .. ':released', base .. ':active', base .. ':state'
local configured, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local most, lookahead, model_cap = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now = clock(ARGV[8])
local now_int = math.floor(now)
local ttl = tonumber(ARGV[9])
local batch_every = tonumber(ARGV[10])
local templates = {interactive = ARGV[11], batch = ARGV[12]}
local weights = cjson.decode(ARGV[13])
local tenant_rpm_default, tenant_cap_default = tonumber(ARGV[14]), tonumber(ARGV[15])
local retention, grace, delivery_template = tonumber(ARGV[16]), tonumber(ARGV[17]), ARGV[18]
local price, day, month, ledger_ttl = tonumber(ARGV[19]), ARGV[20], ARGV[21], tonumber(ARGV[22])
local PERIODS = {{day, 'daily'}, {month, 'monthly'}}

-- Retries whose time has come wait for their turn again.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now_int, 'LIMIT', 0, 500)) do
  redis.call('ZREM', delayed_key, id)
  local key = job_key(id)
  if redis.call('HGET', key, 'dispatch') == 'delayed' then wait_in(key, id, now_int, nil) end
end

local limited = configured > 0
local tokens, rate, bucket = math.huge, 0, nil
if limited then
  -- Two tokens at least, so a release run a little late loses none of the quota.
  tokens, rate, bucket = load_bucket(KEYS[1], configured, math.max(burst, 2),
                                     tonumber(ARGV[4]), now)
end

local function room()
  local free = lookahead - redis.call('ZCARD', released_key)
  if model_cap > 0 then free = math.min(free, model_cap - redis.call('ZCARD', active_key)) end
  return free
end

local function tenant_config(tenant)
  local weight, rpm, cap = weights[tenant] or 1, tenant_rpm_default, tenant_cap_default
  if tenant ~= K.NO_TENANT then
    local h = redis.call('HMGET', K.TENANT_PREFIX .. tenant, 'weight', 'rate_rpm',
                         'max_concurrency')
    weight = tonumber(h[1] or '') or weight
    rpm = tonumber(h[2] or '') or rpm
    cap = tonumber(h[3] or '') or cap
  end
  return math.max(weight, 1e-6), rpm, cap
end

-- The tenant's own rate cap: its tokens now (math.huge without a cap).
local function tenant_tokens(tenant, rpm)
  if rpm <= 0 or tenant == K.NO_TENANT then return math.huge, nil end
  local key = K.TENANT_PREFIX .. tenant .. ':bucket'
  local h = redis.call('HMGET', key, 'tokens', 'updated_ms')
  local capacity = math.max(1, rpm / 60)
  local t = tonumber(h[1] or '') or capacity
  local updated = tonumber(h[2] or '') or now
  if now > updated then t = math.min(capacity, t + (now - updated) * rpm / 60000) end
  return t, key
end

local function has_room(tenant, rpm, cap)
  if cap > 0 and tenant ~= K.NO_TENANT
     and redis.call('ZCARD', K.TENANT_PREFIX .. tenant .. ':active') >= cap then
    return false
  end
  return tenant_tokens(tenant, rpm) >= 1
end

-- 'ok', or what the tenant's budgets say when its hard budget has no room for one more job.
local function budget_verdict(tenant)
  if tenant == K.NO_TENANT then return 'ok' end
  local h = redis.call('HMGET', K.TENANT_PREFIX .. tenant, 'budget_daily_hard',
                       'budget_monthly_hard', 'budget_on_exceed')
  for i, period in ipairs(PERIODS) do
    local limit = tonumber(h[i] or '')
    if limit then
      local s = redis.call('HMGET', spend_key(tenant, period[1]), 'spent', 'reserved')
      if (tonumber(s[1] or '') or 0) + (tonumber(s[2] or '') or 0) + price > limit then
        if h[3] == 'fail' then return 'fail' end
        return 'wait'
      end
    end
  end
  return 'ok'
end

-- The tenant.budget_warning delivery of one period, hung off the job that crossed the budget
-- (its record keeps the delivery's log); its webhook-id names the tenant and the period.
local function warn(tenant, key, job_id, period, kind)
  local url = redis.call('HGET', K.TENANT_PREFIX .. tenant, 'webhook_url')
  if not url or url == '' then url = redis.call('HGET', key, 'webhook_url') end
  if not url or url == '' then return end
  local id = job_id .. ':tenant.budget_warning:' .. kind
  local delivery_key = K.WEBHOOK_PREFIX .. id
  if redis.call('EXISTS', delivery_key) == 1 then return end
  local webhook_id = 'msg_budget_' .. tenant .. '_' .. string.gsub(period, '[^%w-]', '_')
  redis.call('HSET', delivery_key, 'delivery_id', id, 'job_id', job_id,
             'event', 'tenant.budget_warning', 'url', url, 'webhook_id', webhook_id,
             'state', 'pending', 'attempts', 0, 'created_ms', now_int, 'next_ms', now_int,
             'lease_until_ms', 0)
  redis.call('EXPIRE', delivery_key, retention)
  redis.call('ZADD', K.WEBHOOKS_DUE, now_int + grace, id)
  local listed = redis.call('HGET', key, 'webhook_deliveries') or ''
  if listed == '' then listed = id else listed = listed .. ',' .. id end
  redis.call('HSET', key, 'webhook_deliveries', listed)
  redis.call('LPUSH', K.WEBHOOK_QUEUE, (string.gsub(delivery_template, K.DELIVERY_ID, id)))
end

local function reserve(tenant, key, job_id)
  local soft = {}
  if tenant ~= K.NO_TENANT then
    soft = redis.call('HMGET', K.TENANT_PREFIX .. tenant, 'budget_daily_soft',
                      'budget_monthly_soft')
  end
  for i, period in ipairs(PERIODS) do
    local ledger = spend_key(tenant, period[1])
    local held = redis.call('HINCRBY', ledger, 'reserved', price)
    redis.call('EXPIRE', ledger, ledger_ttl)
    local limit = tonumber(soft[i] or '')
    if limit and held + (tonumber(redis.call('HGET', ledger, 'spent') or '') or 0) >= limit
       and redis.call('HSETNX', ledger, 'warned', now_int) == 1 then
      redis.call('HINCRBY', K.STATS, 'budget_warnings|' .. tenant .. '|' .. period[2], 1)
      warn(tenant, key, job_id, period[1], period[2])
    end
  end
  redis.call('HSET', key, 'reserved_micro', price, 'reserved_day', day, 'reserved_month', month)
  redis.call('SADD', K.SPEND_TENANTS, tenant)
end

local skipped = {}
local vtime = tonumber(redis.call('HGET', state_key, 'vtime') or '') or 0
local released, capped, blocked = 0, false, false
local budget = most
local passes = 0
while released < budget and passes < most + 500 do
  passes = passes + 1
  if limited and tokens < 1 then break end
  if room() < 1 then blocked = true; break end
  local candidates = redis.call('ZRANGE', tenants_key, 0, 31, 'WITHSCORES')
  if #candidates == 0 then break end
  local tenant, tag, weight, rpm
  capped = false
  for i = 1, #candidates, 2 do
    local t, s = candidates[i], tonumber(candidates[i + 1])
    local interactive, batch = wait_key(model, t, 'interactive'), wait_key(model, t, 'batch')
    if redis.call('ZCARD', interactive) + redis.call('ZCARD', batch) == 0 then
      redis.call('ZREM', tenants_key, t)
      redis.call('HSET', state_key, 'finish|' .. t, s, 'streak|' .. t, 0)
    else
      local w, r, c = tenant_config(t)
      if not skipped[t] and has_room(t, r, c) then
        tenant, tag, weight, rpm = t, s, w, r
        break
      end
      capped = true
    end
  end
  if not tenant then break end
  local interactive, batch = wait_key(model, tenant, 'interactive'), wait_key(model, tenant, 'batch')
  local waiting_interactive = redis.call('ZCARD', interactive)
  local waiting_batch = redis.call('ZCARD', batch)
  local streak = tonumber(redis.call('HGET', state_key, 'streak|' .. tenant) or '') or 0
  local class = 'batch'
  if waiting_interactive > 0 and (waiting_batch == 0 or streak < batch_every) then
    class = 'interactive'
  end
  local class_key = class == 'interactive' and interactive or batch
  local popped = redis.call('ZPOPMIN', class_key)
  local id = popped[1]
  if class == 'interactive' and waiting_batch > 0 then streak = streak + 1 else streak = 0 end
  redis.call('HSET', state_key, 'streak|' .. tenant, streak)
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'status', 'dispatch', 'cancel_requested', 'expires_ms',
                       'priority', 'reserved_micro', 'copy_from_key')
  -- A job that copies a cached image calls nobody: no token, no reservation.
  local copies = h[7] and h[7] ~= ''
  local verdict = 'ok'
  if h[1] and not TERMINAL[h[1]] and h[2] == 'waiting' and h[3] ~= '1' and not copies
     and (tonumber(h[6] or '') or 0) <= 0 then
    verdict = budget_verdict(tenant)
  end
  if not h[1] or TERMINAL[h[1]] or h[2] ~= 'waiting' then
    -- Not the dispatcher's any more: nothing to do.
  elseif h[3] == '1' then
    finalize(key, id, 'canceled', now_int, retention, grace, delivery_template)
  elseif h[1] == 'queued' and tonumber(h[4] or '') and now_int >= tonumber(h[4]) then
    finalize(key, id, 'expired', now_int, retention, grace, delivery_template)
  elseif verdict == 'fail' then
    finalize(key, id, 'budget_exceeded', now_int, retention, grace, delivery_template)
  elseif verdict == 'wait' then
    -- Back in its place; the tenant sits out this run (its budget has no room until the next
    -- period or a higher budget).
    redis.call('ZADD', class_key, popped[2], id)
    skipped[tenant] = true
    capped = true
  else
    if not copies and (tonumber(h[6] or '') or 0) <= 0 then reserve(tenant, key, id) end
    local queue = h[5] == 'batch' and 'batch' or 'interactive'
    local message = string.gsub(templates[queue], K.JOB_ID, id)
    message = string.gsub(message, K.NONCE, tostring(now_int) .. '.' .. released)
    redis.call('LPUSH', queue, message)
    redis.call('HSET', key, 'dispatch', 'released', 'released_ms', now_int)
    redis.call('ZADD', released_key, now_int, id)
    redis.call('ZADD', active_key, now_int, id)
    if tenant ~= K.NO_TENANT then
      redis.call('ZADD', K.TENANT_PREFIX .. tenant .. ':active', now_int, id)
      local t, tkey = tenant_tokens(tenant, rpm)
      if tkey then
        redis.call('HSET', tkey, 'tokens', tostring(t - 1), 'updated_ms', tostring(now))
        redis.call('PEXPIRE', tkey, ttl)
      end
    end
    redis.call('HINCRBY', K.STATS, 'released|' .. model .. '|' .. tenant, 1)
    if not copies then
      redis.call('ZADD', KEYS[2], now, tenant .. '|' .. id)
      tokens = tokens - 1
    end
    released = released + 1
    vtime = math.max(vtime, tag)
    local finish = tag + 1 / weight
    if redis.call('ZCARD', interactive) + redis.call('ZCARD', batch) > 0 then
      redis.call('ZADD', tenants_key, finish, tenant)
    else
      redis.call('ZREM', tenants_key, tenant)
      redis.call('HSET', state_key, 'finish|' .. tenant, finish, 'streak|' .. tenant, 0)
    end
  end
end
redis.call('HSET', state_key, 'vtime', vtime)
if released > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if limited then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_ms', tostring(bucket.updated),
             'rate_rpm', tostring(rate), 'configured_rpm', tostring(configured))
  redis.call('PEXPIRE', KEYS[1], ttl)
end

local waiting = redis.call('ZCARD', tenants_key)
local next_ms = -1
if waiting > 0 then
  if blocked or capped and released == 0 then
    next_ms = -2
  elseif limited and tokens < 1 then
    next_ms = (1 - tokens) * 60000 / rate
  else
    next_ms = 0
  end
end
local first_due = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
if #first_due > 0 then
  local due_in = math.max(0, tonumber(first_due[2]) - now)
  if next_ms == -1 then
    next_ms = due_in
  elseif next_ms >= 0 then
    next_ms = math.min(next_ms, due_in)
  end
end
if waiting == 0 and #first_due == 0 and redis.call('ZCARD', released_key) == 0 then
  redis.call('SREM', K.DISPATCH_MODELS, model)
end
return {released, tostring(next_ms), waiting}
