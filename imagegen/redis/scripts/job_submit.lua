-- Creates one job's record, indexes it and gives it its first place, atomically: waiting (in
-- its tenant's waiting set), after (its input job is not final yet), following (an identical
-- fixed-seed job is released or running), or final at once (its image is in the cache, or its
-- input job ended without one). The first script of a submission (run in one MULTI with the
-- others) checks the caps on open jobs for all its jobs; when they are full it marks the
-- submission refused, and every script of it then creates nothing.
-- KEYS: 1 job hash, 2 job index, 3 tenant job index, 4 open set, 5 tenant open set,
--       6 idempotency key, 7 batch job list, 8 the submission's refusal marker, 9 batch hash.
-- ARGV: 1 now, 2-6 the job context (clock.lua), 7 job_id, 8 idempotency value ('' = none),
--       9 tenant ('' = none), 10 batch ('' = none), 11 idempotency ttl s, 12 jobs to make room
--       for (0 = no check), 13 cap for everybody, 14 cap per tenant, 15 the batch's size (the
--       first script of a batch writes the batch record; 0 = none), then the record's
--       field/value pairs.
-- Touches: imagegen:seq, imagegen:deadlines, the input job's record and :next list,
-- imagegen:tenant:{t} (cache_shared), imagegen:cache:{scope}:{hash} and its :leader and
-- :followers, imagegen:dispatch:{model}:* and imagegen:dispatch:models (the job's place); on a
-- cache hit or a skipped step (a final transition):
--   imagegen:job:{id} and its :next and :parked-image, imagegen:open, imagegen:deadlines,
--   imagegen:running, imagegen:dlq, imagegen:stats, imagegen:tenant:{t}:open|active|paused,
--   imagegen:spend:{t}:{period} (reservations given back), imagegen:batch:{id},
--   imagegen:webhook:{delivery}, imagegen:webhooks:due, the webhooks queue, the events channels,
--   imagegen:cache:{scope}:{hash} and its :leader and :followers (their jobs too), the jobs of
--   its :next list, imagegen:dispatch:{model}:* (wait:{t}:{class}, tenants, paused, waiting,
--   weight, finish, state, delayed, released, active) and imagegen:dispatch:models.
-- Returns {'created', ''} ({'created', 'cached {JSON of the fields it got}'} when the cache
-- served it at once), {'exists', ''}, {'idempotent', '<request sha256> <job id>'} or
-- {'full', '<scope> <waiting> <cap>'}.
local LISTING_TRIM_EVERY = 8
local ctx = job_context(ARGV)
if redis.call('EXISTS', KEYS[8]) == 1 then return {'full', ''} end
local job_id, tenant, batch_id = ARGV[ARG0], ARGV[ARG0 + 2], ARGV[ARG0 + 3]
local adding = tonumber(ARGV[ARG0 + 5])
if adding > 0 then
  local total = redis.call('ZCARD', KEYS[4])
  local scope, waiting, cap = nil, 0, 0
  if total + adding > tonumber(ARGV[ARG0 + 6]) then
    scope, waiting, cap = 'total', total, ARGV[ARG0 + 6]
  elseif tenant ~= '' then
    local own = redis.call('ZCARD', KEYS[5])
    if own + adding > tonumber(ARGV[ARG0 + 7]) then scope, waiting, cap = 'tenant', own, ARGV[ARG0 + 7] end
  end
  if scope then
    redis.call('SET', KEYS[8], '1', 'EX', '60')
    return {'full', scope .. ' ' .. waiting .. ' ' .. cap}
  end
end
local fields, loaded, created, created_digits = {}, {}, NOW_MS, NOW_DIGITS
for i = ARG0 + 9, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if name == 'created_ms' then created, created_digits = tonumber(value), value end
  fields[#fields + 1] = name
  fields[#fields + 1] = value
  if value ~= '' then loaded[name] = value end
end
if tonumber(ARGV[ARG0 + 8]) > 0 then
  redis.call('HSET', KEYS[9], 'batch_id', batch_id, 'tenant', tenant, 'size', ARGV[ARG0 + 8],
             'created_ms', created)
  redis.call('EXPIRE', KEYS[9], ctx.retention)
  redis.call('EXPIRE', KEYS[7], ctx.retention)
end
if ARGV[ARG0 + 1] ~= '' then
  local earlier = redis.call('GET', KEYS[6])
  if earlier then return {'idempotent', earlier} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end

local seq = redis.call('INCR', K.SEQ)
loaded.seq = string.format('%d', seq)
fields[#fields + 1] = 'seq'
fields[#fields + 1] = loaded.seq
redis.call('HSET', KEYS[1], unpack(fields))
local job = job_from_fields(job_id, loaded)
job.place = 'new'

-- The listings keep a final job for the retention; a tenant's keeps its open jobs however old.
-- One submission in LISTING_TRIM_EVERY (by its sequence number) trims them, so a listing holds
-- at most a few jobs past its bound.
local oldest = math.min(NOW_MS - 1000 * ctx.retention, created)
local trims = seq % LISTING_TRIM_EVERY == 0
redis.call('ZADD', KEYS[2], created_digits, job_id)
if trims then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. oldest) end
if tenant ~= '' then
  redis.call('ZADD', KEYS[3], created_digits, job_id)
  if trims then
    local first_open = redis.call('ZRANGE', KEYS[5], '0', '0', 'WITHSCORES')
    if #first_open > 0 then oldest = math.min(oldest, tonumber(first_open[2])) end
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. oldest)
  end
end
if ARGV[ARG0 + 1] ~= '' then
  redis.call('SET', KEYS[6], ARGV[ARG0 + 1], 'EX', tonumber(ARGV[ARG0 + 4]))
end
if batch_id ~= '' then redis.call('RPUSH', KEYS[7], job_id) end

-- Its input job: succeeded (it may go), not final yet (it waits for it), or gone or ended
-- without an image (it never runs).
local parent = job.f.after_job
if parent then
  local status = redis.call('HGET', job_key(parent), 'status')
  if status ~= 'succeeded' then
    if status and not TERMINAL[status] then
      transition(job, 'hold')
    else
      transition(job, 'skip', {status = 'canceled', source = parent, how = 'without an image'})
    end
    return {'created', ''}
  end
end

if loaded.cache_key then
  local scope = tenant_of(tenant)
  if tenant ~= '' and redis.call('HGET', K.TENANT_PREFIX .. tenant, 'cache_shared') == '1' then
    scope = K.SHARED_CACHE
  end
  set_fields(job, {'cache_entry', K.CACHE_PREFIX .. scope .. ':' .. loaded.cache_key})
  local found = cache_lookup(job)
  if found[1] == 'hit' and job.f.cache_copy == '1' then
    transition(job, 'copy', {cached = found[2], source = found[3]})
    return {'created', ''}
  elseif found[1] == 'hit' then
    transition(job, 'hit', {status = 'succeeded', cached = found[2], source = found[3]})
    local got = {status = 'succeeded', cached = '1', cache_source = found[3],
                 started_ms = tostring(NOW_MS), finished_ms = tostring(NOW_MS)}
    for i, name in ipairs(CACHE_FIELDS) do
      if found[2][i] and found[2][i] ~= '' then got[name] = found[2][i] end
    end
    return {'created', 'cached ' .. cjson.encode(got)}
  elseif found[1] == 'follow' then
    transition(job, 'follow', {leader = found[2]})
    return {'created', ''}
  end
end
transition(job, 'submit')
return {'created', ''}
