-- Where a job stands in the dispatcher, in O(log n) of tenants and jobs: `k` of its own
-- tenant's jobs go before it (its place in deadline order); fair share then releases, from
-- every other ready queue, about (its virtual release tag - the virtual time) x their summed
-- weight, at least one from each queue whose tag comes first, at most all they have waiting.
-- Its start is the latest of: that position at the model's rate, its `k + 1` jobs at its
-- tenant's rate cap, the same at its concurrency cap (the model's mean run time per slot), and
-- the end of a pause for the tenant's budget.
-- Returns {position, start ms from now (-1: nothing bounds it), share, rate rpm, pause reason}.
local function estimate_start(model, tenant, k, limits)
  local base = dispatch_base(model)
  local s = redis.call('HMGET', base .. ':state', 'vtime', 'jobs', 'weight_sum', 'run_ms',
                       'pause|' .. tenant, 'ptag|' .. tenant)
  local vtime, jobs = tonumber(s[1] or '') or 0, tonumber(s[2] or '') or 0
  local weight_sum, run_ms = tonumber(s[3] or '') or 0, tonumber(s[4] or '')
  local reason, own_waiting = s[5] or '', tonumber(redis.call('ZSCORE', base .. ':waiting', tenant) or '') or 0
  -- The tenant's record: its weight and caps (the settings' when it names none).
  local record = {}
  if tenant ~= K.NO_TENANT then
    record = redis.call('HMGET', K.TENANT_PREFIX .. tenant, 'weight', 'rate_rpm', 'max_concurrency')
  end
  local w = tonumber(redis.call('HGET', base .. ':weight', tenant) or '')
             or math.max(tonumber(record[1] or '') or CTX.weights[tenant] or 1, 1e-6)
  local tag = tonumber(redis.call('ZSCORE', base .. ':tenants', tenant) or '')
  local ready = tag ~= nil
  if not ready then
    tag = tonumber(s[6] or '') or tonumber(redis.call('ZSCORE', base .. ':finish', tenant) or '') or 0
    tag = math.max(tag, vtime)
    weight_sum = weight_sum + w
  end
  local release_tag = tag + k / w
  -- Queues whose next tag comes first each release at least one job before it; a tie goes
  -- before it (queues with equal tags are served by name: only a ready queue's rank says).
  local before
  if k == 0 and ready then
    before = redis.call('ZRANK', base .. ':tenants', tenant)
  else
    before = redis.call('ZCOUNT', base .. ':tenants', '-inf', release_tag)
    if ready then before = before - 1 end
  end
  local others = math.max(0, jobs - own_waiting)
  local by_weight = math.floor(math.max(0, release_tag - vtime) * math.max(0, weight_sum - w))
  local position = k + math.min(others, math.max(before, by_weight)) + 1
  local share = w / math.max(weight_sum, w)

  local start, rate = -1, 0
  if limits.rpm > 0 then
    local tokens
    tokens, rate = load_bucket(limits.bucket, limits.rpm, math.max(limits.burst, 2), limits.floor, NOW)
    start = math.max(0, position - tokens) * 60000 / rate
  end
  local rpm, cap = limits.tenant_rpm, limits.tenant_cap
  if tenant ~= K.NO_TENANT then
    rpm, cap = tonumber(record[2] or '') or rpm, tonumber(record[3] or '') or cap
    if rpm > 0 then
      local t_tokens = tenant_tokens(tenant, rpm)
      start = math.max(start, math.max(0, k + 1 - t_tokens) * 60000 / rpm)
    end
    if cap > 0 and run_ms then
      local active = redis.call('ZCARD', K.TENANT_PREFIX .. tenant .. ':active')
      start = math.max(start, math.max(0, k + 1 - math.max(0, cap - active)) / cap * run_ms)
    end
  end
  if reason ~= '' then
    local resumes = redis.call('ZSCORE', base .. ':paused', tenant)
    if resumes and resumes ~= 'inf' then start = math.max(start, tonumber(resumes) - NOW) end
  end
  return {tostring(position), tostring(start), tostring(share), tostring(rate), reason}
end

-- How many of a tenant's jobs of `class` go before a job at `rank` in its class (or, for a new
-- job, `rank` = those already ahead of it): a batch job waits for interactive ones, but one goes
-- after every `batch_every` interactive; an interactive job lets that many batch ones in.
local function jobs_ahead(model, tenant, class, rank, batch_every)
  if class == 'batch' then
    local interactive = redis.call('ZCARD', wait_key(model, tenant, 'interactive'))
    return rank + math.min(interactive, (rank + 1) * batch_every)
  end
  local batch = redis.call('ZCARD', wait_key(model, tenant, 'batch'))
  return rank + math.min(batch, math.floor(rank / batch_every))
end
