-- Re-creates the final record of a job whose record Redis lost, from the facts kept beside its
-- image in S3 (event recover, `imagegen recover`): a `succeeded` record in the job listings,
-- whose final transition queues its webhook's deliveries as any other does. Nothing happens
-- when the job id already has a record, so running it again changes nothing.
-- With an Idempotency-Key, the key answers with the job again for what is left of its 24 h.
-- KEYS: 1 job hash, 2 job index, 3 tenant job index (unused without a tenant), 4 idempotency
-- key (unused without one).
-- ARGV: 1 now, 2-6 the job context, 7 job_id, 8 tenant ('' = none), 9 when the job finished
-- (Unix ms: its image's upload), 10 the idempotency key's ttl s (0: none), then the record's
-- field/value pairs (created_ms, idempotency_sha256 among them).
-- Touches (a final transition):
--   imagegen:job:{id} and its :next and :parked-image, imagegen:open, imagegen:deadlines,
--   imagegen:running, imagegen:dlq, imagegen:stats, imagegen:tenant:{t}:open|active|paused,
--   imagegen:spend:{t}:{period} (reservations given back), imagegen:batch:{id},
--   imagegen:webhook:{delivery}, imagegen:webhooks:due, the webhooks queue, the events channels,
--   imagegen:cache:{scope}:{hash} and its :leader and :followers (their jobs too), the jobs of
--   its :next list, imagegen:dispatch:{model}:* (wait:{t}:{class}, tenants, paused, waiting,
--   weight, finish, state, delayed, released, active) and imagegen:dispatch:models.
-- Returns 1 when re-created, 0 when the job has a record.
job_context(ARGV)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local job_id, tenant = ARGV[ARG0], ARGV[ARG0 + 1]
local finished, idempotency_ttl = tonumber(ARGV[ARG0 + 2]), tonumber(ARGV[ARG0 + 3])
local fields, created, request_sha = {'job_id', job_id, 'status', 'queued', 'attempts', 0}, NOW_MS, nil
for i = ARG0 + 4, #ARGV, 2 do
  if ARGV[i] == 'created_ms' then created = tonumber(ARGV[i + 1]) end
  if ARGV[i] == 'idempotency_sha256' then request_sha = ARGV[i + 1] end
  table.insert(fields, ARGV[i])
  table.insert(fields, ARGV[i + 1])
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], created, job_id)
if tenant ~= '' then redis.call('ZADD', KEYS[3], created, job_id) end
local job = load_job(job_id)
job.place = 'new'
transition(job, 'recover', {status = 'succeeded'})
if finished then redis.call('HSET', KEYS[1], 'finished_ms', finished) end
if request_sha and idempotency_ttl > 0 then
  redis.call('SET', KEYS[4], request_sha .. ' ' .. job_id, 'NX', 'EX', idempotency_ttl)
end
return 1
