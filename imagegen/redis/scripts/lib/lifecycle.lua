-- The lifecycle (imagegen.lifecycle, generated into LIFECYCLE and PLACE_STATUS): each place
-- owns the Redis sets that hold its jobs (PLACES[place].enter / .leave), each effect is a
-- function (EFFECTS[name]), and `transition` is the only code that moves a job.

-- How many of a model's last starts are kept (their waits), and for how long: the list is
-- trimmed back to RECENT_WAITS once it holds WAITS_SLACK more. Its TTL is set again by every
-- WAITS_SLACK-th start, and by each start while it holds no more than that (a model with few
-- starts), so a busy model's start costs one write and a model in use keeps its list.
local RECENT_WAITS, RECENT_WAITS_TTL_S, WAITS_SLACK = 2000, 7 * 86400, 100
local CACHE_FIELDS = {'seed', 's3_bucket', 's3_key', 's3_uri', 'content_type', 'width',
                      'height', 'bytes', 'sha256'}
local settle_cache, settle_next

local function batch_keys(batch_id)
  return K.BATCH_PREFIX .. batch_id, K.BATCH_PREFIX .. batch_id .. ':jobs'
end

local PLACES = {}

PLACES.new = {leave = function() end}

PLACES.waiting = {
  enter = function(job) queue_add(job) end,
  leave = function(job, _, opts) queue_remove(job, opts.popped) end,
}

PLACES.delayed = {
  enter = function(job, opts)
    redis.call('ZADD', dispatch_base(job.model) .. ':delayed', opts.due, job.id)
    redis.call('SADD', K.DISPATCH_MODELS, job.model)
  end,
  leave = function(job) redis.call('ZREM', dispatch_base(job.model) .. ':delayed', job.id) end,
}

PLACES.after = {
  enter = function(job)
    redis.call('RPUSH', job_key(job.f.after_job) .. ':next', job.id)
  end,
  leave = function(job)
    redis.call('LREM', job_key(job.f.after_job or '') .. ':next', '0', job.id)
  end,
}

PLACES.following = {
  enter = function(job, opts)
    local followers = job.f.cache_entry .. ':followers'
    redis.call('RPUSH', followers, job.id)
    redis.call('EXPIRE', followers, CTX.retention)
    set_fields(job, {'cache_leader', opts.leader})
  end,
  leave = function(job)
    redis.call('LREM', (job.f.cache_entry or '') .. ':followers', '0', job.id)
    set_fields(job, {'cache_leader', ''})
  end,
}

PLACES.released = {
  enter = function(job)
    redis.call('ZADD', dispatch_base(job.model) .. ':released', NOW_DIGITS, job.id)
    take_slot(job)
    redis.call('SADD', K.DISPATCH_MODELS, job.model)
    set_fields(job, {'released_ms', NOW_MS})
  end,
  leave = function(job, to)
    redis.call('ZREM', dispatch_base(job.model) .. ':released', job.id)
    if to ~= 'running' then free_slot(job) end
  end,
}

PLACES.running = {
  enter = function(job, opts) redis.call('ZADD', K.RUNNING, opts.lease_until, job.id) end,
  leave = function(job, to)
    redis.call('ZREM', K.RUNNING, job.id)
    local fields = {'lease_owner', '', 'lease_until_ms', 0}
    -- A retry's call ended without an image; a redrive or a finish books it first (effects).
    if to == 'delayed' then table.insert(fields, 'calling'); table.insert(fields, '') end
    set_fields(job, fields)
    free_slot(job)
  end,
}

-- Mean time a job runs (claim to final), per model: what a concurrency cap lets through.
local RUN_MS_WEIGHT = 0.1
local function note_run_time(job)
  local claimed = tonumber(job.f.claimed_ms or '')
  if not claimed then return end
  local state = dispatch_base(job.model) .. ':state'
  local mean = tonumber(redis.call('HGET', state, 'run_ms') or '')
  local took = math.max(0, NOW_MS - claimed)
  if mean then took = mean + RUN_MS_WEIGHT * (took - mean) end
  redis.call('HSET', state, 'run_ms', took)
end

PLACES.final = {
  enter = function(job, opts, from)
    local status = job.status
    redis.call('ZREM', K.OPEN, job.id)
    -- Only a job with a deadline is in the deadlines set (until it starts).
    if job.f.expires_ms then redis.call('ZREM', K.DEADLINES, job.id) end
    if job.tenant ~= K.NO_TENANT then
      redis.call('ZREM', K.TENANT_PREFIX .. job.tenant .. ':open', job.id)
    end
    unreserve(job)
    if from == 'running' then note_run_time(job) end
    redis.call('DEL', job.key .. ':parked-image')
    local counted = job.f.open == '1'
    set_fields(job, {'finished_ms', NOW_MS, 'next_attempt_ms', '', 'calling', '', 'open', ''})
    if counted and job.f.batch_id then
      local batch, batch_jobs = batch_keys(job.f.batch_id)
      if redis.call('HINCRBY', batch, 'open', '-1') <= 0 then
        redis.call('EXPIRE', batch, CTX.retention)
        redis.call('EXPIRE', batch_jobs, CTX.retention)
      end
    end
    -- A job refused on arrival never ran: nothing to replay.
    if status == 'failed' and from ~= 'new' then redis.call('ZADD', K.DLQ, NOW_DIGITS, job.id) end
    redis.call('HINCRBY', K.STATS, 'jobs|' .. job.model .. '|' .. status, '1')
    announce(job, status)
    add_delivery(job, 'job.' .. status, CTX)
    if job.f.chain_last == '1' then
      add_delivery(job, 'chain.' .. (status == 'succeeded' and 'succeeded' or 'failed'), CTX)
    end
    settle_cache(job)
    settle_next(job)
  end,
  leave = function(job) redis.call('ZREM', K.DLQ, job.id) end,
}

local EFFECTS = {}

EFFECTS.open = function(job)
  local created = tonumber(job.f.created_ms or '') and job.f.created_ms or '0'
  redis.call('ZADD', K.OPEN, created, job.id)
  if job.tenant ~= K.NO_TENANT then
    redis.call('ZADD', K.TENANT_PREFIX .. job.tenant .. ':open', created, job.id)
  end
  if tonumber(job.f.expires_ms or '') then redis.call('ZADD', K.DEADLINES, job.f.expires_ms, job.id) end
  if job.f.batch_id then
    local batch, batch_jobs = batch_keys(job.f.batch_id)
    redis.call('HINCRBY', batch, 'open', '1')
    redis.call('PERSIST', batch)
    redis.call('PERSIST', batch_jobs)
  end
  set_fields(job, {'open', '1'})
end

EFFECTS.open_if_new = function(job, opts, from)
  if from == 'new' then EFFECTS.open(job, opts, from) end
end

EFFECTS.take_cached = function(job, opts)
  local fields = {'cached', '1', 'cache_source', opts.source, 'cache_leader', ''}
  for i, name in ipairs(CACHE_FIELDS) do
    local v = opts.cached[i]
    if v and v ~= '' then table.insert(fields, name); table.insert(fields, v) end
  end
  if not job.f.started_ms then table.insert(fields, 'started_ms'); table.insert(fields, NOW_MS) end
  set_fields(job, fields)
end

EFFECTS.book_hit = function(job) book_hit(job, CTX.ledger_ttl) end

EFFECTS.note_skipped = function(job, opts)
  set_fields(job, {'error_code', 'ChainStepSkipped', 'error_message',
                   'job ' .. opts.source .. ', whose output this job takes, ended ' .. opts.how ..
                   '; this job never ran'})
end

-- The release decided the amount (0: the job needs none). A job that had to wait for room to
-- buy its image again (`recall`) holds it now.
EFFECTS.reserve = function(job, opts)
  local price = opts.reserve or 0
  if price <= 0 then return end
  local today, this_month = ledger_periods()
  for _, period in ipairs({today, this_month}) do
    counted_in(job.tenant, period, 'reserved', price, CTX.ledger_ttl)
  end
  set_fields(job, {'reserved_micro', price, 'reserved_day', today, 'reserved_month', this_month,
                   'recall', ''})
end

EFFECTS.push = function(job, opts)
  local message = fill(opts.templates[job.class], {[K.JOB_ID] = job.id, [K.NONCE] = opts.nonce})
  redis.call('LPUSH', job.class, message)
end

EFFECTS.prepare_copy = function(job, opts)
  set_fields(job, {'copy_from_bucket', opts.cached[2] or '', 'copy_from_key', opts.cached[3] or '',
                   'cached', '1', 'cache_source', opts.source})
end

EFFECTS.lease = function(job, opts)
  local attempts = redis.call('HINCRBY', job.key, 'attempts', '1')
  set_fields(job, {'lease_owner', opts.owner, 'lease_until_ms', opts.lease_until,
                   'claimed_ms', NOW_MS, 'next_attempt_ms', ''})
  opts.attempts = attempts
  if not job.f.started_ms then
    set_fields(job, {'started_ms', NOW_MS})
    if job.f.expires_ms then redis.call('ZREM', K.DEADLINES, job.id) end
    opts.waited = NOW_MS - number(job, 'created_ms')
    -- The model's last starts: each tenant's wait over the last minutes, for operators.
    local waits = dispatch_base(job.model) .. ':waits'
    local kept = redis.call('LPUSH', waits, job.tenant .. '|' .. opts.waited .. '|' .. NOW_DIGITS)
    if kept > RECENT_WAITS + WAITS_SLACK then redis.call('LTRIM', waits, '0', RECENT_WAITS - 1) end
    if kept <= WAITS_SLACK or kept % WAITS_SLACK == 0 then
      redis.call('EXPIRE', waits, RECENT_WAITS_TTL_S)
    end
    announce(job, 'running')
    add_delivery(job, 'job.started', CTX)
  end
end

EFFECTS.flag_cancel = function(job) set_fields(job, {'cancel_requested', '1'}) end

EFFECTS.log_attempt = function(job, opts)
  set_fields(job, {'attempt_log', attempt_log_with(job, opts.log_line),
                   'next_attempt_ms', opts.due, 'error_code', opts.error_code,
                   'error_message', opts.error_message})
  redis.call('HINCRBY', K.STATS, 'retries|' .. opts.error_code, '1')
end

-- A leader that goes back to wait leads no more: its followers wait their own turn (they only
-- follow a job already released or running).
EFFECTS.free_followers = function(job)
  local entry = job.f.cache_entry
  if not entry or redis.call('GET', entry .. ':leader') ~= job.id then return end
  redis.call('DEL', entry .. ':leader')
  local followers = redis.call('LRANGE', entry .. ':followers', '0', '-1')
  redis.call('DEL', entry .. ':followers')
  for _, id in ipairs(followers) do
    local follower = load_job(id)
    if follower and follower.place == 'following' then transition(follower, 'unfollow') end
  end
end

EFFECTS.book_lost_call = function(job)
  if job.f.calling then
    book_image(job, CTX.ledger_ttl)
    redis.call('HINCRBY', K.STATS, 'lost_calls|' .. job.model, '1')
  end
end

EFFECTS.book_bought = function(job, opts)
  if opts.bought then book_image(job, CTX.ledger_ttl) end
end

-- A replay starts a new run: what the last one left (a pool to avoid, an object to copy) goes,
-- and it must buy its own image (`recall`: its release reserves the price, whatever the
-- last run was billed). Its attempt log keeps the last runs' entries, then a `Replayed` one:
-- the retry policy counts only the entries after it.
EFFECTS.reset = function(job)
  local replayed = '{"attempt":0,"at":"' .. iso_utc(NOW_MS) .. '","error_code":"' .. K.REPLAYED ..
                   '","message":"replayed: a new run","retry_in_s":null}'
  set_fields(job, {'attempt_log', attempt_log_with(job, replayed),
                   'attempts', 0, 'finished_ms', '', 'started_ms', '', 'claimed_ms', '',
                   'next_attempt_ms', '', 'error_code', '', 'error_message', '',
                   'expires_ms', '', 'cancel_requested', '', 'recall', '1', 'avoid_pool', '',
                   'copy_from_bucket', '', 'copy_from_key', '', 'cached', '',
                   'cache_source', ''})
  job.f.replays = tostring(redis.call('HINCRBY', job.key, 'replays', '1'))
end

-- Moves `job` by `event` (opts: what the event needs). Checks the move is declared, takes the
-- job out of its place, runs the event's effects, writes place and status together, applies
-- the TTL policy (open: none; final: the retention) and puts it in its new place. Returns
-- false, changing nothing but a counter, when the move is not allowed.
transition = function(job, event, opts)
  opts = opts or {}
  local rule = LIFECYCLE[event]
  local from = job.place
  local to = rule and rule.to
  local status = to and (PLACE_STATUS[to] or opts.status)
  if not rule or not rule.from[from] or (to == 'final' and not rule.statuses[status or '']) then
    redis.call('HINCRBY', K.STATS, 'illegal|' .. event .. '|' .. tostring(from), '1')
    return false
  end
  -- The record's writes of the whole move are made by one HSET as it ends.
  local outer = not job.pending
  if outer then job.pending = {} end
  if from ~= to then PLACES[from].leave(job, to, opts) end
  for _, name in ipairs(rule.effects) do EFFECTS[name](job, opts, from) end
  job.place, job.status = to, status
  set_fields(job, {'place', to, 'status', status})
  if to == 'final' then
    redis.call('EXPIRE', job.key, CTX.retention)
  elseif from == 'final' then
    redis.call('PERSIST', job.key)
  end
  if from ~= to then PLACES[to].enter(job, opts, from) end
  if outer then flush_fields(job) end
  return true
end

-- A leader ended: a success fills the cache entry and serves its followers (or, copying
-- objects, sends them to wait their turn for a copy); any other end sends them to wait their
-- own turn.
settle_cache = function(job)
  local entry = job.f.cache_entry
  if not entry or redis.call('GET', entry .. ':leader') ~= job.id then return end
  redis.call('DEL', entry .. ':leader')
  local followers = redis.call('LRANGE', entry .. ':followers', '0', '-1')
  redis.call('DEL', entry .. ':followers')
  local values = redis.call('HMGET', job.key, unpack(CACHE_FIELDS))
  -- What this call set and has not written yet (a finish writes its fields with its move).
  local pending = job.pending or {}
  for i, name in ipairs(CACHE_FIELDS) do
    if pending[name] ~= nil then values[i] = tostring(pending[name]) end
  end
  local filled = job.status == 'succeeded' and values[3] and values[3] ~= ''
  if filled then
    local fields = {}
    for i, name in ipairs(CACHE_FIELDS) do
      table.insert(fields, name)
      table.insert(fields, values[i] or '')
    end
    redis.call('HSET', entry, 'job_id', job.id, unpack(fields))
    local ttl = tonumber(redis.call('HGET', job.key, 'cache_ttl') or '') or CTX.retention
    redis.call('EXPIRE', entry, ttl)
  end
  for _, id in ipairs(followers) do
    local follower = load_job(id)
    if follower and follower.place == 'following' then
      if not filled then
        transition(follower, 'unfollow')
      elseif follower.f.cache_copy == '1' then
        transition(follower, 'copy', {cached = values, source = job.id})
      else
        transition(follower, 'serve', {status = 'succeeded', cached = values, source = job.id})
      end
    end
  end
end

-- Jobs that take this job's output (chain steps) wait their turn when it succeeded; otherwise
-- each ends canceled, never called, and so do the steps after it.
settle_next = function(job)
  local next_key = job.key .. ':next'
  local children = redis.call('LRANGE', next_key, '0', '-1')
  if #children == 0 then return end
  redis.call('DEL', next_key)
  for _, id in ipairs(children) do
    local child = load_job(id)
    if child and child.place == 'after' then
      if job.status == 'succeeded' then
        transition(child, 'input_ready')
      else
        transition(child, 'skip', {status = 'canceled', source = job.id, how = job.status})
      end
    end
  end
end

-- Where an identical fixed-seed job stands in the cache: {'hit', values, source} when its image
-- is there, {'follow', leader} when one is released or running, else {'lead'}.
local function cache_lookup(job)
  local entry = job.f.cache_entry
  local values = redis.call('HMGET', entry, 'job_id', unpack(CACHE_FIELDS))
  if values[1] then
    local source = table.remove(values, 1)
    return {'hit', values, source}
  end
  local leader = redis.call('GET', entry .. ':leader')
  if leader and leader ~= job.id then
    local place = redis.call('HGET', job_key(leader), 'place')
    if place == 'released' or place == 'running' then return {'follow', leader} end
  end
  return {'lead'}
end
