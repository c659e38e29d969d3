-- Shared by every script; sent after the generated constants K (key and queue names) and
-- TERMINAL (the final statuses), before the script itself.

-- The Redis server's clock in whole milliseconds: every process agrees on it.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The same clock with sub-millisecond precision, unless a test passes its own (the token bucket).
local function clock(override)
  if override ~= nil and override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local function job_key(job_id) return K.JOB_PREFIX .. job_id end

-- The job is running under this lease owner.
local function held_by(key, owner)
  return redis.call('HGET', key, 'status') == 'running'
     and redis.call('HGET', key, 'lease_owner') == owner
end

-- One status message, on the fleet's channel and on the job's own.
local function announce(job_id, status)
  local message = '{"job_id":"' .. job_id .. '","status":"' .. status .. '"}'
  redis.call('PUBLISH', K.EVENTS, message)
  redis.call('PUBLISH', K.JOB_PREFIX .. job_id .. ':events', message)
end

-- When the job has a webhook for `event`: the delivery record, its outbox entry (due after
-- grace_ms unless a delivery task takes it first) and its delivery message, made from
-- `template`. A delivery's id is {job_id}:{event} (:{n} after the n-th replay) and its
-- webhook-id msg_{job_id}_{event}[_{n}]: both stay the same on every retry. Returns the
-- delivery id, or ''.
local function add_delivery(key, job_id, event, now, grace_ms, retention, template)
  local url = redis.call('HGET', key, 'webhook_url')
  if not url or url == '' then return '' end
  local events = redis.call('HGET', key, 'webhook_events') or ''
  if not string.find(',' .. events .. ',', ',' .. event .. ',', 1, true) then return '' end
  local suffix = (string.gsub(event, '^job%.', ''))
  local id = job_id .. ':' .. event
  local webhook_id = 'msg_' .. job_id .. '_' .. suffix
  local replays = redis.call('HGET', key, 'replays')
  if replays and replays ~= '' and replays ~= '0' then
    id = id .. ':' .. replays
    webhook_id = webhook_id .. '_' .. replays
  end
  local delivery_key = K.WEBHOOK_PREFIX .. id
  if redis.call('EXISTS', delivery_key) == 1 then return '' end
  redis.call('HSET', delivery_key, 'delivery_id', id, 'job_id', job_id, 'event', event,
             'url', url, 'webhook_id', webhook_id, 'state', 'pending', 'attempts', 0,
             'created_ms', now, 'next_ms', now, 'lease_until_ms', 0)
  redis.call('EXPIRE', delivery_key, retention)
  redis.call('ZADD', K.WEBHOOKS_DUE, now + grace_ms, id)
  local listed = redis.call('HGET', key, 'webhook_deliveries') or ''
  if listed == '' then listed = id else listed = listed .. ',' .. id end
  redis.call('HSET', key, 'webhook_deliveries', listed)
  local message = string.gsub(template, K.DELIVERY_ID, id)
  redis.call('LPUSH', K.WEBHOOK_QUEUE, message)
  return id
end

-- The dispatcher's keys of one model, and one tenant's waiting set of one priority class.
local function dispatch_base(model) return K.DISPATCH_PREFIX .. model end
local function wait_key(model, tenant, class)
  return K.DISPATCH_PREFIX .. model .. ':wait:' .. tenant .. ':' .. class
end
local function tenant_of(value)
  if value and value ~= '' then return value end
  return K.NO_TENANT
end

-- Where a job stands in its waiting set: earliest deadline first, then first submitted (a job
-- without a deadline sorts after every deadline).
local function order_score(expires_ms, created_ms)
  local expires = tonumber(expires_ms or '')
  if expires then return expires end
  return 1e13 + (tonumber(created_ms or '') or 0)
end

-- Puts a job (not final) in its waiting set, or when `due_ms` is later than now, in the
-- model's delayed set until then; a tenant that had nothing waiting gets its start tag: the
-- later of the virtual time and where its last job finished (no credit for idle time).
local function wait_in(key, job_id, now, due_ms)
  local h = redis.call('HMGET', key, 'model_id', 'tenant', 'priority', 'expires_ms',
                       'created_ms')
  local model, tenant = h[1], tenant_of(h[2])
  local base = dispatch_base(model)
  redis.call('ZREM', base .. ':released', job_id)
  redis.call('ZREM', base .. ':active', job_id)
  if tenant ~= K.NO_TENANT then redis.call('ZREM', K.TENANT_PREFIX .. tenant .. ':active', job_id) end
  redis.call('SADD', K.DISPATCH_MODELS, model)
  if due_ms and due_ms > now then
    redis.call('ZADD', base .. ':delayed', due_ms, job_id)
    redis.call('HSET', key, 'dispatch', 'delayed', 'released_ms', '')
    return
  end
  redis.call('ZREM', base .. ':delayed', job_id)
  redis.call('ZADD', wait_key(model, tenant, h[3] or 'interactive'), order_score(h[4], h[5]),
             job_id)
  redis.call('HSET', key, 'dispatch', 'waiting', 'released_ms', '')
  if not redis.call('ZSCORE', base .. ':tenants', tenant) then
    local state = base .. ':state'
    local v = tonumber(redis.call('HGET', state, 'vtime') or '') or 0
    local f = tonumber(redis.call('HGET', state, 'finish|' .. tenant) or '') or 0
    redis.call('ZADD', base .. ':tenants', math.max(v, f), tenant)
  end
end

-- The job leaves the dispatcher wherever it is in it (waiting, delayed, released, active). A
-- tenant whose sets are empty leaves the tenants set at the next release.
local function undispatch(key, job_id)
  local h = redis.call('HMGET', key, 'model_id', 'tenant', 'priority', 'dispatch')
  if not h[4] or h[4] == '' then return end
  if h[4] == 'following' then
    local entry = redis.call('HGET', key, 'cache_entry') or ''
    redis.call('LREM', entry .. ':followers', 0, job_id)
  elseif h[4] == 'after' then
    local parent = redis.call('HGET', key, 'after_job') or ''
    redis.call('LREM', K.JOB_PREFIX .. parent .. ':next', 0, job_id)
  end
  local model, tenant = h[1], tenant_of(h[2])
  local base = dispatch_base(model)
  redis.call('ZREM', wait_key(model, tenant, h[3] or 'interactive'), job_id)
  redis.call('ZREM', base .. ':delayed', job_id)
  redis.call('ZREM', base .. ':released', job_id)
  redis.call('ZREM', base .. ':active', job_id)
  if tenant ~= K.NO_TENANT then redis.call('ZREM', K.TENANT_PREFIX .. tenant .. ':active', job_id) end
  redis.call('HSET', key, 'dispatch', '')
end

-- A tenant's spend ledger of one period (d:YYYY-MM-DD or m:YYYY-MM), in micro-dollars.
local function spend_key(tenant, period) return K.SPEND_PREFIX .. tenant .. ':' .. period end

-- Gives back what a job still holds of its tenant's budgets (it ends, or its image is bought).
-- Returns the amount, the day and the month it was held in.
local function unreserve(key)
  local h = redis.call('HMGET', key, 'reserved_micro', 'reserved_day', 'reserved_month', 'tenant')
  local amount = tonumber(h[1] or '') or 0
  if amount <= 0 then return 0, nil, nil end
  local tenant = tenant_of(h[4])
  redis.call('HINCRBY', spend_key(tenant, h[2]), 'reserved', -amount)
  redis.call('HINCRBY', spend_key(tenant, h[3]), 'reserved', -amount)
  redis.call('HSET', key, 'reserved_micro', 0)
  return amount, h[2], h[3]
end

-- The job is final: out of the open sets (the caps), the deadlines and the dispatcher, and its
-- budget reservation given back.
local function close(key, job_id)
  redis.call('ZREM', K.OPEN, job_id)
  redis.call('ZREM', K.DEADLINES, job_id)
  local tenant = redis.call('HGET', key, 'tenant')
  if tenant and tenant ~= '' then
    redis.call('ZREM', K.TENANT_PREFIX .. tenant .. ':open', job_id)
  end
  undispatch(key, job_id)
  unreserve(key)
end

-- The job is open again (a replay): back in the open sets it was counted in at submit.
local function reopen(key, job_id, now)
  redis.call('ZADD', K.OPEN, now, job_id)
  local tenant = redis.call('HGET', key, 'tenant')
  if tenant and tenant ~= '' then
    redis.call('ZADD', K.TENANT_PREFIX .. tenant .. ':open', now, job_id)
  end
end

-- Books one image Bedrock billed for a job: its tenant's spend for the day and the month (the
-- reservation made at release becomes spend, in the periods it was reserved in; without one,
-- `price` in `day` and `month`), the job's cost, and the fleet's image count. The job's call is
-- no longer in flight. Returns the amount booked (micro-dollars).
local function book_image(key, model, price, day, month, ttl)
  local h = redis.call('HMGET', key, 'tenant', 'billed_micro')
  local tenant = tenant_of(h[1])
  local held, held_day, held_month = unreserve(key)
  if held > 0 then price, day, month = held, held_day, held_month end
  for _, period in ipairs({day, month}) do
    local ledger = spend_key(tenant, period)
    redis.call('HINCRBY', ledger, 'spent', price)
    redis.call('HINCRBY', ledger, 'spent|' .. model, price)
    redis.call('HINCRBY', ledger, 'images|' .. model, 1)
    redis.call('EXPIRE', ledger, ttl)
  end
  redis.call('SADD', K.SPEND_PREFIX .. tenant .. ':days', day)
  redis.call('SADD', K.SPEND_TENANTS, tenant)
  redis.call('HSET', key, 'billed_micro', (tonumber(h[2] or '') or 0) + price, 'calling', '')
  redis.call('HINCRBY', K.STATS, 'images|' .. model, 1)
  return price
end

-- The content-addressed cache (jobs with a fixed seed): an entry per (scope, request hash)
-- holds where the image is (K.CACHE_PREFIX .. scope .. ':' .. hash); while the first such job
-- runs (`:leader`), identical ones wait behind it (`:followers`) instead of calling Bedrock.
local CACHE_FIELDS = {'seed', 's3_bucket', 's3_key', 's3_uri', 'content_type', 'width',
                      'height', 'bytes', 'sha256'}

-- A cache hit in the tenant's spend ledgers (the day and month the job was submitted in).
local function book_hit(key)
  local h = redis.call('HMGET', key, 'tenant', 'model_id', 'price_micro', 'cache_day',
                       'cache_month', 'ledger_ttl')
  local tenant, model = tenant_of(h[1]), h[2] or '?'
  local ttl = tonumber(h[6] or '') or 86400
  for _, period in ipairs({h[4], h[5]}) do
    if period and period ~= '' then
      local ledger = spend_key(tenant, period)
      redis.call('HINCRBY', ledger, 'hits|' .. model, 1)
      redis.call('HINCRBY', ledger, 'saved|' .. model, tonumber(h[3] or '') or 0)
      redis.call('EXPIRE', ledger, ttl)
    end
  end
  if h[4] and h[4] ~= '' then redis.call('SADD', K.SPEND_PREFIX .. tenant .. ':days', h[4]) end
  redis.call('SADD', K.SPEND_TENANTS, tenant)
  redis.call('HINCRBY', K.STATS, 'cache_hits|' .. model, 1)
end

local finalize
local settle_next

-- A job that copies a cached image under its own key (the cache_copy setting): it waits its
-- turn like any job, but its release takes no token and no reservation, and a worker copies
-- the object instead of calling Bedrock.
local function prepare_copy(key, values, source)
  redis.call('HSET', key, 'copy_from_bucket', values[2] or '', 'copy_from_key', values[3] or '',
             'cached', '1', 'cache_source', source, 'cache_leader', '')
end

-- Ends a job with an image another job bought: succeeded, cached, no call, no token.
local function serve_cached(key, job_id, values, source, now, retention, grace_ms, template)
  for i, name in ipairs(CACHE_FIELDS) do
    if values[i] and values[i] ~= '' then redis.call('HSET', key, name, values[i]) end
  end
  redis.call('HSET', key, 'cached', '1', 'cache_source', source, 'cache_leader', '')
  book_hit(key)
  redis.call('HSETNX', key, 'started_ms', now)
  return finalize(key, job_id, 'succeeded', now, retention, grace_ms, template)
end

-- The leader of a cache entry ended: a success fills the entry and serves its followers; any
-- other end hands the lead to the first follower still open, which then waits its turn.
local function settle_cache(key, job_id, status, entry, now, retention, grace_ms, template)
  redis.call('DEL', entry .. ':leader')
  local followers = redis.call('LRANGE', entry .. ':followers', 0, -1)
  local values = redis.call('HMGET', key, unpack(CACHE_FIELDS))
  if status == 'succeeded' and values[3] and values[3] ~= '' then
    local fields = {}
    for i, name in ipairs(CACHE_FIELDS) do
      table.insert(fields, name)
      table.insert(fields, values[i] or '')
    end
    redis.call('HSET', entry, 'job_id', job_id, unpack(fields))
    redis.call('EXPIRE', entry, tonumber(redis.call('HGET', key, 'cache_ttl') or '') or retention)
    redis.call('DEL', entry .. ':followers')
    for _, follower in ipairs(followers) do
      local follower_key = job_key(follower)
      if redis.call('HGET', follower_key, 'dispatch') == 'following' then
        redis.call('HSET', follower_key, 'dispatch', '')
        if redis.call('HGET', follower_key, 'cache_copy') == '1' then
          prepare_copy(follower_key, values, job_id)
          wait_in(follower_key, follower, now, nil)
        else
          serve_cached(follower_key, follower, values, job_id, now, retention, grace_ms, template)
        end
      end
    end
    return
  end
  for _, follower in ipairs(followers) do
    local follower_key = job_key(follower)
    redis.call('LREM', entry .. ':followers', 0, follower)
    if redis.call('HGET', follower_key, 'dispatch') == 'following' then
      redis.call('SET', entry .. ':leader', follower, 'EX', retention)
      redis.call('HSET', follower_key, 'cache_leader', '')
      wait_in(follower_key, follower, now, nil)
      return
    end
  end
end

-- A job whose input job (`source`) ended `how` without an image: canceled, never called.
local function skip_step(key, job_id, source, how, now, retention, grace_ms, template)
  redis.call('HSET', key, 'error_code', 'ChainStepSkipped', 'error_message',
             'job ' .. source .. ', whose output this job takes, ended ' .. how ..
             '; this job never ran')
  return finalize(key, job_id, 'canceled', now, retention, grace_ms, template)
end

-- Jobs that take this job's output (`:next`, chain steps) go on: to their waiting sets when it
-- succeeded; otherwise each ends canceled, never called, and so do the steps after it.
settle_next = function(key, job_id, status, now, retention, grace_ms, template)
  local next_key = key .. ':next'
  local waiting = redis.call('LRANGE', next_key, 0, -1)
  redis.call('DEL', next_key)
  for _, child in ipairs(waiting) do
    local child_key = job_key(child)
    if redis.call('HGET', child_key, 'dispatch') == 'after' then
      redis.call('HSET', child_key, 'dispatch', '')
      if status == 'succeeded' then
        wait_in(child_key, child, now, nil)
      else
        skip_step(child_key, child, job_id, status, now, retention, grace_ms, template)
      end
    end
  end
end

-- A job that takes the output of a job not final yet waits for it (on its `:next` list) instead
-- of in its waiting set. Returns 'after' when it waits, 'ended' when that job already ended
-- without an image (or is gone), '' when it can wait its turn now.
local function hold_after(key, job_id, retention)
  local parent = redis.call('HGET', key, 'after_job')
  if not parent or parent == '' then return '' end
  local status = redis.call('HGET', job_key(parent), 'status')
  if status == 'succeeded' then return '' end
  if status and not TERMINAL[status] then
    local next_key = job_key(parent) .. ':next'
    redis.call('RPUSH', next_key, job_id)
    redis.call('EXPIRE', next_key, retention)
    redis.call('HSET', key, 'dispatch', 'after')
    return 'after'
  end
  return 'ended'
end

-- The final status: fields, expiry, the dead-letter set for `failed`, the counters, the event
-- and the webhook; a cache entry's leader settles its followers. Returns the new delivery id
-- or ''.
finalize = function(key, job_id, status, now, retention, grace_ms, template)
  close(key, job_id)
  redis.call('ZREM', K.RUNNING, job_id)
  redis.call('HSET', key, 'status', status, 'finished_ms', now, 'lease_owner', '',
             'lease_until_ms', 0, 'next_attempt_ms', '', 'calling', '')
  redis.call('EXPIRE', key, retention)
  if status == 'failed' then redis.call('ZADD', K.DLQ, now, job_id) end
  local model = redis.call('HGET', key, 'model_id') or '?'
  redis.call('HINCRBY', K.STATS, 'jobs|' .. model .. '|' .. status, 1)
  announce(job_id, status)
  local delivery = add_delivery(key, job_id, 'job.' .. status, now, grace_ms, retention, template)
  local entry = redis.call('HGET', key, 'cache_entry')
  if entry and entry ~= '' and redis.call('GET', entry .. ':leader') == job_id then
    settle_cache(key, job_id, status, entry, now, retention, grace_ms, template)
  end
  if redis.call('HGET', key, 'chain_last') == '1' then
    local outcome = 'failed'
    if status == 'succeeded' then outcome = 'succeeded' end
    add_delivery(key, job_id, 'chain.' .. outcome, now, grace_ms, retention, template)
  end
  settle_next(key, job_id, status, now, retention, grace_ms, template)
  return delivery
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
