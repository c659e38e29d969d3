-- Webhook deliveries: a record, its outbox entry (due after the grace unless a delivery task
-- takes it first) and its Celery message. A delivery's id is {job_id}:{event} (:{n} after the
-- n-th replay) and its webhook-id msg_{job_id}_{event}[_{n}]: both stay the same on every retry.

local function write_delivery(job, id, event, url, webhook_id, ctx)
  local delivery_key = K.WEBHOOK_PREFIX .. id
  if redis.call('EXISTS', delivery_key) == 1 then return '' end
  redis.call('HSET', delivery_key, 'delivery_id', id, 'job_id', job.id, 'event', event,
             'url', url, 'webhook_id', webhook_id, 'state', 'pending', 'attempts', 0,
             'created_ms', NOW_MS, 'next_ms', NOW_MS, 'lease_until_ms', 0)
  redis.call('EXPIRE', delivery_key, ctx.retention)
  redis.call('ZADD', K.WEBHOOKS_DUE, NOW_MS + ctx.grace, id)
  local listed = redis.call('HGET', job.key, 'webhook_deliveries') or ''
  if listed == '' then listed = id else listed = listed .. ',' .. id end
  redis.call('HSET', job.key, 'webhook_deliveries', listed)
  if ctx.inline_job == job.id then
    table.insert(ctx.inline_ids, id)  -- its caller sends it now
  else
    redis.call('LPUSH', K.WEBHOOK_QUEUE, fill(ctx.delivery_template, {[K.DELIVERY_ID] = id}))
  end
  return id
end

-- The job's delivery of `event`, when its webhook takes that event; returns its id or ''.
local function add_delivery(job, event, ctx)
  local h = redis.call('HMGET', job.key, 'webhook_url', 'webhook_events', 'replays')
  local url, events, replays = h[1], h[2] or '', h[3]
  if not url or url == '' then return '' end
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
  if not url or url == '' then url = redis.call('HGET', job.key, 'webhook_url') end
  if not url or url == '' then return '' end
  local id = job.id .. ':tenant.budget_warning:' .. kind
  local webhook_id = 'msg_budget_' .. job.tenant .. '_' .. string.gsub(period, '[^%w-]', '_')
  return write_delivery(job, id, 'tenant.budget_warning', url, webhook_id, ctx)
end
