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
--       batch writes the batch record; 0 = none), then the record's field/value pairs.
-- Returns {'created', ''}, {'exists', ''}, {'idempotent', '<request sha256> <job id>'} or
-- {'full', '<scope> <waiting> <cap>'}.
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
for i = 14, #ARGV, 2 do
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
if ARGV[4] ~= '' then wait_in(KEYS[1], ARGV[3], created, nil) end
return {'created', ''}
