-- Releases the model's next jobs into their Celery queues (event release): as many as its
-- token bucket has tokens, as workers can start now (released and not yet claimed stays below
-- the lookahead) and as its concurrency cap allows. Any process may run it at any time, several
-- at once; workers run it from their release loop and as they finish jobs.
--
-- Which job goes next: weighted fair queuing by start tags (SFQ) between the ready tenant
-- queues. The queue with the smallest tag is served; its tag then moves on by the job's cost
-- over its weight, and the virtual time becomes the tag just served. Within a tenant,
-- interactive before batch, but after `batch_every` interactive jobs in a row while batch jobs
-- waited, one batch job goes; within a class, earliest deadline first, then submission order.
--
-- A queue whose turn comes and that cannot be served is paused (queues.lua), out of the scan
-- until it can be: its concurrency cap is full (until a slot frees), its rate cap has no token
-- (until the next is due), its hard budget has no room for the job's price (until the next UTC
-- day or month, a reservation given back or a budget change; with `fail` the job ends
-- budget_exceeded instead, never called). So however many tenants cannot be served, one run
-- costs what the jobs it releases cost.
--
-- A released job reserves its price in its tenant's day and month ledgers; one that holds a
-- reservation (a retry) keeps it, one whose image was already bought needs none (a re-run
-- adopts it; job_calling.lua reserves if it must call again). The first reservation past a
-- soft budget in a period sends tenant.budget_warning. A fixed-seed job whose image is in the
-- cache now ends served (or, copying objects, is released to copy it: no token, no
-- reservation); one whose identical job is released or running follows it; otherwise it takes
-- the lead. A popped job whose deadline passed ends expired, without a token.
--
-- Pools (imagegen.pools): when the model is served by configured pools, the job chosen by fair
-- share then goes to a pool with a token (each pool has its own bucket): among those its
-- tenant may use (its record's `pools`) whose circuit is closed, or due for its one probe, the
-- least used for its quota or the cheapest; a retry avoids the pool it failed on when another
-- has a token. A job that reserves its price reserves (and pays) its pool's. The pool's name goes into the record (`pool`): the worker calls that pool. The
-- model's bucket then holds the pools' sum (what estimates read). A tenant whose pools have no
-- token is paused (rate) until the first is due.
-- KEYS: 1 the quota's bucket, 2 its calls (last minute); with n pools, 3..2+n their buckets
--       and 3+n..2+2n their calls.
-- ARGV: 1 now, 2-6 the job context, 7 model id, 8 configured rpm (0 = no limit), 9 burst,
--       10 floor rpm, 11 most releases in this run, 12 lookahead (released, unclaimed jobs
--       allowed), 13 the model's concurrency cap (0 = none), 14 key ttl ms, 15 batch_every,
--       16 generate template for 'interactive', 17 for 'batch', 18 a tenant's rpm cap
--       (0 = none), 19 a tenant's concurrency cap (0 = none), 20 the model's price (micro-
--       dollars; for jobs whose record names none), 21 pool choice (least_used | cheapest),
--       22 a probe's lease ms, 23 n pools, then per pool: name, rpm, burst, floor rpm, price
--       (micro-dollars).
-- Touches: the released jobs' records, imagegen:dispatch:{model}:* (wait:{t}:{class},
-- tenants, paused, waiting, weight, finish, state, delayed, released, active),
-- imagegen:dispatch:models, the interactive and batch queues, imagegen:tenant:{t} (caps and
-- budgets, read), imagegen:tenant:{t}:active|paused|bucket, imagegen:spend:{t}:{period},
-- imagegen:cache:{scope}:{hash} and its :leader and :followers, imagegen:stats; and for jobs
-- that end here (expired, served, budget_exceeded; a final transition):
--   imagegen:job:{id} and its :next and :parked-image, imagegen:open, imagegen:deadlines,
--   imagegen:running, imagegen:dlq, imagegen:stats, imagegen:tenant:{t}:open|active|paused,
--   imagegen:spend:{t}:{period} (reservations given back), imagegen:batch:{id},
--   imagegen:webhook:{delivery}, imagegen:webhooks:due, the webhooks queue, the events channels,
--   imagegen:cache:{scope}:{hash} and its :leader and :followers (their jobs too), the jobs of
--   its :next list, imagegen:dispatch:{model}:* (wait:{t}:{class}, tenants, paused, waiting,
--   weight, finish, state, delayed, released, active) and imagegen:dispatch:models.
-- Returns {released, next_ms, tenant queues ready}: next_ms is when a release can next succeed
-- (ms from now; '0' now), '-1' when nothing waits or is due, '-2' when only a claim or a
-- finished job can make room (the model's caps are full, or released jobs not yet claimed
-- fill more than three quarters of the lookahead).
local ctx = job_context(ARGV)
local model = ARGV[ARG0]
local base = dispatch_base(model)
local tenants_key, paused_key = base .. ':tenants', base .. ':paused'
local delayed_key, released_key, active_key = base .. ':delayed', base .. ':released', base .. ':active'
local state_key = base .. ':state'
local configured, burst, floor = tonumber(ARGV[ARG0 + 1]), tonumber(ARGV[ARG0 + 2]), tonumber(ARGV[ARG0 + 3])
local most, lookahead = tonumber(ARGV[ARG0 + 4]), tonumber(ARGV[ARG0 + 5])
local model_cap, ttl = tonumber(ARGV[ARG0 + 6]), tonumber(ARGV[ARG0 + 7])
local batch_every = tonumber(ARGV[ARG0 + 8])
local templates = {interactive = ARGV[ARG0 + 9], batch = ARGV[ARG0 + 10]}
local tenant_rpm_default, tenant_cap_default = tonumber(ARGV[ARG0 + 11]), tonumber(ARGV[ARG0 + 12])
local model_price = tonumber(ARGV[ARG0 + 13])
local pool_choice, probe_ms = ARGV[ARG0 + 14], tonumber(ARGV[ARG0 + 15] or '0') or 0
local pool_n = tonumber(ARGV[ARG0 + 16] or '0') or 0

-- Nothing ready and nothing whose time came: nothing to release (the common run, cheap).
local function first_due(key)
  local first = redis.call('ZRANGE', key, '0', '0', 'WITHSCORES')
  if #first == 0 or first[2] == 'inf' then return nil end
  return tonumber(first[2])
end
if redis.call('EXISTS', tenants_key) == 0 then
  local due = math.min(first_due(paused_key) or math.huge, first_due(delayed_key) or math.huge)
  if due > NOW_MS then
    if due == math.huge then
      if redis.call('EXISTS', paused_key) == 0 and redis.call('EXISTS', released_key) == 0 then
        redis.call('SREM', K.DISPATCH_MODELS, model)
      end
      return {0, '-1', 0}
    end
    return {0, tostring(due - NOW), 0}
  end
end

-- Released jobs still enough to keep the workers busy: the run waits until a batch's room is
-- free (a quarter of the lookahead), so a model without a quota or with a high one releases
-- in batches, not one job per finished job. Only a claim can make that room ('-2').
local refill_at = math.max(1, math.floor(lookahead / 4))
local released_n = redis.call('ZCARD', released_key)
if lookahead - released_n < refill_at then
  return {0, '-2', redis.call('ZCARD', tenants_key)}
end

-- Paused queues whose time came, then retries whose time came.
for _, tenant in ipairs(redis.call('ZRANGEBYSCORE', paused_key, '-inf', NOW_MS, 'LIMIT', '0', '500')) do
  resume(model, tenant)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed_key, '-inf', NOW_MS, 'LIMIT', '0', '500')) do
  local job = load_job(id)
  if not (job and job.place == 'delayed' and transition(job, 'due')) then
    redis.call('ZREM', delayed_key, id)
  end
end

local limited = configured > 0 and pool_n == 0
local tokens, rate, bucket = math.huge, 0, nil
local pools = {}
for i = 1, pool_n do
  local a = ARG0 + 17 + 5 * (i - 1)
  local p = {name = ARGV[a], rpm = tonumber(ARGV[a + 1]), burst = tonumber(ARGV[a + 2]),
             floor = tonumber(ARGV[a + 3]), price = tonumber(ARGV[a + 4]), key = KEYS[2 + i],
             calls = KEYS[2 + pool_n + i], order = i}
  p.tokens, p.rate, p.bucket = load_bucket(p.key, p.rpm, math.max(p.burst, 2), p.floor, NOW)
  local h = redis.call('HMGET', p.key, 'circuit', 'circuit_until_ms')
  p.circuit, p.until_ms = h[1], tonumber(h[2] or '') or 0
  p.used = redis.call('ZCOUNT', p.calls, NOW - 60000, '+inf')
  pools[i] = p
end
-- A pool takes calls unless its circuit is open (or its probe out) and not yet due.
local function pool_shut(p) return p.circuit and NOW < p.until_ms end
local function pool_better(p, q)
  if not q then return true end
  local pu, qu = p.used / p.rpm, q.used / q.rpm
  if pool_choice == 'cheapest' and p.price ~= q.price then return p.price < q.price end
  if pu ~= qu then return pu < qu end
  return p.order < q.order
end
-- The pool a job goes to: one with a token its tenant may use; `avoid` only when no other.
local function choose_pool(allowed, avoid)
  local best, fallback = nil, nil
  for _, p in ipairs(pools) do
    if p.tokens >= 1 and not pool_shut(p) and (not allowed or allowed[p.name]) then
      if p.name == avoid then
        if pool_better(p, fallback) then fallback = p end
      elseif pool_better(p, best) then
        best = p
      end
    end
  end
  return best or fallback
end
-- When one of the pools (those allowed, when given) can next take a call (ms epoch).
local function pools_due(allowed)
  local due = math.huge
  for _, p in ipairs(pools) do
    if not allowed or allowed[p.name] then
      local at = NOW + math.max(0, 1 - p.tokens) * 60000 / p.rate
      if pool_shut(p) then at = math.max(at, p.until_ms) end
      due = math.min(due, at)
    end
  end
  return due
end
if limited then
  -- Two tokens at least, so a release run a little late loses none of the quota.
  tokens, rate, bucket = load_bucket(KEYS[1], configured, math.max(burst, 2), floor, NOW)
end
local active_n = model_cap > 0 and redis.call('ZCARD', active_key) or 0
local function room()
  local free = lookahead - released_n
  if model_cap > 0 then free = math.min(free, model_cap - active_n) end
  return free
end

-- Each tenant's caps, weight, budget room and slots, read once per run.
local tenants = {}
local function tenant(t)
  local c = tenants[t]
  if c then return c end
  c = {rpm = tenant_rpm_default, cap = tenant_cap_default, reserved_for = nil}
  -- Its weight now (its record may have changed it): the ready queue's counted weight follows.
  c.weight = math.max(CTX.weights[t] or 1, 1e-6)
  if t ~= K.NO_TENANT then
    -- Its caps, weight, budgets and pools: one read of its record.
    local h = redis.call('HMGET', K.TENANT_PREFIX .. t, 'rate_rpm', 'max_concurrency', 'weight',
                         'budget_daily_hard', 'budget_monthly_hard', 'budget_on_exceed',
                         'budget_daily_soft', 'budget_monthly_soft', 'pools')
    c.rpm = tonumber(h[1] or '') or c.rpm
    c.cap = tonumber(h[2] or '') or c.cap
    if c.cap > 0 then c.active = redis.call('ZCARD', K.TENANT_PREFIX .. t .. ':active') end
    c.weight = math.max(tonumber(h[3] or '') or CTX.weights[t] or 1, 1e-6)
    c.hard = {h[4], h[5], h[6]}
    c.soft = {h[7], h[8]}
    local names = h[9]
    if pool_n > 0 and names and names ~= '' then
      c.pools = {}
      for name in string.gmatch(names, '[^,]+') do c.pools[name] = true end
    end
  end
  local counted = tonumber(redis.call('HGET', base .. ':weight', t) or '')
  if counted and counted ~= c.weight then
    redis.call('HSET', base .. ':weight', t, c.weight)
    redis.call('HINCRBYFLOAT', state_key, 'weight_sum', c.weight - counted)
  end
  tenants[t] = c
  return c
end

local vtime = vtime_of(base)
local released, blocked, passes = 0, false, 0
while released < most and passes < most + 500 do
  passes = passes + 1
  if limited and tokens < 1 then break end
  if pool_n > 0 and not choose_pool(nil, nil) then break end
  if room() < 1 then blocked = true; break end
  local head = redis.call('ZRANGE', tenants_key, '0', '0', 'WITHSCORES')
  if #head == 0 then break end
  local t, tag = head[1], tonumber(head[2])
  local c = tenant(t)
  local t_tokens, t_bucket, t_updated = tenant_tokens(t, c.rpm)
  if c.cap > 0 and t ~= K.NO_TENANT and c.active >= c.cap then
    pause(model, t, 'concurrency', math.huge)
  elseif t_tokens < 1 then
    pause(model, t, 'rate', NOW + (1 - t_tokens) * 60000 / c.rpm)
  elseif pool_n > 0 and c.pools and not choose_pool(c.pools, nil) then
    pause(model, t, 'rate', pools_due(c.pools))
  else
    local interactive, batch = wait_key(model, t, 'interactive'), wait_key(model, t, 'batch')
    local has_batch = redis.call('EXISTS', batch) == 1
    local streak = tonumber(redis.call('HGET', state_key, 'streak|' .. t) or '') or 0
    local class_key = interactive
    if has_batch and (streak >= batch_every or redis.call('EXISTS', interactive) == 0) then
      class_key = batch
    end
    local popped = redis.call('ZPOPMIN', class_key)
    local id = popped[1]
    local job = id and load_job(id)
    if not job or job.place ~= 'waiting' then
      -- Not the dispatcher's (a stray id, or a count out of step): keep the counts right.
      if id then
        queue_remove({id = id, model = model, tenant = t,
                      class = class_key == batch and 'batch' or 'interactive'}, true)
      else
        queue_empty(base, model, t)
      end
      redis.call('HINCRBY', K.STATS, 'stray|' .. model, '1')
    else
      local opts = {popped = true}
      local expires = tonumber(job.f.expires_ms or '')
      local found = nil
      if job.f.cache_entry and not job.f.copy_from_key then found = cache_lookup(job) end
      local copies = job.f.copy_from_key ~= nil or (found and found[1] == 'hit' and job.f.cache_copy == '1')
      if not job.f.price_micro then set_fields(job, {'price_micro', model_price}) end
      local price = 0
      local reserves = not copies and number(job, 'reserved_micro') <= 0
                       and (number(job, 'billed_micro') <= 0 or job.f.recall == '1')
      if reserves then price = number(job, 'price_micro') end
      if expires and not job.f.started_ms and NOW_MS >= expires then
        transition(job, 'expire', {popped = true, status = 'expired'})
      elseif found and found[1] == 'hit' and not copies then
        transition(job, 'serve', {popped = true, status = 'succeeded', cached = found[2],
                                  source = found[3]})
      elseif found and found[1] == 'follow' then
        transition(job, 'follow', {popped = true, leader = found[2]})
      else
        -- The pool it goes to; a job that reserves pays that pool's price.
        local pool = nil
        if pool_n > 0 and not copies then
          pool = choose_pool(c.pools, job.f.avoid_pool)
          if reserves and pool.price ~= price then
            price = pool.price
            set_fields(job, {'price_micro', price})
          end
        end
        local blocked_until = nil
        if price > 0 then
          c.budget = c.budget or budget_room(t, c.hard)
          blocked_until = budget_blocked_until(c.budget, price)
        end
        if blocked_until and c.budget.on_exceed == 'fail' then
          transition(job, 'budget_exceeded', {popped = true, status = 'budget_exceeded'})
        elseif blocked_until then
          -- Back in its place; the queue waits for its budget.
          redis.call('ZADD', class_key, popped[2], id)
          pause(model, t, 'budget', blocked_until)
        else
          if found and found[1] == 'hit' then
            EFFECTS.prepare_copy(job, {cached = found[2], source = found[3]})
          elseif found then
            redis.call('SET', job.f.cache_entry .. ':leader', id, 'EX', ctx.retention)
          end
          if price > 0 then
            c.budget.left[1] = c.budget.left[1] - price
            c.budget.left[2] = c.budget.left[2] - price
            c.reserved_for = job
          end
          -- The queue's next tag, before the transition may find it empty (its finish tag).
          vtime = math.max(vtime, tag)
          redis.call('ZADD', tenants_key, tag + 1 / c.weight, t)
          if class_key == interactive and has_batch then streak = streak + 1 else streak = 0 end
          redis.call('HSET', state_key, 'streak|' .. t, streak, 'vtime', vtime)
          transition(job, 'release', {popped = true, reserve = price, templates = templates,
                                      nonce = tostring(NOW_MS) .. '.' .. released})
          released, released_n = released + 1, released_n + 1
          if c.active then c.active = c.active + 1 end
          if model_cap > 0 then active_n = active_n + 1 end
          if t_bucket then
            redis.call('HSET', t_bucket, 'tokens', tostring(t_tokens - 1), 'updated_ms', bucket_ms(t_updated))
            redis.call('PEXPIRE', t_bucket, ttl)
          end
          redis.call('HINCRBY', K.STATS, 'released|' .. model, '1')
          if not copies then
            redis.call('ZADD', KEYS[2], NOW, t .. '|' .. id)
            tokens = tokens - 1
            if pool_n > 0 then
              local p = pool
              p.tokens, p.used = p.tokens - 1, p.used + 1
              redis.call('ZADD', p.calls, NOW, t .. '|' .. id)
              redis.call('HSET', job.key, 'pool', p.name)
              if p.circuit then
                -- Its one probe: no other call until it answers or its lease runs out.
                p.circuit, p.until_ms = 'probing', NOW + probe_ms
                redis.call('HSET', p.key, 'circuit', 'probing', 'circuit_until_ms', p.until_ms)
              end
            end
          end
        end
      end
    end
  end
end

if room() < 1 then blocked = true end

-- Soft budgets: the first reservation past one in a period warns the tenant.
for t, c in pairs(tenants) do
  if c.reserved_for and t ~= K.NO_TENANT then
    local today, this_month = ledger_periods()
    local PERIOD_KINDS = {{today, 'daily'}, {this_month, 'monthly'}}
    local soft = c.soft
    for i, period in ipairs(PERIOD_KINDS) do
      local limit = tonumber(soft[i] or '')
      if limit then
        local ledger = spend_key(t, period[1])
        local s = redis.call('HMGET', ledger, 'spent', 'reserved')
        if (tonumber(s[1] or '') or 0) + (tonumber(s[2] or '') or 0) >= limit
           and redis.call('HSETNX', ledger, 'warned', NOW_MS) == 1 then
          redis.call('HINCRBY', K.STATS, 'budget_warnings|' .. period[2], '1')
          add_budget_warning(c.reserved_for, period[1], period[2], ctx)
        end
      end
    end
  end
end

redis.call('ZREMRANGEBYSCORE', base .. ':finish', '-inf', vtime)
if released > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', NOW - 60000)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if limited then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_ms', bucket_ms(bucket.updated),
             'rate_rpm', tostring(rate), 'configured_rpm', tostring(configured))
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if pool_n > 0 then
  -- Each pool's bucket; the model's holds their sum (the pools whose circuit is closed).
  local sum_tokens, sum_rate = 0, 0
  for _, p in ipairs(pools) do
    redis.call('HSET', p.key, 'tokens', tostring(p.tokens), 'updated_ms', bucket_ms(p.bucket.updated),
               'rate_rpm', tostring(p.rate), 'configured_rpm', tostring(p.rpm))
    redis.call('PEXPIRE', p.key, ttl)
    if released > 0 then
      redis.call('ZREMRANGEBYSCORE', p.calls, '-inf', NOW - 60000)
      redis.call('PEXPIRE', p.calls, ttl)
    end
    if not pool_shut(p) then
      sum_tokens, sum_rate = sum_tokens + math.max(0, p.tokens), sum_rate + p.rate
    end
  end
  redis.call('HSET', KEYS[1], 'tokens', tostring(sum_tokens), 'updated_ms', bucket_ms(NOW),
             'rate_rpm', tostring(math.max(sum_rate, configured * 0.001)),
             'configured_rpm', tostring(configured))
  redis.call('PEXPIRE', KEYS[1], ttl)
end

local ready = redis.call('ZCARD', tenants_key)
local next_ms = -1
if ready > 0 then
  if blocked then
    next_ms = -2
  elseif limited and tokens < 1 then
    next_ms = (1 - tokens) * 60000 / rate
  elseif pool_n > 0 and not choose_pool(nil, nil) then
    next_ms = math.max(1, pools_due(nil) - NOW)
  else
    next_ms = 0
  end
end
-- (A release possible now is not put off by a queue or a retry due later.)
if next_ms > 0 or next_ms == -1 then
  for _, key in ipairs({paused_key, delayed_key}) do
    local first = redis.call('ZRANGE', key, '0', '0', 'WITHSCORES')
    if #first > 0 and first[2] ~= 'inf' then
      local due_in = math.max(0, tonumber(first[2]) - NOW)
      if next_ms == -1 then next_ms = due_in else next_ms = math.min(next_ms, due_in) end
    end
  end
end
if ready == 0 and redis.call('EXISTS', paused_key) == 0 and redis.call('EXISTS', delayed_key) == 0
   and redis.call('EXISTS', released_key) == 0 then
  redis.call('SREM', K.DISPATCH_MODELS, model)
end
return {released, tostring(next_ms), ready}
