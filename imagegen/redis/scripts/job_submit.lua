-- Creates one job's record, indexes it and queues its task, atomically.
-- KEYS: 1 job hash, 2 job index, 3 queue list, 4 tenant job index, 5 queued set,
--       6 tenant queued set, 7 idempotency key, 8 deadlines set, 9 batch job list.
-- ARGV: 1 retention_s, 2 created_ms, 3 job_id, 4 message ('' = do not queue), 5 idempotency
--       value ('' = none), 6 expires_ms ('' = none), 7 tenant ('' = none), 8 batch ('' = none),
--       9 idempotency ttl s, then the record's field/value pairs.
-- Returns {'created', ''}, {'exists', ''} or {'idempotent', '<request sha256> <job id>'}.
if ARGV[5] ~= '' then
  local earlier = redis.call('GET', KEYS[7])
  if earlier then return {'idempotent', earlier} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end
for i = 10, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local retention, created = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('EXPIRE', KEYS[1], retention)
local oldest = created - 1000 * retention
redis.call('ZADD', KEYS[2], created, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', oldest)
redis.call('ZADD', KEYS[5], created, ARGV[3])
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[4], created, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', oldest)
  redis.call('ZADD', KEYS[6], created, ARGV[3])
end
if ARGV[5] ~= '' then redis.call('SET', KEYS[7], ARGV[5], 'EX', tonumber(ARGV[9])) end
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[8], tonumber(ARGV[6]), ARGV[3]) end
if ARGV[8] ~= '' then redis.call('RPUSH', KEYS[9], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('LPUSH', KEYS[3], ARGV[4]) end
return {'created', ''}
