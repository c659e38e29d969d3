-- Spend: each tenant's ledgers per UTC day (d:YYYY-MM-DD) and month (m:YYYY-MM), in
-- micro-dollars: spent, reserved, spent|{model}, images|{model}, hits|{model}, saved|{model},
-- warned. Periods are the Redis clock's (ledger_periods).
local function spend_key(tenant, period) return K.SPEND_PREFIX .. tenant .. ':' .. period end

-- When the period a ledger counts ends (ms): d:YYYY-MM-DD at the next midnight (UTC), m:YYYY-MM
-- at the first of the next month (periods_at, from the period's first day).
local function period_end_ms(period)
  local kind, y, m, d = string.match(period, '^([dm]):(%d+)-(%d+)-?(%d*)$')
  if not kind then return NOW_MS end
  local first_day = days_from_civil(tonumber(y), tonumber(m), tonumber(d) or 1)
  local _, _, day_ends, month_ends = periods_at(first_day * DAY_MS)
  if kind == 'd' then return day_ends end
  return month_ends
end

-- A ledger (or a list of its days) is kept `ttl` seconds (spend_retention_days) after its
-- period ends: set by the write that creates it, so it needs no other.
local function keep_ledger(key, period, ttl)
  redis.call('PEXPIRE', key, math.max(1000, period_end_ms(period) - NOW_MS + ttl * 1000))
end

-- A ledger gets its TTL from the write that creates it, and keeps it: the write that adds a
-- field to a ledger (an increment answering the amount it added; a read that found none of
-- the fields it adds) sets it, and a ledger with any field was created by such a write.
local function counted_in(tenant, period, field, amount, ttl)
  local ledger = spend_key(tenant, period)
  if redis.call('HINCRBY', ledger, field, amount) == amount then keep_ledger(ledger, period, ttl) end
end

-- Adds `deltas` (field: integer amount) to a ledger: one read and one write.
local function add_to_ledger(tenant, period, deltas, ttl)
  local ledger = spend_key(tenant, period)
  local names = {}
  for name in pairs(deltas) do names[#names + 1] = name end
  local old = redis.call('HMGET', ledger, unpack(names))
  local values, created = {}, true
  for i, name in ipairs(names) do
    if old[i] then created = false end
    values[#values + 1] = name
    values[#values + 1] = string.format('%d', (tonumber(old[i] or '') or 0) + deltas[name])
  end
  redis.call('HSET', ledger, unpack(values))
  if created then keep_ledger(ledger, period, ttl) end
end

-- The tenant had spend (or hits) now: listed for reports until its ledgers expire (the list
-- of its days is kept as long as the newest day it lists).
local function note_spender(tenant, day, ttl)
  local days = K.SPEND_PREFIX .. tenant .. ':days'
  if redis.call('SADD', days, day) == 1 then keep_ledger(days, day, ttl) end
  redis.call('ZADD', K.SPEND_TENANTS, NOW_DIGITS, tenant)
end

-- The job holds no reservation now (its ledgers were given it back): a queue of its tenant
-- paused for its budget may then be served.
local function reservation_given_back(job)
  set_fields(job, {'reserved_micro', 0})
  resume_paused(job.tenant, 'budget')
end

-- Gives back what a job holds of its tenant's budgets (it ended, or its image was bought).
-- Returns the amount, and the day and month it was held in.
local function unreserve(job)
  local amount = number(job, 'reserved_micro')
  if amount <= 0 then return 0, nil, nil end
  local day, month = job.f.reserved_day, job.f.reserved_month
  counted_in(job.tenant, day, 'reserved', -amount, CTX.ledger_ttl)
  counted_in(job.tenant, month, 'reserved', -amount, CTX.ledger_ttl)
  reservation_given_back(job)
  return amount, day, month
end

-- Books one image Bedrock billed for the job: its reservation becomes spend in the periods it
-- was held in (without one, its price today and this month), the job's cost, the fleet's
-- image count; the call is no longer in flight. Returns the amount booked (micro-dollars).
local function book_image(job, ledger_ttl)
  local price, day, month = number(job, 'reserved_micro'), job.f.reserved_day, job.f.reserved_month
  local held = price > 0
  if not held then
    day, month = ledger_periods()
    price = number(job, 'price_micro')
  end
  for _, period in ipairs({day, month}) do
    local deltas = {spent = price, ['spent|' .. job.model] = price, ['images|' .. job.model] = 1}
    if held then deltas.reserved = -price end
    add_to_ledger(job.tenant, period, deltas, ledger_ttl)
  end
  if held then reservation_given_back(job) end
  note_spender(job.tenant, day, ledger_ttl)
  set_fields(job, {'billed_micro', number(job, 'billed_micro') + price, 'calling', ''})
  redis.call('HINCRBY', K.STATS, 'images|' .. job.model, '1')
  return price
end

-- A cache hit in the tenant's ledgers of today and this month: one more hit, and the price it
-- saved.
local function book_hit(job, ledger_ttl)
  local today, this_month = ledger_periods()
  for _, period in ipairs({today, this_month}) do
    local ledger = spend_key(job.tenant, period)
    redis.call('HINCRBY', ledger, 'hits|' .. job.model, '1')
    redis.call('HINCRBY', ledger, 'saved|' .. job.model, number(job, 'price_micro'))
    keep_ledger(ledger, period, ledger_ttl)
  end
  note_spender(job.tenant, today, ledger_ttl)
  redis.call('HINCRBY', K.STATS, 'cache_hits|' .. job.model, '1')
end

-- What a tenant's hard budgets leave for new reservations now: {left = {day, month}
-- (micro-dollars, math.huge without a budget), ends = {day end, month end} (ms), on_exceed =
-- 'wait' | 'fail'}. Kept per release run and drawn down locally. `h`: the tenant record's
-- budget_daily_hard, budget_monthly_hard and budget_on_exceed, when the caller read them.
local function budget_room(tenant, h)
  local today, this_month, day_ends, month_ends = ledger_periods()
  local room = {left = {math.huge, math.huge}, ends = {day_ends, month_ends},
                on_exceed = 'wait'}
  if tenant == K.NO_TENANT then return room end
  h = h or redis.call('HMGET', K.TENANT_PREFIX .. tenant, 'budget_daily_hard',
                      'budget_monthly_hard', 'budget_on_exceed')
  for i, period in ipairs({today, this_month}) do
    local limit = tonumber(h[i] or '')
    if limit then
      local s = redis.call('HMGET', spend_key(tenant, period), 'spent', 'reserved')
      room.left[i] = limit - (tonumber(s[1] or '') or 0) - (tonumber(s[2] or '') or 0)
    end
  end
  if h[3] == 'fail' then room.on_exceed = 'fail' end
  return room
end

-- nil when `price` fits both budgets; else when it may fit again (the latest end among the
-- periods without room).
local function budget_blocked_until(room, price)
  local until_ms = nil
  for i = 1, 2 do
    if room.left[i] < price then until_ms = math.max(until_ms or 0, room.ends[i]) end
  end
  return until_ms
end
