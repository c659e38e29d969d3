-- The dispatcher's tenant queues. Per model (base = K.DISPATCH_PREFIX .. model):
--   :wait:{tenant}:{class}  zset  a tenant's waiting jobs of one class, by order score
--   :since:{class}          zset  every waiting job of the class, by when it began to wait
--   :waits                  list  'tenant|ms waited|at ms' of the last jobs started (2,000)
--   :tenants                zset  ready queues, by the start tag of their next job (SFQ)
--   :paused                 zset  paused queues, by when they may be served again (inf: an
--                                 event resumes them)
--   :waiting                zset  tenant -> jobs waiting (ready or paused): the busiest first
--   :weight                 hash  ready tenant -> its weight when it became ready
--   :finish                 zset  idle tenants' last finish tags, while above the virtual time
--   :state                  hash  vtime, jobs (waiting in all), weight_sum (of ready queues),
--                                 run_ms (mean run time), paused|{reason} (queues paused),
--                                 streak|{t}, pause|{t}, ptag|{t}
--   :delayed :released :active  zsets of the places delayed, released, released or running
-- and per tenant K.TENANT_PREFIX .. tenant .. ':paused' (hash model -> reason) while paused.
local function dispatch_base(model) return K.DISPATCH_PREFIX .. model end
local function wait_key(model, tenant, class)
  return K.DISPATCH_PREFIX .. model .. ':wait:' .. tenant .. ':' .. class
end

-- Where a job stands in its waiting set: earliest deadline first, then submission order (a job
-- without a deadline sorts after every deadline; `seq` counts submissions).
local function order_score(job)
  local expires = tonumber(job.f.expires_ms or '')
  if expires then return expires end
  return 1e13 + (tonumber(job.f.seq or '') or tonumber(job.f.created_ms or '') or 0)
end

-- A tenant's weight: its record's, else the settings', else 1.
local function tenant_weight(tenant)
  local w = CTX.weights[tenant] or 1
  if tenant ~= K.NO_TENANT then
    w = tonumber(redis.call('HGET', K.TENANT_PREFIX .. tenant, 'weight') or '') or w
  end
  return math.max(w, 1e-6)
end

-- The queue starts being served: in the scan at `tag`, its weight counted.
local function make_ready(base, tenant, tag)
  local w = tenant_weight(tenant)
  redis.call('ZADD', base .. ':tenants', tag, tenant)
  redis.call('HSET', base .. ':weight', tenant, w)
  redis.call('HINCRBYFLOAT', base .. ':state', 'weight_sum', w)
end

-- The queue leaves the scan (paused or empty): its weight no longer counted. Returns its tag,
-- or nil when it was not ready.
local function unready(base, tenant)
  local tag = redis.call('ZSCORE', base .. ':tenants', tenant)
  if not tag then return nil end
  redis.call('ZREM', base .. ':tenants', tenant)
  local w = tonumber(redis.call('HGET', base .. ':weight', tenant) or '') or 0
  redis.call('HDEL', base .. ':weight', tenant)
  if tonumber(redis.call('HINCRBYFLOAT', base .. ':state', 'weight_sum', -w)) < 1e-9 then
    redis.call('HSET', base .. ':state', 'weight_sum', '0')  -- no float dust when none is ready
  end
  return tonumber(tag)
end

local function vtime_of(base)
  return tonumber(redis.call('HGET', base .. ':state', 'vtime') or '') or 0
end

-- Into its tenant's waiting set; an idle queue becomes ready with the later of the virtual
-- time and its last finish tag (no credit for idle time).
local function queue_add(job)
  local base = dispatch_base(job.model)
  redis.call('ZADD', wait_key(job.model, job.tenant, job.class), order_score(job), job.id)
  redis.call('ZADD', base .. ':since:' .. job.class, NOW_DIGITS, job.id)
  redis.call('HINCRBY', base .. ':state', 'jobs', '1')
  if tonumber(redis.call('ZINCRBY', base .. ':waiting', '1', job.tenant)) == 1 then
    local finish = tonumber(redis.call('ZSCORE', base .. ':finish', job.tenant) or '') or 0
    redis.call('ZREM', base .. ':finish', job.tenant)
    make_ready(base, job.tenant, math.max(vtime_of(base), finish))
  end
  redis.call('SADD', K.DISPATCH_MODELS, job.model)
end

-- The tenant's queue has no job left: idle, its finish tag kept while it matters.
local function queue_empty(base, model, tenant)
  redis.call('ZREM', base .. ':waiting', tenant)
  local tag = unready(base, tenant)
  if not tag then
    local h = redis.call('HMGET', base .. ':state', 'ptag|' .. tenant, 'pause|' .. tenant)
    tag = tonumber(h[1] or '')
    if redis.call('ZREM', base .. ':paused', tenant) == 1 and h[2] then
      redis.call('HINCRBY', base .. ':state', 'paused|' .. h[2], '-1')
    end
    redis.call('HDEL', K.TENANT_PREFIX .. tenant .. ':paused', model)
  end
  redis.call('HDEL', base .. ':state', 'streak|' .. tenant, 'pause|' .. tenant,
             'ptag|' .. tenant)
  if tag and tag > vtime_of(base) then redis.call('ZADD', base .. ':finish', tag, tenant) end
end

-- Out of its tenant's waiting set (`popped`: the release already took it out).
local function queue_remove(job, popped)
  local base = dispatch_base(job.model)
  if not popped and redis.call('ZREM', wait_key(job.model, job.tenant, job.class), job.id) == 0 then
    return
  end
  redis.call('ZREM', base .. ':since:' .. (job.class or 'interactive'), job.id)
  redis.call('HINCRBY', base .. ':state', 'jobs', '-1')
  if tonumber(redis.call('ZINCRBY', base .. ':waiting', '-1', job.tenant)) <= 0 then
    queue_empty(base, job.model, job.tenant)
  end
end

-- The tenant's queue cannot be served until `until_ms` (math.huge: until an event resumes it):
-- out of the scan, its tag kept.
local function pause(model, tenant, reason, until_ms)
  local base = dispatch_base(model)
  local tag = unready(base, tenant)
  if not tag then return end
  local score = until_ms == math.huge and '+inf' or until_ms
  redis.call('ZADD', base .. ':paused', score, tenant)
  redis.call('HSET', base .. ':state', 'pause|' .. tenant, reason, 'ptag|' .. tenant, tag)
  redis.call('HINCRBY', base .. ':state', 'paused|' .. reason, '1')
  redis.call('HSET', K.TENANT_PREFIX .. tenant .. ':paused', model, reason)
  if CTX.unpaused then CTX.unpaused[tenant] = nil end
  redis.call('HINCRBY', K.STATS, 'paused|' .. reason, '1')
end

-- Back in the scan at the later of its tag and the virtual time.
local function resume(model, tenant)
  local base = dispatch_base(model)
  if redis.call('ZREM', base .. ':paused', tenant) == 0 then return false end
  local h = redis.call('HMGET', base .. ':state', 'ptag|' .. tenant, 'pause|' .. tenant)
  local tag = tonumber(h[1] or '') or 0
  if h[2] then redis.call('HINCRBY', base .. ':state', 'paused|' .. h[2], '-1') end
  redis.call('HDEL', base .. ':state', 'pause|' .. tenant, 'ptag|' .. tenant)
  redis.call('HDEL', K.TENANT_PREFIX .. tenant .. ':paused', model)
  make_ready(base, tenant, math.max(tag, vtime_of(base)))
  return true
end

-- Resumes the tenant's queues paused for `reason` (nil: any reason), in every model. A tenant
-- found with none paused is not read again in the same call (until `pause` pauses one).
resume_paused = function(tenant, reason)
  if tenant == K.NO_TENANT then return end
  CTX.unpaused = CTX.unpaused or {}
  if CTX.unpaused[tenant] then return end
  local index = K.TENANT_PREFIX .. tenant .. ':paused'
  local paused = redis.call('HGETALL', index)
  if #paused == 0 then CTX.unpaused[tenant] = true end
  for i = 1, #paused, 2 do
    if reason == nil or paused[i + 1] == reason then
      resume(paused[i], tenant)
    end
  end
end

-- The job no longer holds a slot of its model's and its tenant's concurrency caps.
local function free_slot(job)
  redis.call('ZREM', dispatch_base(job.model) .. ':active', job.id)
  if job.tenant ~= K.NO_TENANT then
    if redis.call('ZREM', K.TENANT_PREFIX .. job.tenant .. ':active', job.id) == 1 then
      resume_paused(job.tenant, 'concurrency')
    end
  end
end

local function take_slot(job)
  redis.call('ZADD', dispatch_base(job.model) .. ':active', NOW_DIGITS, job.id)
  if job.tenant ~= K.NO_TENANT then
    redis.call('ZADD', K.TENANT_PREFIX .. job.tenant .. ':active', NOW_DIGITS, job.id)
  end
end
