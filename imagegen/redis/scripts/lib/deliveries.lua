-- Webhook deliveries: a record, its outbox entry (due after the grace unless a delivery task
-- takes it first) and its Celery message. A delivery's id is {job_id}:{event} (:{n} after the
-- n-th replay) and its webhook-id msg_{job_id}_{event}[_{n}]: both stay the same on every retry.
-- A job's final transition may instead hand its first deliveries to its caller, claimed for
-- their first attempt (as delivery_claim.lua would: state sending, a lease, the outbox entry due
-- when the lease ends), with no message: `ctx.inline_job`, at most `ctx.inline_most` of them;
-- and the first of them the slot `ctx.inline_slot` of its endpoint's deliveries in flight.

-- Takes one of an endpoint's `cap` slots of deliveries in flight for `lease_ms` (expired
-- leases, a dead worker's, are dropped first); false when all are held.
local function take_endpoint_slot(key, cap, lease_ms, slot)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', NOW_DIGITS)
  if redis.call('ZCARD', key) >= cap then return false end
  redis.call('ZADD', key, NOW_MS + lease_ms, slot)
  redis.call('PEXPIRE', key, math.max(lease_ms * 2, 60000))
  return true
end

local function write_delivery(job, id, event, url, webhook_id, ctx)
  local delivery_key = K.WEBHOOK_PREFIX .. id
  if redis.call('EXISTS', delivery_key) == 1 then return '' end
  local claimed = ctx.inline_job == job.id and #ctx.inline_ids < ctx.inline_most
  if claimed and redis.call('ZSCORE', K.WEBHOOKS_DISABLED, url) then
    redis.call('HSET', delivery_key, 'delivery_id', id, 'job_id', job.id, 'event', event,
               'url', url, 'webhook_id', webhook_id, 'state', 'disabled', 'attempts', '0',
               'created_ms', NOW_DIGITS, 'next_ms', NOW_DIGITS, 'lease_until_ms', '0')
  elseif claimed then
    local lease_until = NOW_MS + ctx.inline_lease
    redis.call('HSET', delivery_key, 'delivery_id', id, 'job_id', job.id, 'event', event,
               'url', url, 'webhook_id', webhook_id, 'state', 'sending', 'attempts', '1',
               'created_ms', NOW_DIGITS, 'next_ms', NOW_DIGITS, 'lease_until_ms', lease_until)
    redis.call('ZADD', K.WEBHOOKS_DUE, lease_until, id)
    -- The first one to the job's webhook takes its endpoint's slot here when one is free (the
    -- caller's `inline_slot`); otherwise the caller takes one as it sends.
    local slot, s = '', ctx.inline_slot
    if s and not s.used and url == job.f.webhook_url then
      s.used = true
      if take_endpoint_slot(s.key, s.cap, ctx.inline_lease, s.id) then slot = s.id end
    end
    table.insert(ctx.inline_ids, {id, event, url, webhook_id, slot})  -- its caller sends it now
  else
    -- Scripts called without the template (imagegen.store.jobs._NO_DELIVERIES) add none.
    if ctx.delivery_template == '' then error('a delivery needs the delivery template') end
    redis.call('HSET', delivery_key, 'delivery_id', id, 'job_id', job.id, 'event', event,
               'url', url, 'webhook_id', webhook_id, 'state', 'pending', 'attempts', '0',
               'created_ms', NOW_DIGITS, 'next_ms', NOW_DIGITS, 'lease_until_ms', '0')
    redis.call('ZADD', K.WEBHOOKS_DUE, NOW_MS + ctx.grace, id)
    redis.call('LPUSH', K.WEBHOOK_QUEUE, fill(ctx.delivery_template, {[K.DELIVERY_ID] = id}))
  end
  redis.call('EXPIRE', delivery_key, ctx.retention)
  local listed = job.f.webhook_deliveries
  if listed then listed = listed .. ',' .. id else listed = id end
  set_fields(job, {'webhook_deliveries', listed})
  return id
end

-- The job's delivery of `event`, when its webhook takes that event; returns its id or ''.
local function add_delivery(job, event, ctx)
  local url, events, replays = job.f.webhook_url, job.f.webhook_events or '', job.f.replays
  if not url then return '' end
  if not string.find(',' .. events .. ',', ',' .. event .. ',', 1, true) then return '' end
  local id = job.id .. ':' .. event
  local webhook_id = 'msg_' .. job.id .. '_' .. (string.gsub(event, '^job%.', ''))
  if replays and replays ~= '' and replays ~= '0' then
    id = id .. ':' .. replays
    webhook_id = webhook_id .. '_' .. replays
  end
  return write_delivery(job, id, event, url, webhook_id, ctx)
end

-- tenant.budget_warning of one period (kind: daily | monthly), hung off the job that crossed
-- the soft budget (its record keeps the delivery's log); its webhook-id names the tenant and
-- the period. Sent to the tenant's webhook, else the job's.
local function add_budget_warning(job, period, kind, ctx)
  local url = redis.call('HGET', K.TENANT_PREFIX .. job.tenant, 'webhook_url')
  if not url or url == '' then url = job.f.webhook_url end
  if not url or url == '' then return '' end
  -- One per period: a job (replayed, or reserving again) may cross the next day's too.
  local id = job.id .. ':tenant.budget_warning:' .. kind .. ':' .. string.gsub(period, '^%a:', '')
  local webhook_id = 'msg_budget_' .. job.tenant .. '_' .. string.gsub(period, '[^%w-]', '_')
  return write_delivery(job, id, 'tenant.budget_warning', url, webhook_id, ctx)
end
