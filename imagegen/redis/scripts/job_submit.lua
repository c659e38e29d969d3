-- Creates one job's record, indexes it and puts it in its waiting set, atomically. The first
-- script of a submission (run in one MULTI with the others) checks the caps on open jobs for all
-- its jobs; when they are full it marks the submission refused, and every script of it then
-- creates nothing.
-- KEYS: 1 job hash, 2 job index, 3 tenant job index, 4 open set, 5 tenant open set,
--       6 idempotency key, 7 deadlines set, 8 batch job list, 9 the submission's refusal
--       marker, 10 the batch hash.
-- ARGV: 1 retention_s, 2 created_ms, 3 job_id, 4 '1' to put it in its waiting set ('' = do
--       not), 5 idempotency value ('' = none), 6 expires_ms ('' = none), 7 tenant ('' = none),
--       8 batch ('' = none), 9 idempotency ttl s, 10 jobs to make room for (0 = no check),
--       11 cap for everybody, 12 cap per tenant, 13 the batch's size (the first script of a
--       batch writes the batch record; 0 = none), 14 webhook grace ms, 15 delivery message
--       template, then the record's field/value pairs.
-- A job with a `cache_key` (a fixed seed) is looked up in its scope's cache first: a hit ends it
-- `succeeded` at once from the cached image; an identical job already buying that image makes
-- it a follower of that job; otherwise it leads, and waits its turn like any job. With
-- `cache_copy`, a hit waits its turn too, to copy the image under its own key.
-- A job that takes the output of a job not final yet (`after_job`) waits for that job instead.
-- Returns {'created', ''} ({'created', 'cached {JSON of the fields it got}'} when the cache
-- served it at once),
-- {'exists', ''}, {'idempotent', '<request sha256> <job id>'} or {'full', '<scope> <waiting>
-- <cap>'}.
if redis.call('EXISTS', KEYS[9]) == 1 then return {'full', ''} end
local adding = tonumber(ARGV[10])
if adding > 0 then
  local total = redis.call('ZCARD', KEYS[4])
  local scope, waiting, cap = nil, 0, 0
  if total + adding > tonumber(ARGV[11]) then
    scope, waiting, cap = 'total', total, ARGV[11]
  elseif ARGV[7] ~= '' then
    local own = redis.call('ZCARD', KEYS[5])
    if own + adding > tonumber(ARGV[12]) then scope, waiting, cap = 'tenant', own, ARGV[12] end
  end
  if scope then
    redis.call('SET', KEYS[9], '1', 'EX', 60)
    return {'full', scope .. ' ' .. waiting .. ' ' .. cap}
  end
end
local retention, created = tonumber(ARGV[1]), tonumber(ARGV[2])
if tonumber(ARGV[13]) > 0 then
  redis.call('HSET', KEYS[10], 'batch_id', ARGV[8], 'tenant', ARGV[7], 'size', ARGV[13],
             'created_ms', created)
  redis.call('EXPIRE', KEYS[10], retention)
end
if ARGV[5] ~= '' then
  local earlier = redis.call('GET', KEYS[6])
  if earlier then return {'idempotent', earlier} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end
for i = 16, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], retention)
local oldest = created - 1000 * retention
redis.call('ZADD', KEYS[2], created, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', oldest)
redis.call('ZADD', KEYS[4], created, ARGV[3])
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[3], created, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', oldest)
  redis.call('ZADD', KEYS[5], created, ARGV[3])
end
if ARGV[5] ~= '' then redis.call('SET', KEYS[6], ARGV[5], 'EX', tonumber(ARGV[9])) end
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[7], tonumber(ARGV[6]), ARGV[3]) end
if ARGV[8] ~= '' then
  redis.call('RPUSH', KEYS[8], ARGV[3])
  redis.call('EXPIRE', KEYS[8], retention)
end
-- The cache: 'cached {...}' when the job was served, 'following' when it follows another,
-- else ''.
local function from_cache(key, job_id, tenant)
  local cache_key = redis.call('HGET', key, 'cache_key')
  if not cache_key or cache_key == '' then return '' end
  local scope = tenant_of(tenant)
  if tenant ~= '' and redis.call('HGET', K.TENANT_PREFIX .. tenant, 'cache_shared') == '1' then
    scope = K.SHARED_CACHE
  end
  local entry = K.CACHE_PREFIX .. scope .. ':' .. cache_key
  redis.call('HSET', key, 'cache_entry', entry)
  local values = redis.call('HMGET', entry, 'job_id', unpack(CACHE_FIELDS))
  if values[1] then
    local source = table.remove(values, 1)
    if redis.call('HGET', key, 'cache_copy') == '1' then
      prepare_copy(key, values, source)
      return ''
    end
    serve_cached(key, job_id, values, source, created, retention, tonumber(ARGV[14]), ARGV[15])
    local got = {status = 'succeeded', cached = '1', cache_source = source,
                 started_ms = tostring(created), finished_ms = tostring(created)}
    for i, name in ipairs(CACHE_FIELDS) do
      if values[i] and values[i] ~= '' then got[name] = values[i] end
    end
    return 'cached ' .. cjson.encode(got)
  end
  local leader = redis.call('GET', entry .. ':leader')
  if leader and leader ~= job_id then
    local status = redis.call('HGET', job_key(leader), 'status')
    if status and not TERMINAL[status] then
      redis.call('RPUSH', entry .. ':followers', job_id)
      redis.call('EXPIRE', entry .. ':followers', retention)
      redis.call('HSET', key, 'dispatch', 'following', 'cache_leader', leader)
      return 'following'
    end
  end
  redis.call('SET', entry .. ':leader', job_id, 'EX', retention)
  return ''
end

local served = ''
if ARGV[4] ~= '' then
  local held = hold_after(KEYS[1], ARGV[3], retention)
  if held == 'ended' then
    skip_step(KEYS[1], ARGV[3], redis.call('HGET', KEYS[1], 'after_job'), 'without an image',
              created, retention, tonumber(ARGV[14]), ARGV[15])
  elseif held == '' then
    served = from_cache(KEYS[1], ARGV[3], ARGV[7])
    if served == '' then wait_in(KEYS[1], ARGV[3], created, nil) end
  end
end
return {'created', served}
